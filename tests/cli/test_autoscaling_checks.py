"""`nimify doctor`'s autoscaling checks against a fake that answers API paths."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nimify.api.spec import Autoscaler
from nimify.cli.autoscaling_checks import check_autoscaling

HPA = Autoscaler.HORIZONTAL_POD_AUTOSCALER
SELECTOR = ",".join(
    f"app.kubernetes.io/{key}={value}"
    for key, value in (("name", "nimservice"), ("instance", "m"), ("component", "inference-server"))
)


class FakeApi:
    """Answers GETs from a dict of path -> body (or exception); unknown paths are 404s."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, dict[str, str]]] = []

    async def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Mapping[str, Any] | None:
        self.asked.append((path, dict(params or {})))
        answer = self.answers.get(path)
        if isinstance(answer, Exception):
            raise answer
        return answer


def nimservice(autoscaling: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "m", "namespace": "ml"},
        "spec": {"autoscaling": {"maxReplicas": 3, **autoscaling}},
        "status": status or {},
    }


def listed(*nims: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
    where = f"/namespaces/{namespace}" if namespace else ""
    return {f"/apis/nimify.dev/v1alpha1{where}/nimservices": {"items": list(nims)}}


def api_service(
    name: str, available: str = "True", reason: str = "Passed", message: str = ""
) -> dict[str, Any]:
    return {
        f"/apis/apiregistration.k8s.io/v1/apiservices/{name}": {
            "spec": {"service": {"namespace": "kube-system", "name": "provider"}},
            "status": {
                "conditions": [
                    {"type": "Available", "status": available, "reason": reason, "message": message}
                ]
            },
        }
    }


def by_name(checks: list[Any]) -> dict[str, tuple[str, str]]:
    return {check.name: (check.status, check.detail) for check in checks}


async def test_no_autoscaled_nimservice() -> None:
    checks = await check_autoscaling(FakeApi(listed({"metadata": {"name": "x"}, "spec": {}})), None, HPA)
    assert [(c.name, c.status) for c in checks] == [("autoscaling", "ok")]


async def test_cpu_served_and_measured() -> None:
    api = FakeApi(
        listed(nimservice({"targetCpuUtilization": 50}))
        | api_service("v1beta1.metrics.k8s.io")
        | {
            "/apis/metrics.k8s.io/v1beta1/namespaces/ml/pods": {
                "items": [{"containers": [{"usage": {"cpu": "12m"}}]}]
            }
        }
    )
    checks = by_name(await check_autoscaling(api, None, HPA))
    assert checks["api: metrics.k8s.io"] == ("ok", "served by kube-system/provider")
    assert checks["ml/m cpu"] == ("ok", "HorizontalPodAutoscaler: 1 pod(s), usage 12m")
    assert ("/apis/metrics.k8s.io/v1beta1/namespaces/ml/pods", {"labelSelector": SELECTOR}) in api.asked


async def test_missing_metrics_api_names_the_provider() -> None:
    api = FakeApi(listed(nimservice({"targetQueueTimeMicroseconds": 100})))
    checks = by_name(await check_autoscaling(api, None, HPA))
    status, detail = checks["api: custom.metrics.k8s.io"]
    assert status == "fail" and "v1beta2.custom.metrics.k8s.io" in detail and "prometheus-adapter" in detail
    assert checks["ml/m"] == (
        "fail",
        "HorizontalPodAutoscaler cannot scale it: custom.metrics.k8s.io not served",
    )


async def test_unavailable_api_service() -> None:
    api = FakeApi(
        listed(nimservice({"targetCpuUtilization": 50}))
        | api_service("v1beta1.metrics.k8s.io", "False", "FailedDiscoveryCheck", "connection refused")
    )
    status, detail = by_name(await check_autoscaling(api, None, HPA))["api: metrics.k8s.io"]
    assert status == "fail" and "FailedDiscoveryCheck: connection refused" in detail


async def test_pods_metric_missing() -> None:
    api = FakeApi(
        listed(nimservice({"targetQueueTimeMicroseconds": 100}))
        | api_service("v1beta2.custom.metrics.k8s.io")
    )
    status, detail = by_name(await check_autoscaling(api, None, HPA))[
        "ml/m nv_inference_queue_duration_us_per_request"
    ]
    assert status == "fail" and "has no nv_inference_queue_duration_us_per_request" in detail


async def test_pods_metric_present_uses_the_reported_selector() -> None:
    nim = nimservice({"targetQueueTimeMicroseconds": 100}, {"selector": "a=b"})
    path = (
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/ml/pods/*/nv_inference_queue_duration_us_per_request"
    )
    api = FakeApi(
        listed(nim) | api_service("v1beta2.custom.metrics.k8s.io") | {path: {"items": [{"value": "250"}]}}
    )
    checks = by_name(await check_autoscaling(api, None, HPA))
    assert checks["ml/m nv_inference_queue_duration_us_per_request"] == (
        "ok",
        "HorizontalPodAutoscaler: 1 pod(s), values 250",
    )
    assert (path, {"labelSelector": "a=b"}) in api.asked


async def test_keda_external_metrics() -> None:
    nim = nimservice(
        {"targetQueueTimeMicroseconds": 100, "autoscaler": "KEDA"},
        {
            "conditions": [
                {"type": "ScalingActive", "status": "False", "reason": "MetricUnavailable", "message": "x"}
            ]
        },
    )
    api = FakeApi(
        listed(nim)
        | api_service("v1beta1.external.metrics.k8s.io")
        | {
            "/apis/keda.sh/v1alpha1/namespaces/ml/scaledobjects/m": {
                "status": {"externalMetricNames": ["s0-prometheus"]}
            },
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/ml/s0-prometheus": RuntimeError(
                "prometheus query returned empty"
            ),
        }
    )
    checks = by_name(await check_autoscaling(api, None, HPA))
    assert checks["api: external.metrics.k8s.io"][0] == "ok"
    assert checks["ml/m s0-prometheus"] == (
        "fail",
        "KEDA: KEDA cannot compute it: prometheus query returned empty",
    )
    assert checks["ml/m ScalingActive"] == ("fail", "KEDA: MetricUnavailable: x")


async def test_reported_autoscaler_wins_over_the_default() -> None:
    nim = nimservice(
        {"targetQueueTimeMicroseconds": 100}, {"autoscaler": {"kind": "ScaledObject", "name": "m"}}
    )
    api = FakeApi(listed(nim, namespace="ml") | api_service("v1beta1.external.metrics.k8s.io"))
    checks = by_name(await check_autoscaling(api, "ml", HPA))
    assert checks["ml/m scaledobject"] == ("fail", "KEDA: no ScaledObject ml/m (yet?)")
    assert api.asked[0][0] == "/apis/nimify.dev/v1alpha1/namespaces/ml/nimservices"


async def test_cannot_list() -> None:
    api = FakeApi({"/apis/nimify.dev/v1alpha1/nimservices": RuntimeError("HTTP 403: forbidden")})
    checks = await check_autoscaling(api, None, HPA)
    assert [(c.name, c.status) for c in checks] == [("autoscaling", "fail")]
