"""`nimify doctor`'s autoscaling checks: is the metrics API each NimService's autoscaler needs served, and
does it return the metric for that NimService's pods?

- CPU (either autoscaler): metrics.k8s.io, from metrics-server.
- Queue time / GPU utilization with the HPA: custom.metrics.k8s.io Pods metrics (prometheus-adapter with the
  rules in the chart's files/prometheus-adapter-rules.yaml).
- Queue time / GPU utilization with KEDA: external.metrics.k8s.io (KEDA's metrics server), read for the
  metric names KEDA lists in the ScaledObject's status.

The checks ask the API exactly what the HPA controller asks, through one read-only call, so a fake that
answers paths is all a unit test needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from nimify.api import GROUP, PLURAL, VERSION
from nimify.api.spec import Autoscaler
from nimify.autoscaling.queries import GPU_UTILIZATION_METRIC, QUEUE_TIME_METRIC
from nimify.cli.doctor import Check, Status
from nimify.render.identity import APP_NAME, COMPONENT_SERVER
from nimify.render.scaled_object import KIND as SCALED_OBJECT_KIND

#: Checks a NimService at most once per run; a namespace with hundreds still finishes quickly.
MAX_NIMSERVICES = 50


class MetricsReader(Protocol):
    async def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Mapping[str, Any] | None:
        """GET an API path; None when it answers 404, an exception (with the API's message) otherwise."""
        ...


@dataclass(frozen=True)
class MetricsApi:
    group: str
    api_service: str
    provider: str


RESOURCE_METRICS = MetricsApi("metrics.k8s.io", "v1beta1.metrics.k8s.io", "install metrics-server")
CUSTOM_METRICS = MetricsApi(
    "custom.metrics.k8s.io",
    "v1beta2.custom.metrics.k8s.io",
    "install prometheus-adapter with the rules in the chart's files/prometheus-adapter-rules.yaml",
)
EXTERNAL_METRICS = MetricsApi(
    "external.metrics.k8s.io", "v1beta1.external.metrics.k8s.io", "install KEDA (its metrics server)"
)


def effective_autoscaler(nim: Mapping[str, Any], default: Autoscaler) -> Autoscaler:
    """What scales it: the operator's report in status.autoscaler, else the spec, else the default setting."""
    reported = (nim.get("status") or {}).get("autoscaler", {}).get("kind")
    if reported:
        return Autoscaler.KEDA if reported == SCALED_OBJECT_KIND else Autoscaler.HORIZONTAL_POD_AUTOSCALER
    chosen = nim["spec"]["autoscaling"].get("autoscaler")
    return Autoscaler(chosen) if chosen else default


def needed_apis(scaling: Mapping[str, Any], autoscaler: Autoscaler) -> list[MetricsApi]:
    apis = []
    if scaling.get("targetCpuUtilization") is not None:
        apis.append(RESOURCE_METRICS)
    if any(scaling.get(t) is not None for t in ("targetQueueTimeMicroseconds", "targetGpuUtilization")):
        apis.append(EXTERNAL_METRICS if autoscaler == Autoscaler.KEDA else CUSTOM_METRICS)
    return apis


async def check_api(reader: MetricsReader, api: MetricsApi) -> Check:
    name = f"api: {api.group}"
    try:
        service = await reader.get_json(f"/apis/apiregistration.k8s.io/v1/apiservices/{api.api_service}")
    except Exception as error:
        return Check(name, "fail", f"cannot read APIService {api.api_service}: {error}")
    if service is None:
        return Check(name, "fail", f"not served: no APIService {api.api_service} ({api.provider})")
    available = next(
        (c for c in service.get("status", {}).get("conditions") or [] if c.get("type") == "Available"), None
    )
    backend = service.get("spec", {}).get("service") or {}
    where = f"{backend.get('namespace')}/{backend.get('name')}" if backend else "the apiserver"
    if available is None or available.get("status") != "True":
        why = f"{available.get('reason')}: {available.get('message')}" if available else "no status yet"
        return Check(name, "fail", f"{api.api_service} ({where}) is not available: {why}")
    return Check(name, "ok", f"served by {where}")


def _selector(nim: Mapping[str, Any]) -> str:
    reported = (nim.get("status") or {}).get("selector")
    if reported:
        return str(reported)
    # Before the operator reported one: the Deployment's selector (render.identity.server_selector).
    name = nim["metadata"]["name"]
    return (
        f"app.kubernetes.io/name={APP_NAME},app.kubernetes.io/instance={name},"
        f"app.kubernetes.io/component={COMPONENT_SERVER}"
    )


def _values(items: Sequence[Mapping[str, Any]], key: str = "value") -> str:
    shown = ", ".join(str(item.get(key)) for item in items[:5])
    return shown + (", ..." if len(items) > 5 else "")


async def _cpu(reader: MetricsReader, nim: Mapping[str, Any]) -> Check:
    namespace, selector = nim["metadata"]["namespace"], _selector(nim)
    pods = await reader.get_json(
        f"/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods", {"labelSelector": selector}
    )
    items = (pods or {}).get("items") or []
    if not items:
        return Check("cpu", "fail", f"metrics.k8s.io has no CPU usage for pods matching {selector} (yet?)")
    usage = [
        {"value": "+".join(str(c.get("usage", {}).get("cpu")) for c in item.get("containers") or [])}
        for item in items
    ]
    return Check("cpu", "ok", f"{len(items)} pod(s), usage {_values(usage)}")


async def _pods_metric(reader: MetricsReader, nim: Mapping[str, Any], metric: str) -> Check:
    namespace, selector = nim["metadata"]["namespace"], _selector(nim)
    path = f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/{namespace}/pods/*/{metric}"
    found = await reader.get_json(path, {"labelSelector": selector})
    items = (found or {}).get("items") or []
    if not items:
        return Check(
            metric,
            "fail",
            f"custom.metrics.k8s.io has no {metric} for pods matching {selector}: check the adapter's rules"
            " and that Prometheus scrapes the pods' metrics port with namespace and pod labels",
        )
    return Check(metric, "ok", f"{len(items)} pod(s), values {_values(items)}")


async def _external_metrics(reader: MetricsReader, nim: Mapping[str, Any]) -> list[Check]:
    namespace, name = nim["metadata"]["namespace"], nim["metadata"]["name"]
    scaled_object = await reader.get_json(
        f"/apis/keda.sh/v1alpha1/namespaces/{namespace}/scaledobjects/{name}"
    )
    if scaled_object is None:
        return [Check("scaledobject", "fail", f"no ScaledObject {namespace}/{name} (yet?)")]
    metrics = scaled_object.get("status", {}).get("externalMetricNames") or []
    if not metrics:
        return [Check("scaledobject", "fail", f"KEDA lists no external metric for {name} (yet?)")]
    checks = []
    for metric in metrics:
        try:
            found = await reader.get_json(
                f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}",
                {"labelSelector": f"scaledobject.keda.sh/name={name}"},
            )
        except Exception as error:
            checks.append(Check(metric, "fail", f"KEDA cannot compute it: {error}"))
            continue
        items = (found or {}).get("items") or []
        status: Status = "ok" if items else "fail"
        checks.append(Check(metric, status, f"value {_values(items)}" if items else "no value"))
    return checks


def _scaling_condition(nim: Mapping[str, Any]) -> Check | None:
    conditions = (nim.get("status") or {}).get("conditions") or []
    active = next((c for c in conditions if c.get("type") == "ScalingActive"), None)
    if active is None:
        return None
    statuses: dict[str, Status] = {"True": "ok", "False": "fail"}
    status = statuses.get(active.get("status", ""), "warn")
    return Check("ScalingActive", status, f"{active.get('reason')}: {active.get('message')}")


async def _metric_checks(
    reader: MetricsReader, nim: Mapping[str, Any], autoscaler: Autoscaler
) -> list[Check]:
    scaling = nim["spec"]["autoscaling"]
    checks: list[Check] = []
    if scaling.get("targetCpuUtilization") is not None:
        checks.append(await _cpu(reader, nim))
    if autoscaler == Autoscaler.KEDA:
        if any(scaling.get(t) is not None for t in ("targetQueueTimeMicroseconds", "targetGpuUtilization")):
            checks.extend(await _external_metrics(reader, nim))
        return checks
    if scaling.get("targetQueueTimeMicroseconds") is not None:
        checks.append(await _pods_metric(reader, nim, QUEUE_TIME_METRIC))
    if scaling.get("targetGpuUtilization") is not None:
        checks.append(await _pods_metric(reader, nim, GPU_UTILIZATION_METRIC))
    return checks


async def check_autoscaling(reader: MetricsReader, namespace: str | None, default: Autoscaler) -> list[Check]:
    """One check per metrics API the NimServices in `namespace` (all when None) need, then per metric."""
    where = f"/namespaces/{namespace}" if namespace else ""
    try:
        listed = await reader.get_json(f"/apis/{GROUP}/{VERSION}{where}/{PLURAL}")
    except Exception as error:
        return [Check("autoscaling", "fail", f"cannot list NimServices: {error}")]
    scaled = [nim for nim in (listed or {}).get("items") or [] if (nim.get("spec") or {}).get("autoscaling")]
    if not scaled:
        return [Check("autoscaling", "ok", "no NimService sets spec.autoscaling")]
    checks: list[Check] = []
    if len(scaled) > MAX_NIMSERVICES:
        checks.append(
            Check(
                "autoscaling",
                "warn",
                f"{len(scaled)} autoscaled NimServices; checking the first {MAX_NIMSERVICES}",
            )
        )
        scaled = scaled[:MAX_NIMSERVICES]
    autoscalers = {id(nim): effective_autoscaler(nim, default) for nim in scaled}
    apis = {
        api.group: api
        for nim in scaled
        for api in needed_apis(nim["spec"]["autoscaling"], autoscalers[id(nim)])
    }
    served = set()
    for api in apis.values():
        check = await check_api(reader, api)
        checks.append(check)
        if check.status == "ok":
            served.add(api.group)
    for nim in scaled:
        label = f"{nim['metadata']['namespace']}/{nim['metadata']['name']}"
        autoscaler = autoscalers[id(nim)]
        missing = [
            a.group for a in needed_apis(nim["spec"]["autoscaling"], autoscaler) if a.group not in served
        ]
        if missing:
            checks.append(
                Check(label, "fail", f"{autoscaler.value} cannot scale it: {', '.join(missing)} not served")
            )
            continue
        try:
            found = await _metric_checks(reader, nim, autoscaler)
        except Exception as error:
            found = [Check("metrics", "fail", f"{type(error).__name__}: {error}")]
        if (condition := _scaling_condition(nim)) is not None:
            found.append(condition)
        checks.extend(
            Check(f"{label} {check.name}", check.status, f"{autoscaler.value}: {check.detail}")
            for check in found
        )
    return checks
