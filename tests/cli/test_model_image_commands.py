"""`nimify build` and `nimify pull-model` against a real registry (tests/registry.py): the pushed image's
labels and files, what the init container writes, and how each fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nimify.engine import model_image
from nimify.engine.model_image import ImageReference, RegistryClient
from nimify.model.digest import file_sha256
from nimify.model.errors import ModelError
from nimify.model.samples import write_sample
from nimify_devcluster.registry import LocalRegistry
from tests.cli.conftest import Cli
from tests.registry import registry_fixture

registry = registry_fixture(users={"ci": "pw-1"})


CREDENTIALS = {"NIMIFY_REGISTRY_USERNAME": "ci", "NIMIFY_REGISTRY_PASSWORD": "pw-1"}


def test_build_pushes_the_checked_model_with_its_labels(
    tmp_path: Path, cli: Cli, registry: LocalRegistry
) -> None:
    model = write_sample("mlp", tmp_path)
    result = cli(
        "build", str(model), "--image", f"{registry.address}/models/mlp:v1", "--plain-http",
        "--backend", "onnxruntime", "--max-batch-size", "4", "-q", env=CREDENTIALS,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    conversion, pushed = result.stdout.strip().splitlines()[-2:]
    assert json.loads(conversion)["ok"]
    reference = ImageReference.parse(pushed)
    assert reference.tag == "v1" and reference.digest is not None

    client = RegistryClient(
        registry.address, plain_http=True, credentials=model_image.Credentials("ci", "pw-1")
    )
    image = client.resolve(reference)
    labels = image.labels
    assert labels[model_image.BACKEND] == "onnxruntime"
    assert labels[model_image.MAX_BATCH_SIZE] == "4"
    assert labels[model_image.MODEL_DIGEST] == file_sha256(model)
    assert labels[model_image.CACHE_KEY] == json.loads(conversion)["cacheKey"]
    assert json.loads(labels[model_image.PARITY])["passed"] is True
    assert [t["name"] for t in json.loads(labels[model_image.SIGNATURE])["inputs"]] == ["input"]

    # The init container: its pull secret as the kubelet mounts it, the registry over HTTP, the files written.
    auth = tmp_path / "auth" / "0"
    auth.mkdir(parents=True)
    (auth / "config.json").write_text(
        json.dumps({"auths": {registry.address: {"username": "ci", "password": "pw-1"}}})
    )
    target = tmp_path / "engines" / "repository" / "model"
    pulled = cli(
        "pull-model", pushed, "--to", str(target), "--auth-dir", str(tmp_path / "auth"),
        env={"NIMIFY_INSECURE_REGISTRIES": json.dumps([registry.address])},
    )  # fmt: skip
    assert pulled.exit_code == 0, pulled.output
    assert (target / "1" / "model.onnx").read_bytes() == model.read_bytes()
    assert (target / "config.pbtxt").exists()


def test_a_failed_conversion_pushes_nothing(tmp_path: Path, cli: Cli, registry: LocalRegistry) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    result = cli(
        "build", str(broken), "--image", f"{registry.address}/models/broken:v1", "--plain-http", "-q",
        env=CREDENTIALS,
    )  # fmt: skip
    assert result.exit_code == 1
    client = RegistryClient(
        registry.address, plain_http=True, credentials=model_image.Credentials("ci", "pw-1")
    )
    with pytest.raises(ModelError) as missing:
        client.resolve(ImageReference.parse(f"{registry.address}/models/broken:v1"))
    assert missing.value.reason == "ModelImageNotFound"


def test_build_refuses_a_digest_in_the_target(cli: Cli, tmp_path: Path) -> None:
    model = write_sample("mlp", tmp_path)
    result = cli("build", str(model), "--image", f"r.io/m@sha256:{'a' * 64}", "-q")
    assert result.exit_code != 0
    assert "give a tag" in result.output


def test_pull_model_reports_one_line_without_credentials(
    tmp_path: Path, cli: Cli, registry: LocalRegistry
) -> None:
    result = cli(
        "pull-model", f"oci://{registry.address}/models/mlp@sha256:{'a' * 64}", "--to", str(tmp_path / "m"),
        "--auth-dir", str(tmp_path / "none"),
        env={"NIMIFY_INSECURE_REGISTRIES": json.dumps([registry.address])},
    )  # fmt: skip
    assert result.exit_code == 1
    assert "ModelImageUnauthorized" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "m").exists()


def test_pull_model_takes_only_a_pinned_image(tmp_path: Path, cli: Cli) -> None:
    result = cli("pull-model", "oci://r.io/models/mlp:v1", "--to", str(tmp_path / "m"))
    assert result.exit_code == 1
    assert "pinned by digest" in result.output
