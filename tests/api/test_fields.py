"""Quantities as the apiserver parses them: suffixes, exponents, and what a spec may write."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import TypeAdapter, ValidationError

from nimify.api.spec import Quantity, quantity_value


@pytest.mark.parametrize(
    ("quantity", "value"),
    [
        (7, Decimal(7)),
        ("500m", Decimal("0.5")),
        ("16Gi", Decimal(16 * 2**30)),
        ("5E", Decimal(5 * 10**18)),  # exa, not an exponent
        ("2Ei", Decimal(2 * 2**60)),
        ("1.5e3", Decimal(1500)),
        ("1E+2", Decimal(100)),
        ("1e-99", Decimal("1e-99")),
    ],
)
def test_quantity_value(quantity: int | str, value: Decimal) -> None:
    assert quantity_value(quantity) == value


@pytest.mark.parametrize(
    "quantity", ["1E2.5", "1e999", "1" * 65, "-1", "1.5Gb", "", 2**53 + 1, 2**63, -1, 1.5]
)
def test_quantities_the_apiserver_would_not_take_are_refused(quantity: str | int | float) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(Quantity).validate_python(quantity)
