"""Which engine a NimService needs and where it lives: the cache key decides when a rebuild happens."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from nimify.engine.location import (
    ENGINE_MOUNT,
    EngineLocation,
    engine_claim,
    engine_location,
    model_identity,
    tensorrt_identity,
)
from nimify.settings import OperatorSettings
from tests.render.conftest import MODEL_SHA256, MODEL_URI, merged, nimservice
from tests.render.conftest import settings as settings  # the fixture: operator settings with the defaults

ONNXRUNTIME: dict[str, Any] = {"engine": {"backend": "onnxruntime"}, "resources": {"gpus": 0}}
PROFILE = [{"input": "images", "min": [1, 3, 224, 224], "opt": [4, 3, 224, 224], "max": [8, 3, 224, 224]}]


def key(settings: OperatorSettings, spec: dict[str, Any] | None = None, **meta: Any) -> str:
    return engine_location(nimservice(spec, **meta), settings).cache_key


@pytest.mark.parametrize(
    ("base", "changed"),
    [
        pytest.param({}, {"model": {"sha256": "cd" * 32}}, id="model-sha256"),
        pytest.param({}, {"engine": {"precision": "fp32"}}, id="precision"),
        pytest.param({}, {"engine": {"profiles": PROFILE}}, id="profiles"),
        pytest.param({}, {"engine": {"maxBatchSize": 16}}, id="max-batch-size"),
        pytest.param({}, {"engine": {"workspace": "4Gi"}}, id="workspace"),
        pytest.param({}, ONNXRUNTIME, id="backend"),
        pytest.param(
            {}, {"triton": {"image": "nvcr.io/nvidia/tritonserver:25.11-py3"}}, id="triton-release-tensorrt"
        ),
        pytest.param({}, {"resources": {"gpuProduct": "NVIDIA-L4"}}, id="gpu-product-tensorrt"),
        pytest.param(
            {"resources": {"gpuProduct": "NVIDIA-L4"}},
            {"resources": {"gpuProduct": "NVIDIA-H100-80GB-HBM3"}},
            id="other-gpu-product-tensorrt",
        ),
        pytest.param(
            {"model": {"sha256": None}},
            {"model": {"sha256": None, "uri": "s3://models-prod/vision/resnet101.onnx"}},
            id="unpinned-model-uri",
        ),
    ],
)
def test_cache_key_changes_with_what_shapes_the_engine(
    settings: OperatorSettings, base: dict[str, Any], changed: dict[str, Any]
) -> None:
    assert key(settings, base) != key(settings, merged(base, changed))


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param({"engine": {"parity": {"atol": 0.5, "rtol": 0.5, "samples": 2}}}, id="parity"),
        pytest.param({"engine": {"buildTimeoutSeconds": 7200}}, id="build-timeout"),
        pytest.param(
            {"triton": {"dynamicBatching": {"maxQueueDelayMicroseconds": 500, "enabled": False}}},
            id="dynamic-batching",
        ),
        pytest.param({"triton": {"instancesPerGpu": 2}}, id="instances"),
        pytest.param({"triton": {"responseCache": {"sizeBytes": 67108864}}}, id="response-cache"),
        pytest.param({"triton": {"extraArgs": ["--log-verbose=1"]}}, id="extra-args"),
        pytest.param({"replicas": 4}, id="replicas"),
        pytest.param({"autoscaling": {"maxReplicas": 3, "targetGpuUtilization": 80}}, id="autoscaling"),
        pytest.param({"resources": {"gpus": 2, "memory": "32Gi", "cpu": "4"}}, id="resources"),
        pytest.param({"expose": {"httpPort": 9000}}, id="expose"),
        pytest.param({"placement": {"priorityClassName": "critical"}}, id="placement"),
        pytest.param({"paused": True}, id="paused"),
        pytest.param({"model": {"name": "classifier"}}, id="triton-model-name"),
        pytest.param({"model": {"credentialsSecret": "s3-creds"}}, id="credentials"),
        pytest.param({"model": {"uri": "https://mirror.example/resnet50.onnx"}}, id="uri-of-a-pinned-model"),
    ],
)
def test_cache_key_ignores_what_does_not_shape_the_engine(
    settings: OperatorSettings, changed: dict[str, Any]
) -> None:
    assert key(settings) == key(settings, changed)


def conversion(settings: OperatorSettings, spec: dict[str, Any] | None = None) -> str:
    return engine_location(nimservice(spec), settings).conversion_key


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param({"engine": {"parity": {"atol": 0.5}}}, id="parity-tolerance"),
        pytest.param({"engine": {"parity": {"samples": 0}}}, id="parity-samples"),
        pytest.param({"engine": {"buildTimeoutSeconds": 7200}}, id="build-timeout"),
        pytest.param({"engine": {"buildResources": {"memoryLimit": "64Gi"}}}, id="build-memory"),
    ],
)
def test_conversion_key_follows_what_decides_the_verdict(
    settings: OperatorSettings, changed: dict[str, Any]
) -> None:
    # A conversion that failed its check runs again (a new Job) once the check's settings change.
    assert conversion(settings) != conversion(settings, changed)


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param({"replicas": 4}, id="replicas"),
        pytest.param({"triton": {"instancesPerGpu": 2}}, id="instances"),
        pytest.param({"engine": {"precision": "fp32"}}, id="precision-is-in-the-cache-key-instead"),
    ],
)
def test_conversion_key_ignores_the_rest(settings: OperatorSettings, changed: dict[str, Any]) -> None:
    # A spec change that leaves the conversion as it is must never start a second Job for the same engine.
    assert conversion(settings) == conversion(settings, changed)


def test_conversion_key_of_a_spec_without_build_resources_is_unchanged(settings: OperatorSettings) -> None:
    # Job names of NimServices that never set spec.engine.buildResources stay those of earlier releases.
    engine = nimservice(None).spec.engine.model_dump(mode="json", by_alias=True, exclude_none=True)
    document = {"parity": engine["parity"], "buildTimeoutSeconds": engine["buildTimeoutSeconds"]}
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    assert conversion(settings) == hashlib.sha256(canonical.encode()).hexdigest()[:16]


def test_cache_key_ignores_the_nimservice_identity(settings: OperatorSettings) -> None:
    # Two NimServices asking for the same engine share it.
    assert key(settings, name="a", uid="1", generation=1) == key(settings, name="b", uid="2", generation=9)


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param({"triton": {"image": "nvcr.io/nvidia/tritonserver:25.11-py3"}}, id="triton-release"),
        pytest.param({"resources": {"gpus": 1, "gpuProduct": "NVIDIA-L4"}}, id="gpu-product"),
    ],
)
def test_onnxruntime_key_ignores_tensorrt_and_gpu(
    settings: OperatorSettings, changed: dict[str, Any]
) -> None:
    assert key(settings, ONNXRUNTIME) == key(settings, merged(ONNXRUNTIME, changed))


def test_gpu_product_pinned_through_node_selector_shapes_the_key(settings: OperatorSettings) -> None:
    pinned = {"placement": {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"}}}
    assert key(settings, pinned) != key(settings)
    assert key(settings, pinned) == key(settings, {"resources": {"gpuProduct": "NVIDIA-L4"}})


def test_same_release_in_another_image_variant_keeps_the_key(settings: OperatorSettings) -> None:
    # The YY.MM release pins TensorRT: a digest or a mirror of the same release builds the same engine.
    digest = "@sha256:" + "0" * 64
    assert key(settings) == key(
        settings, {"triton": {"image": "nvcr.io/nvidia/tritonserver:25.10-py3" + digest}}
    )
    assert key(settings) == key(settings, {"triton": {"image": "mirror.example/tritonserver:25.10-py3"}})


def test_key_is_64_hex_digits(settings: OperatorSettings) -> None:
    assert len(key(settings)) == 64 and int(key(settings), 16) >= 0


def test_model_identity() -> None:
    assert model_identity(nimservice()) == MODEL_SHA256
    unpinned = model_identity(nimservice({"model": {"sha256": None}}))
    assert unpinned == hashlib.sha256(f"uri:{MODEL_URI}".encode()).hexdigest()
    assert unpinned != model_identity(
        nimservice({"model": {"sha256": None, "uri": "s3://models-prod/vision/resnet50-v2.onnx"}})
    )


def test_tensorrt_identity() -> None:
    assert tensorrt_identity(nimservice()) == "tensorrt-of-triton-25.10"
    assert tensorrt_identity(nimservice(ONNXRUNTIME)) is None
    custom = "registry.example/triton:custom-build"
    assert tensorrt_identity(nimservice({"triton": {"image": custom}})) == custom
    # Same release, different TensorRT: the engines must not share a cache key.
    trtllm = "nvcr.io/nvidia/tritonserver:26.06-trtllm-python-py3"
    assert tensorrt_identity(nimservice({"triton": {"image": trtllm}})) == "tensorrt-10.14.1.48"
    main = "nvcr.io/nvidia/tritonserver:26.06-py3"
    assert tensorrt_identity(nimservice({"triton": {"image": main}})) == "tensorrt-of-triton-26.06"


@pytest.mark.parametrize(
    ("storage", "claim"),
    [
        (None, "nimify-engines"),
        ({"size": "20Gi"}, "resnet50-engines"),
        ({"size": "20Gi", "storageClassName": "fast-ssd"}, "resnet50-engines"),
        ({"existingClaim": "team-engines"}, "team-engines"),
    ],
)
def test_engine_claim(settings: OperatorSettings, storage: dict[str, Any] | None, claim: str) -> None:
    nim = nimservice({"storage": storage} if storage else None)
    assert engine_claim(nim, settings) == claim
    assert engine_location(nim, settings).claim == claim


def test_shared_claim_name_comes_from_settings(settings: OperatorSettings) -> None:
    custom = settings.model_copy(update={"engine_cache_claim": "team-cache"})
    assert engine_claim(nimservice(), custom) == "team-cache"


def test_location_paths() -> None:
    location = EngineLocation(cache_key="k" * 64, claim="nimify-engines")
    assert location.directory == f"engines/{'k' * 64}"
    assert location.repository == f"engines/{'k' * 64}/repository"
    assert ENGINE_MOUNT.startswith("/")
