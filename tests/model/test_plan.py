"""TensorRT plans: recognised by name or magic, signature from TensorRT, a companion ONNX file, or a hint."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest

from nimify.model.errors import ModelError
from nimify.model.inspection import inspect_model
from nimify.model.plan import engine_signature, plan_signature
from nimify.model.samples import write_sample
from nimify.model.signature import Signature, TensorInfo


def fake_tensorrt(tensors: list[tuple[str, str, tuple[int, ...], bool]], *, readable: bool = True) -> Any:
    """Just enough of `tensorrt` to deserialize an engine and list its IO tensors."""
    trt = types.SimpleNamespace()

    class DataType:
        FLOAT = "DataType.FLOAT"
        HALF = "DataType.HALF"
        INT64 = "DataType.INT64"

    class TensorIOMode:
        INPUT = "INPUT"
        OUTPUT = "OUTPUT"

    class Engine:
        num_io_tensors = len(tensors)

        def get_tensor_name(self, index: int) -> str:
            return tensors[index][0]

        def _find(self, name: str) -> tuple[str, str, tuple[int, ...], bool]:
            return next(t for t in tensors if t[0] == name)

        def get_tensor_dtype(self, name: str) -> str:
            return getattr(DataType, self._find(name)[1])

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self._find(name)[2]

        def get_tensor_mode(self, name: str) -> str:
            return TensorIOMode.INPUT if self._find(name)[3] else TensorIOMode.OUTPUT

    class Runtime:
        def __init__(self, logger: object) -> None:
            pass

        def deserialize_cuda_engine(self, plan: bytes) -> Engine | None:
            # Like TensorRT: a plan with plugin layers does not deserialize before the plugins are registered.
            if not trt.plugins_initialized:
                return None
            return Engine() if readable else None

    def init_libnvinfer_plugins(logger: object, namespace: str) -> bool:
        trt.plugins_initialized = True
        return True

    class Logger:
        ERROR = 1

        def __init__(self, level: int) -> None:
            pass

    trt.DataType, trt.TensorIOMode, trt.Runtime, trt.Logger = DataType, TensorIOMode, Runtime, Logger
    trt.plugins_initialized = False
    trt.init_libnvinfer_plugins = init_libnvinfer_plugins
    return trt


def write_plan(path: Path) -> Path:
    path.write_bytes(b"ftrt" + bytes(range(60)))
    return path


def test_signature_read_from_the_engine(tmp_path: Path) -> None:
    trt = fake_tensorrt([("images", "HALF", (-1, 3, 224, 224), True), ("scores", "FLOAT", (-1, 1000), False)])
    signature = engine_signature(b"plan", trt)
    assert signature == Signature(
        (TensorInfo("images", "FLOAT16", (None, 3, 224, 224)),),
        (TensorInfo("scores", "FLOAT", (None, 1000)),),
    )


def test_unreadable_engine(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as error:
        plan_signature(write_plan(tmp_path / "model.plan"), trt=fake_tensorrt([], readable=False))
    assert error.value.reason == "PlanUnreadable"


def test_signature_from_companion_onnx(tmp_path: Path) -> None:
    write_sample("mlp", tmp_path)
    plan = write_plan(tmp_path / "mlp.plan")
    signature, source = plan_signature(plan)
    assert source == "mlp.onnx"
    assert signature.inputs[0] == TensorInfo("input", "FLOAT", ("batch", 16))
    report = inspect_model(plan)
    assert report.format == "tensorrt-plan"
    assert report.batching.batched


def test_signature_from_hint(tmp_path: Path) -> None:
    hint = Signature((TensorInfo("x", "FLOAT", ("n", 2)),), (TensorInfo("y", "FLOAT", ("n", 2)),))
    signature, source = plan_signature(write_plan(tmp_path / "engine.bin"), hint)
    assert (signature, source) == (hint, "hint")


def test_plan_recognised_by_magic(tmp_path: Path) -> None:
    hint = Signature((TensorInfo("x", "FLOAT", ("n",)),), (TensorInfo("y", "FLOAT", ("n",)),))
    report = inspect_model(write_plan(tmp_path / "engine.bin"), signature_hint=hint)
    assert report.format == "tensorrt-plan"


def test_no_signature_anywhere(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as error:
        plan_signature(write_plan(tmp_path / "model.engine"))
    assert error.value.reason == "PlanSignatureUnknown"
    assert "model.engine" in error.value.message
