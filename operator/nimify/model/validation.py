"""Everything a backend needs of a model, checked the same way by every entry point (`inspect`, `create`,
`convert` and the conversion Job, `serve`, `openapi`).

The order matters. First what no runtime may see: unsafe or impossible files (inspection: external data
leaving the folder, absurd declared sizes) and tensors Triton cannot carry. Then the runtime decides:
for onnxruntime (and python, which runs ONNX Runtime) an ONNX Runtime session is created, and its refusal,
in its own words, is the only reason a well-formed model is refused. For tensorrt, what TensorRT documents
as a limit is refused and the rest is left to the parser in the conversion Job. onnx.checker and strict
shape inference only advise: runtimes load models they complain about, so their findings are warnings.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import onnx

from nimify.model.batching import decide_batching
from nimify.model.errors import ModelError
from nimify.model.inspection import ModelReport, inspect_onnx, inspect_plan, resolve_format
from nimify.model.onnx_file import check_model_file, read_onnx
from nimify.model.onnx_signature import with_runtime_dims
from nimify.model.onnxruntime_session import check_onnxruntime_loads
from nimify.model.signature import Signature
from nimify.model.tensorrt_limits import check_tensorrt_limits

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
    warnings: list[str] = []
    session = None
    if backend == "tensorrt":
        warnings.extend(check_tensorrt_limits(model, report.signature, path.name))
        try:
            session = check_onnxruntime_loads(path)
        except ModelError as error:
            warnings.append(
                f"{error.message}; the parity check compares the engine with ONNX Runtime, so it would fail "
                "(engine.parity.samples 0 builds without it)"
            )
    else:
        session = check_onnxruntime_loads(path)
    if session is not None:
        # Dims the runtime fixes are fixed in the config Triton checks against it (and in batching's view).
        signature = with_runtime_dims(report.signature, session)
        if signature != report.signature:
            report = dataclasses.replace(
                report, signature=signature, batching=decide_batching(signature), declared=report.signature
            )
    if (advice := checker_findings(path)) is not None:
        warnings.append(advice)
    return dataclasses.replace(report, warnings=tuple(warnings))


def checker_findings(path: Path) -> str | None:
    """What onnx.checker (full check: strict shape inference included) finds wrong, as one line, or None."""
    try:
        # Path-based so models beyond protobuf's 2 GiB (weights in external data) are checked too.
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.shape_inference.InferenceError as error:
        return f"ONNX shape inference disagrees with the model: {_first_line(error)}"
    except onnx.checker.ValidationError as error:
        return f"onnx.checker: {_first_line(error)}"
    return None


def _first_line(error: Exception) -> str:
    text = " ".join(str(error).split("\n\n")[0].split())
    return text[:500]
