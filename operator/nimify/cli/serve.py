"""`nimify serve`: a real Triton on this machine for an ONNX model or a repository from `nimify convert`."""

from __future__ import annotations

import contextlib
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from nimify.cli import app
from nimify.cli.failures import reported_failures, stderr
from nimify.cli.pipeline_file import MaxBatchSizeOption, ModelFileOption, PipelineOption, check_sources

if TYPE_CHECKING:
    from nimify.api import EngineSpec, TritonSpec
    from nimify.triton.local_repository import LocalRepository
    from nimify.triton.local_server import LocalTriton

DEFAULT_CACHE_BYTES = 64 * 1024 * 1024


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT (Ctrl-C) set `stop` instead of killing nimify, so the server is stopped in order."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@app.command("serve")
def serve_command(
    model: Annotated[
        Path | None,
        typer.Argument(help="An ONNX file, or a model repository (or one model folder); or --pipeline."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Triton model name (ONNX file only); a pipeline's (default: the NimService's or the file's"
            " stem).",
        ),
    ] = None,
    pipeline: PipelineOption = None,
    model_files: ModelFileOption = None,
    repository: Annotated[
        Path | None,
        typer.Option("--repository", help="Write the served repository here (default: a temp folder)."),
    ] = None,
    http_port: Annotated[int, typer.Option("--http-port", help="0 picks a free port.")] = 0,
    grpc_port: Annotated[int, typer.Option("--grpc-port")] = 0,
    metrics_port: Annotated[int, typer.Option("--metrics-port")] = 0,
    max_batch_size: MaxBatchSizeOption = None,
    instances: Annotated[int, typer.Option("--instances", min=1, help="Model instances (CPU).")] = 1,
    max_queue_delay_us: Annotated[int | None, typer.Option("--max-queue-delay-us", min=0)] = None,
    ready_timeout: Annotated[
        float, typer.Option("--ready-timeout", help="Seconds to wait for readiness.")
    ] = 120.0,
    verbose: Annotated[bool, typer.Option("--verbose", help="Verbose Triton log.")] = False,
) -> None:
    """Serve MODEL with the tritonserver of the nvidia-pytriton wheel (python backend running ONNX Runtime).

    Prints the HTTP, gRPC and metrics endpoints; Ctrl-C or SIGTERM stops the server cleanly. A --pipeline is
    served as the cluster serves it: each member on its own and the ensemble over them.
    """
    from nimify.api import DynamicBatchingSpec, EngineSpec, TritonSpec
    from nimify.triton.local_server import LocalTriton

    check_sources(model, pipeline, model_files)
    with reported_failures(), tempfile.TemporaryDirectory(prefix="nimify-serve-") as scratch:
        target = repository or Path(scratch) / "repository"
        triton = TritonSpec(
            instances_per_gpu=instances,
            dynamic_batching=DynamicBatchingSpec(max_queue_delay_microseconds=max_queue_delay_us),
        )
        engine = EngineSpec(backend="onnxruntime", max_batch_size=max_batch_size)
        served: str | None = None  # a pipeline's name
        if pipeline is not None:
            local, served = _pipeline_repository(pipeline, model_files, name, target, engine, triton)
        else:
            assert model is not None  # one of the two, checked above
            local = _model_repository(model, target, name, engine, triton)
        server = LocalTriton(
            local.path,
            http_port=http_port or None,
            grpc_port=grpc_port or None,
            metrics_port=metrics_port or None,
            cache_bytes=DEFAULT_CACHE_BYTES if local.cache_wanted else None,
            verbose=verbose,
        )
        stop = threading.Event()
        with _stop_on_signals(stop):
            endpoints = server.start()
            try:
                with stderr.status("starting tritonserver"):
                    server.wait_ready(ready_timeout)
                typer.echo(f"models   {', '.join(local.models)}")
                if served is not None:
                    typer.echo(f"pipeline {served} at {endpoints.http}/v2/models/{served}/infer")
                    typer.echo(
                        f"members  {', '.join(m for m in local.models if m != served)}, each reachable on its"
                        f" own: {endpoints.http}/v2/models/MEMBER/infer"
                    )
                typer.echo(f"http     {endpoints.http}")
                typer.echo(f"grpc     {endpoints.grpc}")
                typer.echo(f"metrics  {endpoints.metrics}")
                stderr.print("[dim]Ctrl-C stops the server[/]")
                while not stop.is_set():
                    if server.process is not None and server.process.poll() is not None:
                        raise typer.Exit(_server_died(server))
                    stop.wait(0.5)
            finally:
                code = server.stop()
        stderr.print(f"tritonserver stopped (exit code {code})")


def _model_repository(
    model: Path, target: Path, name: str | None, engine: EngineSpec, triton: TritonSpec
) -> LocalRepository:
    """An ONNX file, or a repository (or one model folder) as it is, as the local repository."""
    from nimify.triton.local_repository import repository_from_directory, repository_from_onnx

    if model.is_dir():
        local = repository_from_directory(model, target)
        for translated in local.translated:
            stderr.print(
                f"[dim]note:[/] {escape(translated)}: onnxruntime_onnx served by the python backend here"
            )
        return local
    local, report = repository_from_onnx(model, target, name=name, engine=engine, triton=triton)
    stderr.print(f"[dim]batching:[/] {escape(report.batching.reason)}")
    return local


def _pipeline_repository(
    path: Path,
    model_files: list[str] | None,
    name: str | None,
    target: Path,
    engine: EngineSpec,
    triton: TritonSpec,
) -> tuple[LocalRepository, str]:
    """The pipeline in `path` (a pipeline file or a NimService) as a local repository: its members (from
    --model-file, paths or URIs) and the ensemble, under `name` or the pipeline's own (returned)."""
    from nimify.cli.pipeline_file import check_pipeline_name, load_pipeline, member_models, parse_model_files
    from nimify.triton.local_repository import repository_from_pipeline

    loaded = load_pipeline(path)
    files = parse_model_files(model_files, loaded.pipeline)
    served = name or loaded.name
    check_pipeline_name(served, loaded.pipeline, "--name" if name else "the pipeline's name")
    with member_models(loaded, files) as paths:
        local, reports = repository_from_pipeline(
            paths, loaded.pipeline, target, name=served, engine=loaded.default_engine(engine), triton=triton
        )
    for member, report in reports.items():
        stderr.print(f"[dim]batching:[/] {escape(member)}: {escape(report.batching.reason)}")
    return local, served


def _server_died(server: LocalTriton) -> int:
    stderr.print(f"[red]error:[/] TritonExited: tritonserver exited on its own:\n{escape(server.log_tail())}")
    return 1
