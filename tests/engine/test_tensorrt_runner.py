"""Running an engine for the parity check, against fakes of `tensorrt` and cuda-python that refuse like the
real ones: tensor types nptype cannot map, shapes outside the profile, shape tensors, data-dependent outputs,
a CUDA runtime newer than the driver, and exceptions from the bindings."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from packaging.requirements import Requirement

from nimify.api import ShapeProfile
from nimify.engine.tensorrt_build import BuildSettings, build_engine
from nimify.engine.tensorrt_runner import TensorRTModel
from nimify.model.errors import ModelError
from nimify.model.samples import write_sample
from tests.engine.fake_tensorrt import FakeCudaRuntime, FakeTensorRT

PROFILE = [ShapeProfile(input="input", min=[1, 16], opt=[8, 16], max=[8, 16])]


def plan_for(tmp_path: Path, version: str = "10.16.1.11", sample: str = "mlp", **settings: Any) -> bytes:
    path = tmp_path / "m.plan"
    values = {"profiles": PROFILE, **settings}
    build_engine(
        write_sample(sample, tmp_path / "in"), path, BuildSettings(**values), trt=FakeTensorRT(version)
    )
    return path.read_bytes()


def run(plan: bytes, trt: FakeTensorRT, feeds: dict[str, Any]) -> dict[str, Any]:
    cudart = FakeCudaRuntime()
    model = TensorRTModel(plan, trt, cudart)
    try:
        return model.run(feeds)
    finally:
        model.close()
        assert not cudart.memory, "device buffers leaked"


def feeds(batch: int = 2) -> dict[str, Any]:
    return {"input": np.random.default_rng(0).standard_normal((batch, 16)).astype(np.float32)}


@pytest.mark.parametrize("version", ["10.16.1.11", "11.4.0.106"])
def test_runs_on_both_majors(tmp_path: Path, version: str) -> None:
    out = run(plan_for(tmp_path, version), FakeTensorRT(version), feeds())
    assert out["logits"].shape == (2, 4) and out["logits"].dtype == np.float32


# --- Defect 2: bf16 / fp8 engine I/O is read with ml_dtypes; packed types are a named ModelError. ---


def test_bf16_output_needs_no_nptype(tmp_path: Path) -> None:
    trt = FakeTensorRT(tensor_types={"logits": "BF16"})
    with pytest.raises(TypeError):
        trt.nptype(trt.bfloat16)  # what the old runner called: TensorRT has no numpy type for it

    def refuse(trt_type: Any) -> type:
        raise AssertionError("the runner must not use trt.nptype")

    trt.nptype = refuse  # type: ignore[method-assign]
    out = run(plan_for(tmp_path), trt, feeds())
    assert out["logits"].dtype == ml_dtypes.bfloat16
    exact = run(plan_for(tmp_path), FakeTensorRT(), feeds())["logits"]
    np.testing.assert_allclose(out["logits"].astype(np.float32), exact, rtol=1e-2, atol=1e-2)


def test_fp8_input(tmp_path: Path) -> None:
    trt = FakeTensorRT(tensor_types={"input": "FP8"})
    out = run(plan_for(tmp_path), trt, feeds())
    assert out["logits"].shape == (2, 4)


@pytest.mark.parametrize("packed", ["INT4", "FP4"])
def test_packed_types_are_refused_by_name(tmp_path: Path, packed: str) -> None:
    trt = FakeTensorRT(tensor_types={"logits": packed})
    with pytest.raises(ModelError) as error:
        TensorRTModel(plan_for(tmp_path), trt, FakeCudaRuntime())
    assert error.value.reason == "UnsupportedTensorType"
    assert f"'logits' has TensorRT type {packed} (packed" in error.value.message


# --- Defect 3: set_input_shape's False, shape tensors, data-dependent outputs. ---


def test_shape_outside_the_profile_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as error:
        run(plan_for(tmp_path), FakeTensorRT(), feeds(batch=9))
    assert error.value.reason == "ShapeOutsideProfile"
    assert "input 'input' of shape [9, 16] is outside the engine's profile [[1, 16] .. [8, 16]]" in (
        error.value.message
    )
    assert "setInputShape" in error.value.message  # TensorRT's own log line


def test_shape_tensor_input_is_passed_in_host_memory(tmp_path: Path) -> None:
    # A plan whose 'temperature' input TensorRT reads on the host (is_shape_inference_io).
    profiles = [
        ShapeProfile(input="x", min=[1, 8], opt=[4, 8], max=[4, 8]),
        ShapeProfile(input="state", min=[2, 1, 16], opt=[2, 4, 16], max=[2, 4, 16]),
    ]
    plan = plan_for(tmp_path, sample="recurrent", profiles=profiles)
    trt = FakeTensorRT(shape_tensors={"temperature"})
    rng = np.random.default_rng(1)
    inputs = {
        "x": rng.standard_normal((3, 8)).astype(np.float32),
        "state": rng.standard_normal((2, 3, 16)).astype(np.float32),
        "temperature": np.array(0.5, np.float32),
    }
    out = run(plan, trt, inputs)
    plain = run(plan, FakeTensorRT(), inputs)
    assert out.keys() == plain.keys()
    for name in out:
        np.testing.assert_array_equal(out[name], plain[name])


def test_shape_tensor_output_is_read_from_host_memory(tmp_path: Path) -> None:
    out = run(plan_for(tmp_path), FakeTensorRT(shape_tensors={"logits"}), feeds())
    reference = run(plan_for(tmp_path), FakeTensorRT(), feeds())
    np.testing.assert_array_equal(out["logits"], reference["logits"])


def test_data_dependent_outputs_use_an_output_allocator(tmp_path: Path) -> None:
    trt = FakeTensorRT(data_dependent={"logits"})
    out = run(plan_for(tmp_path), trt, feeds(batch=3))
    assert out["logits"].shape == (3, 4)


# --- Defect 4: plugins registered before deserializing. ---


def test_plugins_are_initialized_before_deserializing(tmp_path: Path) -> None:
    trt = FakeTensorRT()
    run(plan_for(tmp_path), trt, feeds())
    assert trt.calls[0] == ("init_libnvinfer_plugins", "")


# --- Defect 5: a CUDA runtime newer than the node's driver (error 35) is named, with both versions. ---


def test_cuda_runtime_newer_than_the_driver(tmp_path: Path) -> None:
    cudart = FakeCudaRuntime(runtime=13000, driver=12090)  # cuda-bindings 13 on a CUDA 12.9 driver
    with pytest.raises(ModelError) as error:
        TensorRTModel(plan_for(tmp_path), FakeTensorRT(), cudart)
    assert error.value.reason == "CudaDriverTooOld"
    message = error.value.message
    assert "error 35" in message and "cuda-python is 13.0" in message and "supports CUDA 12.9" in message
    assert "nimify[tensorrt-cu12]" in message


# --- Defect 7: exceptions of the bindings, and refusals by return value. ---


def test_runtime_without_gpu_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as error:
        TensorRTModel(plan_for(tmp_path), FakeTensorRT(usable_gpu=False), FakeCudaRuntime())
    assert error.value.reason == "TensorRTError" and "nullptr" in error.value.message


def test_plan_of_another_tensorrt_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as error:
        TensorRTModel(plan_for(tmp_path, "10.13.3.9"), FakeTensorRT("10.16.1.11"), FakeCudaRuntime())
    assert error.value.reason == "PlanUnreadable" and "not compatible" in error.value.message


def test_plan_of_another_gpu_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as error:
        TensorRTModel(plan_for(tmp_path), FakeTensorRT(gpu="NVIDIA L4"), FakeCudaRuntime())
    assert error.value.reason == "PlanUnreadable"


def test_exception_while_running_is_a_model_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trt = FakeTensorRT()
    cudart = FakeCudaRuntime()
    model = TensorRTModel(plan_for(tmp_path), trt, cudart)

    def broken(name: str, shape: Any) -> bool:
        raise TypeError("set_input_shape(): incompatible function arguments")

    monkeypatch.setattr(model.context, "set_input_shape", broken)
    with pytest.raises(ModelError) as error:
        model.run(feeds())
    assert (
        error.value.reason == "TensorRTError"
        and "running the engine failed: TypeError" in error.value.message
    )
    model.close()
    assert not cudart.memory


def test_real_cuda_bindings_without_a_driver(tmp_path: Path) -> None:
    """cuda-python itself (cuda-bindings, a dev dependency) on this GPU-less machine: its first call answers
    error 35, which must come out named, with the versions, before TensorRT is touched."""
    cudart = importlib.import_module("cuda.bindings.runtime")
    trt = FakeTensorRT()
    with pytest.raises(ModelError) as error:
        TensorRTModel(plan_for(tmp_path), trt, cudart)
    assert error.value.reason == "CudaDriverTooOld"
    assert "the node's driver supports CUDA none (no driver)" in error.value.message
    assert trt.calls == []  # plus no TensorRT call


# --- Defect 5: the builder image's extras pin cuda-python's bindings to the CUDA major of TensorRT. ---


@pytest.mark.parametrize("major", [12, 13])
def test_builder_extras_pin_one_cuda_major(major: int) -> None:
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    extra = pyproject["project"]["optional-dependencies"][f"tensorrt-cu{major}"]
    requirements = {Requirement(r).name: Requirement(r) for r in extra}
    runtime = "nvidia-cuda-runtime-cu12" if major == 12 else "nvidia-cuda-runtime"
    assert set(requirements) == {f"tensorrt-cu{major}", "cuda-bindings", runtime}
    for name in ("cuda-bindings", runtime):
        spec = requirements[name].specifier
        assert (
            spec.contains(f"{major}.9")
            and not spec.contains(f"{major + 1}.0")
            and not spec.contains(f"{major - 1}.9")
        ), name
    tensorrt = requirements[f"tensorrt-cu{major}"].specifier
    assert tensorrt.contains("10.16.1.11") and tensorrt.contains("11.4.0.106")
