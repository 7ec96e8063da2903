"""`nimify load`: a bounded load test against a Triton endpoint (a NimService's Service, a port-forward,
`nimify serve`): fixed time, fixed concurrency, then latency percentiles and throughput."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from nimify.cli import app
from nimify.cli.failures import fail, reported_failures
from nimify.triton.load import MAX_CONCURRENCY, MAX_DURATION_SECONDS, LoadResult, run_load


def _table(result: LoadResult) -> Table:
    summary = result.summary()
    table = Table(show_header=False, box=None)
    table.add_row("requests", f"{summary['requests']} ok, {summary['failed']} failed")
    table.add_row(
        "throughput", f"{summary['requestsPerSecond']} req/s, {summary['inferencesPerSecond']} inferences/s"
    )
    for key, value in summary["latencyMs"].items():
        table.add_row(f"latency {key}", "-" if value is None else f"{value:.2f} ms")
    for error, count in summary["errors"].items():
        table.add_row("error", f"{count} x {error}")
    return table


@app.command("load")
def load_command(
    url: Annotated[str, typer.Argument(help="Triton's HTTP (or, with --grpc, gRPC) address, host:port.")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model name (a NimService serves its own name).")
    ],
    duration: Annotated[
        float,
        typer.Option("--duration", "-d", min=0.1, max=MAX_DURATION_SECONDS, help="Seconds to send for."),
    ] = 30.0,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, max=MAX_CONCURRENCY, help="Requests in flight.")
    ] = 4,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Rows per request.")] = 1,
    grpc: Annotated[bool, typer.Option("--grpc", help="Use the gRPC API instead of HTTP.")] = False,
    model_version: Annotated[str, typer.Option("--model-version")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Send inference requests to URL for a fixed time at a fixed concurrency; print latency percentiles
    and throughput. Inputs are random, shaped from the model's metadata. Exits 1 if any request failed."""
    from tritonclient.utils import InferenceServerException

    url = url.removeprefix("http://").removeprefix("https://").rstrip("/")
    with reported_failures():
        try:
            result = asyncio.run(
                run_load(
                    url,
                    model,
                    duration=duration,
                    concurrency=concurrency,
                    protocol="grpc" if grpc else "http",
                    batch_size=batch_size,
                    model_version=model_version,
                )
            )
        except ValueError as error:
            raise fail("InvalidArgument", str(error)) from None
        except OSError as error:  # refused, unresolvable, reset: aiohttp's and grpc's errors derive from it
            raise fail("Unreachable", f"{url}: {error}") from None
        except InferenceServerException as error:  # before any load: the model's metadata or config
            raise fail("ModelUnavailable", f"{model} at {url}: {error.message()}") from None
    console = Console(highlight=False)
    if as_json:
        console.print_json(json.dumps(result.summary()))
    else:
        console.print(_table(result))
    if result.failed:
        raise typer.Exit(1)
