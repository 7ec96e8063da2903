"""spec.autoscaling: replica bounds, targets and scaling rates of the autoscaler."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from nimify.api.base import ApiModel
from nimify.api.validation import Rule, ValidationReason


class Autoscaler(StrEnum):
    """Which autoscaler owns the replica count."""

    HORIZONTAL_POD_AUTOSCALER = "HorizontalPodAutoscaler"
    KEDA = "KEDA"


class ScalingPolicyType(StrEnum):
    """The unit of a scaling policy's value."""

    PODS = "Pods"
    PERCENT = "Percent"


class SelectPolicy(StrEnum):
    """Which of several policies wins."""

    MAX = "Max"
    MIN = "Min"
    DISABLED = "Disabled"


class ScalingPolicy(ApiModel):
    """One limit on how fast the replica count may change."""

    type: ScalingPolicyType = Field(strict=False)
    """Pods: value is a number of replicas. Percent: value is a percentage of the current replicas."""

    value: int = Field(ge=1, le=10_000)
    """Largest change allowed within periodSeconds."""

    period_seconds: int = Field(ge=1, le=1800)
    """The window the value applies to."""


class ScalingRules(ApiModel):
    """How the autoscaler changes the replica count in one direction (autoscaling/v2 HPAScalingRules)."""

    stabilization_window_seconds: int | None = Field(default=None, ge=0, le=3600)
    """Past recommendations considered before changing; damps flapping."""

    select_policy: SelectPolicy | None = Field(default=None, strict=False)
    """Which policy applies when several do: Max (default) allows the largest change."""

    policies: list[ScalingPolicy] | None = Field(default=None, max_length=8)
    """Limits on the rate of change: at least one where given; the HorizontalPodAutoscaler's defaults when
    left out."""

    cel_rules = (
        # The HPA refuses an empty list ("must specify at least one Policy"), and KEDA's HPA with it; an empty
        # list says neither "no limit" nor "the defaults" clearly, so it is refused rather than dropped.
        Rule(
            cel="!has(self.policies) || size(self.policies) > 0",
            message="policies must list at least one policy (leave policies out for the autoscaler's"
            " defaults)",
            holds=lambda rules: rules.policies is None or len(rules.policies) > 0,
            field_path=".policies",
        ),
    )


class ScalingBehavior(ApiModel):
    """Scale-up and scale-down rates (autoscaling/v2 HorizontalPodAutoscalerBehavior)."""

    scale_up: ScalingRules | None = None
    """How replicas are added."""

    scale_down: ScalingRules | None = None
    """How replicas are removed."""


class AutoscalingSpec(ApiModel):
    """An autoscaler owns the replica count: an autoscaling/v2 HorizontalPodAutoscaler (queue time and GPU
    utilization as Pods metrics from a custom-metrics adapter such as prometheus-adapter) or a KEDA
    ScaledObject (the same targets as Prometheus queries). Queue time is Triton's
    nv_inference_queue_duration_us per request, GPU utilization DCGM's DCGM_FI_DEV_GPU_UTIL."""

    autoscaler: Autoscaler | None = Field(default=None, strict=False)
    """HorizontalPodAutoscaler or KEDA; the operator's NIMIFY_AUTOSCALER setting (HorizontalPodAutoscaler
    unless changed) when left out."""

    min_replicas: int = Field(default=1, ge=1, le=1000)
    """Fewest replicas."""

    max_replicas: int = Field(ge=1, le=1000)
    """Most replicas."""

    target_cpu_utilization: int | None = Field(default=None, ge=1, le=1000)
    """Average CPU use to aim for, in percent of resources.cpu."""

    target_gpu_utilization: int | None = Field(default=None, ge=1, le=100)
    """Average GPU utilization to aim for, in percent."""

    target_queue_time_microseconds: int | None = Field(default=None, ge=1, le=60_000_000)
    """Average time a request waits in Triton's queue to aim for, in microseconds."""

    behavior: ScalingBehavior | None = None
    """Scaling rates; the HorizontalPodAutoscaler's defaults when left out."""

    cel_rules = (
        Rule(
            cel="self.maxReplicas >= self.minReplicas",
            message="maxReplicas must be at least minReplicas",
            holds=lambda scaling: scaling.max_replicas >= scaling.min_replicas,
            field_path=".maxReplicas",
        ),
        Rule(
            cel="has(self.targetCpuUtilization) || has(self.targetGpuUtilization)"
            " || has(self.targetQueueTimeMicroseconds)",
            message="set at least one target: targetCpuUtilization, targetGpuUtilization or"
            " targetQueueTimeMicroseconds",
            holds=lambda scaling: any(
                target is not None
                for target in (
                    scaling.target_cpu_utilization,
                    scaling.target_gpu_utilization,
                    scaling.target_queue_time_microseconds,
                )
            ),
            reason=ValidationReason.REQUIRED,
        ),
    )
