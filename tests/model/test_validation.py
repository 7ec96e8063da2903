"""Validation per backend: opsets, operators, onnx.checker and shape inference, each failure by name."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from nimify.model.errors import ModelError
from nimify.model.opsets import onnxruntime_max_opset
from nimify.model.samples import SAMPLES, build_mlp, write_model, write_sample
from nimify.model.validation import validate_model


def identity_model(
    opset: int, op: str = "Relu", domain: str = "", extra_opsets: dict[str, int] | None = None
) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], domain=domain)], "g", [x], [y])
    imports = [helper.make_opsetid("", opset)] + [
        helper.make_opsetid(d, v) for d, v in (extra_opsets or {}).items()
    ]
    return helper.make_model(graph, opset_imports=imports, ir_version=8)


@pytest.mark.parametrize("name", sorted(SAMPLES))
@pytest.mark.parametrize("backend", ["onnxruntime", "tensorrt", "python"])
def test_samples_validate_for_every_backend(tmp_path: Path, name: str, backend: str) -> None:
    report = validate_model(write_sample(name, tmp_path), backend=backend)
    assert report.signature.inputs


def test_tensorrt_opset_range(tmp_path: Path) -> None:
    path = write_model(identity_model(8), tmp_path / "old.onnx")
    with pytest.raises(ModelError) as error:
        validate_model(path, backend="tensorrt")
    assert error.value.reason == "OpsetUnsupported"
    assert "opset 8" in error.value.message and "9 to 25" in error.value.message
    validate_model(path, backend="onnxruntime")  # ONNX Runtime still reads opset 8


def test_onnxruntime_max_opset_is_probed() -> None:
    assert 21 <= onnxruntime_max_opset() <= onnx.defs.onnx_opset_version() + 2


def test_opset_beyond_onnxruntime(tmp_path: Path) -> None:
    opset = onnxruntime_max_opset() + 1
    path = tmp_path / "new.onnx"
    path.write_bytes(identity_model(opset).SerializeToString())
    with pytest.raises(ModelError) as error:
        validate_model(path)
    assert error.value.reason in ("OpsetUnsupported", "OnnxCheckFailed")
    assert str(opset) in error.value.message


def test_custom_domain_operator_is_unsupported_everywhere(tmp_path: Path) -> None:
    model = identity_model(17, op="Frobnicate", domain="com.example", extra_opsets={"com.example": 1})
    path = tmp_path / "custom.onnx"
    path.write_bytes(model.SerializeToString())
    for backend, runtime in (("onnxruntime", "ONNX Runtime"), ("tensorrt", "TensorRT")):
        with pytest.raises(ModelError) as error:
            validate_model(path, backend=backend)
        assert error.value.reason == "UnsupportedOperator"
        assert "com.example::Frobnicate" in error.value.message and runtime in error.value.message


def test_operator_tensorrt_documents_as_unsupported(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m"])
    graph = helper.make_graph([helper.make_node("Unique", ["x"], ["y"])], "g", [x], [y])
    path = write_model(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
        tmp_path / "u.onnx",
    )
    validate_model(path, backend="onnxruntime")
    with pytest.raises(ModelError) as error:
        validate_model(path, backend="tensorrt")
    assert error.value.reason == "UnsupportedOperator"
    assert "Unique" in error.value.message


def test_function_ops_count_as_supported_by_onnxruntime(tmp_path: Path) -> None:
    # Gelu (opset 20) is an ONNX function: ORT expands it even where no kernel is registered under that name.
    path = write_model(identity_model(20, op="Gelu"), tmp_path / "gelu.onnx")
    validate_model(path, backend="onnxruntime")


def test_shape_inference_failure_is_named(tmp_path: Path) -> None:
    model = build_mlp()
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 5  # the graph computes 4
    path = tmp_path / "wrong.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelError) as error:
        validate_model(path)
    assert error.value.reason == "ShapeInferenceFailed"
    assert "wrong.onnx" in error.value.message


def test_checker_failure_is_named(tmp_path: Path) -> None:
    model = build_mlp()
    del model.graph.node[0].input[2:]
    del model.graph.node[0].input[1:]
    path = tmp_path / "broken.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelError) as error:
        validate_model(path)
    assert error.value.reason == "OnnxCheckFailed"


def test_unknown_backend() -> None:
    with pytest.raises(ModelError) as error:
        validate_model(Path("x.onnx"), backend="tflite")
    assert error.value.reason == "UnknownBackend"


def test_plan_needs_tensorrt_backend(tmp_path: Path) -> None:
    path = tmp_path / "model.plan"
    path.write_bytes(b"ftrt" + b"\0" * 60)
    with pytest.raises(ModelError) as error:
        validate_model(path, backend="onnxruntime")
    assert error.value.reason == "PlanNeedsTensorRT"
