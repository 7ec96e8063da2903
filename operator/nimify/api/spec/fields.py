"""Patterns and field types shared by the spec sections: names, quantities, sizes, CEL helpers."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import Field, PlainValidator, WithJsonSchema

from nimify.api.validation import Rule, cel_string, matches

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
HOSTNAME = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE = r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$"
# A label key (a "qualified name"): an optional DNS subdomain and /, then a name of up to 63 characters.
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_DECIMAL = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
# The exponent is an integer (the apiserver's parser, ^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$, refuses
# "1E2.5", which the grammar in its documentation seems to allow) of two digits at most: no real size needs
# more, and "1e999999999" is a number no arithmetic here (or in CEL's quantity()) should be asked to hold.
QUANTITY = rf"^{_DECIMAL}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]{{1,2}}))?$"
QUANTITY_MAX_LENGTH = 64
# The largest integer a spec may hold: the apiserver refuses JSON numbers beyond int64 (they decode as
# floats), and keeps a schema's bounds as float64, which holds integers exactly up to 2^53.
MAX_INTEGER = 2**53


def _check_quantity(value: Any) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_INTEGER:
        return value
    if isinstance(value, str) and len(value) <= QUANTITY_MAX_LENGTH and re.fullmatch(QUANTITY, value):
        return value
    raise ValueError(f"{value!r} is not a Kubernetes quantity such as 4, 500m or 16Gi")


Quantity = Annotated[
    int | str,
    PlainValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "minimum": 0,
            "maximum": MAX_INTEGER,
            "pattern": QUANTITY,
            "maxLength": QUANTITY_MAX_LENGTH,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
_SUFFIX_FACTORS = {
    "": Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"), "P": Decimal("1e15"),
    "E": Decimal("1e18"), "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30),
    "Ti": Decimal(2**40), "Pi": Decimal(2**50), "Ei": Decimal(2**60),
}  # fmt: skip


def quantity_value(value: int | str) -> Decimal:
    """A quantity (already matched against QUANTITY) as a number, to compare two of them as CEL's
    quantity() does in the apiserver."""
    if isinstance(value, int):
        return Decimal(value)
    number = re.match(rf"^{_DECIMAL}", value)
    assert number is not None, value
    mantissa, suffix = Decimal(number.group(0)), value[number.end() :]
    if suffix in _SUFFIX_FACTORS:  # "E" and "Ei" are suffixes (exa, exbi), not an exponent
        return mantissa * _SUFFIX_FACTORS[suffix]
    return mantissa.scaleb(int(suffix[1:]))


def positive_quantity_rule(field: str, alias: str, message: str) -> Rule:
    """A CEL rule (with its Python twin) that the quantity `field`, where set, is above zero: a zero the
    schema's pattern admits, which the apiserver refuses, or which runs nothing, in the child it reaches."""
    return Rule(
        cel=f"!has(self.{alias}) || (type(self.{alias}) == int ? self.{alias} > 0"
        f" : quantity(self.{alias}).isGreaterThan(quantity('0')))",
        message=message,
        holds=lambda model: (value := getattr(model, field)) is None or quantity_value(value) > 0,
        field_path=f".{alias}",
    )


Dimension = Annotated[int, Field(ge=1, le=2**31 - 1)]
BatchSize = Annotated[int, Field(ge=1, le=4096)]
NodeLabelValue = Annotated[str, Field(pattern=LABEL_VALUE, max_length=63)]


def label_keys_rule(field: str, alias: str) -> Rule:
    """A CEL rule (with its Python twin) that every key of the map `field` is a label key: the schema of a
    map cannot constrain its keys."""
    return Rule(
        cel=f"!has(self.{alias}) || self.{alias}.all(k, k.matches({cel_string(LABEL_KEY)}))",
        message="label keys are a name of up to 63 characters, optionally prefixed by a DNS subdomain and /",
        holds=lambda model: all(matches(LABEL_KEY, key) for key in getattr(model, field) or {}),
        field_path=f".{alias}",
    )


def cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(cel_string(value) for value in values) + "]"


def unique(values: list[int] | None) -> list[int] | None:
    if values is not None and len(set(values)) != len(values):
        raise ValueError("batch sizes must be unique")
    return values
