"""The KEDA ScaledObject: the same targets as the HPA, as Prometheus and cpu triggers."""

from __future__ import annotations

from typing import Any

from nimify.api.spec import Autoscaler
from nimify.autoscaling.queries import deployment_pods_selector, gpu_utilization, queue_time_per_request
from nimify.render.autoscaler import render_autoscaler
from nimify.render.scaled_object import render_scaled_object
from nimify.settings import OperatorSettings
from tests.render.conftest import NAME, NAMESPACE, UID, nimservice

KEDA = OperatorSettings(
    autoscaler=Autoscaler.KEDA,
    keda_prometheus_url="http://prometheus.monitoring.svc:9090",
    keda_query_window="30s",
)
ALL_TARGETS: dict[str, Any] = {
    "resources": {"cpu": "4", "gpus": 1},
    "autoscaling": {
        "minReplicas": 1,
        "maxReplicas": 3,
        "targetCpuUtilization": 80,
        "targetQueueTimeMicroseconds": 20000,
        "targetGpuUtilization": 75,
    },
}


def scaled_object(spec: dict[str, Any], settings: OperatorSettings = KEDA) -> dict[str, Any]:
    rendered = render_scaled_object(nimservice(spec), settings)
    assert rendered is not None
    return rendered


def test_only_when_keda_scales() -> None:
    assert render_scaled_object(nimservice(), KEDA) is None
    assert render_scaled_object(nimservice(ALL_TARGETS), OperatorSettings()) is None
    chosen = {**ALL_TARGETS, "autoscaling": {**ALL_TARGETS["autoscaling"], "autoscaler": "KEDA"}}
    assert render_scaled_object(nimservice(chosen), OperatorSettings()) is not None


def test_never_both_autoscalers() -> None:
    for settings in (KEDA, OperatorSettings()):
        for choice in (None, "KEDA", "HorizontalPodAutoscaler"):
            spec = {**ALL_TARGETS, "autoscaling": {**ALL_TARGETS["autoscaling"], "autoscaler": choice}}
            rendered = [
                render_scaled_object(nimservice(spec), settings),
                render_autoscaler(nimservice(spec), settings),
            ]
            assert sum(r is not None for r in rendered) == 1


def test_targets_the_deployment_and_is_owned() -> None:
    so = scaled_object(ALL_TARGETS)
    assert so["apiVersion"] == "keda.sh/v1alpha1" and so["kind"] == "ScaledObject"
    assert so["metadata"]["name"] == NAME and so["metadata"]["namespace"] == NAMESPACE
    assert so["metadata"]["ownerReferences"][0]["uid"] == UID
    assert so["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME}
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (1, 3)
    assert "advanced" not in so["spec"]


def test_triggers() -> None:
    pods = deployment_pods_selector(NAMESPACE, NAME)
    assert scaled_object(ALL_TARGETS)["spec"]["triggers"] == [
        {
            "type": "prometheus",
            "name": "queue-time",
            "metricType": "Value",
            "metadata": {
                "serverAddress": "http://prometheus.monitoring.svc:9090",
                "query": queue_time_per_request(pods, "30s"),
                "threshold": "20000",
                "ignoreNullValues": "false",
            },
        },
        {
            "type": "prometheus",
            "name": "gpu-utilization",
            "metricType": "Value",
            "metadata": {
                "serverAddress": "http://prometheus.monitoring.svc:9090",
                "query": gpu_utilization(pods),
                "threshold": "75",
                "ignoreNullValues": "false",
            },
        },
        {"type": "cpu", "name": "cpu", "metricType": "Utilization", "metadata": {"value": "80"}},
    ]


def test_behavior_goes_to_kedas_hpa() -> None:
    behavior = {
        "scaleDown": {
            "stabilizationWindowSeconds": 10,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 5}],
        }
    }
    spec = {"autoscaling": {"maxReplicas": 3, "targetQueueTimeMicroseconds": 500, "behavior": behavior}}
    so = scaled_object(spec)
    assert so["spec"]["advanced"] == {"horizontalPodAutoscalerConfig": {"behavior": behavior}}
    assert [t["name"] for t in so["spec"]["triggers"]] == ["queue-time"]
