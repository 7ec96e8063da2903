"""The conversion pipeline end to end: real for onnxruntime and python, fake TensorRT for tensorrt."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from nimify.api import EngineSpec, ParitySpec, ShapeProfile
from nimify.engine.convert import ConvertRequest, run_conversion
from nimify.engine.result import TERMINATION_MESSAGE_LIMIT, ConversionResult, decode_termination_message
from nimify.model.digest import file_sha256
from nimify.model.samples import SAMPLES, write_sample
from nimify.model.signature import Signature, TensorInfo
from tests.engine.fake_tensorrt import FakeCudaRuntime, FakeTensorRT


def request(tmp_path: Path, model: Path, backend: str, **changes: object) -> ConvertRequest:
    values: dict[str, Any] = {
        "uri": str(model),
        "name": "model",
        "repository": tmp_path / "repository",
        "work_dir": tmp_path / "work",
        "backend": backend,
        "gpus": 0 if backend != "tensorrt" else 1,
    }
    values.update(changes)
    return ConvertRequest(**values)


@pytest.mark.parametrize("name", sorted(SAMPLES))
@pytest.mark.parametrize("backend", ["onnxruntime", "python"])
def test_cpu_backends_convert_every_sample(tmp_path: Path, name: str, backend: str) -> None:
    model = write_sample(name, tmp_path / "in", external_data=name == "mlp")
    stages: list[str] = []
    result = run_conversion(request(tmp_path, model, backend), on_stage=stages.append)
    assert result.ok, result.error
    assert stages == ["fetch", "validate", "build", "parity", "publish"]
    assert result.parity is not None and result.parity.passed
    assert result.parity.samples == 8 and result.parity.max_abs_error == 0.0
    version = tmp_path / "repository" / "model" / "1"
    expected = (
        {"model.onnx"}
        | ({"model.py"} if backend == "python" else set())
        | ({"mlp.weights"} if name == "mlp" else set())
    )
    assert {p.name for p in version.iterdir()} == expected
    assert (tmp_path / "repository" / "model" / "config.pbtxt").is_file()
    assert [p.name for p in (tmp_path / "repository").iterdir()] == ["model"]  # no staging left behind


def test_result_line_carries_the_contract_fields(tmp_path: Path) -> None:
    model = write_sample("int_bool", tmp_path / "in")
    result = run_conversion(request(tmp_path, model, "onnxruntime", sha256=file_sha256(model)))
    data = json.loads(result.json_line())
    assert data["ok"] is True and "error" not in data
    assert len(data["cacheKey"]) == 64
    assert data["signature"] == {
        "inputs": [
            {"name": "token_ids", "dtype": "INT64", "shape": [-1, -1]},
            {"name": "mask", "dtype": "BOOL", "shape": [-1, -1]},
        ],
        "outputs": [{"name": "total", "dtype": "FLOAT", "shape": [-1]}],
    }
    engine = {"cacheKey": data["cacheKey"], "buildSeconds": 0.0, "cacheHit": False, "maxBatchSize": 8}
    assert data["engine"] == engine
    assert data["parity"] == {
        "check": "servedConfig",
        "inputs": "generated",
        "maxAbsError": 0.0,
        "maxRelError": 0.0,
        "samples": 8,
        "passed": True,
    }
    assert data["maxBatchSize"] == 8 and data["batching"]["batched"] is True
    assert set(data["seconds"]) == {"fetch", "validate", "build", "parity", "publish"}


def test_cache_key_is_stable_and_backend_specific(tmp_path: Path) -> None:
    model = write_sample("mlp", tmp_path / "in")
    first = run_conversion(request(tmp_path / "a", model, "onnxruntime"))
    second = run_conversion(request(tmp_path / "b", model, "onnxruntime"))
    python = run_conversion(request(tmp_path / "c", model, "python"))
    assert first.cache_key == second.cache_key != python.cache_key


def test_failures_keep_what_was_learnt(tmp_path: Path) -> None:
    model = write_sample("recurrent", tmp_path / "in")
    result = run_conversion(
        request(tmp_path, model, "onnxruntime", engine=EngineSpec(backend="onnxruntime", max_batch_size=4))
    )
    assert not result.ok and result.error is not None
    assert result.error.reason == "BatchingImpossible"
    assert result.signature is not None  # validation got that far
    assert not (tmp_path / "repository").exists()
    data = json.loads(result.json_line())
    assert data["ok"] is False and data["error"]["reason"] == "BatchingImpossible"


def test_wrong_digest(tmp_path: Path) -> None:
    model = write_sample("mlp", tmp_path / "in")
    result = run_conversion(request(tmp_path, model, "onnxruntime", sha256="0" * 64))
    assert result.error is not None and result.error.reason == "DigestMismatch"
    assert result.signature is None


def test_parity_can_be_skipped(tmp_path: Path) -> None:
    model = write_sample("mlp", tmp_path / "in")
    engine = EngineSpec(backend="onnxruntime", parity=ParitySpec(samples=0))
    result = run_conversion(request(tmp_path, model, "onnxruntime", engine=engine))
    assert result.ok and result.parity is None and "parity" not in result.seconds


def test_termination_message_stays_under_the_kubernetes_limit(tmp_path: Path) -> None:
    model = write_sample("mlp", tmp_path / "in")
    result = run_conversion(request(tmp_path, model, "onnxruntime"))
    assert result.termination_message() == result.json_line()
    assert result.signature is not None
    original = result.signature

    # Repetitive signatures (past_key_values.N...) are compressed and arrive whole.
    result.signature = Signature(original.inputs * 120, original.outputs)
    message = result.termination_message()
    assert len(message.encode()) <= TERMINATION_MESSAGE_LIMIT < len(result.json_line())
    assert decode_termination_message(message) == json.loads(result.json_line())

    # Beyond what compression saves, the signature is dropped and the result says so.
    result.signature = Signature(
        tuple(TensorInfo(f"{uuid.uuid4().hex}{i}", "FLOAT", (i, "batch")) for i in range(250)),
        original.outputs,
    )
    message = result.termination_message()
    assert len(message.encode()) <= TERMINATION_MESSAGE_LIMIT
    data = decode_termination_message(message)
    assert data is not None
    assert data["truncated"] is True and "signature" not in data and data["cacheKey"] == result.cache_key


class TestTensorRT:
    def run(self, tmp_path: Path, trt: FakeTensorRT, **changes: object) -> ConversionResult:
        model = changes.pop("model", None) or write_sample("mlp", tmp_path / "in")
        assert isinstance(model, Path)
        cudart = changes.pop("cudart", None) or FakeCudaRuntime()
        assert isinstance(cudart, FakeCudaRuntime)
        options: dict[str, object] = {
            "trt": trt,
            "cudart": cudart,
            "gpu_product": "NVIDIA-H100-80GB-HBM3",
            **changes,
        }
        result = run_conversion(request(tmp_path, model, "tensorrt", **options))
        assert not cudart.memory, "device buffers leaked"
        return result

    def test_build_check_and_publish(self, tmp_path: Path) -> None:
        trt = FakeTensorRT("10.13.0.35")
        result = self.run(tmp_path, trt)
        assert result.ok, result.error
        data = json.loads(result.json_line())
        assert data["engine"]["tensorrtVersion"] == "10.13.0.35"
        assert data["engine"]["gpuProduct"] == "NVIDIA-H100-80GB-HBM3"
        assert data["engine"]["cacheHit"] is False
        assert data["parity"]["passed"] and data["parity"]["maxAbsError"] == 0.0
        assert ("set_shape", ("input", (1, 8), (8, 8), (8, 8))) not in trt.calls
        assert ("set_shape", ("input", (1, 16), (8, 16), (8, 16))) in trt.calls  # derived: 1..maxBatchSize
        version = tmp_path / "repository" / "model" / "1"
        assert [p.name for p in version.iterdir()] == ["model.plan"]
        config = (tmp_path / "repository" / "model" / "config.pbtxt").read_text()
        assert 'platform: "tensorrt_plan"' in config and "KIND_GPU" in config

    def test_fp16_parity_has_real_error_figures(self, tmp_path: Path) -> None:
        engine = EngineSpec(precision="fp16")
        result = self.run(tmp_path, FakeTensorRT("10.13.0.35"), engine=engine)
        assert result.ok
        parity = result.parity
        assert parity is not None
        assert 0 < parity.max_abs_error < 0.05 and 0 < parity.max_rel_error < 0.01

    def test_parity_failure_publishes_nothing(self, tmp_path: Path) -> None:
        engine = EngineSpec(precision="fp16", parity=ParitySpec(atol=1e-7, rtol=1e-7, samples=3))
        result = self.run(tmp_path, FakeTensorRT("10.13.0.35"), engine=engine)
        assert result.error is not None
        assert result.error.reason == "ParityFailed"
        assert "logits" in result.error.message
        assert result.parity is not None and result.parity.passed is False
        assert not (tmp_path / "repository").exists()

    def test_tensorrt_11_refuses_fp16(self, tmp_path: Path) -> None:
        result = self.run(tmp_path, FakeTensorRT("11.0.0.5"), engine=EngineSpec(precision="fp16"))
        assert result.error is not None
        assert result.error.reason == "PrecisionNeedsGraph"

    def test_engine_cache(self, tmp_path: Path) -> None:
        model = write_sample("mlp", tmp_path / "in")
        trt = FakeTensorRT("10.13.0.35")
        first = self.run(tmp_path / "a", trt, model=model, cache_dir=tmp_path / "cache")
        builds = len([c for c in trt.calls if c[0] == "build_serialized_network"])
        second = self.run(tmp_path / "b", trt, model=model, cache_dir=tmp_path / "cache")
        assert first.cache_key == second.cache_key
        assert (first.cache_hit, second.cache_hit) == (False, True)
        assert len([c for c in trt.calls if c[0] == "build_serialized_network"]) == builds
        assert second.parity is not None and second.parity.passed  # a cached engine is still checked
        other_gpu = self.run(
            tmp_path / "c", trt, model=model, cache_dir=tmp_path / "cache", gpu_product="NVIDIA-L4"
        )
        assert other_gpu.cache_hit is False and other_gpu.cache_key != first.cache_key

    def test_dynamic_spatial_dims_need_profiles(self, tmp_path: Path) -> None:
        model = write_sample("cnn", tmp_path / "in")
        result = self.run(tmp_path / "a", FakeTensorRT(), model=model)
        assert result.error is not None
        assert result.error.reason == "ProfileRequired" and "'height'" in result.error.message
        profile = ShapeProfile(input="image", min=[1, 3, 8, 8], opt=[4, 3, 16, 16], max=[8, 3, 32, 32])
        result = self.run(tmp_path / "b", FakeTensorRT(), model=model, engine=EngineSpec(profiles=[profile]))
        assert result.ok, result.error
        assert result.parity is not None and result.parity.samples == 8

    def test_prebuilt_plan_is_served_as_is(self, tmp_path: Path) -> None:
        write_sample("mlp", tmp_path / "in")
        plan = tmp_path / "in" / "mlp.plan"
        plan.write_bytes(b"ftrt-prebuilt")
        result = self.run(tmp_path, FakeTensorRT(), model=plan)
        assert result.ok, result.error
        assert result.parity is None and result.build_seconds == 0.0
        assert (tmp_path / "repository" / "model" / "1" / "model.plan").read_bytes() == b"ftrt-prebuilt"

    def test_timing_cache_per_tensorrt_version_and_gpu_product(self, tmp_path: Path) -> None:
        model = write_sample("mlp", tmp_path / "in")
        cache = tmp_path / "cache"
        for index, (version, product) in enumerate(
            [
                ("10.13.3.9", "NVIDIA-H100-80GB-HBM3"),
                ("10.16.1.11", "NVIDIA-H100-80GB-HBM3"),
                ("10.16.1.11", "NVIDIA-L4"),
            ]
        ):
            result = self.run(
                tmp_path / str(index),
                FakeTensorRT(version),
                model=model,
                cache_dir=cache,
                gpu_product=product,
            )
            assert result.ok, result.error
        files = sorted(str(p.relative_to(cache)) for p in (cache / "timing-caches").rglob("*.cache"))
        assert files == [
            "timing-caches/tensorrt-10.13.3.9/NVIDIA-H100-80GB-HBM3.cache",
            "timing-caches/tensorrt-10.16.1.11/NVIDIA-H100-80GB-HBM3.cache",
            "timing-caches/tensorrt-10.16.1.11/NVIDIA-L4.cache",
        ]

    def test_exceptions_of_the_bindings_become_the_result(self, tmp_path: Path) -> None:
        """A node whose driver TensorRT cannot use: the bindings raise TypeError; the Job still reports."""
        result = self.run(tmp_path, FakeTensorRT(usable_gpu=False))
        assert result.error is not None and result.error.reason == "TensorRTError"
        assert "nullptr" in result.error.message
        assert result.signature is not None and result.tensorrt_version == "10.16.1.11"
        assert json.loads(result.json_line())["error"]["reason"] == "TensorRTError"

    def test_cuda_bindings_newer_than_the_driver(self, tmp_path: Path) -> None:
        result = self.run(tmp_path, FakeTensorRT(), cudart=FakeCudaRuntime(runtime=13000, driver=12080))
        assert result.error is not None and result.error.reason == "CudaDriverTooOld"
        assert not (tmp_path / "repository").exists()

    def test_without_tensorrt(self, tmp_path: Path) -> None:
        model = write_sample("mlp", tmp_path / "in")
        result = run_conversion(request(tmp_path, model, "tensorrt"))
        assert result.error is not None and result.error.reason == "TensorRTUnavailable"
        assert result.signature is not None


def test_cache_key_follows_the_backend_actually_built(tmp_path: Path) -> None:
    model = write_sample("mlp", tmp_path / "in")
    spec_says_tensorrt = run_conversion(request(tmp_path / "a", model, "onnxruntime", engine=EngineSpec()))
    spec_says_onnxruntime = run_conversion(
        request(tmp_path / "b", model, "onnxruntime", engine=EngineSpec(backend="onnxruntime"))
    )
    assert spec_says_tensorrt.cache_key == spec_says_onnxruntime.cache_key
