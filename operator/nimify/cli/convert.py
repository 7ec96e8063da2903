"""`nimify convert`: the conversion Job's entrypoint, and a local way to produce a Triton model repository."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich.markup import escape

from nimify.api.validation import field_errors
from nimify.cli import app
from nimify.cli.failures import stderr
from nimify.cli.model import (
    ParityInputsOption,
    ParityInputsSha256Option,
    ParityShapeOption,
    ParityValueOption,
)
from nimify.cli.progress import pipeline_progress
from nimify.model.errors import ModelError

DEFAULT_TERMINATION_LOG = Path("/dev/termination-log")


def load_spec(path: Path | None, inline: str | None) -> tuple[Any, str | None]:
    """The NimServiceSpec from a manifest (or bare spec) file or JSON text, and the NimService's name if
    given."""
    from nimify.api import NimService, NimServiceSpec

    if path is None and not inline:
        return None, None
    try:
        data = yaml.safe_load(path.read_text() if path is not None else inline or "")
    except (OSError, yaml.YAMLError) as error:
        raise ModelError("InvalidSpec", f"{path or 'NIMIFY_SPEC'}: {error}") from None
    if not isinstance(data, dict):
        raise ModelError("InvalidSpec", f"{path or 'NIMIFY_SPEC'} holds no mapping")
    try:
        if "spec" in data:
            service = NimService.model_validate(data)
            spec, name = service.spec, service.metadata.name
        else:
            spec, name = NimServiceSpec.model_validate(data), None
    except ValidationError as error:
        raise ModelError("InvalidSpec", "; ".join(map(str, field_errors(error)))) from None
    if spec.pipeline is not None:
        raise ModelError(
            "InvalidSpec",
            f"{path or 'NIMIFY_SPEC'} is a pipeline: convert converts one model (the operator runs one"
            " conversion per member)",
        )
    return spec, name


@app.command("convert")
def convert_command(
    model: Annotated[
        str | None,
        typer.Argument(help="Model URI or path (default: the spec's model.uri).", show_default=False),
    ] = None,
    spec_file: Annotated[
        Path | None, typer.Option("--spec", help="NimService manifest (or its spec) as YAML or JSON.")
    ] = None,
    spec_json: Annotated[str | None, typer.Option(envvar="NIMIFY_SPEC", hidden=True)] = None,
    name: Annotated[str | None, typer.Option("--name", help="Triton model name.")] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend", help="tensorrt, onnxruntime, or python (ONNX Runtime in Triton's python backend)."
        ),
    ] = None,
    sha256: Annotated[str | None, typer.Option("--sha256", help="Expected digest of the model file.")] = None,
    model_format: Annotated[str | None, typer.Option("--format", help="onnx or tensorrt-plan.")] = None,
    repository: Annotated[
        Path,
        typer.Option(
            "--repository", envvar="NIMIFY_MODEL_REPOSITORY", help="Triton model repository to write."
        ),
    ] = Path("model-repository"),
    work_dir: Annotated[
        Path | None, typer.Option("--work-dir", help="Downloads and build scratch space.")
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option("--cache-dir", envvar="NIMIFY_ENGINE_CACHE", help="Engine cache (tensorrt)."),
    ] = None,
    pvc_root: Annotated[
        Path,
        typer.Option(
            "--pvc-root", envvar="NIMIFY_PVC_ROOT", help="Where pvc://CLAIM is mounted (ROOT/CLAIM)."
        ),
    ] = Path("/mnt/pvc"),
    gpus: Annotated[
        int | None, typer.Option("--gpus", min=0, help="GPUs per replica (0: CPU instances).")
    ] = None,
    gpu_product: Annotated[
        str | None, typer.Option("--gpu-product", envvar="NIMIFY_GPU_PRODUCT", help="Default: nvidia-smi.")
    ] = None,
    max_batch_size: Annotated[int | None, typer.Option("--max-batch-size", min=0)] = None,
    samples: Annotated[int | None, typer.Option("--samples", min=0, help="Parity samples (0 skips).")] = None,
    profiles: Annotated[
        list[str] | None,
        typer.Option("--profile", help="INPUT=MIN:OPT:MAX shapes (1x3x224x224), repeatable."),
    ] = None,
    parity_inputs: ParityInputsOption = None,
    parity_inputs_sha256: ParityInputsSha256Option = None,
    parity_shapes: ParityShapeOption = None,
    parity_values: ParityValueOption = None,
    termination_log: Annotated[
        Path | None,
        typer.Option(
            "--termination-log",
            help="Also write the result here (default: /dev/termination-log if it exists).",
        ),
    ] = None,
    cache_key: Annotated[
        str | None,
        typer.Option(
            "--cache-key",
            envvar="NIMIFY_CACHE_KEY",
            help="Report this engine cache key instead of computing one.",
        ),
    ] = None,
    signature: Annotated[
        Path | None,
        typer.Option("--signature", help="Signature file for a prebuilt plan when TensorRT cannot read it."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
) -> Any:
    """Fetch, validate, build and check a model, write its Triton repository, print one JSON result line.

    The line (also left in the termination-message file) is printed for every outcome, failures included.
    Returns the result (`nimify build` goes on from it).
    """
    from dataclasses import replace

    from nimify.api import EngineSpec, TritonSpec
    from nimify.cli.model import load_signature, parse_parity_generated, parse_profile
    from nimify.engine.address_policy import policy_from_environment
    from nimify.engine.convert import ConvertRequest, run_conversion
    from nimify.engine.fetch import FetchOptions
    from nimify.engine.result import ConversionResult
    from nimify.redaction import redact_logs
    from nimify.triton.local_repository import model_name_for

    # Client libraries (huggingface_hub, botocore) warn with the URL at hand: the Job's log stays clean.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    redact_logs()
    result = ConversionResult(backend=backend, model_name=name)
    workspace = work_dir or Path(tempfile.mkdtemp(prefix="nimify-convert-"))
    try:
        spec, service_name = load_spec(spec_file, spec_json)
        uri = model or (spec.the_model.uri if spec is not None else None)
        if not uri:
            raise ModelError("ModelMissing", "give a model URI or path, or a --spec with model.uri")
        engine = spec.engine if spec is not None else EngineSpec(backend="onnxruntime")
        engine = _engine_with_options(
            engine,
            max_batch_size=max_batch_size,
            samples=samples,
            profiles=[parse_profile(text) for text in profiles or []],
            generated=parse_parity_generated(parity_shapes, parity_values),
        )
        spec_inputs = engine.parity.inputs
        model_name = name or (spec.the_model.name if spec is not None else None) or service_name
        request = ConvertRequest(
            uri=uri,
            name=model_name or model_name_for(Path(uri.split("?", 1)[0])),
            repository=repository,
            work_dir=workspace,
            backend=backend or engine.backend.value,
            model_format=model_format
            or (spec.the_model.format.value if spec and spec.the_model.format else None),
            sha256=sha256 or (spec.the_model.sha256 if spec is not None else None),
            parity_inputs=parity_inputs or (spec_inputs.uri if spec_inputs else None),
            parity_inputs_sha256=parity_inputs_sha256 or (spec_inputs.sha256 if spec_inputs else None),
            engine=engine,
            triton=spec.triton if spec is not None else TritonSpec(),
            gpus=gpus if gpus is not None else _default_gpus(spec, backend or engine.backend.value),
            gpu_product=gpu_product or (spec.resources.gpu_product if spec is not None else None),
            cache_dir=cache_dir,
            fetch=FetchOptions(pvc_root=pvc_root, env=os.environ, address_policy=policy_from_environment()),
            signature_hint=load_signature(signature),
            cache_key=cache_key,
        )
        with pipeline_progress(not quiet) as progress:
            request = replace(request, fetch=replace(request.fetch, progress=progress.on_download))
            result = run_conversion(request, on_stage=progress.on_stage)
    except ModelError as error:
        result.error = error
    except typer.BadParameter as error:
        result.error = ModelError("InvalidArgument", error.format_message())
    except KeyboardInterrupt:
        result.error = ModelError("Interrupted", "stopped before the conversion finished")
    except Exception as error:  # the Job must report whatever broke, as a result line, not a traceback
        result.error = ModelError("InternalError", f"{type(error).__name__}: {error}")
    finally:
        if work_dir is None:
            shutil.rmtree(workspace, ignore_errors=True)

    typer.echo(result.json_line())
    log = termination_log or (DEFAULT_TERMINATION_LOG if DEFAULT_TERMINATION_LOG.exists() else None)
    if log is not None:
        try:
            result.write_termination_log(log)
        except OSError as error:
            stderr.print(f"[yellow]warning:[/] cannot write the termination log {log}: {error}")
    if result.error is not None:
        stderr.print(f"[red]error:[/] {escape(result.error.reason)}: {escape(result.error.message)}")
        raise typer.Exit(1)
    stderr.print(f"wrote {escape(str(result.repository))}")
    return result


def _engine_with_options(
    engine: Any,
    *,
    max_batch_size: int | None,
    samples: int | None,
    profiles: list[dict[str, Any]],
    generated: list[dict[str, Any]],
) -> Any:
    """The spec's engine settings with the command line's on top, validated again as a whole."""
    from nimify.api import EngineSpec

    data = engine.model_dump(mode="json", by_alias=True, exclude_none=True)
    if max_batch_size is not None:
        data["maxBatchSize"] = max_batch_size
    if samples is not None:
        data["parity"]["samples"] = samples
    if profiles:
        data["profiles"] = profiles
    if generated:
        data["parity"]["generated"] = generated
    try:
        return EngineSpec.model_validate(data)
    except ValidationError as error:
        raise ModelError("InvalidSpec", "; ".join(map(str, field_errors(error, ("engine",))))) from None


def _default_gpus(spec: Any, backend: str) -> int:
    """The spec's GPUs; without a spec, one for TensorRT and none (CPU instances) otherwise."""
    if spec is not None:
        return int(spec.resources.gpus)
    return 1 if backend == "tensorrt" else 0
