"""Pipeline files as a user writes them for `nimify create|serve|openapi --pipeline` (shared by the pipeline
command and serve tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.pipelines import ExportedPipeline


def write_pipeline(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def model_file_args(exported: ExportedPipeline) -> list[str]:
    """`--model-file MEMBER=PATH` for every member: the local copies of the members' (placeholder) uris."""
    return [arg for name, path in exported.models.items() for arg in ("--model-file", f"{name}={path}")]


def local_pipeline(exported: ExportedPipeline, directory: Path) -> Path:
    """A pipeline file beside its models, each member's uri the model's path relative to it."""
    return write_pipeline(
        directory / f"{exported.name}.yaml",
        exported.with_uris(lambda name, path: str(Path(path).relative_to(directory))),
    )
