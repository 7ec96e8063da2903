"""A writer for protobuf text format, the syntax of Triton's config.pbtxt.

A message is an ordered list of (field, value) pairs, so the output is deterministic and in the order a person
reading the file expects; tests parse it back with Triton's own ModelConfig message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Token:
    """An unquoted identifier: an enum value such as TYPE_FP32 or KIND_GPU."""

    name: str


Scalar = str | int | float | bool | Token


@dataclass
class Message:
    fields: list[tuple[str, Value]] = field(default_factory=list)

    def add(self, name: str, value: Value) -> Message:
        self.fields.append((name, value))
        return self


Value = Scalar | Message | Sequence[Scalar] | Sequence[Message]

_INDENT = "  "


def _scalar(value: Scalar) -> str:
    if isinstance(value, Token):
        return value.name
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _lines(message: Message, depth: int) -> list[str]:
    pad = _INDENT * depth
    lines: list[str] = []
    for name, value in message.fields:
        if isinstance(value, Message):
            lines.append(f"{pad}{name} {{")
            lines.extend(_lines(value, depth + 1))
            lines.append(f"{pad}}}")
        elif isinstance(value, str | int | float | bool | Token):
            lines.append(f"{pad}{name}: {_scalar(value)}")
        elif value and all(isinstance(item, Message) for item in value):
            lines.append(f"{pad}{name} [")
            for index, entry in enumerate(value):
                assert isinstance(entry, Message)
                lines.append(f"{pad}{_INDENT}{{")
                lines.extend(_lines(entry, depth + 2))
                lines.append(f"{pad}{_INDENT}}}" + ("," if index < len(value) - 1 else ""))
            lines.append(f"{pad}]")
        else:
            items = ", ".join(_scalar(item) for item in value if not isinstance(item, Message))
            lines.append(f"{pad}{name}: [ {items} ]" if items else f"{pad}{name}: [ ]")
    return lines


def render(message: Message) -> str:
    return "\n".join(_lines(message, 0)) + "\n"
