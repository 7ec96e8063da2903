"""Writing a Triton model repository: `<root>/<model>/config.pbtxt` and the version folder's files.

The model's folder is assembled beside its final place and swapped in by renames, so a Triton pod sharing the
volume never sees half a model.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path

from nimify.model.errors import ModelError


def assemble_model_directory(
    directory: Path,
    config_text: str,
    files: Mapping[str, Path | str],
    *,
    version: str = "1",
) -> Path:
    """Build a model's folder at `directory`. `files` maps a path inside the version folder to a source file
    (copied) or to text (written)."""
    version_dir = directory / version
    version_dir.mkdir(parents=True)
    (directory / "config.pbtxt").write_text(config_text)
    for relative, source in sorted(files.items(), key=lambda item: item[0]):
        target = version_dir / relative
        if not target.resolve().is_relative_to(version_dir.resolve()):
            raise ModelError("RepositoryPathEscapes", f"repository file '{relative}' leaves {version_dir}")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, Path):
            _copy(source, target)
        else:
            target.write_text(source)
    return directory


def publish_model_directory(assembled: Path, repository: Path, name: str) -> Path:
    """Put an assembled model folder at `<repository>/<name>`, replacing what was there in two renames.

    The folder is first copied next to its final place (the work folder may be another filesystem), so the
    swap itself is a rename that a Triton pod sharing the volume never sees half done.
    """
    repository.mkdir(parents=True, exist_ok=True)
    staging = repository / f".{name}.staging-{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(assembled, staging)
        _swap_in(staging, repository / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return repository / name


def write_model_directory(
    repository: Path,
    name: str,
    config_text: str,
    files: Mapping[str, Path | str],
    *,
    version: str = "1",
) -> Path:
    """Assemble and publish in one step, for callers with nothing to check in between."""
    repository.mkdir(parents=True, exist_ok=True)
    assembled = repository / f".{name}.assembling-{uuid.uuid4().hex[:8]}"
    try:
        assemble_model_directory(assembled, config_text, files, version=version)
        _swap_in(assembled, repository / name)
    finally:
        shutil.rmtree(assembled, ignore_errors=True)
    return repository / name


def _copy(source: Path, target: Path) -> None:
    # A copy, never a link: re-exporting the source model in place must not change what Triton serves.
    shutil.copyfile(source, target)


def _swap_in(staging: Path, final: Path) -> None:
    if final.exists():
        retired = final.with_name(f".{final.name}.retired-{uuid.uuid4().hex[:8]}")
        final.rename(retired)
        staging.rename(final)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(final)


def read_config_platform(model_dir: Path) -> str | None:
    """The `platform` or `backend` of an existing config.pbtxt (a light read, enough to route a model)."""
    config = model_dir / "config.pbtxt"
    if not config.is_file():
        return None
    for line in config.read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("platform", "backend") and value.strip():
            return value.strip().strip('"')
    return None
