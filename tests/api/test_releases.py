"""Reading the Triton release, and so the TensorRT version, from an image reference."""

from __future__ import annotations

import pytest

from nimify.api.releases import is_strongly_typed, tensorrt_major, triton_release


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
    ],
)
def test_release_and_tensorrt_from_the_tag(
    image: str, release: tuple[int, int] | None, major: int | None, strongly_typed: bool
) -> None:
    assert triton_release(image) == release
    assert tensorrt_major(image) == major
    assert is_strongly_typed(image) is strongly_typed
