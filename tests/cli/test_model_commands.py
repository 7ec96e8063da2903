"""`nimify inspect`, `nimify create` and `nimify openapi` on the sample models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from onnx import TensorProto, helper

from nimify.api import NimService
from nimify.model.digest import file_sha256
from nimify.model.samples import SAMPLES, build_mlp, build_spectrogram, write_model, write_sample
from tests.cli.conftest import Cli
from tests.real_models import MAGIKA, OCR_DETECTOR, SILERO_VAD_SEQUENCE, SILERO_VAD_UNNAMED, real_model

BATCHED = {"mlp": True, "cnn": True, "int_bool": True, "multi_output": True, "recurrent": False}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_inspect_table(tmp_path: Path, cli: Cli, name: str) -> None:
    result = cli("inspect", str(write_sample(name, tmp_path)))
    assert result.exit_code == 0, result.output
    assert "triton batching" in result.stdout
    assert ("yes:" if BATCHED[name] else "no (max_batch_size 0)") in result.stdout
    assert file_sha256(tmp_path / f"{name}.onnx")[:40] in result.stdout.replace("\n", "").replace(" ", "")


def test_inspect_json(tmp_path: Path, cli: Cli) -> None:
    result = cli("inspect", str(write_sample("recurrent", tmp_path, external_data=True)), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["batching"]["batched"] is False and "'state'" in data["batching"]["reason"]
    assert data["externalData"] == ["recurrent.weights"]
    assert data["signature"]["inputs"][2] == {"name": "temperature", "dtype": "FLOAT", "shape": []}


def test_inspect_for_tensorrt_flags_its_unsupported_ops(tmp_path: Path, cli: Cli) -> None:
    result = cli("inspect", str(write_sample("mlp", tmp_path)), "--backend", "tensorrt")
    assert result.exit_code == 0


def test_inspect_plan_with_a_signature_file(tmp_path: Path, cli: Cli) -> None:
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"ftrt" + b"\0" * 32)
    signature = {
        "inputs": [{"name": "x", "dtype": "FLOAT16", "shape": [-1, 8], "dimNames": ["batch", None]}],
        "outputs": [{"name": "y", "dtype": "FLOAT16", "shape": [-1, 2], "dimNames": ["batch", None]}],
    }
    (tmp_path / "signature.json").write_text(json.dumps(signature))
    result = cli(
        "inspect",
        str(plan),
        "--backend",
        "tensorrt",
        "--signature",
        str(tmp_path / "signature.json"),
        "--json",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (
        data["format"] == "tensorrt-plan"
        and data["signatureSource"] == "hint"
        and data["batching"]["batched"]
    )


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_create_writes_a_valid_nimservice(tmp_path: Path, cli: Cli, name: str) -> None:
    path = write_sample(name, tmp_path)
    args = [
        "create",
        str(path),
        "--name",
        name.replace("_", "-"),
        "--uri",
        f"https://models.example.com/{name}.onnx",
    ]
    if name in ("cnn", "int_bool"):
        args += ["--backend", "onnxruntime", "--gpus", "0"]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    document = yaml.safe_load(result.stdout)
    service = NimService.model_validate(document)
    assert service.metadata.name == name.replace("_", "-")
    assert service.spec.the_model.sha256 == file_sha256(path)
    assert service.spec.the_model.format == "onnx"
    assert f"triton batching: {'on' if BATCHED[name] else 'off'}" in result.stderr


def test_create_needs_profiles_for_spatial_dims_on_tensorrt(tmp_path: Path, cli: Cli) -> None:
    path = str(write_sample("cnn", tmp_path))
    uri = "pvc://models/cnn.onnx"
    result = cli("create", path, "--name", "cnn", "--uri", uri)
    assert result.exit_code == 1 and "error: ProfileRequired: input 'image'" in result.stderr
    profile = "image=1x3x32x32:8x3x224x224:8x3x512x512"
    output = tmp_path / "cnn.json"
    result = cli(
        "create",
        path,
        "--name",
        "cnn",
        "--uri",
        uri,
        "--profile",
        profile,
        "--warmup",
        "8",
        "--json",
        "-o",
        str(output),
    )
    assert result.exit_code == 0, result.output
    spec = json.loads(output.read_text())["spec"]
    assert spec["engine"]["profiles"] == [
        {"input": "image", "min": [1, 3, 32, 32], "opt": [8, 3, 224, 224], "max": [8, 3, 512, 512]}
    ]
    assert spec["triton"]["warmup"] == {"batchSizes": [8]}


def test_create_refuses_batching_an_unbatchable_model(tmp_path: Path, cli: Cli) -> None:
    path = str(write_sample("recurrent", tmp_path))
    result = cli("create", path, "--name", "rnn", "--uri", "s3://bucket/rnn.onnx", "--max-batch-size", "4")
    assert result.exit_code == 1 and "BatchingImpossible" in result.stderr


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--name", "mlp"], "ModelUriRequired"),
        (["--name", "Not_A_Name", "--uri", "https://h/m.onnx"], "InvalidManifest"),
        (["--name", "mlp", "--uri", "ftp://h/m.onnx"], "InvalidManifest"),
        (
            ["--name", "mlp", "--uri", "https://h/m.onnx", "--backend", "onnxruntime", "--precision", "fp16"],
            "InvalidManifest",
        ),
    ],
)
def test_create_errors(tmp_path: Path, cli: Cli, args: list[str], reason: str) -> None:
    result = cli("create", str(write_sample("mlp", tmp_path)), *args)
    assert result.exit_code == 1 and result.stderr.startswith(f"error: {reason}:"), result.output


def test_openapi(tmp_path: Path, cli: Cli) -> None:
    result = cli("openapi", str(write_sample("multi_output", tmp_path)), "--name", "multi")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert "/v2/models/multi/infer" in document["paths"]
    assert set(document["components"]["schemas"]) >= {
        "Input_x",
        "Output_total",
        "Output_argmax",
        "InferRequest",
    }
    as_yaml = cli("openapi", str(tmp_path / "multi_output.onnx"), "--yaml")
    assert yaml.safe_load(as_yaml.stdout)["info"]["title"].startswith("multi_output")


def test_create_with_parity_options(tmp_path: Path, cli: Cli) -> None:
    path = write_model(build_spectrogram(), tmp_path / "spectrogram.onnx")
    args = ["create", str(path), "--name", "speech", "--uri", "https://models.example.com/s.onnx"]
    args += ["--backend", "onnxruntime", "--gpus", "0", "--profile", "audio=1x1600:4x16000:8x48000"]
    result = cli(
        *args,
        "--samples", "3",
        "--parity-inputs", "s3://models/speech/parity.npz",
        "--parity-inputs-sha256", "c" * 64,
        "--parity-shape", "audio=1x16000",
        "--parity-value", "audio=0.5",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    engine = yaml.safe_load(result.stdout)["spec"]["engine"]
    assert engine["profiles"][0]["max"] == [8, 48000]
    assert engine["parity"] == {
        "samples": 3,
        "inputs": {"uri": "s3://models/speech/parity.npz", "sha256": "c" * 64},
        "generated": [{"input": "audio", "shape": [1, 16000], "value": 0.5}],
    }
    unknown = cli(*args, "--parity-value", "rate=16000")
    assert unknown.exit_code == 1
    assert (
        "error: InvalidParityInputs: engine.parity.generated names inputs the model lacks: rate"
        in unknown.stderr
    )
    wrong_rank = cli(*args, "--parity-shape", "audio=16000")
    assert wrong_rank.exit_code == 1 and "has rank 1, input 'audio' has rank 2" in wrong_rank.stderr
    local = cli(*args, "--parity-inputs", str(tmp_path / "parity.npz"))
    assert local.exit_code == 1 and "spec.engine.parity.inputs.uri" in local.stderr


def test_inspect_prints_what_it_could_not_settle(tmp_path: Path, cli: Cli) -> None:
    model = build_mlp()
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 5
    path = write_model(model, tmp_path / "wrong.onnx")
    result = cli("inspect", str(path))
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("warning: ONNX shape inference disagrees with the model:")
    assert "shape inference" in json.loads(cli("inspect", str(path), "--json").stdout)["warnings"][0]


def test_inspect_names_what_onnx_runtime_refuses(tmp_path: Path, cli: Cli) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "g", [x], [x])
    graph.output[0].name = "y"
    path = write_model(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)]), tmp_path / "a.onnx"
    )
    result = cli("inspect", str(path))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: OnnxRuntimeLoadFailed: ONNX Runtime cannot load a.onnx: ")
    assert "Could not find an implementation for Add(6)" in result.stderr


def test_openapi_validates_like_inspect(tmp_path: Path, cli: Cli) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"PK\x03\x04" + b"\0" * 60)
    result = cli("openapi", str(broken))
    assert result.exit_code == 1 and result.stderr.startswith("error: NotOnnx:")
    missing = cli("openapi", str(tmp_path / "nowhere.onnx"))
    assert missing.exit_code == 1 and missing.stderr.startswith("error: ModelNotFound:")


def test_inspect_shows_the_declared_dims_and_those_the_runtime_fixes(cli: Cli) -> None:
    model = str(real_model(SILERO_VAD_SEQUENCE))
    report = json.loads(cli("inspect", model, "--json").stdout)
    outputs = {t["name"]: t["shape"] for t in report["signature"]["outputs"]}
    declared = {t["name"]: t for t in report["declaredSignature"]["outputs"]}
    assert outputs["hn"] == [1, 1, 128]
    assert declared["hn"]["shape"] == [1, -1, 128]
    assert declared["hn"]["dimNames"] == [None, "LSTMhn_dim_1", None]
    table = cli("inspect", model).stdout
    assert "declared" in table and "runtime" in table and "LSTMhn_dim_1" in table
    plain = cli("inspect", str(real_model(MAGIKA))).stdout
    assert "declared" not in plain, "nothing to tell apart: one shape column"


def test_create_runs_the_model_as_the_job_will_and_says_what_is_missing(cli: Cli) -> None:
    base = ["create", "--backend", "onnxruntime", "--name", "m", "--uri", "s3://models/m/model.onnx"]
    searched = cli(*base[:1], str(real_model(OCR_DETECTOR)), *base[1:])
    assert searched.exit_code == 0, searched.output
    assert "parity inputs: searched" in searched.stderr and "x: [1, 3, 32, 32]" in searched.stderr
    # Nothing runs silero-vad's unnamed export at random: the manifest would fail in the cluster, so it is
    # refused here with what to give.
    missing = cli(*base[:1], str(real_model(SILERO_VAD_UNNAMED)), *base[1:])
    assert missing.exit_code == 1 and "ParityInputsRequired" in missing.stderr
    assert "'sr' (a scalar INT64)" in missing.stderr and "--parity-value" in missing.stderr
    unchecked = cli(*base[:1], str(real_model(SILERO_VAD_UNNAMED)), *base[1:], "--samples", "0")
    assert unchecked.exit_code == 0, unchecked.output
