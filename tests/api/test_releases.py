"""Reading the Triton release, the image variant, and so the TensorRT version, from an image reference."""

from __future__ import annotations

import re

import pytest

from nimify.api.releases import (
    RELEASE_IN_IMAGE,
    TRTLLM_IN_IMAGE,
    ImageTensorRT,
    UnknownTensorRT,
    image_variant,
    is_strongly_typed,
    resolve_tensorrt,
    strongly_typed_cel,
    tensorrt_major,
    triton_release,
)


@pytest.mark.parametrize(
    ("image", "release", "major", "strongly_typed"),
    [
        ("nvcr.io/nvidia/tritonserver:25.10-py3", (25, 10), 10, False),
        ("nvcr.io/nvidia/tritonserver:24.05-py3", (24, 5), 10, False),
        ("nvcr.io/nvidia/tritonserver:24.04-py3", (24, 4), 8, False),
        ("nvcr.io/nvidia/tritonserver:26.05-py3-min", (26, 5), 10, False),
        ("nvcr.io/nvidia/tritonserver:26.06-py3", (26, 6), 11, True),
        ("nvcr.io/nvidia/tritonserver:27.01", (27, 1), 11, True),
        ("registry.local:5000/mirror/tritonserver:25.10-py3@sha256:" + "0" * 64, (25, 10), 10, False),
        ("registry.local:5000/triton:custom-build", None, None, False),
        ("nvcr.io/nvidia/tritonserver:2.51.0", None, None, False),
        ("nvcr.io/nvidia/tritonserver:20.01-py3", (20, 1), None, False),
        # TensorRT 8 came with 21.07 (8.0.1.6), not 22.01: 21.11 already shipped 8.0.3.
        ("nvcr.io/nvidia/tritonserver:21.06-py3", (21, 6), None, False),
        ("nvcr.io/nvidia/tritonserver:21.07-py3", (21, 7), 8, False),
        ("nvcr.io/nvidia/tritonserver:21.11-py3", (21, 11), 8, False),
        # TensorRT-LLM images follow TensorRT-LLM's TensorRT: 10.14 at 26.06 and 26.07, 9.3 at 24.04.
        ("nvcr.io/nvidia/tritonserver:26.06-trtllm-python-py3", (26, 6), 10, False),
        ("nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3", (26, 7), 10, False),
        ("nvcr.io/nvidia/tritonserver:24.04-trtllm-python-py3", (24, 4), 9, False),
        ("nvcr.io/nvidia/tritonserver:26.08-trtllm-python-py3", (26, 8), None, False),
        ("nvcr.io/nvidia/tritonserver:26.06-vllm-python-py3", (26, 6), None, False),
    ],
)
def test_release_and_tensorrt_from_the_tag(
    image: str, release: tuple[int, int] | None, major: int | None, strongly_typed: bool
) -> None:
    assert triton_release(image) == release
    assert tensorrt_major(image) == major
    assert is_strongly_typed(image) is strongly_typed


def test_exact_versions_where_the_table_has_them() -> None:
    found = resolve_tensorrt("nvcr.io/nvidia/tritonserver:26.06-trtllm-python-py3")
    assert found == ImageTensorRT((26, 6), "trtllm-python-py3", 10, "10.14.1.48")
    main = resolve_tensorrt("nvcr.io/nvidia/tritonserver:26.06-py3")
    assert main == ImageTensorRT((26, 6), "py3", 11) and main.strongly_typed


@pytest.mark.parametrize(
    ("image", "says"),
    [
        ("nvcr.io/nvidia/tritonserver:26.08-trtllm-python-py3", "knows it for 24.04 to 26.07, not 26.08"),
        ("nvcr.io/nvidia/tritonserver:26.06-vllm-python-py3", "vLLM"),
        ("nvcr.io/nvidia/tritonserver:25.10-py3-sdk", "clients, not the server"),
        ("nvcr.io/nvidia/tritonserver:25.10-py3-igpu", "variant 'py3-igpu'"),
        ("nvcr.io/nvidia/tritonserver:20.01-py3", "predates TensorRT 8 (Triton 21.07)"),
        ("registry.local/triton:custom", "YY.MM"),
    ],
)
def test_unmappable_tags_are_refused_with_the_reason(image: str, says: str) -> None:
    found = resolve_tensorrt(image)
    assert isinstance(found, UnknownTensorRT)
    assert says in found.reason


@pytest.mark.parametrize(
    ("image", "variant"),
    [
        ("nvcr.io/nvidia/tritonserver:25.10-py3", "py3"),
        ("nvcr.io/nvidia/tritonserver:25.10", ""),
        ("mirror:5000/tritonserver:26.06-trtllm-python-py3@sha256:" + "0" * 64, "trtllm-python-py3"),
        ("nvcr.io/nvidia/tritonserver:latest", None),
    ],
)
def test_image_variant(image: str, variant: str | None) -> None:
    assert image_variant(image) == variant


@pytest.mark.parametrize(
    "image",
    [
        "nvcr.io/nvidia/tritonserver:25.10-py3",
        "nvcr.io/nvidia/tritonserver:26.06-py3",
        "nvcr.io/nvidia/tritonserver:27.01",
        "nvcr.io/nvidia/tritonserver:26.06-trtllm-python-py3",
        "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3",
        "nvcr.io/nvidia/tritonserver:26.09-trtllm-python-py3",
    ],
)
def test_the_cel_rule_agrees_with_python(image: str) -> None:
    """The admission rule, evaluated the way CEL does (find = first match or '', matches = search)."""
    cel = strongly_typed_cel("image")
    assert cel.count("find(") == 1 and cel.count("matches(") == 1
    found = re.search(RELEASE_IN_IMAGE, image)
    cel_value = (found.group(0) if found else "") >= ":26.06" and not re.search(TRTLLM_IN_IMAGE, image)
    assert cel_value == is_strongly_typed(image)
