"""The engine cache key: what decides whether an engine built before can be served again.

An engine is only valid for the exact model bytes, the build settings that shape it, the TensorRT version that
built it and the GPU product it was tuned on. Settings that do not change the built artifact (parity
tolerances, the build timeout) stay out of the key, so changing them never forces a rebuild.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from nimify.api import EngineSpec
from nimify.engine.quantity import quantity_bytes
from nimify.model.digest import normalize_sha256

KEY_VERSION = 1  # bump when the meaning of a key changes, so old cache entries are never matched
BUILD_FIELDS = ("backend", "precision", "profiles", "maxBatchSize", "workspace")


def engine_settings(engine: EngineSpec | Mapping[str, Any]) -> dict[str, Any]:
    """The build-relevant engine settings, camelCase, with defaults filled in and the workspace in bytes."""
    spec = engine if isinstance(engine, EngineSpec) else EngineSpec.model_validate(engine)
    data = spec.model_dump(mode="json", by_alias=True)
    settings = {name: data.get(name) for name in BUILD_FIELDS}
    if spec.workspace is not None:
        settings["workspace"] = quantity_bytes(spec.workspace, "engine.workspace")
    return settings


def engine_cache_key(
    model_sha256: str,
    engine: EngineSpec | Mapping[str, Any],
    tensorrt_version: str | None,
    gpu_product: str | None,
    *,
    variant: str | None = None,
) -> str:
    """64 hex digits: sha256 of the canonical JSON of model digest, build settings, TensorRT version
    and GPU product.

    `tensorrt_version` and `gpu_product` are None where they do not shape the artifact (the onnxruntime
    backend serves the ONNX file itself). `variant` separates artifacts the spec cannot name (the local python
    backend's repository); None leaves the key as the operator computes it.
    """
    document = {
        "keyVersion": KEY_VERSION,
        "model": normalize_sha256(model_sha256),
        "engine": engine_settings(engine),
        "tensorrt": tensorrt_version,
        "gpuProduct": gpu_product,
    }
    if variant is not None:
        document["variant"] = variant
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()
