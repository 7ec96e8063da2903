"""The registry of child kinds: one source for the watches, indexes, writer and RBAC, and no dead reasons."""

from __future__ import annotations

import re
from pathlib import Path

from nimify.api.conditions import ConditionReason, ConditionType
from nimify.controller.children import CHILD_KINDS, OPERATOR_ACCESS, Index, Write
from nimify.controller.kube import resource_of
from nimify.render.autoscaler import render_autoscaler
from nimify.render.deployment import render_deployment
from nimify.render.routes import render_http_route, render_ingress
from nimify.render.scaled_object import render_scaled_object
from nimify.render.service import render_service
from nimify.settings import OperatorSettings

CONTROLLER = Path(__file__).resolve().parents[2] / "operator" / "nimify" / "controller"


def test_kinds_and_indexes_are_unique() -> None:
    assert len({child.kind for child in CHILD_KINDS}) == len(CHILD_KINDS)
    assert len({child.index for child in CHILD_KINDS}) == len(CHILD_KINDS)
    assert {child.index for child in CHILD_KINDS} <= set(Index)


def test_verbs_follow_how_each_kind_is_written() -> None:
    verbs = {child.kind: child.verbs for child in CHILD_KINDS}
    assert verbs["Job"] == ("list", "watch", "create"), "Jobs are created once, never patched or deleted"
    assert verbs["Deployment"] == ("list", "watch", "create", "patch", "delete"), "a retired unit's goes"
    assert verbs["HorizontalPodAutoscaler"] == ("list", "watch", "create", "patch", "delete")
    assert verbs["ScaledObject"] == ("list", "watch", "create", "patch", "delete")
    assert all("get" not in child.verbs for child in CHILD_KINDS), "reads come from watches"
    assert all(child.write in Write for child in CHILD_KINDS)
    assert {access.plural for access in OPERATOR_ACCESS} >= {
        "nimservices",
        "nimservices/status",
        "events",
        "pods",
    }


def test_every_kind_has_a_client_resource_with_its_api_version() -> None:
    for child in CHILD_KINDS:
        info = resource_of(child.kind)._api_info
        assert (info.resource.group, info.resource.version, info.resource.kind, info.plural) == (
            child.group,
            child.version,
            child.kind,
            child.plural,
        )


def test_renderers_produce_the_registered_api_versions() -> None:
    from nimify.api.spec import Autoscaler
    from nimify.engine.location import EngineLocation
    from nimify.render.deployment import ServedEngine
    from tests.render.conftest import nimservice, unit_of

    by_kind = {child.kind: child.api_version for child in CHILD_KINDS}
    nim = nimservice(
        {
            "autoscaling": {"maxReplicas": 3, "targetGpuUtilization": 50},
            "expose": {"httpRoute": {"host": "a.example.com", "gatewayRef": {"name": "gw"}}},
        }
    )
    rendered = [
        render_deployment(
            nim,
            unit_of(nim, EngineLocation("k" * 64, "nimify-engines")),
            ServedEngine("abc"),
            OperatorSettings(),
        ),
        render_service(nim),
        render_autoscaler(nim, OperatorSettings()),
        render_scaled_object(nim, OperatorSettings(autoscaler=Autoscaler.KEDA)),
        render_http_route(nim),
        render_ingress(nimservice({"expose": {"ingress": {"host": "a.example.com"}}})),
    ]
    for body in rendered:
        assert body is not None and body["apiVersion"] == by_kind[body["kind"]]


def test_every_declared_condition_reason_and_type_is_emitted_by_the_controller() -> None:
    source = "\n".join(path.read_text() for path in CONTROLLER.glob("*.py"))
    used = set(re.findall(r"Condition(?:Reason|Type)\.([A-Z_]+)", source))
    declared = {member.name for member in ConditionReason} | {member.name for member in ConditionType}
    assert declared - used == set(), "declared but never emitted: remove them or report them"
