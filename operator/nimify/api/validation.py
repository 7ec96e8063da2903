"""Admission rules: each CEL rule for the apiserver paired with the same check in Python."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import ValidationError


class ValidationReason(StrEnum):
    """The `reason` of a CEL rule: the cause the apiserver reports when the rule fails.

    FieldValueDuplicate is left out on purpose: the apiserver drops the rule's message for it.
    """

    INVALID = "FieldValueInvalid"
    FORBIDDEN = "FieldValueForbidden"
    REQUIRED = "FieldValueRequired"


@dataclass(frozen=True)
class Rule:
    """A CEL rule on an object and its Python twin `holds(model) -> bool`.

    `field_path` is relative to the object the rule sits on (`.precision`); the apiserver appends it to the
    object's path, so its errors name the field.
    """

    cel: str
    message: str
    holds: Callable[[Any], bool]
    field_path: str | None = None
    reason: ValidationReason = ValidationReason.INVALID
    message_expression: str | None = None

    def to_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"rule": self.cel, "message": self.message}
        if self.message_expression:
            schema["messageExpression"] = self.message_expression
        schema["reason"] = self.reason.value
        # fieldPath cannot reach into metadata (the apiserver refuses the CRD); such messages name the field.
        if self.field_path and not self.field_path.startswith(".metadata."):
            schema["fieldPath"] = self.field_path
        return schema


@dataclass(frozen=True)
class TransitionRule:
    """A CEL rule comparing `self` with `oldSelf` on update, with its Python twin `holds(new, old)`."""

    cel: str
    message: str
    holds: Callable[[Any, Any], bool]
    field_path: str | None = None
    reason: ValidationReason = ValidationReason.INVALID

    def to_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"rule": self.cel, "message": self.message, "reason": self.reason.value}
        if self.field_path:
            schema["fieldPath"] = self.field_path
        return schema


# List semantics for server-side apply and uniqueness: a set holds distinct scalars, a map one item per key.
LIST_SET: dict[str, Any] = {"x-kubernetes-list-type": "set"}


def list_map(*keys: str) -> dict[str, Any]:
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


@dataclass(frozen=True, order=True)
class FieldError:
    """A refusal naming the field it is about, e.g. `spec.engine.precision`."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def cel_string(text: str) -> str:
    """`text` as a CEL string literal (for regular expressions shared with Python)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def matches(pattern: str, value: str) -> bool:
    """CEL's `matches`: an unanchored RE2 search, which Python's `re.search` agrees with for our patterns."""
    return re.search(pattern, value) is not None


def join_path(*parts: str | int) -> str:
    path = ""
    for part in parts:
        if part == "":
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith("."):
            path += part if path else part[1:]
        else:
            path += f".{part}" if path else part
    return path


def field_errors(error: ValidationError, prefix: tuple[str | int, ...] = ()) -> list[FieldError]:
    """A pydantic ValidationError as one FieldError per problem, with YAML (camelCase) paths."""
    found: list[FieldError] = []
    for item in error.errors(include_url=False):
        location = [*prefix, *item["loc"]]
        context = item.get("ctx") or {}
        if item["type"] == "cel_rules":
            for field_path, message in context["failures"]:
                found.append(FieldError(join_path(*location, *([field_path] if field_path else [])), message))
            continue
        found.append(FieldError(join_path(*location), str(item["msg"])))
    return found
