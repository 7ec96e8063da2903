"""`nimify run`: the operator."""

from __future__ import annotations

from typing import Annotated

import typer

from nimify.cli import app


@app.command("run")
def run(
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="Watch only these namespaces (default: all)."),
    ] = None,
    liveness: Annotated[
        str | None, typer.Option("--liveness", help="Liveness endpoint, e.g. http://0.0.0.0:8081/healthz.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the operator (one replica; configure with NIMIFY_* environment variables)."""
    import asyncio

    import kopf

    import nimify.controller.operator  # noqa: F401  - registers the handlers
    from nimify.redaction import redact_logs

    kopf.configure(verbose=verbose)
    # kopf's debug log prints whole NimServices (the model URI with a presigned query string among them).
    redact_logs("kopf.objects")
    asyncio.run(
        kopf.operator(
            standalone=True,
            clusterwide=not namespace,
            namespaces=namespace or (),
            liveness_endpoint=liveness,
        )
    )
