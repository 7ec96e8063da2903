"""What the autoscaler says about itself, read from its objects: replicas for status.autoscaler and the
NimService's ScalingActive condition.

Pure functions over the bodies the operator's watches hold (the HPA it renders, or KEDA's ScaledObject and
the HPA KEDA made from it), so the controller asks the API for nothing.

- HPA: its `ScalingActive` condition is the verdict. False means it could not fetch a metric (reasons
  FailedGetResourceMetric, FailedGetPodsMetric, FailedGetExternalMetric, ...) and holds the replica count.
- KEDA: the ScaledObject's `Ready` comes first (False with TriggerError when every trigger's query fails,
  Unknown with PartialTriggerError when some do, False with ScaledObjectCheckFailed for a ScaledObject KEDA
  refuses); when Ready, KEDA's HPA's `ScalingActive` decides, as for the HPA path (it reports a missing CPU
  metric, which no Prometheus trigger covers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nimify.api import AutoscalerStatus, ConditionReason, ConditionStatus
from nimify.api.spec import Autoscaler

HPA_KIND = "HorizontalPodAutoscaler"
SCALED_OBJECT_KIND = "ScaledObject"
#: KEDA's Ready reasons that mean a trigger's metric could not be read.
KEDA_TRIGGER_ERRORS = frozenset({"TriggerError", "PartialTriggerError"})

Body = dict[str, Any]


@dataclass(frozen=True)
class ScalingVerdict:
    """The NimService's ScalingActive condition, before timestamps."""

    status: ConditionStatus
    reason: ConditionReason
    message: str


def _condition(body: Body | None, condition_type: str) -> Body | None:
    if body is None:
        return None
    conditions = body.get("status", {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == condition_type), None)


def _hpa_verdict(hpa: Body | None, what: str) -> ScalingVerdict:
    active = _condition(hpa, "ScalingActive")
    if hpa is None or active is None:
        return ScalingVerdict(
            ConditionStatus.UNKNOWN,
            ConditionReason.AUTOSCALER_PENDING,
            f"waiting for {what} to report ScalingActive",
        )
    message = _message(what, active)
    if active.get("status") == "True":
        return ScalingVerdict(ConditionStatus.TRUE, ConditionReason.METRICS_AVAILABLE, message)
    if active.get("status") == "False":
        return ScalingVerdict(ConditionStatus.FALSE, ConditionReason.METRIC_UNAVAILABLE, message)
    return ScalingVerdict(ConditionStatus.UNKNOWN, ConditionReason.AUTOSCALER_PENDING, message)


def _message(what: str, condition: Body) -> str:
    reason, message = condition.get("reason") or "", condition.get("message") or ""
    return ": ".join(part for part in (what, reason, message) if part)


def keda_hpa_name(name: str, scaled_object: Body | None) -> str:
    """The HPA KEDA made for the ScaledObject `name`: as KEDA reports it, else KEDA's default name."""
    reported = (scaled_object or {}).get("status", {}).get("hpaName")
    return str(reported) if reported else f"keda-hpa-{name}"


def scaling_verdict(
    autoscaler: Autoscaler, name: str, hpa: Body | None, scaled_object: Body | None
) -> ScalingVerdict:
    """ScalingActive from the autoscaler's objects, all named `name`; `hpa` is KEDA's for a ScaledObject."""
    if autoscaler == Autoscaler.HORIZONTAL_POD_AUTOSCALER:
        return _hpa_verdict(hpa, f"{HPA_KIND} {name}")
    ready = _condition(scaled_object, "Ready")
    if scaled_object is None or ready is None:
        return ScalingVerdict(
            ConditionStatus.UNKNOWN,
            ConditionReason.AUTOSCALER_PENDING,
            f"waiting for KEDA to report on {SCALED_OBJECT_KIND} {name} (is KEDA installed?)",
        )
    message = _message(f"{SCALED_OBJECT_KIND} {name}", ready)
    if ready.get("reason") in KEDA_TRIGGER_ERRORS and ready.get("status") != "True":
        # KEDA's Ready message is generic; its HPA's says which metric and why.
        active = _condition(hpa, "ScalingActive")
        if active is not None and active.get("status") == "False":
            message += "; " + _message(f"{HPA_KIND} {keda_hpa_name(name, scaled_object)}", active)
        return ScalingVerdict(ConditionStatus.FALSE, ConditionReason.METRIC_UNAVAILABLE, message)
    if ready.get("status") == "False":
        return ScalingVerdict(ConditionStatus.FALSE, ConditionReason.AUTOSCALER_NOT_READY, message)
    if ready.get("status") != "True":
        return ScalingVerdict(ConditionStatus.UNKNOWN, ConditionReason.AUTOSCALER_PENDING, message)
    return _hpa_verdict(hpa, f"KEDA's {HPA_KIND} {keda_hpa_name(name, scaled_object)}")


def autoscaler_status(
    autoscaler: Autoscaler, name: str, hpa: Body | None, scaled_object: Body | None
) -> AutoscalerStatus:
    """status.autoscaler: which object scales the NimService and the replica counts its HPA reports."""
    if autoscaler == Autoscaler.HORIZONTAL_POD_AUTOSCALER:
        kind, hpa_name = HPA_KIND, name
    else:
        kind, hpa_name = SCALED_OBJECT_KIND, keda_hpa_name(name, scaled_object)
    status = (hpa or {}).get("status", {})
    return AutoscalerStatus.model_validate(
        {
            "kind": kind,
            "name": name,
            "hpaName": hpa_name,
            "currentReplicas": status.get("currentReplicas"),
            "desiredReplicas": status.get("desiredReplicas"),
            "lastScaleTime": status.get("lastScaleTime"),
        }
    )
