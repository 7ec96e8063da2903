"""The `nimify` command line: thin typer commands that call the modules that do the work."""

from __future__ import annotations

import importlib.metadata
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


#: Entry-point group of command groups that other distributions add to `nimify`: each entry point names a
#: `typer.Typer`, added under the entry point's name. The local development cluster, a distribution of its
#: own (docs/development.md, "Two distributions"), adds `dev-cluster` this way: the command exists in the
#: development virtualenv, and the operator's wheel and image carry none of its code. (A console script of its
#: own would rename every `nimify dev-cluster ...` in scripts, docs and habits.)
PLUGIN_GROUP = "nimify.cli"


def _register_commands() -> None:
    # Each command group lives in its own module; importing it registers its commands on `app`.
    from nimify.cli import crd  # noqa: F401, I001
    from nimify.cli import chart  # noqa: F401
    from nimify.cli import run  # noqa: F401
    from nimify.cli import check_pipeline, convert, doctor, load, model, model_image, serve, tune  # noqa: F401
    from nimify.cli import rollout  # noqa: F401

    # A plugin that fails to import fails the command: a half-installed development virtualenv shows, instead
    # of `nimify dev-cluster` going missing without a word.
    for entry_point in sorted(importlib.metadata.entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        group = entry_point.load()
        if not isinstance(group, typer.Typer):
            raise TypeError(f"entry point {entry_point.value} ({PLUGIN_GROUP}) is not a typer.Typer")
        app.add_typer(group, name=entry_point.name)


def main() -> None:
    # The conversion Job's entrypoint (run once per engine build) and the operator register only themselves:
    # the other commands' imports (onnx, numpy, ...) would be most of the Job's start-up and a third of the
    # operator's memory.
    if sys.argv[1:2] == ["convert"]:
        from nimify.cli import convert  # noqa: F401
    elif sys.argv[1:2] == ["run"]:
        from nimify.cli import run  # noqa: F401
    elif sys.argv[1:2] == ["check-pipeline"]:
        from nimify.cli import check_pipeline  # noqa: F401
    elif sys.argv[1:2] == ["tune-job"]:  # the tuning Job's entrypoint, beside the Triton it measures
        from nimify.cli import tune  # noqa: F401
    elif sys.argv[1:2] == ["pull-model"]:  # a Triton pod's init container: start-up counts there too
        from nimify.cli import model_image  # noqa: F401
    else:
        _register_commands()
    app()
