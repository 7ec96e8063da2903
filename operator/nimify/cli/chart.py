"""`nimify chart`: the generated files of the Helm chart (CRD copy, least-privilege RBAC, values schema)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nimify.cli import app


@app.command("chart")
def chart(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="The chart directory to write into (charts/nimify)."),
    ] = None,
) -> None:
    """Write the chart's generated files (--output charts/nimify), or print their paths and the RBAC."""
    from nimify.install.chart import generated_files

    files = generated_files()
    if output is None:
        typer.echo(files["templates/rbac.yaml"], nl=False)
        return
    for relative, text in files.items():
        path = output / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        typer.echo(f"wrote {path}", err=True)
