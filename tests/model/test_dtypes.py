"""The element type tables: ONNX's numbers as onnx defines them, without importing onnx to render configs."""

from __future__ import annotations

import subprocess
import sys

import onnx

from nimify.model.dtypes import BY_NAME, TensorProto, onnx_type_name


def test_element_type_numbers_are_onnx_s() -> None:
    for member in TensorProto:
        assert member.value == getattr(onnx.TensorProto, member.name), member.name
    for data_type in BY_NAME.values():
        assert onnx.TensorProto.DataType.Name(data_type.onnx) == data_type.name


def test_names_of_types_triton_cannot_carry() -> None:
    assert onnx_type_name(onnx.TensorProto.FLOAT8E4M3FN) == "FLOAT8E4M3FN"
    assert onnx_type_name(999) == "type 999"


def test_the_operator_imports_neither_onnx_nor_numpy() -> None:
    check = "import sys, nimify.controller.operator; print(sorted({'onnx', 'numpy'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
