"""Kubernetes quantities (`4Gi`, `512M`, `1e9`) as byte counts, for the TensorRT workspace."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from nimify.model.errors import ModelError

_SUFFIXES = {
    "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip
_QUANTITY = re.compile(r"^([0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|)$")


def quantity_bytes(value: int | str, field: str = "quantity") -> int:
    if isinstance(value, int):
        return value
    match = _QUANTITY.fullmatch(value.strip())
    if match is None or match.group(2) not in _SUFFIXES:
        raise ModelError("InvalidQuantity", f"{field} {value!r} is not a byte quantity such as 4Gi or 512Mi")
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:
        raise ModelError("InvalidQuantity", f"{field} {value!r} is not a number") from None
    return int(number * _SUFFIXES[match.group(2)])
