"""Which TensorRT a Triton image ships, read from its tag: the YY.MM release and the image variant after it.

Most Triton images (`YY.MM-py3`, `YY.MM-py3-min`, a bare `YY.MM`) carry the TensorRT of their release. The
TensorRT-LLM images (`YY.MM-trtllm-python-py3`) do not: they carry the TensorRT their TensorRT-LLM release
was built with, which lags behind (26.06 and 26.07 still ship TensorRT 10.14 while `26.06-py3` ships 11). A
plan built with the wrong one is refused by the server that should load it, so a tag this module cannot map
is refused with the reason instead of guessed (`resolve_tensorrt`).

Sources: the Triton release notes (`Contents of the Triton Inference Server container`: 21.07 is the first
with TensorRT 8.0.1.6, 24.05 the first with 10.0.1.6) and Triton's compatibility matrix
(docs/introduction/compatibility.md in triton-inference-server/server) for the trtllm-python-py3 images.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nimify.api.validation import cel_string

TritonRelease = tuple[int, int]

# The main images: the first YY.MM of each stretch and the TensorRT major it ships.
TENSORRT_MAJOR_SINCE: tuple[tuple[TritonRelease, int], ...] = (
    ((21, 7), 8),
    ((24, 5), 10),
    ((26, 6), 11),
)
FIRST_SUPPORTED_RELEASE: TritonRelease = (24, 5)
# TensorRT 11 removed weak typing: no fp16/bf16/int8/fp8 builder flags; reduced precision is in the graph.
FIRST_STRONGLY_TYPED_RELEASE: TritonRelease = (26, 6)

# Variants with the TensorRT of their release ("" is a bare `YY.MM` tag, as mirrors often retag).
MAIN_VARIANTS = frozenset({"", "py3", "py3-min"})
TRTLLM_VARIANT = "trtllm-python-py3"
# The trtllm-python-py3 images, release by release (Triton's compatibility matrix). A release outside this
# table is refused: its TensorRT follows TensorRT-LLM's schedule, not Triton's, and cannot be inferred.
TRTLLM_TENSORRT: dict[TritonRelease, str] = {
    (24, 4): "9.3.0",
    (24, 5): "10.0.1.6",
    (24, 6): "10.0.1",
    (24, 7): "10.1.0",
    (24, 8): "10.3.0",
    (24, 9): "10.4.0",
    (24, 10): "10.4.0",
    (24, 11): "10.6.0",
    (24, 12): "10.7.0",
    (25, 1): "10.8.0.43",
    (25, 2): "10.8.0.43",
    (25, 3): "10.9.0.34",
    (25, 4): "10.9.0.34",
    (25, 5): "10.9.0.34",
    (25, 6): "10.10.0.31",
    (25, 7): "10.10.0.31",
    (25, 8): "10.11.0.33",
    (25, 9): "10.11.0.33",
    (25, 10): "10.11.0.33",
    (25, 11): "10.13.3.9",
    (25, 12): "10.13.3.9",
    (26, 1): "10.13.3.9",
    (26, 2): "10.13.3.9",
    (26, 3): "10.14.1.48",
    (26, 4): "10.14.1.48",
    (26, 5): "10.14.1.48",
    (26, 6): "10.14.1.48",
    (26, 7): "10.14.1.48",
}
# Variants known to carry no TensorRT backend, or no server at all: named so the refusal can say so.
WITHOUT_TENSORRT = {
    "vllm-python-py3": "the vLLM image carries the vLLM and python backends, not TensorRT",
    "py3-sdk": "the SDK image holds Triton's clients, not the server",
    "py3-igpu-sdk": "the SDK image holds Triton's clients, not the server",
}

# Shared with CEL (`image.find(...)`): a tag's leading YY.MM, e.g. `:25.10` in `tritonserver:25.10-py3`.
RELEASE_IN_IMAGE = r":[0-9]{2}\.[0-9]{2}(-|$)"
# A TensorRT-LLM tag, for CEL (`image.matches(...)`) and Python alike.
TRTLLM_IN_IMAGE = r":[0-9]{2}\.[0-9]{2}-trtllm-"


@dataclass(frozen=True)
class ImageTensorRT:
    """The TensorRT a Triton image ships: its major always, the exact version where the table has it."""

    release: TritonRelease
    variant: str
    major: int
    version: str | None = None

    @property
    def strongly_typed(self) -> bool:
        return self.major >= 11


@dataclass(frozen=True)
class UnknownTensorRT:
    """Why the TensorRT of an image cannot be told from its tag (a sentence naming the image)."""

    reason: str


def release_label(release: TritonRelease) -> str:
    return f"{release[0]:02d}.{release[1]:02d}"


def _tag(image: str) -> str:
    return image.split("@", 1)[0].rsplit("/", 1)[-1]


def triton_release(image: str) -> TritonRelease | None:
    """The YY.MM release an image's tag starts with (`nvcr.io/nvidia/tritonserver:25.10-py3` → (25, 10))."""
    found = re.search(RELEASE_IN_IMAGE, _tag(image))
    if found is None:
        return None
    year, month = found.group(0)[1:6].split(".")
    return int(year), int(month)


def image_variant(image: str) -> str | None:
    """What follows the release in the tag (`25.10-py3` → `py3`, bare `25.10` → ``), None without one."""
    found = re.search(r":[0-9]{2}\.[0-9]{2}(-(?P<variant>.*))?$", _tag(image))
    return None if found is None else found.group("variant") or ""


def resolve_tensorrt(image: str) -> ImageTensorRT | UnknownTensorRT:
    """The TensorRT of a Triton image, or why its tag does not tell."""
    release, variant = triton_release(image), image_variant(image)
    if release is None or variant is None:
        return UnknownTensorRT(
            f"the tag of {image} does not start with a Triton release (YY.MM, e.g. 25.10-py3), so the"
            " TensorRT version that builds the engine is unknown"
        )
    label = release_label(release)
    if variant == TRTLLM_VARIANT:
        version = TRTLLM_TENSORRT.get(release)
        if version is None:
            known = sorted(TRTLLM_TENSORRT)
            return UnknownTensorRT(
                f"{image}: the TensorRT of Triton's TensorRT-LLM images follows TensorRT-LLM's releases;"
                f" nimify knows it for {release_label(known[0])} to {release_label(known[-1])}, not {label}"
            )
        return ImageTensorRT(release, variant, int(version.split(".", 1)[0]), version)
    if variant not in MAIN_VARIANTS:
        why = WITHOUT_TENSORRT.get(variant, "nimify knows the TensorRT of py3, py3-min and trtllm-python-py3")
        return UnknownTensorRT(f"{image}: image variant {variant!r} is not one nimify can build for ({why})")
    major = None
    for since, candidate in TENSORRT_MAJOR_SINCE:
        if release >= since:
            major = candidate
    if major is None:
        first = TENSORRT_MAJOR_SINCE[0]
        return UnknownTensorRT(
            f"Triton {label} predates TensorRT {first[1]} (Triton {release_label(first[0])}); nimify builds"
            f" engines with TensorRT 10 or later (Triton {release_label(FIRST_SUPPORTED_RELEASE)} and later)"
        )
    return ImageTensorRT(release, variant, major)


def tensorrt_major(image: str) -> int | None:
    """The TensorRT major version in a Triton image, or None when its tag does not say."""
    found = resolve_tensorrt(image)
    return found.major if isinstance(found, ImageTensorRT) else None


def is_strongly_typed(image: str) -> bool:
    """Whether the image's TensorRT builds strongly typed networks only (TensorRT 11 and later)."""
    found = resolve_tensorrt(image)
    return isinstance(found, ImageTensorRT) and found.strongly_typed


def strongly_typed_cel(image: str = "self.triton.image") -> str:
    """`is_strongly_typed` in CEL, for admission: a main image of 26.06 or later. No tabulated TensorRT-LLM
    image ships TensorRT 11, and one past the table is refused by the semantic checks, so a trtllm tag never
    counts as strongly typed here (as in `is_strongly_typed`)."""
    return (
        f"{image}.find({cel_string(RELEASE_IN_IMAGE)}) >= ':{release_label(FIRST_STRONGLY_TYPED_RELEASE)}'"
        f" && !{image}.matches({cel_string(TRTLLM_IN_IMAGE)})"
    )


def builder_label(image: str) -> str:
    """What picks the builder image (its `{release}`): the Triton release, with `-trtllm` for the TensorRT-LLM
    images, whose TensorRT is not their release's (`26.06-trtllm` builds with 10.14, `26.06` with 11)."""
    found = resolve_tensorrt(image)
    if isinstance(found, ImageTensorRT):
        label = release_label(found.release)
        return f"{label}-trtllm" if found.variant == TRTLLM_VARIANT else label
    release = triton_release(image)
    return release_label(release) if release else "unknown"


def tensorrt_identity(image: str) -> str:
    """The TensorRT build an engine cache key records for an image: the release pins its TensorRT exactly for
    the main images; a TensorRT-LLM image is named by its TensorRT version, since 26.06-py3 and
    26.06-trtllm-python-py3 ship different ones. An unmappable image is named by itself."""
    found = resolve_tensorrt(image)
    if not isinstance(found, ImageTensorRT):
        return image
    if found.variant == TRTLLM_VARIANT:
        return f"tensorrt-{found.version}"
    return f"tensorrt-of-triton-{release_label(found.release)}"
