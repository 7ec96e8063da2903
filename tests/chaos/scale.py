"""How big the chaos suite runs: `ci` (the default, what `bash .ci/run` does) or `full`."""

from __future__ import annotations

import os

SCALE = os.environ.get("NIMIFY_CHAOS_SCALE", "ci")
if SCALE not in ("ci", "full"):
    raise RuntimeError(f"NIMIFY_CHAOS_SCALE={SCALE!r}: use ci (the default) or full")


def scaled(ci: int, full: int) -> int:
    """How many of something a test does: `ci` in `bash .ci/run`, `full` with NIMIFY_CHAOS_SCALE=full."""
    return full if SCALE == "full" else ci
