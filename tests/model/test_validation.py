"""Validation per backend: ONNX Runtime decides for onnxruntime, TensorRT's documented limits for tensorrt,
onnx.checker only advises; each refusal by name."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from nimify.api import EngineSpec
from nimify.engine.convert import ConvertRequest, run_conversion
from nimify.model.errors import ModelError
from nimify.model.inspection import inspect_model
from nimify.model.samples import SAMPLES, build_mlp, write_model, write_sample
from nimify.model.tensorrt_limits import OPERATORS_DOC
from nimify.model.validation import validate_model
from nimify.triton.config_reader import read_model_config
from tests.real_models import SILERO_VAD_SEQUENCE, real_model


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


def ort_refusal(path: Path) -> str:
    """ONNX Runtime's own message when it refuses a model."""
    import onnxruntime

    with pytest.raises(Exception) as error:  # ORT raises its own pybind exception types
        onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return " ".join(str(error.value).split())


@pytest.mark.parametrize("name", sorted(SAMPLES))
@pytest.mark.parametrize("backend", ["onnxruntime", "tensorrt", "python"])
def test_samples_validate_for_every_backend(tmp_path: Path, name: str, backend: str) -> None:
    report = validate_model(write_sample(name, tmp_path), backend=backend)
    assert report.signature.inputs
    assert report.warnings == ()


def test_old_opset_onnxruntime_loads_is_accepted(tmp_path: Path) -> None:
    # Opset 6 is below what the installed ONNX Runtime documents, yet it loads Relu(6): that is what counts.
    path = write_model(identity_model(6), tmp_path / "old.onnx")
    validate_model(path, backend="onnxruntime")
    with pytest.raises(ModelError) as error:
        validate_model(path, backend="tensorrt")
    assert error.value.reason == "OpsetUnsupported"
    assert "opset 6" in error.value.message and "9 to 25" in error.value.message
    assert OPERATORS_DOC in error.value.message


def test_onnxruntime_refusal_is_reported_in_its_own_words(tmp_path: Path) -> None:
    # ONNX Runtime has no Add kernel for opset 6 (it has one for Relu there): only asking it tells them apart.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "g", [x], [y])
    path = write_model(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)]), tmp_path / "a.onnx"
    )
    with pytest.raises(ModelError) as error:
        validate_model(path)
    assert error.value.reason == "OnnxRuntimeLoadFailed"
    assert error.value.message.startswith("ONNX Runtime cannot load a.onnx: ")
    assert ort_refusal(path)[:120] in error.value.message


def test_future_opset_is_refused_by_onnxruntime(tmp_path: Path) -> None:
    opset = onnx.defs.onnx_opset_version() + 5
    path = tmp_path / "new.onnx"
    path.write_bytes(identity_model(opset).SerializeToString())
    with pytest.raises(ModelError) as error:
        validate_model(path)
    assert error.value.reason == "OnnxRuntimeLoadFailed"
    assert ort_refusal(path)[:120] in error.value.message


def test_constant_nodes_are_accepted(tmp_path: Path) -> None:
    # ORT registers no kernel for Constant (it folds it at load); exporters emit Constant all the time.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])
    nodes = [
        helper.make_node(
            "Constant", [], ["two"], value=helper.make_tensor("v", TensorProto.FLOAT, [], [2.0])
        ),
        helper.make_node("Mul", ["x", "two"], ["y"]),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)]
    )
    path = write_model(model, tmp_path / "constant.onnx")
    for backend in ("onnxruntime", "tensorrt", "python"):
        assert validate_model(path, backend=backend).warnings == ()


def test_custom_domain_operator(tmp_path: Path) -> None:
    model = identity_model(17, op="Frobnicate", domain="com.example", extra_opsets={"com.example": 1})
    path = tmp_path / "custom.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelError) as error:
        validate_model(path, backend="onnxruntime")
    assert error.value.reason == "OnnxRuntimeLoadFailed" and "Frobnicate" in error.value.message
    # A TensorRT plugin may implement it: only the parser in the Job can tell, so it is a warning there.
    report = validate_model(path, backend="tensorrt")
    assert any("com.example::Frobnicate" in w and "plugin" in w for w in report.warnings)
    assert any("ONNX Runtime cannot load" in w and "parity" in w for w in report.warnings)


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
    assert "Unique" in error.value.message and OPERATORS_DOC in error.value.message


def test_tensorrt_has_no_string_tensors(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.STRING, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.STRING, ["n"])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    path = write_model(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "s.onnx"
    )
    validate_model(path, backend="onnxruntime")
    with pytest.raises(ModelError) as error:
        validate_model(path, backend="tensorrt")
    assert error.value.reason == "UnsupportedDataType" and "'x' (STRING)" in error.value.message


def test_function_ops_are_accepted(tmp_path: Path) -> None:
    # Gelu (opset 20) is an ONNX function: ORT expands it even where no kernel is registered under that name.
    path = write_model(identity_model(20, op="Gelu"), tmp_path / "gelu.onnx")
    validate_model(path, backend="onnxruntime")


def test_shape_inference_disagreement_is_a_warning_when_onnxruntime_loads(tmp_path: Path) -> None:
    model = build_mlp()
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 5  # the graph computes 4
    path = tmp_path / "wrong.onnx"
    path.write_bytes(model.SerializeToString())
    report = validate_model(path)
    (warning,) = report.warnings
    assert warning.startswith("ONNX shape inference disagrees with the model: ")


def test_checker_failure_onnxruntime_refuses_too(tmp_path: Path) -> None:
    model = build_mlp()
    del model.graph.node[0].input[1:]
    path = tmp_path / "broken.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelError) as error:
        validate_model(path)
    assert error.value.reason == "OnnxRuntimeLoadFailed"
    assert "Gemm" in error.value.message


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


def test_dims_the_runtime_fixes_are_fixed_in_the_signature() -> None:
    """silero-vad's sequence export names its LSTM state's middle dim (`LSTMhn_dim_1`), which ONNX Runtime
    settles at 1: Triton's onnxruntime backend refuses a config with -1 there (ServingConfigMismatch)."""
    path = real_model(SILERO_VAD_SEQUENCE)
    declared = inspect_model(path).signature
    assert declared.outputs[1].name == "hn" and declared.outputs[1].dims == (1, "LSTMhn_dim_1", 128)
    validated = validate_model(path, backend="onnxruntime").signature
    assert {t.name: t.dims for t in validated.outputs} == {
        "speech_probs": ("sequence_length",),
        "hn": (1, 1, 128),
        "cn": (1, 1, 128),
    }
    assert validated.inputs == declared.inputs, "what the file and the runtime agree on stays as it is"


def test_a_real_lstm_export_converts_with_a_config_the_runtime_accepts(tmp_path: Path) -> None:
    result = run_conversion(
        ConvertRequest(
            uri=str(real_model(SILERO_VAD_SEQUENCE)),
            name="vad",
            repository=tmp_path / "repository",
            work_dir=tmp_path / "work",
            backend="onnxruntime",
            gpus=0,
            engine=EngineSpec.model_validate({"backend": "onnxruntime"}),
        )
    )
    assert result.ok, result.error
    config = read_model_config((tmp_path / "repository" / "vad" / "config.pbtxt").read_text())
    assert {t.name: t.dims for t in config.outputs} == {
        "speech_probs": (-1,),
        "hn": (1, 1, 128),
        "cn": (1, 1, 128),
    }
