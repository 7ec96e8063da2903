"""SHA-256 digests of model files and the check against the digest a user declared."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from nimify.model.errors import ModelError

_HEX64 = re.compile(r"[0-9a-f]{64}")


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def normalize_sha256(value: str) -> str:
    """Accepts `abc…` or `sha256:abc…` (any case); returns the 64 lower-case hex digits."""
    text = value.strip().lower().removeprefix("sha256:")
    if not _HEX64.fullmatch(text):
        raise ModelError(
            "InvalidDigest", f"sha256 {value!r} is not 64 hex digits (optionally prefixed 'sha256:')"
        )
    return text


def verify_sha256(path: Path, expected: str) -> str:
    """Returns the file's digest, or raises DigestMismatch naming both digests."""
    want = normalize_sha256(expected)
    got = file_sha256(path)
    if got != want:
        raise ModelError("DigestMismatch", f"{path.name}: sha256 is {got}, expected {want}")
    return got
