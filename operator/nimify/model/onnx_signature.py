"""The IO signature of an ONNX graph: inputs are graph inputs minus initializers, dims as the model declares
them.

A dim is fixed (a non-negative `dim_value`), named dynamic (`dim_param`) or anonymous dynamic (neither, or
a negative `dim_value`: PaddlePaddle and older TensorFlow exporters write -1 for "any size", and onnx.checker
and ONNX Runtime read it so). Shape inference fills in outputs the model leaves unshaped, and for dims it
cannot tie to anything it invents placeholder names (`unk__54`); those are not the model's names, so they are
shown as anonymous dims. A name is the model's own when it appears on one of the graph's declared inputs,
outputs or value infos.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

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


def declared_dim_names(model: ModelProto) -> frozenset[str]:
    """Every dim_param the model itself writes on its graph's inputs, outputs and value infos."""
    graph = model.graph
    values: Iterable[ValueInfoProto] = (*graph.input, *graph.output, *graph.value_info)
    return frozenset(
        dim.dim_param
        for value in values
        if value.type.HasField("tensor_type")
        for dim in value.type.tensor_type.shape.dim
        if dim.HasField("dim_param") and dim.dim_param
    )


def signature_of(model: ModelProto, filename: str) -> Signature:
    """The signature of the model as written, its unshaped outputs completed by shape inference."""
    names = declared_dim_names(model)
    graph = infer_shapes(model).graph
    stored = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    inputs = tuple(_tensor(v, "input", filename, names) for v in graph.input if v.name not in stored)
    outputs = tuple(_tensor(v, "output", filename, names) for v in graph.output)
    if not outputs:
        raise ModelError("ModelHasNoOutputs", f"{filename}: the graph declares no outputs")
    return Signature(inputs, outputs)


def _tensor(value: ValueInfoProto, kind: str, filename: str, names: frozenset[str]) -> TensorInfo:
    label = f"{filename}: {kind} '{value.name}'"
    if not value.type.HasField("tensor_type"):
        what = value.type.WhichOneof("value") or "no type"
        hint = ""
        if what == "sequence_type" and value.type.sequence_type.elem_type.HasField("map_type"):
            # What skl2onnx writes for a classifier's probabilities unless told otherwise.
            hint = (
                " (a ZipMap of class probabilities: export without it, e.g. skl2onnx options "
                "{'zipmap': False})"
            )
        raise ModelError(
            "UnsupportedTensorType", f"{label} is a {what}, Triton serves only plain tensors{hint}"
        )
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
        if dim.HasField("dim_value") and dim.dim_value >= 0:
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param") and dim.dim_param in names:
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return TensorInfo(value.name, dtype.name, tuple(dims))


def with_runtime_dims(signature: Signature, session: Any) -> Signature:
    """The signature with every dim ONNX Runtime fixes where the file leaves it dynamic fixed too.

    The runtime is the authority: a file may name a dim (an LSTM state's `[1, 'LSTMhn_dim_1', 128]`) that
    ONNX Runtime's own shape inference settles (`[1, 1, 128]`), and Triton's onnxruntime backend compares a
    config's dims with what the runtime reports, exactly: `-1` for such a dim is refused when it loads."""

    def settled(tensor: TensorInfo, reported: Sequence[object] | None) -> TensorInfo:
        if reported is None or len(reported) != tensor.rank:
            return tensor
        dims = tuple(
            have if not isinstance(dim, int) and isinstance(have, int) and have >= 0 else dim
            for dim, have in zip(tensor.dims, reported, strict=True)
        )
        return tensor if dims == tensor.dims else dataclasses.replace(tensor, dims=dims)

    inputs = {arg.name: arg.shape for arg in session.get_inputs()}
    outputs = {arg.name: arg.shape for arg in session.get_outputs()}
    return Signature(
        tuple(settled(t, inputs.get(t.name)) for t in signature.inputs),
        tuple(settled(t, outputs.get(t.name)) for t in signature.outputs),
    )
