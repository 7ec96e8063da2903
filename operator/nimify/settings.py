"""Operator settings, read from NIMIFY_* environment variables (the Helm chart sets them)."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from nimify import __version__
from nimify.engine.address_policy import DEFAULT_DENIED_RANGES, parse_networks


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NIMIFY_", frozen=True)

    builder_image: str = f"ghcr.io/nimify/nimify-builder:{__version__}-trt{{release}}"
    """Image of the TensorRT conversion Job; `{release}` becomes the Triton release (e.g. 25.10), so the
    engine is built with the TensorRT version of the Triton that serves it."""

    onnxruntime_builder_image: str = f"ghcr.io/nimify/nimify:{__version__}"
    """Image of the conversion Job for the onnxruntime backend (no TensorRT needed)."""

    build_pod_labels: dict[str, str] = Field(default_factory=dict)
    """Extra labels on conversion pods (cost allocation; tests use one to play the kubelet)."""

    build_ttl_seconds: int = 3600
    """How long a finished conversion Job stays for inspection before Kubernetes deletes it."""

    build_backoff_limit: int = 1
    """Retries of a failed conversion pod before the Job fails."""

    engine_cache_claim: str = "nimify-engines"
    """The namespace-wide engine volume used when a NimService sets no spec.storage."""

    engine_cache_size: str = "50Gi"
    engine_cache_access_mode: str = "ReadWriteMany"
    """Triton replicas on different nodes read the same engines, hence ReadWriteMany by default."""

    resync_seconds: float = 60.0
    """Interval of the level-triggered safety-net reconcile."""

    metrics_port: int = 8080
    """Port of the operator's own Prometheus metrics."""

    model_uri_denied_ranges: list[str] = Field(default_factory=lambda: list(DEFAULT_DENIED_RANGES))
    """Address ranges (CIDR) a model download may not connect to, checked in the conversion Job after DNS
    resolution and on every redirect (engine/address_policy.py says why the defaults are what they are)."""

    @field_validator("model_uri_denied_ranges")
    @classmethod
    def _ranges(cls, ranges: list[str]) -> list[str]:
        parse_networks(ranges)  # a ValueError names the entry that is not a range
        return ranges
