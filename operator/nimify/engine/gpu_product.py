"""The GPU product an engine is built on, spelled like the node label nvidia.com/gpu.product.

An engine, and a timing cache, belong to one GPU product: the product keys the engine cache and the timing
cache file. nvidia-smi answers where the container runtime mounted it (NVIDIA_DRIVER_CAPABILITIES with
`utility`); otherwise the CUDA runtime's device properties do, when cuda-python is at hand.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any


def product_label(name: str) -> str:
    """GPU Feature Discovery's spelling: `NVIDIA H100 80GB HBM3` → `NVIDIA-H100-80GB-HBM3`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name.strip()).strip("-")[:63]


def cuda_device(cudart: Any, device: int = 0) -> tuple[str, tuple[int, int]] | None:
    """(product label, compute capability) of a device from cuda-python's runtime, None when it cannot say
    (no driver, no device, error 35)."""
    try:
        error, properties = cudart.cudaGetDeviceProperties(device)
        if int(error) != 0:
            return None
        name = properties.name
        name = name.decode(errors="replace").split("\x00", 1)[0] if isinstance(name, bytes) else str(name)
        return product_label(name), (int(properties.major), int(properties.minor))
    except (AttributeError, TypeError, ValueError):
        return None


def detect_gpu_product(cudart: Any | None = None) -> str | None:
    """The first GPU's product from nvidia-smi, else from `cudart`; None where there is no GPU."""
    binary = shutil.which("nvidia-smi")
    if binary is not None:
        try:
            result = subprocess.run(
                [binary, "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            names = [line for line in result.stdout.splitlines() if line.strip()]
            if names:
                return product_label(names[0])
        except (OSError, subprocess.SubprocessError):
            pass
    found = cuda_device(cudart) if cudart is not None else None
    return found[0] if found else None
