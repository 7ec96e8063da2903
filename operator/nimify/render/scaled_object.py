"""The KEDA ScaledObject of the Triton Deployment (when KEDA is the autoscaler).

The same targets as the HPA: Triton's queue time per request and DCGM's GPU utilization as Prometheus
triggers, CPU as KEDA's cpu trigger (a Resource metric from metrics.k8s.io). KEDA creates and owns an HPA
(`keda-hpa-<name>`) from it and serves the Prometheus values through external.metrics.k8s.io.

The Prometheus triggers use `metricType: Value`: the query already averages over the NimService's pods, so
the HPA computes replicas = ceil(current * value / threshold), exactly what a Pods metric with an
AverageValue target computes from per-pod values. `ignoreNullValues: "false"` makes a query that returns
nothing (Prometheus not scraping the pods) an error KEDA reports, instead of a silent 0 that would scale
down. minReplicaCount is at least 1 (spec.autoscaling.minReplicas), so KEDA never scales to zero.
"""

from __future__ import annotations

from typing import Any

from nimify.api import NimService
from nimify.api.spec import Autoscaler
from nimify.autoscaling.choice import chosen_autoscaler
from nimify.autoscaling.queries import deployment_pods_selector, gpu_utilization, queue_time_per_request
from nimify.render.autoscaler import behavior, scale_target
from nimify.render.identity import COMPONENT_SERVER, object_meta, server_name
from nimify.settings import OperatorSettings

API_VERSION = "keda.sh/v1alpha1"
KIND = "ScaledObject"
#: Trigger names; KEDA names the external metrics after them (s<index>-<name>... in status).
QUEUE_TIME_TRIGGER = "queue-time"
GPU_UTILIZATION_TRIGGER = "gpu-utilization"
CPU_TRIGGER = "cpu"


def keda_hpa_name(nim: NimService) -> str:
    """The HPA KEDA creates for the ScaledObject (KEDA's default name)."""
    return f"keda-hpa-{server_name(nim)}"


def _prometheus_trigger(name: str, query: str, threshold: int, settings: OperatorSettings) -> dict[str, Any]:
    return {
        "type": "prometheus",
        "name": name,
        "metricType": "Value",
        "metadata": {
            "serverAddress": settings.keda_prometheus_url,
            "query": query,
            "threshold": str(threshold),
            "ignoreNullValues": "false",
        },
    }


def render_scaled_object(nim: NimService, settings: OperatorSettings) -> dict[str, Any] | None:
    """The ScaledObject, or None when the NimService has no autoscaling or the HPA scales it."""
    scaling = nim.spec.autoscaling
    if scaling is None or chosen_autoscaler(nim, settings) != Autoscaler.KEDA:
        return None
    pods = deployment_pods_selector(nim.metadata.namespace or "", server_name(nim))
    triggers: list[dict[str, Any]] = []
    if scaling.target_queue_time_microseconds is not None:
        triggers.append(
            _prometheus_trigger(
                QUEUE_TIME_TRIGGER,
                queue_time_per_request(pods, settings.keda_query_window),
                scaling.target_queue_time_microseconds,
                settings,
            )
        )
    if scaling.target_gpu_utilization is not None:
        triggers.append(
            _prometheus_trigger(
                GPU_UTILIZATION_TRIGGER, gpu_utilization(pods), scaling.target_gpu_utilization, settings
            )
        )
    if scaling.target_cpu_utilization is not None:
        triggers.append(
            {
                "type": "cpu",
                "name": CPU_TRIGGER,
                "metricType": "Utilization",
                "metadata": {"value": str(scaling.target_cpu_utilization)},
            }
        )
    spec: dict[str, Any] = {
        "scaleTargetRef": scale_target(nim),
        "minReplicaCount": scaling.min_replicas,
        "maxReplicaCount": scaling.max_replicas,
        "triggers": triggers,
    }
    if (rendered := behavior(scaling)) is not None:
        spec["advanced"] = {"horizontalPodAutoscalerConfig": {"behavior": rendered}}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": object_meta(nim, server_name(nim), COMPONENT_SERVER),
        "spec": spec,
    }
