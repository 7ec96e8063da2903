"""Which ONNX opsets each runtime accepts: TensorRT's parser by its documented range, ONNX Runtime by
asking it."""

from __future__ import annotations

import functools

from onnx import ModelProto, TensorProto, defs, helper

from nimify.model.errors import ModelError

# TensorRT 11's ONNX parser (onnx-tensorrt) supports the default domain from opset 9 to 25.
TENSORRT_OPSETS = range(9, 26)
ONNXRUNTIME_MIN_OPSET = 7


def default_opset(model: ModelProto) -> int | None:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return None


@functools.cache
def onnxruntime_max_opset() -> int:
    """The newest default-domain opset the installed ONNX Runtime loads.

    ORT has no API for it, and its kernel registry runs ahead of what it accepts (kernels for an opset still
    under development are registered), so ask it: load a one-node model at descending opsets.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4
    for opset in range(defs.onnx_opset_version() + 2, ONNXRUNTIME_MIN_OPSET, -1):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
        probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
        try:
            onnxruntime.InferenceSession(
                probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
        except Exception:
            continue
        return opset
    return ONNXRUNTIME_MIN_OPSET


def check_opset(model: ModelProto, backend: str, filename: str) -> int:
    """The model's default-domain opset, refused when the backend's runtime cannot load it."""
    opset = default_opset(model)
    if opset is None:
        raise ModelError("OpsetMissing", f"{filename} imports no opset for the default ONNX domain")
    if backend == "tensorrt":
        low, high = TENSORRT_OPSETS.start, TENSORRT_OPSETS.stop - 1
    else:
        low, high = ONNXRUNTIME_MIN_OPSET, onnxruntime_max_opset()
    if not low <= opset <= high:
        runtime = "TensorRT's ONNX parser" if backend == "tensorrt" else "the installed ONNX Runtime"
        raise ModelError(
            "OpsetUnsupported", f"{filename} uses opset {opset}; {runtime} supports opsets {low} to {high}"
        )
    return opset
