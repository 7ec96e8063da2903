"""The `nimify` command line: thin typer commands that call the modules that do the work."""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    name="nimify",
    help="Serve ONNX and TensorRT models on Kubernetes with NVIDIA Triton.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.command()
def version() -> None:
    """Print the nimify version."""
    from nimify import __version__

    typer.echo(__version__)


def _register_commands() -> None:
    # Each command group lives in its own module; importing it registers its commands on `app`.
    from nimify.cli import crd  # noqa: F401, I001
    from nimify.cli import devcluster  # noqa: F401
    from nimify.cli import chart  # noqa: F401
    from nimify.cli import run  # noqa: F401
    from nimify.cli import convert, doctor, load, model, serve  # noqa: F401


def main() -> None:
    # The conversion Job's entrypoint (run once per engine build) and the operator register only themselves:
    # the other commands' imports (onnx, numpy, ...) would be most of the Job's start-up and a third of the
    # operator's memory.
    if sys.argv[1:2] == ["convert"]:
        from nimify.cli import convert  # noqa: F401
    elif sys.argv[1:2] == ["run"]:
        from nimify.cli import run  # noqa: F401
    else:
        _register_commands()
    app()
