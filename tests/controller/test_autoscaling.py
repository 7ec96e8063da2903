"""ScalingActive and status.autoscaler from the HPA's, or KEDA's ScaledObject's, own reports."""

from __future__ import annotations

from typing import Any

from nimify.api import ConditionReason, ConditionStatus
from nimify.api.spec import Autoscaler
from nimify.controller.autoscaling import autoscaler_status, keda_hpa_name, scaling_verdict

HPA = Autoscaler.HORIZONTAL_POD_AUTOSCALER
KEDA = Autoscaler.KEDA


def hpa(active: str | None, reason: str = "", message: str = "", **status: Any) -> dict[str, Any]:
    conditions = [{"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale"}]
    if active is not None:
        conditions.append({"type": "ScalingActive", "status": active, "reason": reason, "message": message})
    return {"metadata": {"name": "m"}, "status": {"conditions": conditions, **status}}


def scaled_object(
    ready: str | None, reason: str = "", message: str = "", hpa_name: str | None = None
) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if ready is not None:
        status["conditions"] = [{"type": "Ready", "status": ready, "reason": reason, "message": message}]
    if hpa_name:
        status["hpaName"] = hpa_name
    return {"metadata": {"name": "m"}, "status": status}


def test_hpa_pending() -> None:
    for body in (None, hpa(None)):
        verdict = scaling_verdict(HPA, "m", body, None)
        assert (verdict.status, verdict.reason) == (
            ConditionStatus.UNKNOWN,
            ConditionReason.AUTOSCALER_PENDING,
        )


def test_hpa_active() -> None:
    verdict = scaling_verdict(HPA, "m", hpa("True", "ValidMetricFound", "the HPA was able to compute"), None)
    assert (verdict.status, verdict.reason) == (ConditionStatus.TRUE, ConditionReason.METRICS_AVAILABLE)
    assert verdict.message == "HorizontalPodAutoscaler m: ValidMetricFound: the HPA was able to compute"


def test_hpa_metric_missing() -> None:
    message = "unable to get metric nv_inference_queue_duration_us_per_request: no metrics returned"
    verdict = scaling_verdict(HPA, "m", hpa("False", "FailedGetPodsMetric", message), None)
    assert (verdict.status, verdict.reason) == (ConditionStatus.FALSE, ConditionReason.METRIC_UNAVAILABLE)
    assert "FailedGetPodsMetric" in verdict.message and message in verdict.message


def test_keda_pending_without_its_report() -> None:
    for body in (None, scaled_object(None)):
        verdict = scaling_verdict(KEDA, "m", None, body)
        assert (verdict.status, verdict.reason) == (
            ConditionStatus.UNKNOWN,
            ConditionReason.AUTOSCALER_PENDING,
        )
        assert "is KEDA installed?" in verdict.message


def test_keda_trigger_errors_are_missing_metrics_until_its_hpa_reports() -> None:
    for ready in ("False", "Unknown"):
        reason = "TriggerError" if ready == "False" else "PartialTriggerError"
        for not_yet in (None, hpa(None)):
            verdict = scaling_verdict(
                KEDA, "m", not_yet, scaled_object(ready, reason, "prometheus query returned empty")
            )
            assert (verdict.status, verdict.reason) == (
                ConditionStatus.FALSE,
                ConditionReason.METRIC_UNAVAILABLE,
            )
            assert "prometheus query returned empty" in verdict.message


def test_kedas_hpa_decides_once_it_reports() -> None:
    """KEDA's Ready flips between Ready and TriggerError while it starts a scaler; its HPA is steadier."""
    failing = hpa("False", "FailedGetExternalMetric", "unable to get external metric ml/s0-prometheus")
    for ready, reason in (("False", "TriggerError"), ("True", "ScaledObjectReady")):
        verdict = scaling_verdict(KEDA, "m", failing, scaled_object(ready, reason, "not working correctly"))
        assert (verdict.status, verdict.reason) == (ConditionStatus.FALSE, ConditionReason.METRIC_UNAVAILABLE)
        assert verdict.message == (
            "KEDA's HorizontalPodAutoscaler keda-hpa-m: FailedGetExternalMetric:"
            " unable to get external metric ml/s0-prometheus"
        )
    recovered = scaling_verdict(
        KEDA, "m", hpa("True", "ValidMetricFound"), scaled_object("False", "TriggerError")
    )
    assert recovered.status == ConditionStatus.TRUE


def test_keda_refused_scaled_object() -> None:
    verdict = scaling_verdict(KEDA, "m", None, scaled_object("False", "ScaledObjectCheckFailed", "no target"))
    assert (verdict.status, verdict.reason) == (ConditionStatus.FALSE, ConditionReason.AUTOSCALER_NOT_READY)


def test_keda_ready_defers_to_its_hpa() -> None:
    ready = scaled_object("True", "ScaledObjectReady", "", hpa_name="keda-hpa-m")
    active = scaling_verdict(KEDA, "m", hpa("True", "ValidMetricFound"), ready)
    assert active.status == ConditionStatus.TRUE and "keda-hpa-m" in active.message
    missing_cpu = scaling_verdict(KEDA, "m", hpa("False", "FailedGetResourceMetric", "no cpu"), ready)
    assert (missing_cpu.status, missing_cpu.reason) == (
        ConditionStatus.FALSE,
        ConditionReason.METRIC_UNAVAILABLE,
    )
    assert scaling_verdict(KEDA, "m", None, ready).reason == ConditionReason.AUTOSCALER_PENDING


def test_keda_hpa_name() -> None:
    assert keda_hpa_name("m", None) == "keda-hpa-m"
    assert keda_hpa_name("m", scaled_object("True", hpa_name="custom")) == "custom"


def test_autoscaler_status() -> None:
    body = hpa("True", currentReplicas=2, desiredReplicas=3, lastScaleTime="2026-01-02T03:04:05Z")
    status = autoscaler_status(HPA, "m", body, None).model_dump(mode="json", by_alias=True, exclude_none=True)
    assert status == {
        "kind": "HorizontalPodAutoscaler",
        "name": "m",
        "hpaName": "m",
        "currentReplicas": 2,
        "desiredReplicas": 3,
        "lastScaleTime": "2026-01-02T03:04:05Z",
    }
    keda = autoscaler_status(KEDA, "m", None, scaled_object(None)).model_dump(
        by_alias=True, exclude_none=True
    )
    assert keda == {"kind": "ScaledObject", "name": "m", "hpaName": "keda-hpa-m"}
