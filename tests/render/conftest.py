"""A `nimservice(...)` factory for the renderer and controller unit tests: a valid NimService as the apiserver
would hand it to the operator (name, namespace, uid, generation set), with spec overrides merged in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from nimify.api import NimService, UnitRole
from nimify.engine.location import EngineLocation
from nimify.render.units import ServingUnit, serving_unit
from nimify.settings import OperatorSettings

NAME = "resnet50"
NAMESPACE = "ml"
UID = "6f1b8c2e-0d1a-4c55-9a1e-2b7f3c4d5e6f"
GENERATION = 3
MODEL_URI = "s3://models-prod/vision/resnet50.onnx"
MODEL_SHA256 = "ab" * 32


def merged(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` merged in, mappings recursively; a None override removes the key."""
    result = dict(base)
    for key, value in overrides.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def nimservice(
    spec: Mapping[str, Any] | None = None,
    *,
    name: str = NAME,
    namespace: str = NAMESPACE,
    uid: str = UID,
    generation: int = GENERATION,
    status: Mapping[str, Any] | None = None,
) -> NimService:
    """A NimService serving a pinned ONNX model with every other field defaulted, plus `spec` (camelCase,
    merged into the defaults; None removes a field)."""
    body: dict[str, Any] = {
        "apiVersion": "nimify.dev/v1alpha1",
        "kind": "NimService",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "generation": generation},
        "spec": merged({"model": {"uri": MODEL_URI, "sha256": MODEL_SHA256}}, spec or {}),
    }
    if status is not None:
        body["status"] = dict(status)
    return NimService.model_validate(body)


@pytest.fixture
def settings() -> OperatorSettings:
    """Operator settings with the documented defaults spelled out, whatever NIMIFY_* the shell exports."""
    return OperatorSettings(
        builder_image="registry.example/nimify-builder:test-trt{release}",
        onnxruntime_builder_image="registry.example/nimify:test",
        build_pod_labels={},
        build_ttl_seconds=3600,
        build_backoff_limit=1,
        engine_cache_claim="nimify-engines",
        engine_cache_size="50Gi",
        engine_cache_access_mode="ReadWriteMany",
    )


def unit_of(
    nim: NimService, location: EngineLocation | None = None, settings: OperatorSettings | None = None
) -> ServingUnit:
    """The NimService's serving unit, its engine at `location` (else where the spec puts it)."""
    if location is None:
        return serving_unit(nim, settings or OperatorSettings())
    return ServingUnit(nim.metadata.name or "", UnitRole.SERVING, nim, location)
