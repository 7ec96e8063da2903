"""Kubernetes quantities (`4Gi`, `512M`, `1e9`) as byte counts, for the TensorRT workspace."""

from __future__ import annotations

from nimify.api.spec.fields import QUANTITY, quantity_value
from nimify.api.validation import matches
from nimify.model.errors import ModelError


def quantity_bytes(value: int | str, field: str = "quantity") -> int:
    """A quantity as whole bytes, read by the spec's own parser (`quantity_value`): what admission takes,
    this takes, and a fraction of a byte (`1m`, which admission refuses for the workspace) it refuses."""
    if isinstance(value, int):
        return value
    if not matches(QUANTITY, value.strip()):
        raise ModelError("InvalidQuantity", f"{field} {value!r} is not a byte quantity such as 4Gi or 512Mi")
    number = quantity_value(value.strip())
    if number != number.to_integral_value():
        raise ModelError("InvalidQuantity", f"{field} {value!r} is not a whole number of bytes")
    return int(number)
