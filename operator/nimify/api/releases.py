"""Which TensorRT a Triton image ships, read from the YY.MM release at the start of its tag."""

from __future__ import annotations

import re

TritonRelease = tuple[int, int]

# The first YY.MM of each stretch; the Triton release notes list the TensorRT in every container.
TENSORRT_MAJOR_SINCE: tuple[tuple[TritonRelease, int], ...] = (
    ((22, 1), 8),
    ((24, 5), 10),
    ((26, 6), 11),
)
FIRST_SUPPORTED_RELEASE: TritonRelease = (24, 5)
# TensorRT 11 removed weak typing: no fp16/bf16/int8/fp8 builder flags; reduced precision is in the graph.
FIRST_STRONGLY_TYPED_RELEASE: TritonRelease = (26, 6)

# Shared with CEL (`image.find(...)`): a tag's leading YY.MM, e.g. `:25.10` in `tritonserver:25.10-py3`.
RELEASE_IN_IMAGE = r":[0-9]{2}\.[0-9]{2}(-|$)"


def release_label(release: TritonRelease) -> str:
    return f"{release[0]:02d}.{release[1]:02d}"


def triton_release(image: str) -> TritonRelease | None:
    """The YY.MM release an image's tag starts with (`nvcr.io/nvidia/tritonserver:25.10-py3` → (25, 10))."""
    found = re.search(RELEASE_IN_IMAGE, image.split("@", 1)[0].rsplit("/", 1)[-1])
    if found is None:
        return None
    year, month = found.group(0)[1:6].split(".")
    return int(year), int(month)


def tensorrt_major(image: str) -> int | None:
    """The TensorRT major version in a Triton image, or None when its tag does not say."""
    release = triton_release(image)
    if release is None:
        return None
    major = None
    for since, candidate in TENSORRT_MAJOR_SINCE:
        if release >= since:
            major = candidate
    return major


def is_strongly_typed(image: str) -> bool:
    """Whether the image's TensorRT builds strongly typed networks only (TensorRT 11 and later)."""
    release = triton_release(image)
    return release is not None and release >= FIRST_STRONGLY_TYPED_RELEASE
