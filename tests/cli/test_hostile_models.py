"""Hostile and broken model files: each a clear error naming the problem, a non-zero exit, no traceback."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from nimify.model.samples import build_mlp, write_model, write_sample
from tests.cli.conftest import Cli

Builder = Callable[[Path], Path]


def truncated(tmp: Path) -> Path:
    path = write_sample("mlp", tmp)
    path.write_bytes(path.read_bytes()[:400])
    return path


def random_bytes(tmp: Path) -> Path:
    path = tmp / "model.onnx"
    path.write_bytes(bytes((i * 97 + 13) % 251 for i in range(2048)))
    return path


def zip_archive(tmp: Path) -> Path:
    path = tmp / "model.onnx"
    path.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    return path


def html_page(tmp: Path) -> Path:
    path = tmp / "model.onnx"
    path.write_text("<!DOCTYPE html><html><body>Access denied</body></html>")
    return path


def lfs_pointer(tmp: Path) -> Path:
    path = tmp / "model.onnx"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    return path


def empty(tmp: Path) -> Path:
    path = tmp / "model.onnx"
    path.write_bytes(b"")
    return path


def external_location(location: str) -> Builder:
    def build(tmp: Path) -> Path:
        path = write_model(build_mlp(), tmp / "model" / "model.onnx", external_data="weights.bin")
        model = onnx.load_model(str(path), load_external_data=False)
        for entry in model.graph.initializer[0].external_data:
            if entry.key == "location":
                entry.value = location
        onnx.save_model(model, str(path))
        return path

    return build


def symlinked_weights(tmp: Path) -> Path:
    path = write_model(build_mlp(), tmp / "model" / "model.onnx", external_data="weights.bin")
    (tmp / "model" / "weights.bin").rename(tmp / "weights.bin")
    (tmp / "model" / "weights.bin").symlink_to(tmp / "weights.bin")
    return path


def missing_weights(tmp: Path) -> Path:
    path = write_model(build_mlp(), tmp / "model.onnx", external_data="weights.bin")
    (tmp / "weights.bin").unlink()
    return path


def truncated_weights(tmp: Path) -> Path:
    path = write_model(build_mlp(), tmp / "model.onnx", external_data="weights.bin")
    (tmp / "weights.bin").write_bytes(b"\0" * 100)
    return path


def huge_input_dims(tmp: Path) -> Path:
    model = build_mlp()
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 2**40
    return write_model(model, tmp / "model.onnx")


def huge_initializer(tmp: Path) -> Path:
    model = build_mlp()
    tensor = model.graph.initializer[0]
    del tensor.dims[:]
    tensor.dims.extend([2**20, 2**20, 1024])
    return write_model(model, tmp / "model.onnx")


def short_initializer(tmp: Path) -> Path:
    model = build_mlp()
    model.graph.initializer[1].raw_data = model.graph.initializer[1].raw_data[:8]
    return write_model(model, tmp / "model.onnx")


def custom_operator(tmp: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    graph = helper.make_graph(
        [helper.make_node("Frobnicate", ["x"], ["y"], domain="com.evil")], "g", [x], [y]
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.evil", 1)]
    path = tmp / "model.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=opsets, ir_version=8).SerializeToString())
    return path


def future_opset(tmp: Path) -> Path:
    model = build_mlp()
    model.opset_import[0].version = 99
    path = tmp / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def wrong_output_shape(tmp: Path) -> Path:
    model = build_mlp()
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 5
    path = tmp / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def sequence_input(tmp: Path) -> Path:
    seq = helper.make_tensor_sequence_value_info("items", TensorProto.FLOAT, None)
    y = helper.make_tensor_value_info("count", TensorProto.INT64, [])
    graph = helper.make_graph([helper.make_node("SequenceLength", ["items"], ["count"])], "g", [seq], [y])
    return write_model(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
        tmp / "model.onnx",
    )


def directory(tmp: Path) -> Path:
    (tmp / "model.onnx").mkdir()
    return tmp / "model.onnx"


def complex_output(tmp: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.COMPLEX64, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.COMPLEX64, ["n"])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    return write_model(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
        tmp / "model.onnx",
    )


CASES: list[tuple[str, Builder, str, str]] = [
    ("truncated-protobuf", truncated, "ModelTruncated", "mlp.onnx is a truncated"),
    ("random-bytes", random_bytes, "NotOnnx", "model.onnx"),
    ("zip-checkpoint", zip_archive, "NotOnnx", "zip archive"),
    ("html-error-page", html_page, "NotOnnx", "HTML"),
    ("git-lfs-pointer", lfs_pointer, "NotOnnx", "Git LFS pointer"),
    ("empty-file", empty, "ModelEmpty", "model.onnx"),
    ("external-data-dotdot", external_location("../../etc/passwd"), "ExternalDataPathEscapes", "'..'"),
    ("external-data-absolute", external_location("/etc/passwd"), "ExternalDataPathEscapes", "absolute path"),
    ("external-data-symlink", symlinked_weights, "ExternalDataPathEscapes", "symlink"),
    ("external-data-missing", missing_weights, "ExternalDataMissing", "weights.bin"),
    ("external-data-truncated", truncated_weights, "ExternalDataTruncated", "weights.bin"),
    ("huge-input-dims", huge_input_dims, "DeclaredSizeAbsurd", "input 'input'"),
    ("huge-initializer", huge_initializer, "DeclaredSizeAbsurd", "tensor 'w1'"),
    ("short-initializer", short_initializer, "TensorDataMismatch", "tensor 'b1'"),
    ("custom-operator", custom_operator, "OnnxRuntimeLoadFailed", "Frobnicate"),
    ("future-opset", future_opset, "OnnxRuntimeLoadFailed", "99"),
    ("sequence-input", sequence_input, "UnsupportedTensorType", "input 'items'"),
    ("complex-tensors", complex_output, "UnsupportedDataType", "COMPLEX64"),
    ("directory", directory, "ModelIsDirectory", "model.onnx"),
]


@pytest.mark.parametrize(("builder", "reason", "named"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_inspect_refuses_with_a_named_reason(
    tmp_path: Path, cli: Cli, builder: Builder, reason: str, named: str
) -> None:
    path = builder(tmp_path)
    result = cli("inspect", str(path))
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: {reason}: "), result.stderr
    assert named in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output and result.stdout == ""


@pytest.mark.parametrize(
    ("builder", "reason"),
    [(truncated, "ModelTruncated"), (external_location("../x.bin"), "ExternalDataPathEscapes")],
)
def test_convert_reports_the_failure_as_its_result_line(
    tmp_path: Path, cli: Cli, builder: Builder, reason: str
) -> None:
    path = builder(tmp_path)
    log = tmp_path / "termination-log"
    result = cli(
        "convert", str(path), "--repository", str(tmp_path / "repo"), "--termination-log", str(log), "-q"
    )
    assert result.exit_code == 1
    line = json.loads(result.stdout)
    assert line["ok"] is False and line["error"]["reason"] == reason
    assert json.loads(log.read_text()) == line
    assert "Traceback" not in result.output


def test_wrong_digest(tmp_path: Path, cli: Cli) -> None:
    path = write_sample("mlp", tmp_path)
    result = cli("convert", str(path), "--sha256", "0" * 64, "--repository", str(tmp_path / "repo"), "-q")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["reason"] == "DigestMismatch"
    assert "error: DigestMismatch: mlp.onnx: sha256 is" in result.stderr
    assert not (tmp_path / "repo").exists()


def test_malformed_digest(tmp_path: Path, cli: Cli) -> None:
    result = cli(
        "convert",
        str(write_sample("mlp", tmp_path)),
        "--sha256",
        "abc",
        "-q",
        "--repository",
        str(tmp_path / "r"),
    )
    assert result.exit_code == 1 and json.loads(result.stdout)["error"]["reason"] == "InvalidDigest"


def test_an_intact_model_passes(tmp_path: Path, cli: Cli) -> None:
    result = cli("inspect", str(write_sample("mlp", tmp_path)))
    assert result.exit_code == 0, result.output


def test_a_declared_output_shape_the_graph_does_not_compute(tmp_path: Path, cli: Cli) -> None:
    # ONNX Runtime loads it (so inspect only warns), but Triton would be told the wrong dims: convert refuses.
    path = wrong_output_shape(tmp_path)
    inspected = cli("inspect", str(path))
    assert inspected.exit_code == 0 and "warning: ONNX shape inference disagrees" in inspected.stderr
    converted = cli(
        "convert", str(path), "--backend", "onnxruntime", "--repository", str(tmp_path / "r"), "-q"
    )
    assert converted.exit_code == 1
    error = json.loads(converted.stdout)["error"]
    assert error["reason"] == "ServingConfigMismatch" and "'logits'" in error["message"]
    assert not (tmp_path / "r").exists()
