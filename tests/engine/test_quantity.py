"""Kubernetes quantities as bytes."""

from __future__ import annotations

import pytest

from nimify.engine.quantity import quantity_bytes
from nimify.model.errors import ModelError


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (4096, 4096),
        ("4Gi", 4 * 2**30),
        ("512Mi", 512 * 2**20),
        ("2G", 2 * 10**9),
        ("1.5Ki", 1536),
        ("1e3", 1000),
    ],
)
def test_quantities(value: int | str, expected: int) -> None:
    assert quantity_bytes(value) == expected


@pytest.mark.parametrize("value", ["4 GB", "lots", "1Gib", "", "1m", "1.5"])
def test_invalid(value: str) -> None:
    with pytest.raises(ModelError) as error:
        quantity_bytes(value, "engine.workspace")
    assert error.value.reason == "InvalidQuantity" and "engine.workspace" in error.value.message
