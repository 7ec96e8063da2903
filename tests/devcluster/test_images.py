"""Nimify's images: what goes into them, their content hashes, and (as root) the built images themselves."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from nimify_devcluster.images import (
    ImageBuildError,
    build_images,
    buildah_for,
    digest,
    installed_closure,
    lock_text,
    nimify_requirements,
    source_root,
)

IMAGES = Path(__file__).resolve().parents[2] / "images"


def test_the_nimify_closure_is_what_the_operator_needs_at_the_installed_versions() -> None:
    pins = installed_closure(nimify_requirements())
    for runtime in ("kopf", "lightkube", "onnxruntime", "onnx", "pydantic", "typer", "numpy"):
        assert runtime in pins
    for development in ("pytest", "mypy", "ruff", "nvidia-pytriton", "nimify"):
        assert development not in pins
    assert lock_text({"b": "2", "a": "1"}) == "a==1\nb==2\n"


def test_extras_of_dependencies_are_followed() -> None:
    # tritonclient[http] pulls in its http client; the bare distribution does not.
    assert "geventhttpclient" in installed_closure(["tritonclient[http]"])
    assert "geventhttpclient" not in installed_closure(["tritonclient"])


def test_a_missing_requirement_is_named() -> None:
    with pytest.raises(ImageBuildError, match="not-a-package-here is not installed"):
        installed_closure(["not-a-package-here"])


def test_the_digest_covers_names_and_contents(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("1")
    before = digest(tmp_path, "x")
    (tmp_path / "a").write_text("2")
    assert digest(tmp_path, "x") != before
    (tmp_path / "a").write_text("1")
    assert digest(tmp_path, "x") == before
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "a.pyc").write_bytes(b"compiled")
    assert digest(tmp_path, "x") == before  # bytecode is not an input
    assert digest(tmp_path, "y") != before


def test_the_builder_shares_the_nimify_images_dependency_layer() -> None:
    # buildah's layer cache reuses a layer only for the same instruction on the same parent: the builder's
    # Containerfile must start with exactly the nimify image's dependency steps.
    nimify = (IMAGES / "nimify" / "Containerfile").read_text()
    builder = (IMAGES / "nimify-builder" / "Containerfile").read_text()

    def steps(text: str) -> list[str]:
        joined = text.replace("\\\n", " ")
        return [" ".join(line.split()) for line in joined.splitlines() if line and not line.startswith("#")]

    shared = steps(nimify)[: steps(nimify).index("COPY dist/ /opt/nimify/dist/")]
    assert steps(builder)[: len(shared)] == shared
    # An engine runs only on the TensorRT that built it: the version is pinned exactly.
    text = (IMAGES / "nimify-builder" / "requirements.txt").read_text()
    pins = [line for line in text.splitlines() if "==" in line and not line.startswith("#")]
    assert pins and all(line.startswith("tensorrt") for line in pins)


def test_images_are_built_from_this_checkout() -> None:
    assert source_root() / "images" == IMAGES


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="buildah needs root here")


def run_in(ref: str, *command: str) -> subprocess.CompletedProcess[str]:
    buildah = buildah_for()
    container = subprocess.run(
        buildah.command("from", "--pull-never", ref), capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        return subprocess.run(
            buildah.command("run", "--network=none", container, "--", *command),
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        subprocess.run(buildah.command("rm", container), capture_output=True, check=False)


@pytest.mark.real_node
@root_only
def test_the_nimify_image_runs_the_cli_as_its_unprivileged_user() -> None:
    ref = build_images(["nimify"])["nimify"].ref
    result = run_in(ref, "nimify", "convert", "--help")
    assert result.returncode == 0, result.stderr
    assert "--repository" in result.stdout
    assert run_in(ref, "id", "-u").stdout.strip() == "1000"


@pytest.mark.real_node
@root_only
def test_the_nimify_image_carries_no_development_cluster() -> None:
    # The development cluster is a distribution of its own, installed in the development virtualenv only.
    ref = build_images(["nimify"])["nimify"].ref
    command = run_in(ref, "nimify", "dev-cluster", "--help")
    assert command.returncode == 2 and "No such command 'dev-cluster'" in command.stdout + command.stderr
    probe = "from importlib.util import find_spec as f; print(f('nimify_devcluster'), f('nimify.devcluster'))"
    assert run_in(ref, "python3", "-c", probe).stdout.split() == ["None", "None"]


@pytest.mark.real_node
@root_only
def test_the_triton_cpu_image_carries_the_onnxruntime_backend() -> None:
    ref = build_images(["triton-cpu"])["triton-cpu"].ref
    assert ref.split(":", 1)[1].startswith("24.10-")  # Triton 2.51.0, read by the operator from the tag
    listing = run_in(ref, "ls", "/opt/tritonserver/backends/python", "/opt/tritonserver/backends/onnxruntime")
    assert "triton_python_backend_stub" in listing.stdout and "model.py" in listing.stdout
    usage = run_in(ref, "tritonserver", "--help")  # the server, its libraries found (it exits 1 after help)
    assert "--model-repository" in usage.stdout + usage.stderr
