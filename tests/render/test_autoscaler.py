"""The HorizontalPodAutoscaler: autoscaling/v2 on CPU, Triton's queue time and GPU utilization."""

from __future__ import annotations

from typing import Any

from nimify.api.spec import Autoscaler
from nimify.engine.location import EngineLocation
from nimify.render.autoscaler import GPU_UTILIZATION_METRIC, QUEUE_TIME_METRIC, render_autoscaler
from nimify.render.deployment import ServedEngine, render_deployment
from nimify.settings import OperatorSettings
from tests.render.conftest import NAME, nimservice, unit_of

SETTINGS = OperatorSettings()

ALL_TARGETS: dict[str, Any] = {
    "resources": {"cpu": "4"},
    "autoscaling": {
        "minReplicas": 2,
        "maxReplicas": 6,
        "targetCpuUtilization": 80,
        "targetQueueTimeMicroseconds": 20000,
        "targetGpuUtilization": 75,
    },
}


def hpa_for(spec: dict[str, Any] | None) -> dict[str, Any]:
    hpa = render_autoscaler(nimservice(spec), SETTINGS)
    assert hpa is not None
    return hpa


def test_none_without_autoscaling() -> None:
    assert render_autoscaler(nimservice(), SETTINGS) is None
    assert render_autoscaler(nimservice({"replicas": 4}), SETTINGS) is None


def test_none_when_keda_scales() -> None:
    keda_spec = {"autoscaling": {"maxReplicas": 3, "targetCpuUtilization": 50, "autoscaler": "KEDA"}}
    assert render_autoscaler(nimservice(keda_spec | {"resources": {"cpu": "1"}}), SETTINGS) is None
    keda_default = OperatorSettings(autoscaler=Autoscaler.KEDA)
    assert render_autoscaler(nimservice(ALL_TARGETS), keda_default) is None
    # The spec's choice wins over the operator's default.
    chosen = {**ALL_TARGETS["autoscaling"], "autoscaler": "HorizontalPodAutoscaler"}
    assert render_autoscaler(nimservice({**ALL_TARGETS, "autoscaling": chosen}), keda_default) is not None


def test_targets_the_deployment(settings: OperatorSettings) -> None:
    nim = nimservice(ALL_TARGETS)
    hpa = hpa_for(ALL_TARGETS)
    deployment = render_deployment(
        nim, unit_of(nim, EngineLocation("c" * 64, "nimify-engines")), ServedEngine("0" * 16), settings
    )
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["kind"] == "HorizontalPodAutoscaler"
    assert hpa["metadata"]["name"] == NAME
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": deployment["kind"],
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] == 2
    assert hpa["spec"]["maxReplicas"] == 6


def test_metrics() -> None:
    assert hpa_for(ALL_TARGETS)["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
        },
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": QUEUE_TIME_METRIC},
                "target": {"type": "AverageValue", "averageValue": "20000"},
            },
        },
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": GPU_UTILIZATION_METRIC},
                "target": {"type": "AverageValue", "averageValue": "75"},
            },
        },
    ]


def test_only_the_targets_set() -> None:
    hpa = hpa_for({"autoscaling": {"maxReplicas": 3, "targetGpuUtilization": 60}})
    assert [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]] == [GPU_UTILIZATION_METRIC]
    assert hpa["spec"]["minReplicas"] == 1
    assert "behavior" not in hpa["spec"]


def test_behavior_passed_through_in_camel_case() -> None:
    behavior = {
        "scaleUp": {
            "selectPolicy": "Max",
            "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": 300,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
        },
    }
    hpa = hpa_for({"autoscaling": {"maxReplicas": 3, "targetGpuUtilization": 60, "behavior": behavior}})
    assert hpa["spec"]["behavior"] == behavior
