"""The autoscaling/v2 HorizontalPodAutoscaler of the Triton Deployment (when the HPA is the autoscaler).

Triton's queue time and DCGM's GPU utilization reach the HPA as Pods metrics through a custom-metrics adapter;
`nimify.autoscaling.adapter_rules` holds prometheus-adapter's rules that define these names (the chart ships
them as charts/nimify/files/prometheus-adapter-rules.yaml).
"""

from __future__ import annotations

from typing import Any

from nimify.api import NimService
from nimify.api.spec import Autoscaler, AutoscalingSpec
from nimify.autoscaling.choice import chosen_autoscaler
from nimify.autoscaling.queries import GPU_UTILIZATION_METRIC, QUEUE_TIME_METRIC
from nimify.render.identity import COMPONENT_SERVER, object_meta, server_name
from nimify.settings import OperatorSettings

__all__ = ["GPU_UTILIZATION_METRIC", "QUEUE_TIME_METRIC", "behavior", "render_autoscaler", "scale_target"]


def _pods_metric(name: str, average: int) -> dict[str, Any]:
    return {
        "type": "Pods",
        "pods": {"metric": {"name": name}, "target": {"type": "AverageValue", "averageValue": str(average)}},
    }


def scale_target(nim: NimService) -> dict[str, str]:
    """The Deployment an autoscaler scales (HPA scaleTargetRef, KEDA's scaleTargetRef)."""
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": server_name(nim)}


def behavior(scaling: AutoscalingSpec) -> dict[str, Any] | None:
    """spec.autoscaling.behavior as autoscaling/v2 HorizontalPodAutoscalerBehavior (KEDA passes it on too)."""
    if scaling.behavior is None:
        return None
    rendered: dict[str, Any] = scaling.behavior.model_dump(mode="json", by_alias=True, exclude_none=True)
    return rendered


def render_autoscaler(nim: NimService, settings: OperatorSettings) -> dict[str, Any] | None:
    """The HPA, or None when the NimService has no autoscaling or KEDA scales it."""
    scaling = nim.spec.autoscaling
    if scaling is None or chosen_autoscaler(nim, settings) != Autoscaler.HORIZONTAL_POD_AUTOSCALER:
        return None
    metrics: list[dict[str, Any]] = []
    if scaling.target_cpu_utilization is not None:
        metrics.append(
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": scaling.target_cpu_utilization},
                },
            }
        )
    if scaling.target_queue_time_microseconds is not None:
        metrics.append(_pods_metric(QUEUE_TIME_METRIC, scaling.target_queue_time_microseconds))
    if scaling.target_gpu_utilization is not None:
        metrics.append(_pods_metric(GPU_UTILIZATION_METRIC, scaling.target_gpu_utilization))
    spec: dict[str, Any] = {
        "scaleTargetRef": scale_target(nim),
        "minReplicas": scaling.min_replicas,
        "maxReplicas": scaling.max_replicas,
        "metrics": metrics,
    }
    if (rendered := behavior(scaling)) is not None:
        spec["behavior"] = rendered
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": object_meta(nim, server_name(nim), COMPONENT_SERVER),
        "spec": spec,
    }
