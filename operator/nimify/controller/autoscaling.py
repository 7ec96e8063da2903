"""What the autoscaler says about itself, read from its objects: replicas for status.autoscaler and the
NimService's ScalingActive condition.

Pure functions over the bodies the operator's watches hold (the HPA it renders, or KEDA's ScaledObject and
the HPA KEDA made from it: KEDA copies the ScaledObject's labels onto it, so the same managed-by watch sees
it), so the controller asks the API for nothing.

- HPA: its `ScalingActive` condition is the verdict. False means it could not fetch a metric (reasons
  FailedGetResourceMetric, FailedGetPodsMetric, FailedGetExternalMetric, ...) and holds the replica count.
- KEDA: a ScaledObject KEDA refuses (Ready False: ScaledObjectCheckFailed, ErrorScalingTarget, ...) is
  AutoscalerNotReady. Otherwise KEDA's HPA decides once it reports `ScalingActive` (it also reports a missing
  CPU metric, which no Prometheus trigger covers); before that, KEDA's TriggerError (every trigger's query
  fails) or PartialTriggerError (some do) means the metric is missing.
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
    trigger_error = ready.get("reason") in KEDA_TRIGGER_ERRORS and ready.get("status") != "True"
    if ready.get("status") == "False" and not trigger_error:
        return ScalingVerdict(ConditionStatus.FALSE, ConditionReason.AUTOSCALER_NOT_READY, message)
    # KEDA's HPA is what computes the replicas (through KEDA's metrics server): once it has a verdict it is
    # the one that counts. KEDA's own Ready flips between Ready and TriggerError while it starts a scaler.
    hpa_name = keda_hpa_name(name, scaled_object)
    if _condition(hpa, "ScalingActive") is not None:
        return _hpa_verdict(hpa, f"KEDA's {HPA_KIND} {hpa_name}")
    if trigger_error:
        return ScalingVerdict(ConditionStatus.FALSE, ConditionReason.METRIC_UNAVAILABLE, message)
    if ready.get("status") != "True":
        return ScalingVerdict(ConditionStatus.UNKNOWN, ConditionReason.AUTOSCALER_PENDING, message)
    return _hpa_verdict(hpa, f"KEDA's {HPA_KIND} {hpa_name}")


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
