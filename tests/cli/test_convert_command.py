"""`nimify convert` from the command line: spec files, the result line, the termination log."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from nimify.model.digest import file_sha256
from nimify.model.samples import build_spectrogram, write_model, write_sample
from tests.cli.conftest import Cli
from tests.real_models import OCR_DETECTOR, real_model


def test_convert_from_a_nimservice_manifest(tmp_path: Path, cli: Cli) -> None:
    model = write_sample("mlp", tmp_path / "models", external_data=True)
    manifest = {
        "apiVersion": "nimify.dev/v1alpha1",
        "kind": "NimService",
        "metadata": {"name": "classifier"},
        "spec": {
            "model": {"uri": "pvc://models/mlp.onnx", "sha256": file_sha256(model)},
            "engine": {"backend": "onnxruntime", "maxBatchSize": 4, "parity": {"samples": 3}},
            "triton": {"dynamicBatching": {"preferredBatchSizes": [4]}, "warmup": {"batchSizes": [1, 4]}},
            "resources": {"gpus": 0},
        },
    }
    (tmp_path / "service.yaml").write_text(yaml.safe_dump(manifest))
    log = tmp_path / "termination-log"
    result = cli(
        "convert", "--spec", str(tmp_path / "service.yaml"), "--pvc-root", str(tmp_path / "claims"),
        "--repository", str(tmp_path / "repo"), "--termination-log", str(log), "-q",
        env={"NIMIFY_PVC_ROOT": ""},
    )  # fmt: skip
    assert result.exit_code == 1  # the claim is not mounted yet
    assert json.loads(result.stdout)["error"]["reason"] == "ModelNotFound"
    (tmp_path / "claims").mkdir()
    (tmp_path / "models").rename(tmp_path / "claims" / "models")
    result = cli(
        "convert", "--spec", str(tmp_path / "service.yaml"), "--pvc-root", str(tmp_path / "claims"),
        "--repository", str(tmp_path / "repo"), "--termination-log", str(log), "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout)
    assert line["ok"] and line["model"] == "classifier" and line["backend"] == "onnxruntime"
    assert line["parity"]["samples"] == 3 and line["maxBatchSize"] == 4
    assert json.loads(log.read_text()) == line
    config = (tmp_path / "repo" / "classifier" / "config.pbtxt").read_text()
    assert "max_batch_size: 4" in config and "preferred_batch_size: [ 4 ]" in config and "KIND_CPU" in config
    assert {p.name for p in (tmp_path / "repo" / "classifier" / "1").iterdir()} == {
        "model.onnx",
        "mlp.weights",
    }


def test_convert_a_path_with_defaults(tmp_path: Path, cli: Cli) -> None:
    model = write_sample("recurrent", tmp_path)
    result = cli("convert", str(model), "--repository", str(tmp_path / "repo"), "--backend", "python", "-q")
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout)
    assert line["model"] == "recurrent" and line["maxBatchSize"] == 0
    assert line["batching"]["batched"] is False
    assert (tmp_path / "repo" / "recurrent" / "1" / "model.py").is_file()


def test_convert_spec_errors_are_result_lines(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "bad.yaml").write_text("spec:\n  model:\n    uri: ftp://nowhere/m.onnx\n")
    result = cli("convert", "--spec", str(tmp_path / "bad.yaml"), "-q", "--repository", str(tmp_path / "r"))
    assert result.exit_code == 1
    line = json.loads(result.stdout)
    assert line["error"]["reason"] == "InvalidSpec" and "spec.model.uri" in line["error"]["message"]


def test_convert_without_a_model(tmp_path: Path, cli: Cli) -> None:
    result = cli("convert", "-q", "--repository", str(tmp_path / "r"))
    assert result.exit_code == 1 and json.loads(result.stdout)["error"]["reason"] == "ModelMissing"


def test_spec_from_the_environment(tmp_path: Path, cli: Cli) -> None:
    model = write_sample("mlp", tmp_path)
    spec = {
        "model": {"uri": "https://example.com/mlp.onnx", "name": "from-env"},
        "engine": {"backend": "onnxruntime"},
    }
    result = cli(
        "convert",
        str(model),
        "-q",
        "--repository",
        str(tmp_path / "r"),
        env={"NIMIFY_SPEC": json.dumps(spec)},
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"] == "from-env"


def test_cache_key_given_by_the_operator(tmp_path: Path, cli: Cli) -> None:
    model = write_sample("mlp", tmp_path)
    key = "f" * 64
    result = cli(
        "convert", str(model), "-q", "--repository", str(tmp_path / "r"), env={"NIMIFY_CACHE_KEY": key}
    )
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout)
    assert line["cacheKey"] == line["engine"]["cacheKey"] == key


def test_plan_with_a_signature_file(tmp_path: Path, cli: Cli) -> None:
    plan = tmp_path / "engine.plan"
    plan.write_bytes(b"ftrt" + b"\0" * 16)
    signature = {
        "inputs": [{"name": "x", "dtype": "FLOAT", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "dtype": "FLOAT", "shape": [-1, 2]}],
    }
    (tmp_path / "service.yaml").write_text(yaml.safe_dump({"status": {"signature": signature}}))
    args = [
        "convert",
        str(plan),
        "--backend",
        "tensorrt",
        "--gpus",
        "1",
        "-q",
        "--repository",
        str(tmp_path / "r"),
    ]
    result = cli(*args)
    assert json.loads(result.stdout)["error"]["reason"] == "PlanSignatureUnknown"
    result = cli(*args, "--signature", str(tmp_path / "service.yaml"))
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout)
    assert line["signature"] == signature and line["parity"] is None
    assert (tmp_path / "r" / "engine" / "1" / "model.plan").read_bytes() == plan.read_bytes()


def test_parity_options_for_a_model_random_data_does_not_fit(tmp_path: Path, cli: Cli) -> None:
    model = write_model(build_spectrogram(), tmp_path / "spectrogram.onnx")
    base = ["convert", str(model), "--backend", "onnxruntime", "--repository", str(tmp_path / "repo"), "-q"]
    # ONNX Runtime refuses the default size (8 samples cannot be padded); a searched size it accepts is used.
    result = cli(*base)
    assert result.exit_code == 0, result.output
    parity = json.loads(result.stdout)["parity"]
    assert parity["inputs"] == "searched" and parity["shapes"][0].startswith("audio: [1, ")
    # A shape the user fixed is not searched: too short a window is the user's to fix.
    result = cli(*base, "--parity-shape", "audio=1x8")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["reason"] == "ParityInputsRequired"
    assert "error: ParityInputsRequired: could not generate valid inputs" in result.stderr

    result = cli(*base, "--parity-shape", "audio=2x1600", "--samples", "2")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["parity"] == {
        "check": "servedConfig",
        "inputs": "generated",
        "maxAbsError": 0.0,
        "maxRelError": 0.0,
        "samples": 2,
        "passed": True,
    }

    samples = tmp_path / "speech.npz"
    np.savez(samples, audio=np.sin(np.arange(3200, dtype=np.float32) / 7).reshape(1, 3200))
    result = cli(*base, "--parity-inputs", str(samples), "--parity-inputs-sha256", file_sha256(samples))
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout)
    assert line["parity"]["inputs"] == "file" and line["parity"]["samples"] == 1

    result = cli(*base, "--parity-value", "audio=loud")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["reason"] == "InvalidArgument"


def test_parity_inputs_from_the_spec(tmp_path: Path, cli: Cli) -> None:
    model = write_model(build_spectrogram(), tmp_path / "claims" / "audio" / "spectrogram.onnx")
    samples = tmp_path / "claims" / "audio" / "speech.npz"
    np.savez(samples, audio=np.ones((2, 1600), np.float32))
    spec = {
        "model": {"uri": "pvc://audio/spectrogram.onnx", "sha256": file_sha256(model)},
        "engine": {
            "backend": "onnxruntime",
            "parity": {"inputs": {"uri": "pvc://audio/speech.npz", "sha256": file_sha256(samples)}},
        },
        "resources": {"gpus": 0},
    }
    result = cli(
        "convert", "--repository", str(tmp_path / "repo"), "--pvc-root", str(tmp_path / "claims"), "-q",
        env={"NIMIFY_SPEC": json.dumps(spec)},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["parity"]["inputs"] == "file"


def test_convert_records_searched_parity_inputs_of_a_real_detector(tmp_path: Path, cli: Cli) -> None:
    model = real_model(OCR_DETECTOR)
    result = cli("convert", str(model), "--backend", "onnxruntime", "--repository", str(tmp_path / "r"), "-q")
    assert result.exit_code == 0, result.output
    parity = json.loads(result.stdout)["parity"]
    assert parity["inputs"] == "searched" and parity["passed"] is True
    assert parity["shapes"][0] == "x: [1, 3, 32, 32]"
