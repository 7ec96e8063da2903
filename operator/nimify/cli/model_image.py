"""`nimify build`: a model converted and checked as the conversion Job does, pushed as a model image (or a
Triton image that serves it on its own); `nimify pull-model`: the Triton pods' init container for oci://
models (docs/model-images.md)."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import tempfile
import typing
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from nimify.cli import app
from nimify.cli.convert import convert_command
from nimify.cli.failures import stderr
from nimify.model.errors import ModelError

#: Options of `nimify convert` that `nimify build` decides itself.
_DECIDED_HERE = ("repository", "termination_log", "spec_json", "cache_key")
DEFAULT_TERMINATION_LOG = Path("/dev/termination-log")


def _model_digest(model: str | None, sha256: str | None) -> str | None:
    """The source model's SHA-256: as given, or of a local file."""
    if sha256:
        return sha256
    if model and "://" not in model and Path(model).is_file():
        from nimify.model.digest import file_sha256

        return file_sha256(Path(model))
    return None


def _serving_image(
    base_image: str, model_dir: Path, name: str, labels: dict[str, str], target: str, *, plain_http: bool
) -> str:
    """A Triton image with the model inside, serving it on its own (buildah: from the base image, the model
    folder added as /models/NAME, entrypoint and labels set, committed and pushed); its digest."""
    if shutil.which("buildah") is None:
        raise ModelError("BuildahMissing", "--serving-image builds with buildah, which is not on PATH")

    def buildah(*args: str) -> str:
        done = subprocess.run(["buildah", *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ModelError("ServingImageBuildFailed", f"buildah {args[0]}: {done.stderr.strip()[-1500:]}")
        return done.stdout.strip()

    container = buildah("from", "--quiet", base_image).splitlines()[-1]
    try:
        buildah("add", "--chown", "0:0", "--chmod", "755", container, str(model_dir), f"/models/{name}")
        config = ["--entrypoint", json.dumps(["tritonserver"])]
        config += ["--cmd", json.dumps(["--model-repository=/models", "--strict-readiness=true"])]
        for key, value in labels.items():
            config += ["--label", f"{key}={value}"]
        buildah("config", *config, container)
        image_id = buildah("commit", "--quiet", "--rm", container)
        container = ""
    finally:
        if container:
            subprocess.run(["buildah", "rm", container], capture_output=True, check=False)
    with tempfile.TemporaryDirectory(prefix="nimify-build-") as scratch:
        digest_file = Path(scratch) / "digest"
        push = ["push", "--quiet", "--digestfile", str(digest_file)]
        if plain_http:
            push.append("--tls-verify=false")
        if os.environ.get("NIMIFY_REGISTRY_USERNAME"):
            user, password = (
                os.environ["NIMIFY_REGISTRY_USERNAME"],
                os.environ.get("NIMIFY_REGISTRY_PASSWORD", ""),
            )
            push += ["--creds", f"{user}:{password}"]
        try:
            buildah(*push, image_id, f"docker://{target}")
        finally:  # what was built is in the registry (or failed to get there): no local copy kept
            subprocess.run(["buildah", "rmi", image_id], capture_output=True, check=False)
        return digest_file.read_text().strip()


def build_command(
    model: Annotated[
        str | None,
        typer.Argument(help="Model URI or path (default: the spec's model.uri).", show_default=False),
    ] = None,
    *,
    image: Annotated[
        str,
        typer.Option(
            "--image",
            help="Where to push: REGISTRY/REPOSITORY:TAG (oci:// may be put in front).",
            show_default=False,
        ),
    ],
    serving_image: Annotated[
        bool,
        typer.Option(
            "--serving-image",
            help="Push a Triton image (--base-image) with the model inside that serves it on its own, instead"
            " of a model image for NimServices.",
        ),
    ] = False,
    base_image: Annotated[
        str,
        typer.Option(
            "--base-image", help="The Triton image --serving-image starts from (any buildah transport)."
        ),
    ] = "nvcr.io/nvidia/tritonserver:25.10-py3",
    plain_http: Annotated[
        bool, typer.Option("--plain-http", help="Push over HTTP (a registry on this machine only).")
    ] = False,
    **convert_options: Any,
) -> None:
    """Convert and check a model as the conversion Job does, then push it as a model image: the Triton model
    folder with the engine, labelled with what a cluster checks (cache key, backend, TensorRT version, GPU
    product, signature, parity). Prints the pushed reference with its digest. Credentials: the Docker
    config (~/.docker/config.json), or NIMIFY_REGISTRY_USERNAME and NIMIFY_REGISTRY_PASSWORD."""
    from nimify.engine import model_image

    try:
        reference = model_image.ImageReference.parse(image)
    except ModelError as error:
        raise typer.BadParameter(error.message, param_hint="--image") from None
    if reference.digest:
        raise typer.BadParameter(
            "a pushed image gets its digest from the registry: give a tag", param_hint="--image"
        )
    with tempfile.TemporaryDirectory(prefix="nimify-build-") as scratch:
        repository = Path(scratch) / "repository"
        result = convert_command(
            model=model,
            repository=repository,
            termination_log=None,
            spec_json=None,
            cache_key=None,
            **convert_options,
        )
        name = str(result.model_name)
        labels = model_image.image_labels(result, _model_digest(model, convert_options.get("sha256")))
        try:
            if serving_image:
                digest = _serving_image(
                    base_image, repository / name, name, labels, reference.target, plain_http=plain_http
                )
            else:
                username = os.environ.get("NIMIFY_REGISTRY_USERNAME")
                credentials = (
                    model_image.Credentials(username, os.environ.get("NIMIFY_REGISTRY_PASSWORD", ""))
                    if username
                    else None
                )
                client = model_image.RegistryClient(
                    reference.registry, credentials=credentials, plain_http=plain_http
                )
                digest = client.push(reference, repository / name, labels)
        except ModelError as error:
            stderr.print(f"[red]error:[/] {escape(error.reason)}: {escape(error.message)}")
            raise typer.Exit(1) from None
    typer.echo(str(reference.pinned(digest)))


def _shared_parameters() -> list[inspect.Parameter]:
    """`nimify convert`'s options, for `nimify build` to take the same ones (their annotations resolved:
    convert.py postpones them, and typer reads these as they are)."""
    hints = typing.get_type_hints(convert_command, include_extras=True)
    return [
        parameter.replace(annotation=hints[name], kind=inspect.Parameter.KEYWORD_ONLY)
        for name, parameter in inspect.signature(convert_command).parameters.items()
        if name not in (*_DECIDED_HERE, "model")
    ]


def _register_build() -> None:
    own = inspect.signature(build_command).parameters.values()
    hints = typing.get_type_hints(build_command, include_extras=True)
    parameters = [
        p.replace(annotation=hints[p.name]) for p in own if p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    build_command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [*parameters, *_shared_parameters()]
    )
    app.command("build")(build_command)


_register_build()


@app.command("pull-model", hidden=True)
def pull_model_command(
    uri: Annotated[str, typer.Argument(help="oci://REGISTRY/REPOSITORY[:TAG]@sha256:DIGEST")],
    to: Annotated[Path, typer.Option("--to", help="The model folder to write (replaced).")],
    auth_dir: Annotated[
        Path, typer.Option("--auth-dir", help="Folders each holding a Docker config.json (pull secrets).")
    ] = Path("/var/run/nimify/registry-auth"),
) -> None:
    """Pull a model image's model folder, every digest checked (a Triton pod's init container)."""
    from nimify.engine import model_image
    from nimify.engine.address_policy import policy_from_environment
    from nimify.redaction import redact_logs
    from nimify.render.deployment import INSECURE_REGISTRIES_ENV

    redact_logs()
    try:
        reference = model_image.ImageReference.parse(uri)
        if reference.digest is None:
            raise ModelError(
                "ModelImageInvalid", f"{uri}: the init container pulls only images pinned by digest"
            )
        documents = [json.loads(path.read_text()) for path in sorted(auth_dir.glob("*/config.json"))]
        insecure = json.loads(os.environ.get(INSECURE_REGISTRIES_ENV) or "[]")
        client = model_image.RegistryClient(
            reference.registry,
            credentials=model_image.credentials_for(reference.registry, documents),
            plain_http=reference.registry in insecure,
            policy=policy_from_environment(),
        )
        image = client.resolve(reference)
        client.pull(image, to)
    except Exception as error:  # one line for the pod's termination message, never a traceback
        failure = (
            error
            if isinstance(error, ModelError)
            else ModelError("ModelImagePullFailed", f"{type(error).__name__}: {error}")
        )
        text = f"{failure.reason}: {failure.message}"
        if DEFAULT_TERMINATION_LOG.exists():
            DEFAULT_TERMINATION_LOG.write_text(text[-4000:])
        stderr.print(f"[red]error:[/] {escape(text)}")
        raise typer.Exit(1) from None
    typer.echo(f"pulled {reference} ({image.size} bytes) into {to}")
