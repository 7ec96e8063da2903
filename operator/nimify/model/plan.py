"""The signature of a TensorRT plan: read from the engine when TensorRT (and a GPU) is at hand, else from
elsewhere.

Deserializing a plan needs the TensorRT version that built it and a GPU, so on most machines the signature has
to come from the ONNX file the plan was built from (next to it, same stem or `model.onnx`) or from a signature
the caller already knows (the NimService's status, a JSON file).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from nimify.model.errors import ModelError
from nimify.model.signature import Dim, Signature, TensorInfo

# tensorrt.DataType member names → ONNX dtype names.
_TRT_DTYPES = {
    "FLOAT": "FLOAT",
    "HALF": "FLOAT16",
    "BF16": "BFLOAT16",
    "INT8": "INT8",
    "INT32": "INT32",
    "INT64": "INT64",
    "BOOL": "BOOL",
    "UINT8": "UINT8",
}


def import_tensorrt() -> Any | None:
    try:
        return importlib.import_module("tensorrt")
    except ImportError:
        return None


def engine_signature(plan: bytes, trt: Any) -> Signature:
    """IO tensors of a serialized engine, through TensorRT's runtime (dynamic dims are anonymous: -1)."""
    logger = trt.Logger(trt.Logger.ERROR)
    # A plan that uses TensorRT's plugin ops deserializes only once the plugin library is registered (Triton's
    # TensorRT backend does the same at start-up).
    trt.init_libnvinfer_plugins(logger, "")
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    if engine is None:
        raise ModelError(
            "PlanUnreadable", "TensorRT could not deserialize the plan (built by another version?)"
        )
    inputs: list[TensorInfo] = []
    outputs: list[TensorInfo] = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        dtype_name = str(engine.get_tensor_dtype(name)).rsplit(".", 1)[-1]
        dtype = _TRT_DTYPES.get(dtype_name)
        if dtype is None:
            raise ModelError("UnsupportedDataType", f"plan tensor '{name}' has TensorRT type {dtype_name}")
        dims: tuple[Dim, ...] = tuple(None if d < 0 else int(d) for d in engine.get_tensor_shape(name))
        tensor = TensorInfo(name, dtype, dims)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        (inputs if is_input else outputs).append(tensor)
    return Signature(tuple(inputs), tuple(outputs))


def companion_onnx(plan_path: Path) -> Path | None:
    for candidate in (plan_path.with_suffix(".onnx"), plan_path.parent / "model.onnx"):
        if candidate.is_file():
            return candidate
    return None


def plan_signature(
    plan_path: Path, hint: Signature | None = None, trt: Any | None = None
) -> tuple[Signature, str]:
    """The plan's signature and where it came from: `tensorrt`, `hint`, or the companion ONNX file's name."""
    trt = trt if trt is not None else import_tensorrt()
    if trt is not None:
        try:
            return engine_signature(plan_path.read_bytes(), trt), "tensorrt"
        except ModelError:
            if hint is None and companion_onnx(plan_path) is None:
                raise
        except Exception:
            pass
    if hint is not None:
        return hint, "hint"
    if (onnx_path := companion_onnx(plan_path)) is not None:
        from nimify.model.onnx_file import read_onnx
        from nimify.model.onnx_signature import signature_of

        return signature_of(read_onnx(onnx_path), onnx_path.name), onnx_path.name
    raise ModelError(
        "PlanSignatureUnknown",
        f"{plan_path.name} is a TensorRT plan and its signature cannot be read here (no TensorRT or no GPU); "
        "put the ONNX file it was built from next to it or pass a signature",
    )
