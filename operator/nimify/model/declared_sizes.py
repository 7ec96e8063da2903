"""Refusing models whose declared sizes cannot be real: giant dims, tensors beyond any GPU, data shorter than
declared, stored tensors with negative dims.

These checks run on the protobuf alone, before anything allocates memory from the declared numbers.
"""

from __future__ import annotations

import math

from onnx import ModelProto, TensorProto, ValueInfoProto

from nimify.model import graph_walk
from nimify.model.dtypes import itemsize
from nimify.model.errors import ModelError

MAX_DIM = 2**31 - 1  # TensorRT and Triton index dimensions with 32-bit integers
MAX_TENSOR_BYTES = 2**37  # 128 GiB: more than one GPU holds, so no single real tensor is bigger

_TYPED_FIELDS: dict[int, str] = {
    TensorProto.FLOAT: "float_data",
    TensorProto.DOUBLE: "double_data",
    TensorProto.INT64: "int64_data",
    TensorProto.UINT64: "uint64_data",
    TensorProto.UINT32: "uint64_data",
    TensorProto.COMPLEX64: "float_data",
    TensorProto.COMPLEX128: "double_data",
}


def _typed_field(data_type: int) -> str:
    # Every other numeric type travels in int32_data (ONNX packs small ints and halves there).
    return _TYPED_FIELDS.get(data_type, "int32_data")


def check_declared_sizes(model: ModelProto, filename: str) -> None:
    graph = model.graph
    for kind, values in (("input", graph.input), ("output", graph.output)):
        for value in values:
            _check_value_info(value, f"{filename}: {kind} '{value.name}'")
    for tensor in graph_walk.tensors(model):
        _check_tensor(tensor, f"{filename}: tensor '{tensor.name}'")


def _check_value_info(value: ValueInfoProto, label: str) -> None:
    if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
        return
    fixed = []
    for dim in value.type.tensor_type.shape.dim:
        # A negative dim_value is how some exporters (PaddlePaddle, older TensorFlow) write a dynamic dim;
        # onnx.checker and ONNX Runtime read it so, and so does the signature.
        if dim.HasField("dim_value") and dim.dim_value >= 0:
            if dim.dim_value > MAX_DIM:
                raise ModelError(
                    "DeclaredSizeAbsurd", f"{label} declares dimension {dim.dim_value}, beyond 2^31-1"
                )
            fixed.append(dim.dim_value)
    size = itemsize(value.type.tensor_type.elem_type) or 1
    if math.prod(fixed) * size > MAX_TENSOR_BYTES:
        raise ModelError(
            "DeclaredSizeAbsurd",
            f"{label} declares {fixed}: {math.prod(fixed) * size} bytes before any dynamic dim, "
            "beyond 128 GiB",
        )


def _check_tensor(tensor: TensorProto, label: str) -> None:
    if any(d < 0 for d in tensor.dims):
        raise ModelError("DeclaredSizeAbsurd", f"{label} declares a negative dimension {list(tensor.dims)}")
    elements = math.prod(tensor.dims)
    size = itemsize(tensor.data_type)
    if size is not None and elements * size > MAX_TENSOR_BYTES:
        raise ModelError(
            "DeclaredSizeAbsurd", f"{label} declares shape {list(tensor.dims)}: {elements * size} bytes"
        )
    if tensor.data_location == TensorProto.EXTERNAL or size is None:
        return
    if tensor.HasField("raw_data"):
        if len(tensor.raw_data) != elements * size:
            raise ModelError(
                "TensorDataMismatch",
                f"{label}: shape {list(tensor.dims)} needs {elements * size} bytes, "
                f"it holds {len(tensor.raw_data)}",
            )
        return
    count = len(getattr(tensor, _typed_field(tensor.data_type)))
    if tensor.data_type in (TensorProto.COMPLEX64, TensorProto.COMPLEX128):
        count //= 2
    # An empty tensor may legitimately carry no data fields at all; otherwise the count must match exactly.
    if count != elements and not (count == 0 and elements == 0):
        raise ModelError(
            "TensorDataMismatch",
            f"{label}: shape {list(tensor.dims)} needs {elements} values, it holds {count}",
        )
