"""Everything a runtime needs of a model, checked before a GPU or a Triton server ever sees it.

The order matters: the checks that stop unsafe or impossible files (inspection: external data paths, declared
sizes) run before onnx.checker reads external files, and the cheap structural checks before the runtime ones.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from nimify.model.errors import ModelError
from nimify.model.inspection import ModelReport, inspect_onnx, inspect_plan, resolve_format
from nimify.model.onnx_file import check_model_file, read_onnx
from nimify.model.operators import unsupported_by_onnxruntime, unsupported_by_tensorrt
from nimify.model.opsets import check_opset
from nimify.model.signature import Signature

BACKENDS = ("tensorrt", "onnxruntime", "python")


def validate_model(
    path: Path,
    *,
    backend: str = "onnxruntime",
    model_format: str | None = None,
    signature_hint: Signature | None = None,
) -> ModelReport:
    """Inspect and validate a model for a backend (`tensorrt`, `onnxruntime`, or `python`, which runs ORT)."""
    if backend not in BACKENDS:
        raise ModelError("UnknownBackend", f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    check_model_file(path)
    if resolve_format(path, model_format) == "tensorrt-plan":
        if backend != "tensorrt":
            raise ModelError(
                "PlanNeedsTensorRT", f"{path.name} is a TensorRT plan; only the tensorrt backend serves plans"
            )
        return inspect_plan(path, signature_hint)

    model = read_onnx(path)
    report = inspect_onnx(path, model)
    check_opset(model, "tensorrt" if backend == "tensorrt" else "onnxruntime", path.name)
    try:
        # Path-based so models beyond protobuf's 2 GiB (weights in external data) are checked too.
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.shape_inference.InferenceError as error:
        raise ModelError("ShapeInferenceFailed", f"{path.name}: {_first_line(error)}") from None
    except onnx.checker.ValidationError as error:
        raise ModelError("OnnxCheckFailed", f"{path.name}: {_first_line(error)}") from None
    if backend == "tensorrt":
        missing = unsupported_by_tensorrt(model)
        strings = [t.name for _, t in report.signature.tensors() if t.dtype == "STRING"]
        if strings:
            raise ModelError(
                "UnsupportedDataType", f"{path.name}: TensorRT has no string tensors ({', '.join(strings)})"
            )
    else:
        missing = unsupported_by_onnxruntime(model)
    if missing:
        runtime = "TensorRT" if backend == "tensorrt" else "ONNX Runtime"
        raise ModelError(
            "UnsupportedOperator", f"{path.name}: {runtime} cannot run operator(s) {', '.join(missing)}"
        )
    return report


def _first_line(error: Exception) -> str:
    text = " ".join(str(error).split("\n\n")[0].split())
    return text[:500]
