"""Inspection of the sample models: signatures with named dims, batching decisions, metadata."""

from __future__ import annotations

from pathlib import Path

import pytest

from nimify.model.inspection import inspect_model
from nimify.model.samples import SAMPLES, write_sample
from nimify.model.signature import Signature, TensorInfo

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
