"""The autoscaling metrics: their names and the PromQL behind them, one definition for every consumer.

The HPA path asks a custom-metrics adapter for a per-pod value (prometheus-adapter fills `<<.LabelMatchers>>`
and `<<.GroupBy>>`); the KEDA path sends Prometheus one query per NimService. Both compute the same thing
from the same series, so the two paths scale on the same numbers.

Queue time: Triton's `nv_inference_queue_duration_us` and `nv_inference_request_success` are cumulative
counters; their increases over a window give the average time a request waited (NVIDIA's recipe, with
`increase` instead of `delta` because both are counters and `increase` survives a restart). The `1 +` keeps an
idle pod at 0 instead of dividing by zero, which matters: an idle pod must report 0 for scale-down, not go
missing. GPU utilization: DCGM exporter's `DCGM_FI_DEV_GPU_UTIL` (percent) of the GPUs a pod holds, which
dcgm-exporter labels with the pod's namespace and name.
"""

from __future__ import annotations

import re

#: Triton's counters (labels: model, version; Prometheus adds namespace and pod).
QUEUE_DURATION_SERIES = "nv_inference_queue_duration_us"
REQUEST_SUCCESS_SERIES = "nv_inference_request_success"
#: DCGM exporter's GPU utilization gauge, 0-100.
GPU_UTILIZATION_SERIES = "DCGM_FI_DEV_GPU_UTIL"

#: Names of the Pods metrics the HPA asks custom.metrics.k8s.io for (the adapter rules define them).
QUEUE_TIME_METRIC = "nv_inference_queue_duration_us_per_request"
GPU_UTILIZATION_METRIC = GPU_UTILIZATION_SERIES

#: Window of the adapter's queue-time rule: two scrapes at kube-prometheus' default 30 s interval.
DEFAULT_WINDOW = "1m"
_WINDOW = re.compile(r"^[0-9]+(ms|s|m|h)$")


def _check_window(window: str) -> str:
    if not _WINDOW.match(window):
        raise ValueError(f"window {window!r} is not a Prometheus duration such as 30s or 1m")
    return window


def queue_time_per_request(selector: str, window: str, by: str | None = None) -> str:
    """Average queue time per request, in microseconds, of the series `selector` matches.

    With `by`, one value per group (a pod); without, one value over all matched pods, weighted by requests.
    """
    _check_window(window)
    group = f" by ({by})" if by else ""
    return (
        f"sum(increase({QUEUE_DURATION_SERIES}{{{selector}}}[{window}])){group}"
        f" / (1 + sum(increase({REQUEST_SUCCESS_SERIES}{{{selector}}}[{window}])){group})"
    )


def gpu_utilization(selector: str, by: str | None = None) -> str:
    """Average utilization, in percent, of the GPUs of the pods `selector` matches."""
    group = f" by ({by})" if by else ""
    return f"avg({GPU_UTILIZATION_SERIES}{{{selector}}}){group}"


def deployment_pods_selector(namespace: str, deployment: str) -> str:
    """A PromQL label matcher for the pods of one Deployment (named DEPLOYMENT-<template hash>-<suffix>).

    Prometheus anchors regular expressions, and neither the hash nor the suffix contains a dash, so the pods
    of a Deployment `a-b` never match the selector of a Deployment `a`.
    """
    if not _OBJECT_NAME.match(namespace) or not _OBJECT_NAME.match(deployment):
        raise ValueError(f"{namespace}/{deployment} is not a Kubernetes object name")
    # A dot is the only character of an object name that means something in a regex; in a PromQL string
    # its escape needs a doubled backslash.
    pods = deployment.replace(".", "\\\\.")
    return f'namespace="{namespace}",pod=~"{pods}-[a-z0-9]+-[a-z0-9]+"'


_OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
