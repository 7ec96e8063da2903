"""Inspection of the sample models: signatures with named dims, batching decisions, metadata."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from nimify.model.inspection import inspect_model
from nimify.model.samples import SAMPLES, build_mlp, write_model, write_sample
from nimify.model.signature import Signature, TensorInfo
from nimify.model.validation import validate_model

EXPECTED = {
    "mlp": (
        [TensorInfo("input", "FLOAT", ("batch", 16))],
        [TensorInfo("logits", "FLOAT", ("batch", 4))],
        "batch",
    ),
    "cnn": (
        [TensorInfo("image", "FLOAT", ("batch", 3, "height", "width"))],
        [TensorInfo("features", "FLOAT", ("batch", 4))],
        "batch",
    ),
    "int_bool": (
        [TensorInfo("token_ids", "INT64", ("batch", "seq")), TensorInfo("mask", "BOOL", ("batch", "seq"))],
        [TensorInfo("total", "FLOAT", ("batch",))],
        "batch",
    ),
    "multi_output": (
        [TensorInfo("x", "FLOAT", ("batch", 8))],
        [
            TensorInfo("total", "FLOAT", ("batch", 1)),
            TensorInfo("normalized", "FLOAT", ("batch", 8)),
            TensorInfo("argmax", "INT64", ("batch", 1)),
        ],
        "batch",
    ),
    "recurrent": (
        [
            TensorInfo("x", "FLOAT", ("batch", 8)),
            TensorInfo("state", "FLOAT", (2, "batch", 16)),
            TensorInfo("temperature", "FLOAT", ()),
        ],
        [TensorInfo("y", "FLOAT", ("batch", 16)), TensorInfo("new_state", "FLOAT", (2, "batch", 16))],
        None,
    ),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_signature_and_batching(tmp_path: Path, name: str) -> None:
    report = inspect_model(write_sample(name, tmp_path))
    inputs, outputs, batch_dim = EXPECTED[name]
    assert report.signature == Signature(tuple(inputs), tuple(outputs))
    assert report.batching.batched is (batch_dim is not None)
    assert report.batching.batch_dim == batch_dim
    assert report.format == "onnx"
    assert report.opset == 17
    assert report.ir_version == 8
    assert report.producer == "nimify-samples"
    assert len(report.sha256) == 64
    assert report.external_data == ()


def test_recurrent_model_says_why_it_is_not_batched(tmp_path: Path) -> None:
    report = inspect_model(write_sample("recurrent", tmp_path))
    assert "'state'" in report.batching.reason
    assert "fixed first dimension (2)" in report.batching.reason


def test_external_data_is_listed_and_counted(tmp_path: Path) -> None:
    path = write_sample("mlp", tmp_path, external_data=True)
    report = inspect_model(path)
    assert report.external_data == ("mlp.weights",)
    assert report.size_bytes == path.stat().st_size + (tmp_path / "mlp.weights").stat().st_size
    assert report.signature.inputs[0].dims == ("batch", 16)


def test_op_types_and_json(tmp_path: Path) -> None:
    report = inspect_model(write_sample("cnn", tmp_path))
    assert report.op_types == ("Conv", "Flatten", "GlobalAveragePool", "Relu")
    data = report.to_json()
    assert data["signature"]["inputs"][0] == {
        "name": "image",
        "dtype": "FLOAT",
        "shape": [-1, 3, -1, -1],
        "dimNames": ["batch", None, "height", "width"],
    }
    assert data["batching"] == {"batched": True, "batchDim": "batch", "reason": report.batching.reason}
    assert Signature.from_json(data["signature"]) == report.signature


def test_samples_are_deterministic(tmp_path: Path) -> None:
    first = write_sample("mlp", tmp_path / "a").read_bytes()
    second = write_sample("mlp", tmp_path / "b").read_bytes()
    assert first == second


def _write(tmp_path: Path, nodes: list, inputs: list, outputs: list, name: str = "m.onnx") -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return write_model(model, tmp_path / name)


def test_negative_dim_value_is_a_dynamic_dim(tmp_path: Path) -> None:
    # PaddlePaddle writes -1 for "any size"; onnx.checker and ONNX Runtime read it as dynamic, and so do we.
    path = _write(
        tmp_path,
        [helper.make_node("Relu", ["scope/x.tmp_0"], ["scope/y.tmp_0"])],
        [helper.make_tensor_value_info("scope/x.tmp_0", TensorProto.FLOAT, [-1, 3])],
        [helper.make_tensor_value_info("scope/y.tmp_0", TensorProto.FLOAT, [-1, 3])],
    )
    report = validate_model(path)
    assert report.signature.inputs[0].dims == (None, 3)
    assert report.signature.inputs[0].shape == [-1, 3]
    assert not report.batching.batched and "unnamed dynamic first dimension" in report.batching.reason


def test_placeholder_names_of_shape_inference_are_not_the_models(tmp_path: Path) -> None:
    # The output is unshaped; shape inference gives it a rank and invents `unk__N` for what it cannot tie.
    reshaped = helper.make_node("Reshape", ["x", "shape"], ["y"])
    shape = helper.make_tensor_value_info("shape", TensorProto.INT64, [2])
    path = _write(
        tmp_path,
        [reshaped],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6]), shape],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    invented = [d.dim_param for d in inferred.graph.output[0].type.tensor_type.shape.dim]
    assert all(name.startswith("unk__") for name in invented)  # what onnx does, and what we must not show
    report = inspect_model(path)
    assert report.signature.outputs[0].dims == (None, None)
    assert report.signature.outputs[0].describe_dims() == "[?, ?]"
    assert "dimNames" not in report.to_json()["signature"]["outputs"][0]


def test_names_flowing_from_inputs_are_kept(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    report = inspect_model(path)
    assert report.signature.outputs[0].dims == ("batch", 6)
    assert report.batching.batched


def test_warnings_travel_in_the_json(tmp_path: Path) -> None:
    model = build_mlp()
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 5
    data = validate_model(write_model(model, tmp_path / "wrong.onnx")).to_json()
    assert len(data["warnings"]) == 1 and "shape inference" in data["warnings"][0]
