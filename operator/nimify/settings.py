"""Operator settings, read from NIMIFY_* environment variables (the Helm chart sets them)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from nimify import __version__
from nimify.api.spec import DNS1123_SUBDOMAIN, Quantity
from nimify.api.spec.autoscaling import Autoscaler
from nimify.engine.address_policy import DEFAULT_DENIED_RANGES, parse_networks

ObjectName = Annotated[str, Field(pattern=DNS1123_SUBDOMAIN, max_length=253)]


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NIMIFY_", frozen=True, use_attribute_docstrings=True)

    builder_image: str = f"ghcr.io/nimify/nimify-builder:{__version__}-trt{{release}}"
    """Image of the TensorRT conversion Job; `{release}` becomes the Triton release (e.g. 25.10), so the
    engine is built with the TensorRT version of the Triton that serves it."""

    onnxruntime_builder_image: str = f"ghcr.io/nimify/nimify:{__version__}"
    """Image of the conversion Job for the onnxruntime backend (no TensorRT needed)."""

    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    """imagePullPolicy of every container the operator creates. Unset leaves Kubernetes' default
    (IfNotPresent for a tagged image); clusters whose images are imported by hand rather than pulled (the
    dev cluster's real node) set Never, so a missing image fails at once with ErrImageNeverPull."""

    build_pod_labels: dict[str, str] = Field(default_factory=dict)
    """Extra labels on conversion pods (cost allocation; tests use one to play the kubelet)."""

    build_ttl_seconds: int = 3600
    """How long a finished conversion Job stays for inspection before Kubernetes deletes it."""

    build_backoff_limit: int = 1
    """Retries of a failed conversion pod before the Job fails."""

    build_cpu: Quantity = "1"
    """CPU request of conversion Jobs whose NimService sets no spec.engine.buildResources.cpu."""

    build_memory: Quantity = "4Gi"
    """Memory request of conversion Jobs (spec.engine.buildResources.memory overrides it)."""

    build_memory_limit: Quantity = "16Gi"
    """Memory limit of conversion Jobs (spec.engine.buildResources.memoryLimit overrides it); raised to the
    request where that is larger."""

    build_service_account: ObjectName | None = None
    """ServiceAccount of conversion Jobs whose NimService names none (spec.model.serviceAccountName): one
    that exists in every namespace with NimServices, e.g. bound to a cloud role that reads the model
    buckets. The namespace's default ServiceAccount when unset."""

    server_service_account: ObjectName | None = None
    """ServiceAccount of Triton pods whose NimService names none (spec.triton.serviceAccountName)."""

    image_pull_secrets: list[ObjectName] = Field(default_factory=list)
    """Pull secrets added to every conversion and Triton pod (a mirror of nvcr.io, the registry of the
    builder images); each must exist in every namespace with NimServices. A NimService adds its own
    (spec.imagePullSecrets)."""

    engine_cache_claim: str = "nimify-engines"
    """The namespace-wide engine volume used when a NimService sets no spec.storage."""

    engine_cache_size: str = "50Gi"
    engine_cache_access_mode: str = "ReadWriteMany"
    """Triton replicas on different nodes read the same engines, hence ReadWriteMany by default."""

    resync_seconds: float = 60.0
    """Interval of the level-triggered safety-net reconcile."""

    metrics_port: int = 8080
    """Port of the operator's own Prometheus metrics."""

    autoscaler: Autoscaler = Autoscaler.HORIZONTAL_POD_AUTOSCALER
    """The autoscaler of NimServices whose spec.autoscaling.autoscaler is unset: HorizontalPodAutoscaler
    (CPU from metrics.k8s.io, queue time and GPU utilization as Pods metrics from custom.metrics.k8s.io,
    e.g. prometheus-adapter with the chart's files/prometheus-adapter-rules.yaml) or KEDA (a
    ScaledObject whose Prometheus triggers query keda_prometheus_url; KEDA serves external.metrics.k8s.io)."""

    keda_prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    """Prometheus that KEDA's triggers query. It must scrape the Triton pods' metrics port (and DCGM's
    exporter for GPU utilization) with `namespace` and `pod` labels, as a PodMonitor does."""

    analysis_prometheus_url: str | None = None
    """Prometheus a canary rollout's analysis queries for both units' figures (keda_prometheus_url when
    unset); it must scrape the Triton pods' metrics port with `namespace` and `pod` labels."""

    keda_query_window: str = Field(default="1m", pattern=r"^[0-9]+(ms|s|m|h)$")
    """Range of the queue-time query (increase over this window); at least twice the scrape interval."""

    insecure_registries: list[str] = Field(default_factory=list)
    """Registries (HOST:PORT, as in model image uris) reached over plain HTTP instead of HTTPS: the
    operator's and the model-image init container's requests for oci:// models. For a registry inside a
    development cluster; never one across a network (credentials travel in the clear)."""

    model_uri_denied_ranges: list[str] = Field(default_factory=lambda: list(DEFAULT_DENIED_RANGES))
    """Address ranges (CIDR) a model download may not connect to, checked in the conversion Job after DNS
    resolution and on every redirect. Defaults: link-local and cloud metadata addresses (docs/operator.md,
    "Model downloads and SSRF"); an empty list allows every address."""

    @field_validator("model_uri_denied_ranges")
    @classmethod
    def _ranges(cls, ranges: list[str]) -> list[str]:
        parse_networks(ranges)  # a ValueError names the entry that is not a range
        return ranges
