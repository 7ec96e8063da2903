"""The Triton pods' NetworkPolicy: absent unless asked for; ingress on the named ports only, from the
clients listed; accepted by a real apiserver and refused at admission when a selector is malformed."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from nimify.render.deployment import ServedEngine, render_deployment
from nimify.render.identity import nimservice_pods_selector
from nimify.render.network_policy import render_network_policy
from nimify.settings import OperatorSettings
from tests.kube import ExistingCluster
from tests.render.conftest import nimservice, unit_of

MONITORING = {"namespaceSelector": {"kubernetes.io/metadata.name": "monitoring"}}
GATEWAY = {"namespaceSelector": {"team": "edge"}, "podSelector": {"app.kubernetes.io/name": "gateway"}}


def policy(network_policy: dict[str, Any] | None) -> dict[str, Any] | None:
    return render_network_policy(nimservice({"expose": {"networkPolicy": network_policy}}))


def test_absent_unless_asked_for() -> None:
    assert render_network_policy(nimservice()) is None


def test_ports_only_from_anyone() -> None:
    rendered = policy({})
    assert rendered is not None
    nim = nimservice()
    assert rendered["metadata"]["name"] == nim.metadata.name
    assert rendered["metadata"]["ownerReferences"][0]["kind"] == "NimService"
    assert rendered["spec"] == {
        "podSelector": {"matchLabels": nimservice_pods_selector(nim)},  # every unit's pods
        "policyTypes": ["Ingress"],
        "ingress": [
            {"ports": [{"protocol": "TCP", "port": "http"}, {"protocol": "TCP", "port": "grpc"}]},
            {"ports": [{"protocol": "TCP", "port": "metrics"}]},
        ],
    }


def test_clients_and_metrics_clients() -> None:
    rendered = policy(
        {"clients": [GATEWAY, {"podSelector": {"role": "batch"}}], "metricsClients": [MONITORING]}
    )
    assert rendered is not None
    inference, metrics = rendered["spec"]["ingress"]
    assert inference["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"team": "edge"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}},
        },
        {"podSelector": {"matchLabels": {"role": "batch"}}},
    ]
    assert metrics["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]


def test_an_empty_list_of_clients_closes_those_ports() -> None:
    """A rule whose `from` is empty "matches all sources" (NetworkPolicyIngressRule's own words): an empty
    list of clients renders no rule for their ports, which closes them."""
    rendered = policy({"clients": [], "metricsClients": [MONITORING]})
    assert rendered is not None
    (metrics,) = rendered["spec"]["ingress"]
    assert metrics["ports"] == [{"protocol": "TCP", "port": "metrics"}] and metrics["from"]
    closed = policy({"clients": [], "metricsClients": []})
    assert closed is not None and closed["spec"]["ingress"] == []  # the pods take no traffic at all


def test_the_ports_it_names_are_the_pods_ports() -> None:
    settings = OperatorSettings()
    nim = nimservice({"expose": {"networkPolicy": {}, "httpPort": 9000}})
    deployment = render_deployment(nim, unit_of(nim, settings=settings), ServedEngine("hash", None), settings)
    names = {
        p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])
    }
    rendered = render_network_policy(nim)
    assert rendered is not None
    assert {p["port"] for rule in rendered["spec"]["ingress"] for p in rule["ports"]} <= names


@pytest.mark.parametrize(
    "peer",
    [
        {},
        {"podSelector": {"not a key": "x"}},
        {"podSelector": {"k": "not a value"}},
        {"namespaceSelector": []},
    ],
)
def test_malformed_peers_are_refused(peer: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        nimservice({"expose": {"networkPolicy": {"clients": [peer]}}})


@pytest.mark.cluster
def test_the_apiserver_accepts_it(cluster: ExistingCluster, namespace: str) -> None:
    variants: list[dict[str, Any]] = [
        {},
        {"clients": [GATEWAY], "metricsClients": [MONITORING]},
        {"clients": []},
    ]
    for network_policy in variants:
        rendered = render_network_policy(
            nimservice({"expose": {"networkPolicy": network_policy}}, namespace=namespace)
        )
        assert rendered is not None
        rendered["metadata"].pop("ownerReferences")  # no such NimService in this namespace
        cluster.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(rendered))


@pytest.mark.cluster
def test_admission_refuses_malformed_selectors(
    cluster: ExistingCluster, nimservice_crd: str, namespace: str
) -> None:
    body = {
        "apiVersion": "nimify.dev/v1alpha1",
        "kind": "NimService",
        "metadata": {"name": "np"},
        "spec": {
            "model": {"uri": "s3://models/m.onnx"},
            "expose": {"networkPolicy": {"clients": [{"podSelector": {"bad key!": "x"}}]}},
        },
    }
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(body), check=False)
    assert result.returncode != 0
    assert (
        "spec.expose.networkPolicy.clients[0].podSelector" in result.stderr and "label keys" in result.stderr
    )
