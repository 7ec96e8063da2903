"""The IO signature of an ONNX graph: inputs are graph inputs minus initializers, dims keep their dim_param
names."""

from __future__ import annotations

import onnx
from onnx import ModelProto, ValueInfoProto

from nimify.model.dtypes import from_onnx, onnx_type_name
from nimify.model.errors import ModelError
from nimify.model.signature import Dim, Signature, TensorInfo


def infer_shapes(model: ModelProto) -> ModelProto:
    """The model with inferred shapes (outputs gain the dim names that flow from the inputs), or as it was."""
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
    except Exception:
        # Lenient here on purpose: validation runs strict inference and reports its failure by name.
        return model


def signature_of(model: ModelProto, filename: str) -> Signature:
    graph = model.graph
    stored = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    inputs = tuple(_tensor(v, "input", filename) for v in graph.input if v.name not in stored)
    outputs = tuple(_tensor(v, "output", filename) for v in graph.output)
    if not outputs:
        raise ModelError("ModelHasNoOutputs", f"{filename}: the graph declares no outputs")
    return Signature(inputs, outputs)


def _tensor(value: ValueInfoProto, kind: str, filename: str) -> TensorInfo:
    label = f"{filename}: {kind} '{value.name}'"
    if not value.type.HasField("tensor_type"):
        what = value.type.WhichOneof("value") or "no type"
        raise ModelError("UnsupportedTensorType", f"{label} is a {what}, Triton serves only plain tensors")
    tensor_type = value.type.tensor_type
    dtype = from_onnx(tensor_type.elem_type)
    if dtype is None:
        raise ModelError(
            "UnsupportedDataType",
            f"{label} has type {onnx_type_name(tensor_type.elem_type)}, which Triton cannot carry",
        )
    if not tensor_type.HasField("shape"):
        raise ModelError("UnknownRank", f"{label} has no shape, not even a rank; Triton needs the rank")
    dims: list[Dim] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or None)
    return TensorInfo(value.name, dtype.name, tuple(dims))
