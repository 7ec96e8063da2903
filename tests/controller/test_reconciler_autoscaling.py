"""The Reconciler's autoscaling: one autoscaler at a time (HPA or KEDA ScaledObject), the switch between them,
what the NimService reports from the autoscaler's own status, and KEDA missing from the cluster."""

from __future__ import annotations

from typing import Any

from tests.controller.test_reconciler import AUTOSCALING, Harness
from tests.render.conftest import NAME, NAMESPACE

KEDA = {**AUTOSCALING, "autoscaler": "KEDA"}


def kedas_hpa(active: str, reason: str, message: str, current: int = 1, desired: int = 1) -> dict[str, Any]:
    """The HPA KEDA makes for the ScaledObject: owned by it, with the ScaledObject's (our) labels."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": f"keda-hpa-{NAME}",
            "namespace": NAMESPACE,
            "labels": {"nimify.dev/nimservice": NAME, "app.kubernetes.io/managed-by": "nimify-operator"},
            "ownerReferences": [{"kind": "ScaledObject", "name": NAME, "uid": "so", "controller": True}],
        },
        "status": {
            "currentReplicas": current,
            "desiredReplicas": desired,
            "conditions": [{"type": "ScalingActive", "status": active, "reason": reason, "message": message}],
        },
    }


def keda_reports(h: Harness, ready: str, reason: str, message: str = "") -> None:
    """KEDA's operator writes the ScaledObject's status."""
    scaled_object = h.cluster.live("ScaledObject", NAME)
    scaled_object["status"] = {
        "hpaName": f"keda-hpa-{NAME}",
        "externalMetricNames": ["s0-prometheus"],
        "conditions": [{"type": "Ready", "status": ready, "reason": reason, "message": message}],
    }


async def test_keda_gets_a_scaled_object_and_no_hpa() -> None:
    h = Harness({"autoscaling": KEDA})
    await h.converge()
    scaled_object = h.cluster.live("ScaledObject", NAME)
    assert scaled_object["spec"]["scaleTargetRef"]["name"] == NAME
    assert h.cluster.get("HorizontalPodAutoscaler", NAME) is None
    active = h.condition("ScalingActive")
    assert (active["status"], active["reason"]) == ("Unknown", "AutoscalerPending")
    assert h.body["status"]["autoscaler"] == {
        "kind": "ScaledObject",
        "name": NAME,
        "hpaName": f"keda-hpa-{NAME}",
    }
    assert h.condition("Ready")["status"] == "True", "scaling does not decide Ready"


async def test_switching_deletes_the_other_autoscaler_first() -> None:
    h = Harness({"autoscaling": AUTOSCALING})
    await h.converge()
    assert h.cluster.get("HorizontalPodAutoscaler", NAME) is not None
    h.set_spec({"autoscaling": {"autoscaler": "KEDA"}})
    h.cluster.forget_calls()
    await h.reconcile()
    verbs = h.verbs()
    assert verbs.index(("delete", "HorizontalPodAutoscaler")) < verbs.index(("apply", "ScaledObject"))
    assert h.cluster.get("HorizontalPodAutoscaler", NAME) is None

    h.set_spec({"autoscaling": {"autoscaler": "HorizontalPodAutoscaler"}})
    h.cluster.forget_calls()
    await h.reconcile()
    verbs = h.verbs()
    assert verbs.index(("delete", "ScaledObject")) < verbs.index(("apply", "HorizontalPodAutoscaler"))
    assert h.body["status"]["autoscaler"]["kind"] == "HorizontalPodAutoscaler"


async def test_a_missing_metric_is_reported_with_kedas_words_and_a_warning() -> None:
    h = Harness({"autoscaling": KEDA})
    await h.converge()
    keda_reports(h, "False", "TriggerError", "Triggers defined in ScaledObject are not working correctly")
    h.cluster.put(
        kedas_hpa("False", "FailedGetExternalMetric", "unable to get external metric s0-prometheus")
    )
    h.cluster.forget_calls()
    await h.reconcile()
    active = h.condition("ScalingActive")
    assert (active["status"], active["reason"]) == ("False", "MetricUnavailable")
    assert "unable to get external metric s0-prometheus" in active["message"]
    assert next(e for e in h.cluster.events if e[1] == "MetricUnavailable")[0] == "Warning"
    assert h.cluster.get("HorizontalPodAutoscaler", f"keda-hpa-{NAME}") is not None, (
        "KEDA's HPA is not the operator's to delete"
    )

    # KEDA gets its metric and scales: the NimService reports the HPA's replicas, once per change.
    keda_reports(h, "True", "ScaledObjectReady")
    h.cluster.put(kedas_hpa("True", "ValidMetricFound", "the HPA was able to compute", current=1, desired=3))
    await h.reconcile()
    active = h.condition("ScalingActive")
    assert (active["status"], active["reason"]) == ("True", "MetricsAvailable")
    assert h.body["status"]["autoscaler"]["desiredReplicas"] == 3
    h.cluster.forget_calls()
    await h.reconcile()
    assert h.cluster.calls == [], "an unchanged autoscaler costs no write"


async def test_without_keda_installed_the_scaled_object_says_so() -> None:
    h = Harness({"autoscaling": KEDA})
    h.cluster.refuse("ScaledObject", "404 page not found", code=404, bare=True)
    await h.reconcile()
    ready = h.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "KedaMissing")
    assert "keda.sh/v1alpha1 scaledobjects" in ready["message"] and "install KEDA" in ready["message"]


async def test_autoscaling_off_drops_what_it_reported() -> None:
    h = Harness({"autoscaling": KEDA})
    await h.converge()
    h.set_spec({"autoscaling": None, "replicas": 2})
    await h.converge()
    assert h.cluster.get("ScaledObject", NAME) is None
    assert "autoscaler" not in h.body["status"]
    assert "ScalingActive" not in {c["type"] for c in h.body["status"]["conditions"]}
