"""`nimify crd`: the NimService CustomResourceDefinition and its Markdown reference, from the API models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nimify.cli import app


@app.command("crd")
def crd(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Directory to write the CRD into (e.g. crds/), instead of stdout."
        ),
    ] = None,
    docs: Annotated[
        Path | None,
        typer.Option(
            "--docs", help="Also write the Markdown field reference to this file (e.g. docs/api.md)."
        ),
    ] = None,
) -> None:
    """Print the NimService CRD, or write it (--output) and its reference (--docs) where they are kept."""
    from nimify.api.crd import CRD_FILENAME, render_crd
    from nimify.api.docs import render_reference

    if output is None and docs is None:
        typer.echo(render_crd(), nl=False)
        return
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        (output / CRD_FILENAME).write_text(render_crd())
        typer.echo(f"wrote {output / CRD_FILENAME}", err=True)
    if docs is not None:
        docs.parent.mkdir(parents=True, exist_ok=True)
        docs.write_text(render_reference())
        typer.echo(f"wrote {docs}", err=True)
