"""The autoscaling/v2 HorizontalPodAutoscaler of the Triton Deployment.

Triton's queue time and the GPU utilization reach the HPA as Pods metrics through a metrics adapter
(prometheus-adapter; charts/nimify/files/prometheus-adapter-rules.yaml defines these names).
"""

from __future__ import annotations

from typing import Any

from nimify.api import NimService
from nimify.render.identity import COMPONENT_SERVER, object_meta, server_name

QUEUE_TIME_METRIC = "nv_inference_queue_duration_us_per_request"
GPU_UTILIZATION_METRIC = "nv_gpu_utilization_percent"


def _pods_metric(name: str, average: int) -> dict[str, Any]:
    return {
        "type": "Pods",
        "pods": {"metric": {"name": name}, "target": {"type": "AverageValue", "averageValue": str(average)}},
    }


def render_autoscaler(nim: NimService) -> dict[str, Any] | None:
    scaling = nim.spec.autoscaling
    if scaling is None:
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
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": server_name(nim)},
        "minReplicas": scaling.min_replicas,
        "maxReplicas": scaling.max_replicas,
        "metrics": metrics,
    }
    if scaling.behavior is not None:
        spec["behavior"] = scaling.behavior.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": object_meta(nim, server_name(nim), COMPONENT_SERVER),
        "spec": spec,
    }
