"""`nimify check-pipeline`: the entrypoint of a pipeline's check Job (engine/pipeline_check.py). Not a
command for people: the operator runs it with the check's document in NIMIFY_PIPELINE_CHECK."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from nimify.cli import app

DOCUMENT_ENV = "NIMIFY_PIPELINE_CHECK"


def termination_message(result: dict[str, Any], line: str) -> str:
    """The result as the operator reads it (engine/result.py's encoding): whole, compressed, or without the
    searched shapes and with the error's message cut; never a cut JSON text, which would read as no result."""
    from nimify.engine.result import fitted_message

    if (fitted := fitted_message(line)) is not None:
        return fitted
    reduced = {**result, "truncated": True}
    if isinstance(reduced.get("parity"), dict):
        reduced["parity"] = {k: v for k, v in reduced["parity"].items() if k != "shapes"}
    if isinstance(reduced.get("error"), dict):
        reduced["error"] = {**reduced["error"], "message": str(reduced["error"].get("message", ""))[:1000]}
    return json.dumps(reduced, separators=(",", ":"))


@app.command("check-pipeline", hidden=True)
def check_pipeline_command(
    engines: Annotated[Path, typer.Option(help="Where the engine claim is mounted.")],
    repository: Annotated[Path, typer.Option(help="The model repository Triton serves in the check.")],
    prepare: Annotated[bool, typer.Option(help="Write the model repository and exit.")] = False,
    url: Annotated[str, typer.Option(help="Triton's HTTP endpoint (the sidecar's).")] = "",
    termination_log: Annotated[Path | None, typer.Option(help="Where the result goes too.")] = None,
) -> None:
    """Prepare the model repository of a pipeline's check, or compare the served ensemble with the chain."""
    from nimify.engine.pipeline_check import check_served_pipeline, prepare_repository
    from nimify.engine.pipeline_document import CheckDocument
    from nimify.model.errors import ModelError
    from nimify.redaction import redact_logs

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    redact_logs()
    document = CheckDocument.from_json(os.environ[DOCUMENT_ENV])
    if prepare:
        prepare_repository(document, engines, repository)
        return
    try:
        result = check_served_pipeline(document, engines, url)
    except ModelError as error:
        result = {"ok": False, "error": error.to_json()}
    line = json.dumps(result, separators=(",", ":"))
    typer.echo(line)
    if termination_log is not None:
        termination_log.write_text(termination_message(result, line))
    if not result["ok"]:
        sys.exit(1)
