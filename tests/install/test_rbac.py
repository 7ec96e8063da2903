"""The operator's RBAC: generated from the code's list of what it touches, least privilege, and fresh."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nimify.api import NimService
from nimify.api.spec import Autoscaler
from nimify.cli.run import kopf_settings
from nimify.controller.children import CHILD_BY_KIND, CHILD_KINDS, OPERATOR_ACCESS, Write
from nimify.engine.location import engine_location
from nimify.install.rbac import (
    NOT_USED_BY_THE_CHART,
    operator_grants,
    render_rbac_template,
)
from nimify.render.autoscaler import render_autoscaler
from nimify.render.build_job import render_build_job
from nimify.render.deployment import ServedEngine, render_deployment
from nimify.render.disruption_budget import render_disruption_budget
from nimify.render.engine_claim import render_engine_claim
from nimify.render.scaled_object import render_scaled_object
from nimify.render.service import render_service
from nimify.render.triton_config import CONFIG_KEY, render_triton_config
from nimify.settings import OperatorSettings
from tests.render.conftest import unit_of

CHART = Path(__file__).resolve().parents[2] / "charts" / "nimify"
GRANTS = {(grant.group, grant.resource): grant for grant in operator_grants()}


def test_chart_template_matches_the_generator() -> None:
    kept = (CHART / "templates" / "rbac.yaml").read_text()
    assert kept == render_rbac_template(), (
        "charts/nimify/templates/rbac.yaml is stale: run `bash hack/generate.sh`"
    )


def test_every_child_kind_is_watched_and_written_as_the_registry_says() -> None:
    for child in CHILD_KINDS:
        verbs = set(GRANTS[(child.group, child.plural)].verbs)
        assert {"list", "watch"} <= verbs, child.kind
        assert ("patch" in verbs) is (child.write is Write.APPLY), child.kind
        assert ("delete" in verbs) is child.prunable, child.kind
        assert "create" in verbs, child.kind


def test_everything_else_the_registry_lists_is_granted_or_explained() -> None:
    for access in OPERATOR_ACCESS:
        key = (access.group, access.plural)
        assert key in GRANTS or key in NOT_USED_BY_THE_CHART, key
        if key in GRANTS:
            assert GRANTS[key].verbs == tuple(v for v in GRANTS[key].verbs if v in access.verbs), key


def test_namespaces_go_unlisted_in_both_ways_the_chart_runs_the_operator() -> None:
    # Cluster-wide, kopf never lists Namespaces; with exact names, nimify run turns its scanning off.
    assert kopf_settings(["team-a", "team-b"]).scanning.disabled is True
    assert kopf_settings([]).scanning.disabled is False
    assert kopf_settings(["team-*"]).scanning.disabled is False, "globs need the Namespace listing"


def _full_nimservice() -> NimService:
    return NimService.model_validate(
        {
            "apiVersion": "nimify.dev/v1alpha1",
            "kind": "NimService",
            "metadata": {"name": "full", "namespace": "ml", "uid": "u-1", "generation": 1},
            "spec": {
                "model": {"uri": "s3://models/full/model.onnx", "sha256": "ab" * 32},
                "autoscaling": {"maxReplicas": 4, "targetQueueTimeMicroseconds": 20000},
                "storage": {"size": "20Gi"},
            },
        }
    )


def test_every_kind_the_renderers_produce_may_be_written_as_the_controller_does() -> None:
    settings = OperatorSettings()
    nim = _full_nimservice()
    location = engine_location(nim, settings)
    rendered: list[dict[str, Any] | None] = [
        render_build_job(nim, unit_of(nim, location), settings),
        render_engine_claim(nim, location.claim, settings),
        render_triton_config(nim, unit_of(nim, location), {CONFIG_KEY: "name: 'full'\n"}),
        render_deployment(nim, unit_of(nim, location), ServedEngine("0" * 16), settings),
        render_service(nim),
        render_autoscaler(nim, settings),
        render_scaled_object(nim, settings.model_copy(update={"autoscaler": Autoscaler.KEDA})),
        render_disruption_budget(nim),
    ]
    for obj in rendered:
        assert obj is not None
        child = CHILD_BY_KIND[obj["kind"]]
        group, plural = child.group, child.plural
        assert obj["apiVersion"] == child.api_version, obj["kind"]
        # Immutable Jobs are created once; everything else is server-side applied, which creates too.
        wanted = {"create"} if obj["kind"] == "Job" else {"create", "patch"}
        assert wanted <= set(GRANTS[(group, plural)].verbs), obj["kind"]


@pytest.mark.parametrize(
    ("group", "resource"),
    [
        ("", "nodes"),
        ("", "pods/exec"),
        ("", "pods/log"),
        ("", "pods/attach"),
        ("", "pods/portforward"),
        ("", "serviceaccounts"),
        ("", "serviceaccounts/token"),
        ("", "namespaces"),
        ("", "persistentvolumes"),
        ("rbac.authorization.k8s.io", "roles"),
        ("rbac.authorization.k8s.io", "clusterroles"),
        ("rbac.authorization.k8s.io", "rolebindings"),
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
    ],
)
def test_never_granted(group: str, resource: str) -> None:
    assert (group, resource) not in GRANTS


def test_secrets_are_read_by_name_only() -> None:
    """A model image's pull secrets (spec.imagePullSecrets) are read by name: never listed or watched, so
    the operator never holds every Secret of a namespace."""
    assert GRANTS[("", "secrets")].verbs == ("get",)


def test_no_wildcards_no_escalation_verbs_nothing_written_it_does_not_own() -> None:
    for grant in operator_grants():
        assert "*" not in grant.verbs and "*" not in grant.resource and grant.group != "*"
        assert not {"escalate", "bind", "impersonate", "update", "deletecollection"} & set(grant.verbs)
    assert GRANTS[("", "pods")].verbs == ("list", "watch"), "pods are only watched, never created or changed"
    assert GRANTS[("batch", "jobs")].verbs == ("list", "watch", "create"), "a Job is never changed"


def test_only_kopf_discovery_is_cluster_scoped_and_read_only() -> None:
    cluster_scoped = [grant for grant in operator_grants() if grant.cluster_scoped]
    assert [(g.group, g.resource, g.verbs) for g in cluster_scoped] == [
        ("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch"))
    ]


def test_namespaced_mode_renders_roles_without_cluster_scoped_rules() -> None:
    template = render_rbac_template()
    namespaced, _, cluster = template.partition("{{- else }}")
    assert "kind: Role\n" in namespaced and "kind: ClusterRole\n" not in namespaced
    assert "customresourcedefinitions" not in namespaced
    assert "customresourcedefinitions" in cluster
