"""`nimify run`: the operator."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from nimify.cli import app

if TYPE_CHECKING:
    import kopf


def kopf_settings(namespaces: list[str]) -> kopf.OperatorSettings:
    """kopf's settings for watching `namespaces` (none: the whole cluster).

    Exact namespace names need no discovery: kopf would otherwise list and watch Namespaces and CRDs, both
    cluster-scoped, and the chart's namespaced mode grants nothing outside the watched namespaces.
    """
    import kopf  # here, not at the top: every nimify command imports this module

    settings = kopf.OperatorSettings()
    if namespaces and not any(set(pattern) & set("!*?,") for pattern in namespaces):  # kopf's glob syntax
        settings.scanning.disabled = True
    return settings


@app.command("run")
def run(
    namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--namespace",
            "-n",
            help="Watch only these namespaces (default: all); globs allowed (then kopf lists Namespaces).",
        ),
    ] = None,
    liveness: Annotated[
        str | None, typer.Option("--liveness", help="Liveness endpoint, e.g. http://0.0.0.0:8081/healthz.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the operator (one replica; configure with NIMIFY_* environment variables)."""
    import asyncio
    import logging

    import kopf

    import nimify.controller.operator  # noqa: F401  - registers the handlers
    from nimify.redaction import redact_logs

    kopf.configure(verbose=verbose)
    if not verbose:
        # A line per request and per handler call: at a thousand NimServices, more log than operator.
        for name in ("httpx", "httpx2", "kopf.objects"):
            logging.getLogger(name).setLevel(logging.WARNING)
    # kopf's debug log prints whole NimServices (the model URI with a presigned query string among them).
    redact_logs("kopf.objects")
    asyncio.run(
        kopf.operator(
            settings=kopf_settings(namespace or []),
            standalone=True,
            clusterwide=not namespace,
            namespaces=namespace or (),
            liveness_endpoint=liveness,
        )
    )
