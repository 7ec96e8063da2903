"""Names, labels and ownership every child carries: what `kubectl get -l`, garbage collection and dashboards
rely on."""

from __future__ import annotations

from typing import Any

import pytest

from nimify.api import API_VERSION, KIND, NimService
from nimify.api.spec import Autoscaler
from nimify.engine.location import dedicated_claim_name, engine_location
from nimify.render.autoscaler import render_autoscaler
from nimify.render.build_job import render_build_job
from nimify.render.deployment import ServedEngine, render_deployment
from nimify.render.disruption_budget import render_disruption_budget
from nimify.render.engine_claim import render_engine_claim
from nimify.render.identity import (
    COMPONENT_BUILD,
    COMPONENT_SERVER,
    COMPONENT_STORAGE,
    build_job_name,
    labels,
    owner_reference,
    server_name,
    server_selector,
    triton_config_name,
)
from nimify.render.scaled_object import render_scaled_object
from nimify.render.service import render_service
from nimify.render.triton_config import CONFIG_KEY, render_triton_config
from nimify.settings import OperatorSettings
from tests.render.conftest import NAME, NAMESPACE, UID, nimservice, unit_of

RECOMMENDED = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
)
# Everything a NimService can own at once: autoscaled (HPA, PDB) with a dedicated engine claim.
FULL_SPEC: dict[str, Any] = {
    "autoscaling": {"maxReplicas": 4, "targetQueueTimeMicroseconds": 20000},
    "storage": {"size": "20Gi"},
}


def children(nim: NimService, settings: OperatorSettings) -> dict[str, dict[str, Any]]:
    location = engine_location(nim, settings)
    rendered = {
        "Job": render_build_job(nim, unit_of(nim, location), settings),
        "PersistentVolumeClaim": render_engine_claim(nim, location.claim, settings),
        "ConfigMap": render_triton_config(nim, unit_of(nim, location), {CONFIG_KEY: "name: 'resnet50'\n"}),
        "Deployment": render_deployment(
            nim, unit_of(nim, location), ServedEngine("0123456789abcdef"), settings
        ),
        "Service": render_service(nim),
        "HorizontalPodAutoscaler": render_autoscaler(nim, settings),
        # The other autoscaler, as the operator renders it when KEDA is chosen.
        "ScaledObject": render_scaled_object(
            nim, settings.model_copy(update={"autoscaler": Autoscaler.KEDA})
        ),
        "PodDisruptionBudget": render_disruption_budget(nim),
    }
    assert all(obj is not None for obj in rendered.values()), "FULL_SPEC must render every child"
    return {kind: obj for kind, obj in rendered.items() if obj is not None}


def test_every_kind_of_child_is_rendered(settings: OperatorSettings) -> None:
    rendered = children(nimservice(FULL_SPEC), settings)
    assert {kind: obj["kind"] for kind, obj in rendered.items()} == {kind: kind for kind in rendered}


@pytest.mark.parametrize(
    "kind",
    [
        "Job",
        "PersistentVolumeClaim",
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "ScaledObject",
        "PodDisruptionBudget",
    ],
)
def test_child_has_recommended_labels_and_controller_owner(kind: str, settings: OperatorSettings) -> None:
    meta = children(nimservice(FULL_SPEC), settings)[kind]["metadata"]
    assert meta["namespace"] == NAMESPACE
    assert all(meta["labels"].get(key) for key in RECOMMENDED), meta["labels"]
    assert meta["labels"]["app.kubernetes.io/instance"] == NAME
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "nimify-operator"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": NAME,
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


@pytest.mark.parametrize(
    ("kind", "component"),
    [
        ("Job", COMPONENT_BUILD),
        ("PersistentVolumeClaim", COMPONENT_STORAGE),
        ("ConfigMap", COMPONENT_SERVER),
        ("Deployment", COMPONENT_SERVER),
        ("Service", COMPONENT_SERVER),
        ("HorizontalPodAutoscaler", COMPONENT_SERVER),
        ("ScaledObject", COMPONENT_SERVER),
        ("PodDisruptionBudget", COMPONENT_SERVER),
    ],
)
def test_component_label(kind: str, component: str, settings: OperatorSettings) -> None:
    meta = children(nimservice(FULL_SPEC), settings)[kind]["metadata"]
    assert meta["labels"]["app.kubernetes.io/component"] == component


def test_label_values_are_valid_label_values() -> None:
    for value in labels(nimservice(), COMPONENT_SERVER).values():
        assert len(value) <= 63 and value.replace("-", "").replace(".", "").isalnum()


def test_names_are_deterministic(settings: OperatorSettings) -> None:
    first = children(nimservice(FULL_SPEC), settings)
    again = children(nimservice(FULL_SPEC), settings)
    assert first == again
    names = {kind: obj["metadata"]["name"] for kind, obj in first.items()}
    location = engine_location(nimservice(FULL_SPEC), settings)
    assert names == {
        "Job": build_job_name(location.claim, location.cache_key, location.conversion_key),
        "PersistentVolumeClaim": f"{NAME}-engines",
        "ConfigMap": f"{NAME}-triton-config",
        "Deployment": NAME,
        "Service": NAME,
        "HorizontalPodAutoscaler": NAME,
        "ScaledObject": NAME,
        "PodDisruptionBudget": NAME,
    }


def test_name_helpers() -> None:
    nim = nimservice(name="bert")
    assert server_name(nim) == "bert"
    assert triton_config_name(nim) == "bert-triton-config"
    assert dedicated_claim_name(nim) == "bert-engines"


def test_owner_reference_can_be_non_controlling() -> None:
    ref = owner_reference(nimservice(), controller=False)
    assert ref["controller"] is False and ref["uid"] == UID and ref["name"] == NAME


def test_server_selector_is_stable_subset_of_labels() -> None:
    nim = nimservice()
    selector = server_selector(nim)
    assert selector.items() <= labels(nim, COMPONENT_SERVER).items()
    # Only labels that never change for one NimService: the Deployment selector is immutable.
    assert set(selector) == {
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/component",
    }


def test_selectors_of_two_nimservices_do_not_overlap() -> None:
    assert server_selector(nimservice(name="a")) != server_selector(nimservice(name="b"))


KEY_A, KEY_B = "a" * 64, "b" * 64


@pytest.mark.parametrize(
    ("claim", "key", "same"),
    [
        ("nimify-engines", KEY_A, True),
        ("nimify-engines", KEY_B, False),
        ("resnet50-engines", KEY_A, False),
    ],
)
def test_build_job_name_follows_claim_and_key(claim: str, key: str, same: bool) -> None:
    reference = build_job_name("nimify-engines", KEY_A)
    assert (build_job_name(claim, key) == reference) is same


def test_build_job_name_follows_the_conversion_key() -> None:
    assert build_job_name("nimify-engines", KEY_A, "check-1") != build_job_name(
        "nimify-engines", KEY_A, "check-2"
    )


def test_build_job_name_is_a_valid_job_name() -> None:
    name = build_job_name("a-very-long-claim-name-" * 5, KEY_A)
    # Job names end up in the pods' job-name label: a DNS label of at most 63 characters.
    assert len(name) <= 63
    assert name.startswith("nimify-engine-")
    assert name.replace("-", "").isalnum() and name == name.lower()
