"""The `nimify` command line: thin typer commands that call the modules that do the work."""

from __future__ import annotations

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
    from nimify.cli import convert, doctor, model, serve  # noqa: F401


def main() -> None:
    _register_commands()
    app()
