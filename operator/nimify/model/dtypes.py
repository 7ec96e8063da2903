"""Tensor element types under their three names: ONNX's (our canonical one), Triton's config enum, KServe's
wire name.

The operator renders Triton configs from these tables and never reads a model, so they import neither onnx
nor numpy (a third of the operator's memory): ONNX's element type numbers are written out (they are fixed by
onnx.proto; tests/model/test_dtypes.py compares them with onnx's), and the helpers that need onnx or numpy
import it when called.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


class TensorProto(IntEnum):
    """onnx.TensorProto.DataType, the values onnx.proto fixes."""

    FLOAT = 1
    UINT8 = 2
    INT8 = 3
    UINT16 = 4
    INT16 = 5
    INT32 = 6
    INT64 = 7
    STRING = 8
    BOOL = 9
    FLOAT16 = 10
    DOUBLE = 11
    UINT32 = 12
    UINT64 = 13
    COMPLEX64 = 14
    COMPLEX128 = 15
    BFLOAT16 = 16


@dataclass(frozen=True)
class DataType:
    name: str  # ONNX's name, upper-case: the `dtype` of a signature
    onnx: int  # TensorProto.DataType value
    triton: str  # config.pbtxt `data_type`
    kserve: str  # KServe v2 `datatype`
    numpy: str  # numpy dtype string ("object" for strings)


_TYPES = (
    DataType("FLOAT", TensorProto.FLOAT, "TYPE_FP32", "FP32", "float32"),
    DataType("FLOAT16", TensorProto.FLOAT16, "TYPE_FP16", "FP16", "float16"),
    DataType("BFLOAT16", TensorProto.BFLOAT16, "TYPE_BF16", "BF16", "bfloat16"),
    DataType("DOUBLE", TensorProto.DOUBLE, "TYPE_FP64", "FP64", "float64"),
    DataType("INT8", TensorProto.INT8, "TYPE_INT8", "INT8", "int8"),
    DataType("INT16", TensorProto.INT16, "TYPE_INT16", "INT16", "int16"),
    DataType("INT32", TensorProto.INT32, "TYPE_INT32", "INT32", "int32"),
    DataType("INT64", TensorProto.INT64, "TYPE_INT64", "INT64", "int64"),
    DataType("UINT8", TensorProto.UINT8, "TYPE_UINT8", "UINT8", "uint8"),
    DataType("UINT16", TensorProto.UINT16, "TYPE_UINT16", "UINT16", "uint16"),
    DataType("UINT32", TensorProto.UINT32, "TYPE_UINT32", "UINT32", "uint32"),
    DataType("UINT64", TensorProto.UINT64, "TYPE_UINT64", "UINT64", "uint64"),
    DataType("BOOL", TensorProto.BOOL, "TYPE_BOOL", "BOOL", "bool"),
    DataType("STRING", TensorProto.STRING, "TYPE_STRING", "BYTES", "object"),
)

BY_NAME = {t.name: t for t in _TYPES}
BY_ONNX = {t.onnx: t for t in _TYPES}
BY_TRITON = {t.triton: t for t in _TYPES}


def from_onnx(elem_type: int) -> DataType | None:
    return BY_ONNX.get(elem_type)


def by_name(name: str) -> DataType:
    return BY_NAME[name]


def onnx_type_name(elem_type: int) -> str:
    """ONNX's name for any element type, including those Triton cannot carry (for error messages)."""
    from onnx import TensorProto as OnnxTensorProto

    try:
        return str(OnnxTensorProto.DataType.Name(elem_type))
    except ValueError:
        return f"type {elem_type}"


def numpy_dtype(name: str) -> np.dtype[np.generic]:
    """The numpy dtype used for reference data; bfloat16 has no numpy type, so it travels as float32."""
    import numpy as np

    numpy_name = BY_NAME[name].numpy
    return np.dtype("float32" if numpy_name == "bfloat16" else numpy_name)


def itemsize(elem_type: int) -> int | None:
    """Bytes per element in raw tensor data, None for strings and for types with sub-byte packing."""
    sizes: dict[int, int] = {
        TensorProto.FLOAT: 4,
        TensorProto.FLOAT16: 2,
        TensorProto.BFLOAT16: 2,
        TensorProto.DOUBLE: 8,
        TensorProto.INT8: 1,
        TensorProto.INT16: 2,
        TensorProto.INT32: 4,
        TensorProto.INT64: 8,
        TensorProto.UINT8: 1,
        TensorProto.UINT16: 2,
        TensorProto.UINT32: 4,
        TensorProto.UINT64: 8,
        TensorProto.BOOL: 1,
        TensorProto.COMPLEX64: 8,
        TensorProto.COMPLEX128: 16,
    }
    return sizes.get(elem_type)
