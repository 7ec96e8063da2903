"""The GPU product an engine is built on, spelled like the node label nvidia.com/gpu.product."""

from __future__ import annotations

import re
import shutil
import subprocess


def product_label(name: str) -> str:
    """GPU Feature Discovery's spelling: `NVIDIA H100 80GB HBM3` → `NVIDIA-H100-80GB-HBM3`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name.strip()).strip("-")[:63]


def detect_gpu_product() -> str | None:
    """The first GPU's product from nvidia-smi, or None where there is no GPU (or no nvidia-smi)."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    try:
        result = subprocess.run(
            [binary, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line for line in result.stdout.splitlines() if line.strip()]
    return product_label(names[0]) if names else None
