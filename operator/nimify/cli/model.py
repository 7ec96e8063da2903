"""`nimify inspect`, `nimify create` and `nimify openapi`: what a model is, its NimService, its HTTP API."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nimify.cli import app
from nimify.cli.failures import reported_failures, stderr
from nimify.cli.pipeline_file import (
    MaxBatchSizeOption,
    ModelFileOption,
    PipelineOption,
    check_sources,
    refuse_model_options,
)
from nimify.cli.progress import pipeline_progress
from nimify.model.errors import ModelError
from nimify.model.inspection import ModelReport
from nimify.model.signature import Signature
from nimify.triton.model_config import config_dims

if TYPE_CHECKING:
    from nimify.api import NimService
    from nimify.cli.manifest import ManifestOptions

stdout = Console(highlight=False, soft_wrap=True)

ModelArgument = Annotated[
    str, typer.Argument(help="ONNX file or TensorRT plan: a path, or an https/s3/gs/hf URI.")
]
BackendOption = Annotated[
    str, typer.Option("--backend", help="Validate for this backend: onnxruntime, tensorrt or python.")
]
FormatOption = Annotated[
    str | None, typer.Option("--format", help="onnx or tensorrt-plan (default: from the file).")
]


@contextlib.contextmanager
def local_model(model: str, *, show_progress: bool = True) -> Iterator[Path]:
    """The model as a local file: a path as given, or a URI downloaded (with progress) to a temp folder."""
    from nimify.engine.address_policy import policy_from_environment
    from nimify.engine.fetch import FetchOptions, fetch_model
    from nimify.engine.sources import parse_uri

    if parse_uri(model).scheme == "local":
        yield Path(model).expanduser()
        return
    with (
        tempfile.TemporaryDirectory(prefix="nimify-model-") as work,
        pipeline_progress(show_progress) as progress,
    ):
        options = FetchOptions(progress=progress.on_download, address_policy=policy_from_environment())
        fetched = fetch_model(model, Path(work), options=options)
        yield fetched.path


def load_signature(path: Path | None) -> Signature | None:
    """A signature from JSON or YAML: a bare signature, `nimify inspect --json` output, or a NimService whose
    status carries one (what the operator recorded for a plan)."""
    if path is None:
        return None
    try:
        data = yaml.safe_load(path.read_text())
        found = data.get("status", {}).get("signature") or data.get("signature") or data
        return Signature.from_json(found)
    except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError, ValueError) as error:
        raise ModelError(
            "InvalidSignature", f"{path}: not a signature ({type(error).__name__}: {error})"
        ) from None


def _dims(text: list[Any]) -> str:
    return "[" + ", ".join(str(d) for d in text) + "]"


def render_report(report: ModelReport, console: Console, source: str | None = None) -> None:
    summary = Table(show_header=False, box=None, pad_edge=False)
    summary.add_column(style="bold")
    summary.add_column(overflow="fold")
    summary.add_row("file", escape(source or str(report.path)))
    summary.add_row("format", report.format)
    summary.add_row("size", f"{report.size_bytes} bytes")
    summary.add_row("sha256", report.sha256)
    if report.format == "onnx":
        summary.add_row("ir version", str(report.ir_version))
        summary.add_row(
            "opsets", ", ".join(f"{domain} {version}" for domain, version in sorted(report.opsets.items()))
        )
        summary.add_row("producer", escape(report.producer or "-"))
        summary.add_row("operators", escape(", ".join(report.op_types) or "-"))
        summary.add_row("external data", escape(", ".join(report.external_data) or "none"))
    else:
        summary.add_row("signature from", escape(report.signature_source))
    verdict = "[green]yes[/]" if report.batching.batched else "[yellow]no[/] (max_batch_size 0)"
    summary.add_row("triton batching", f"{verdict}: {escape(report.batching.reason)}")
    console.print(summary)
    tensors = Table(title="signature", title_justify="left")
    # Where ONNX Runtime fixes dims the file leaves open, both: what the file declares, what the runtime says.
    files = {(kind, t.name): t for kind, t in report.declared.tensors()} if report.declared else None
    shapes = ("declared shape", "runtime shape") if files is not None else ("shape",)
    for column in ("", "name", "dtype", *shapes, "config shape"):
        tensors.add_column(column)
    for kind, tensor in report.signature.tensors():
        served, _ = config_dims(tensor, report.batching.batched)
        described = [escape(tensor.describe_dims())]
        if files is not None:
            described.insert(0, escape(files.get((kind, tensor.name), tensor).describe_dims()))
        tensors.add_row(kind, escape(tensor.name), tensor.dtype, *described, _dims(served))
    console.print(tensors)


def print_warnings(report: ModelReport) -> None:
    """What validation could not settle, on stderr: the runtime decides these at conversion or load."""
    for warning in report.warnings:
        stderr.print(f"[yellow]warning:[/] {escape(warning)}")


@app.command("inspect")
def inspect_command(
    model: ModelArgument,
    backend: BackendOption = "onnxruntime",
    model_format: FormatOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    signature: Annotated[
        Path | None,
        typer.Option("--signature", help="JSON signature for a TensorRT plan (no TensorRT here)."),
    ] = None,
) -> None:
    """Validate a model and show its signature, opsets, operators, digest and Triton batching decision."""
    from nimify.model.validation import validate_model

    with reported_failures(), local_model(model, show_progress=not as_json) as path:
        report = validate_model(
            path, backend=backend, model_format=model_format, signature_hint=load_signature(signature)
        )
        if as_json:
            typer.echo(json.dumps(report.to_json(), indent=2))
        else:
            render_report(report, stdout, model)
            print_warnings(report)


def _parse_shape(text: str, what: str) -> list[int]:
    try:
        dims = [int(part) for part in text.lower().split("x")]
    except ValueError:
        raise typer.BadParameter(f"{what} {text!r}: expected sizes like 1x3x224x224") from None
    return dims


def parse_profile(text: str) -> dict[str, Any]:
    """`image=1x3x224x224:8x3x224x224:16x3x512x512` → a ShapeProfile mapping."""
    name, sep, shapes = text.partition("=")
    parts = shapes.split(":")
    if not sep or not name or len(parts) != 3:
        raise typer.BadParameter(
            f"profile {text!r}: expected INPUT=MIN:OPT:MAX, e.g. image=1x3x64x64:8x3x224x224:16x3x512x512"
        )
    low, best, high = (_parse_shape(part, f"profile {name}") for part in parts)
    return {"input": name, "min": low, "opt": best, "max": high}


def parse_parity_generated(shapes: list[str] | None, values: list[str] | None) -> list[dict[str, Any]]:
    """`--parity-shape audio=1x16000` and `--parity-value sample_rate=16000` → engine.parity.generated."""
    entries: dict[str, dict[str, Any]] = {}
    for text in shapes or []:
        name, sep, shape = text.partition("=")
        if not sep or not name:
            raise typer.BadParameter(
                f"parity shape {text!r}: expected INPUT=SHAPE, e.g. audio=1x16000 (or x=scalar)"
            )
        dims = [] if shape in ("", "scalar") else _parse_shape(shape, f"parity shape {name}")
        entries.setdefault(name, {"input": name})["shape"] = dims
    for text in values or []:
        name, sep, value = text.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or not name or number is None:
            raise typer.BadParameter(f"parity value {text!r}: expected INPUT=NUMBER, e.g. sample_rate=16000")
        entries.setdefault(name, {"input": name})["value"] = number
    return list(entries.values())


ParityInputsOption = Annotated[
    str | None,
    typer.Option(
        "--parity-inputs",
        help="Representative parity inputs: an .npz of arrays named after the inputs (N/INPUT: sample N).",
    ),
]
ParityInputsSha256Option = Annotated[
    str | None, typer.Option("--parity-inputs-sha256", help="Expected digest of the --parity-inputs file.")
]
ParityShapeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--parity-shape", help="INPUT=SHAPE (1x16000, or scalar) for generated parity inputs, repeatable."
    ),
]
ParityValueOption = Annotated[
    list[str] | None,
    typer.Option("--parity-value", help="INPUT=NUMBER: fill a generated parity input with it, repeatable."),
]


OptionalModelArgument = Annotated[
    str | None,
    typer.Argument(help="ONNX file or TensorRT plan: a path, or an https/s3/gs/hf URI (or --pipeline)."),
]


@app.command("create")
def create_command(
    model: OptionalModelArgument = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="NimService name (a DNS-1035 label; a pipeline's: its file's stem)."),
    ] = None,
    pipeline: PipelineOption = None,
    model_files: ModelFileOption = None,
    uri: Annotated[
        str | None,
        typer.Option("--uri", help="Where the cluster fetches the model (default: MODEL when a URI)."),
    ] = None,
    namespace: Annotated[str | None, typer.Option("--namespace", "-n")] = None,
    backend: Annotated[str, typer.Option("--backend", help="tensorrt or onnxruntime.")] = "tensorrt",
    precision: Annotated[
        str | None, typer.Option("--precision", help="auto, fp32, fp16, bf16, int8, fp8.")
    ] = None,
    max_batch_size: Annotated[int | None, typer.Option("--max-batch-size", min=0)] = None,
    profiles: Annotated[
        list[str] | None,
        typer.Option("--profile", help="INPUT=MIN:OPT:MAX shapes (1x3x224x224), repeatable."),
    ] = None,
    gpus: Annotated[int | None, typer.Option("--gpus", min=0)] = None,
    gpu_product: Annotated[
        str | None, typer.Option("--gpu-product", help="nvidia.com/gpu.product value.")
    ] = None,
    replicas: Annotated[int | None, typer.Option("--replicas", min=0)] = None,
    triton_image: Annotated[str | None, typer.Option("--triton-image")] = None,
    instances: Annotated[
        int | None, typer.Option("--instances", min=1, help="Model instances per GPU.")
    ] = None,
    preferred_batch_sizes: Annotated[list[int] | None, typer.Option("--preferred-batch-size")] = None,
    max_queue_delay_us: Annotated[int | None, typer.Option("--max-queue-delay-us", min=0)] = None,
    warmup: Annotated[
        list[int] | None, typer.Option("--warmup", help="Warm-up batch size, repeatable.")
    ] = None,
    response_cache: Annotated[bool, typer.Option("--response-cache/--no-response-cache")] = False,
    samples: Annotated[
        int | None, typer.Option("--samples", min=0, help="Parity samples to generate (0 skips the check).")
    ] = None,
    parity_inputs: ParityInputsOption = None,
    parity_inputs_sha256: ParityInputsSha256Option = None,
    parity_shapes: ParityShapeOption = None,
    parity_values: ParityValueOption = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the manifest here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of YAML.")] = False,
) -> None:
    """Inspect MODEL (or a --pipeline's members) and print (or write) a NimService manifest serving it.

    A pipeline file holds spec.pipeline; each member's model.uri is where the cluster fetches it, and
    --model-file MEMBER=PATH gives the copy to inspect here (default: the uri, downloaded).
    """
    from nimify.cli.manifest import ManifestOptions, build_nimservice, manifest_document
    from nimify.engine.sources import parse_uri
    from nimify.model.validation import validate_model

    check_sources(model, pipeline, model_files)
    if pipeline is not None:
        refuse_model_options(
            {
                "--uri": uri,
                "--profile": profiles,
                "--parity-inputs": parity_inputs,
                "--parity-inputs-sha256": parity_inputs_sha256,
                "--parity-shape": parity_shapes,
                "--parity-value": parity_values,
            }
        )
    elif name is None:
        raise typer.BadParameter("give the NimService's name (a DNS-1035 label)", param_hint="--name")
    with reported_failures():
        manifest_uri = None
        if model is not None:
            manifest_uri = uri or (model if parse_uri(model).scheme != "local" else None)
            if manifest_uri is None:
                raise ModelError(
                    "ModelUriRequired",
                    "MODEL is a local file: pass --uri with where the cluster fetches it "
                    "(https://, s3://, gs://, pvc://CLAIM/PATH or hf://)",
                )
        options = ManifestOptions(
            name=name or (pipeline.stem if pipeline is not None else ""),
            uri=manifest_uri,
            namespace=namespace,
            backend=backend,
            precision=precision,
            max_batch_size=max_batch_size,
            profiles=[parse_profile(text) for text in profiles or []],
            gpus=gpus,
            gpu_product=gpu_product,
            replicas=replicas,
            triton_image=triton_image,
            instances=instances,
            preferred_batch_sizes=preferred_batch_sizes,
            max_queue_delay_us=max_queue_delay_us,
            warmup_batch_sizes=warmup,
            response_cache=response_cache,
            parity_samples=samples,
            parity_inputs=parity_inputs,
            parity_inputs_sha256=parity_inputs_sha256,
            parity_generated=parse_parity_generated(parity_shapes, parity_values),
        )
        if pipeline is not None:
            service, notes = _pipeline_nimservice(pipeline, model_files, options)
        else:
            assert model is not None
            with local_model(model) as path:
                report = validate_model(path, backend="tensorrt" if backend == "tensorrt" else "onnxruntime")
                print_warnings(report)
                # Runs the model (as the conversion Job does, without building) while the file is at hand.
                service, notes = build_nimservice(report, options)
        document = manifest_document(service)
        text = json.dumps(document, indent=2) + "\n" if as_json else yaml.safe_dump(document, sort_keys=False)
        for note in notes:
            stderr.print(f"[dim]note:[/] {escape(note)}")
        if output is None:
            typer.echo(text, nl=False)
        else:
            output.write_text(text)
            stderr.print(f"wrote {escape(str(output))}")


def _pipeline_nimservice(
    path: Path, model_files: list[str] | None, options: ManifestOptions
) -> tuple[NimService, list[str]]:
    """The NimService of the pipeline in `path`: each member's local copy inspected and run as create runs a
    model, with the backend it is built with."""
    from nimify.api import EngineSpec
    from nimify.cli.manifest import build_pipeline_nimservice
    from nimify.cli.pipeline_file import FIELD, load_pipeline, member_models, parse_model_files
    from nimify.model.validation import validate_model

    loaded = load_pipeline(path, manifest=False)
    files = parse_model_files(model_files, loaded.pipeline)
    for index, member in enumerate(loaded.pipeline.members):
        if member.name in loaded.local and member.name not in files:
            raise ModelError(
                "ModelUriRequired",
                f"{FIELD}.members[{index}].model.uri is a local file: write where the cluster fetches it"
                " (https://, s3://, gs://, pvc://CLAIM/PATH or hf://) and give the local copy with"
                f" --model-file {member.name}=PATH",
            )
    default = EngineSpec(backend=options.backend)
    with member_models(loaded, files) as paths:
        reports = {}
        for member in loaded.pipeline.members:
            backend = loaded.engine(member.name, default).backend
            report = validate_model(
                paths[member.name], backend="tensorrt" if backend == "tensorrt" else "onnxruntime"
            )
            for warning in report.warnings:
                stderr.print(f"[yellow]warning:[/] {escape(member.name)}: {escape(warning)}")
            reports[member.name] = report
        # Runs each member (as its conversion Job does, without building) while the files are at hand.
        return build_pipeline_nimservice(loaded.document, reports, options)


@app.command("openapi")
def openapi_command(
    model: OptionalModelArgument = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Triton model name (default: from the file name; a pipeline's: the NimService's or the"
            " file's stem).",
        ),
    ] = None,
    pipeline: PipelineOption = None,
    model_files: ModelFileOption = None,
    max_batch_size: MaxBatchSizeOption = None,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend", help="Validate for this backend (default: tensorrt for a plan, else onnxruntime)."
        ),
    ] = None,
    model_format: FormatOption = None,
    signature: Annotated[
        Path | None,
        typer.Option("--signature", help="JSON signature for a TensorRT plan (no TensorRT here)."),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
    as_yaml: Annotated[bool, typer.Option("--yaml", help="YAML instead of JSON.")] = False,
) -> None:
    """Print the OpenAPI 3.1 document of the model's KServe v2 inference endpoints (a pipeline's and its
    members')."""
    from nimify.api import EngineSpec
    from nimify.model.validation import validate_model
    from nimify.triton.local_repository import model_name_for
    from nimify.triton.model_config import resolve_max_batch_size
    from nimify.triton.openapi import openapi_document

    check_sources(model, pipeline, model_files)
    if pipeline is not None:
        refuse_model_options({"--format": model_format, "--signature": signature})
    with reported_failures():
        if pipeline is not None:
            document = _pipeline_openapi(pipeline, model_files, name, max_batch_size, backend)
        else:
            assert model is not None
            with local_model(model, show_progress=False) as path:
                report = validate_model(
                    path,
                    backend=backend or _default_backend(path, model_format),
                    model_format=model_format,
                    signature_hint=load_signature(signature),
                )
                print_warnings(report)
                batch = resolve_max_batch_size(EngineSpec(max_batch_size=max_batch_size), report.batching)
                document = openapi_document(
                    name or model_name_for(path), report.signature, max_batch_size=batch
                )
        text = yaml.safe_dump(document, sort_keys=False) if as_yaml else json.dumps(document, indent=2) + "\n"
        if output is None:
            typer.echo(text, nl=False)
        else:
            output.write_text(text)


def _default_backend(path: Path, model_format: str | None) -> str:
    from nimify.model.inspection import resolve_format
    from nimify.model.onnx_file import check_model_file

    plan = check_model_file(path) > 0 and resolve_format(path, model_format) == "tensorrt-plan"
    return "tensorrt" if plan else "onnxruntime"


def _pipeline_openapi(
    path: Path,
    model_files: list[str] | None,
    name: str | None,
    max_batch_size: int | None,
    backend: str | None,
) -> dict[str, Any]:
    """The document of the pipeline in `path` (a pipeline file or a NimService): the ensemble's endpoints,
    typed by the graph checked against the members' signatures, and each member's."""
    from nimify.api import EngineSpec
    from nimify.cli.pipeline_file import check_pipeline_name, load_pipeline, member_models, parse_model_files
    from nimify.model.validation import validate_model
    from nimify.triton.ensemble import Member, plan_ensemble
    from nimify.triton.model_config import resolve_max_batch_size
    from nimify.triton.openapi import ServedModel, pipeline_openapi_document

    loaded = load_pipeline(path)
    files = parse_model_files(model_files, loaded.pipeline)
    check_pipeline_name(name or loaded.name, loaded.pipeline, "--name" if name else "the pipeline's name")
    default = EngineSpec(max_batch_size=max_batch_size)
    members: dict[str, Member] = {}
    with member_models(loaded, files, show_progress=False) as paths:
        for member in loaded.pipeline.members:
            file = paths[member.name]
            report = validate_model(file, backend=backend or _default_backend(file, None))
            for warning in report.warnings:
                stderr.print(f"[yellow]warning:[/] {escape(member.name)}: {escape(warning)}")
            batch = resolve_max_batch_size(loaded.engine(member.name, default), report.batching)
            members[member.name] = Member(report.signature, batch)
    ensemble = plan_ensemble(name or loaded.name, loaded.pipeline, members)
    return pipeline_openapi_document(
        ServedModel(ensemble.name, ensemble.signature, ensemble.max_batch_size),
        [ServedModel(n, m.signature, m.max_batch_size) for n, m in members.items()],
    )
