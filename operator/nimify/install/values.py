"""The Helm chart's values as typed models: the source of the chart's values.schema.json.

`values.yaml` (hand-written, for its comments) must equal these defaults; a test holds them together. The
operator's settings (`settings:`) are derived field by field from `nimify.settings.OperatorSettings`, so
`helm install --set settings.<typo>=...` fails at install time instead of in the running pod.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.alias_generators import to_camel

from nimify.render.pod_security import RUN_AS
from nimify.settings import OperatorSettings

#: Settings the chart sets itself from other values (the metrics Service must match the port).
CHART_OWNED_SETTINGS = frozenset({"metrics_port"})
#: The chart's default operator image; its tag defaults to the chart's appVersion.
IMAGE_REPOSITORY = "ghcr.io/nimify/nimify"
SCHEMA_FILENAME = "values.schema.json"


class ValuesModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", use_attribute_docstrings=True
    )


class PullPolicy(StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class ImageValues(ValuesModel):
    """The nimify image: the operator, and (unless settings.onnxruntimeBuilderImage says otherwise) the
    conversion image of the onnxruntime backend."""

    repository: str = IMAGE_REPOSITORY
    tag: str = ""
    """Defaults to the chart's appVersion."""
    pull_policy: PullPolicy = PullPolicy.IF_NOT_PRESENT


class LocalObjectReference(ValuesModel):
    name: str = Field(min_length=1)


class ServiceAccountValues(ValuesModel):
    """The operator's ServiceAccount (what the RBAC is bound to)."""

    create: bool = True
    name: str = ""
    """Defaults to the release's full name; required when create is false."""
    annotations: dict[str, str] = Field(default_factory=dict)


class RbacValues(ValuesModel):
    create: bool = True
    """The operator's ClusterRole (or Roles, one per watched namespace) and their bindings."""
    aggregate_to_default_roles: bool = True
    """ClusterRoles that give Kubernetes' admin/edit and view roles the matching rights on NimServices."""


class MonitorValues(ValuesModel):
    enabled: bool = True
    """Created only where the Prometheus Operator's CRDs exist."""
    interval: str = "30s"
    labels: dict[str, str] = Field(default_factory=dict)
    """Extra labels, e.g. the release label a Prometheus' monitor selector wants."""


class MetricsValues(ValuesModel):
    port: int = Field(default=8080, ge=1, le=65535)
    """Port of the operator's own metrics (NIMIFY_METRICS_PORT) and of its metrics Service."""
    service_monitor: MonitorValues = Field(default_factory=MonitorValues)
    """A ServiceMonitor for the operator's metrics Service."""
    pod_monitor: MonitorValues = Field(default_factory=MonitorValues)
    """A PodMonitor for the metrics port of every Triton pod the operator runs."""


class DashboardValues(ValuesModel):
    enabled: bool = False
    namespace: str = ""
    """Where Grafana's dashboard sidecar looks; the release namespace when empty."""
    labels: dict[str, str] = Field(default_factory=lambda: {"grafana_dashboard": "1"})
    annotations: dict[str, str] = Field(default_factory=dict)


class ConfigMapValues(ValuesModel):
    enabled: bool = False
    namespace: str = ""
    """prometheus-adapter's namespace; the release namespace when empty."""


class PrometheusAdapterValues(ValuesModel):
    rules_config_map: ConfigMapValues = Field(default_factory=ConfigMapValues)
    """A ConfigMap with the adapter rules for the HPA's queue-time and GPU-utilization metrics, for
    prometheus-adapter's `rules.existing`."""


def _settings_model() -> type[BaseModel]:
    """Every operator setting, camelCase and optional: what is left out keeps the operator's default."""
    fields: dict[str, Any] = {}
    for name, field in OperatorSettings.model_fields.items():
        if name in CHART_OWNED_SETTINGS:
            continue
        # Not Optional: null is no setting (the template would pass "null" on); left out is the default.
        fields[name] = (field.annotation, Field(default=None, description=field.description))
    return create_model("SettingsValues", __base__=ValuesModel, **fields)


SettingsValues = _settings_model()


class ChartValues(ValuesModel):
    """The values of charts/nimify."""

    image: ImageValues = Field(default_factory=ImageValues)
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list)
    """Pull secrets of the operator pod (the release namespace). Those of the pods the operator creates are
    settings.imagePullSecrets."""
    watch_namespaces: list[str] = Field(default_factory=list)
    """Namespaces whose NimServices the operator manages; empty: the whole cluster (a ClusterRole). With a
    list, the operator gets a Role in each and nothing cluster-wide."""
    settings: SettingsValues = Field(default_factory=SettingsValues)  # type: ignore[valid-type]
    """The operator's NIMIFY_* settings (nimify.settings.OperatorSettings), camelCase."""
    verbose: bool = False
    """Debug logging."""
    resources: dict[str, Any] = Field(
        default_factory=lambda: {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"memory": "1Gi"},
        }
    )
    """The operator's resources; memory grows with the number of NimServices and children it indexes."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: dict[str, Any] = Field(default_factory=dict)
    priority_class_name: str = ""
    runtime_class_name: str = ""
    """RuntimeClass of the operator pod (a sandboxed runtime, or the dev cluster's real node)."""
    host_aliases: list[dict[str, Any]] = Field(default_factory=list)
    """Extra /etc/hosts entries of the operator pod, for clusters without DNS for kubernetes.default.svc
    (kopf's in-cluster address)."""
    pod_annotations: dict[str, str] = Field(default_factory=dict)
    pod_labels: dict[str, str] = Field(default_factory=dict)
    run_as_user: int = Field(default=RUN_AS, ge=1)
    """UID (and GID) of the operator: the nimify image's non-root user."""
    health_port: int = Field(default=8081, ge=1, le=65535)
    """Port of kopf's liveness endpoint (/healthz), which the probes use."""
    termination_grace_period_seconds: int = Field(default=30, ge=0)
    """Time kopf gets on SIGTERM to stop its watchers and finish running reconciles."""
    service_account: ServiceAccountValues = Field(default_factory=ServiceAccountValues)
    rbac: RbacValues = Field(default_factory=RbacValues)
    metrics: MetricsValues = Field(default_factory=MetricsValues)
    grafana_dashboard: DashboardValues = Field(default_factory=DashboardValues)
    prometheus_adapter: PrometheusAdapterValues = Field(default_factory=PrometheusAdapterValues)
    name_override: str = ""
    fullname_override: str = ""


def _strip(node: Any) -> Any:
    """JSON Schema without pydantic's titles and defaults (values.yaml holds the defaults)."""
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k not in ("title", "default")}
    if isinstance(node, list):
        return [_strip(item) for item in node]
    return node


def values_schema() -> dict[str, Any]:
    schema = _strip(ChartValues.model_json_schema(by_alias=True))
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return dict(schema)


def render_values_schema() -> str:
    return json.dumps(values_schema(), indent=2, sort_keys=True) + "\n"


def default_values() -> dict[str, Any]:
    """The defaults as values.yaml must spell them."""
    return ChartValues().model_dump(mode="json", by_alias=True, exclude_none=True)
