"""Protobuf text format, the syntax of Triton's config.pbtxt: a writer, and a reader for the same syntax.

A message is an ordered list of (field, value) pairs, so the output is deterministic and in the order a person
reading the file expects; tests parse it back with Triton's own ModelConfig message. The reader is ours too:
protobuf's own text parser needs the ModelConfig descriptor, which only ships with tritonclient (an optional
extra the conversion image does not need), and the conversion reads back only what it wrote.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
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

    def values(self, name: str) -> list[Scalar | Message]:
        """Every value of a field, in order, lists flattened (a repeated field may be written either way)."""
        found: list[Scalar | Message] = []
        for key, value in self.fields:
            if key != name:
                continue
            if isinstance(value, Message | str | int | float | bool | Token):
                found.append(value)
            else:
                found.extend(value)
        return found

    def first(self, name: str) -> Scalar | Message | None:
        found = self.values(name)
        return found[0] if found else None


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


_TOKEN = re.compile(
    r"""\s+|\#[^\n]*|(?P<string>"(?:[^"\\]|\\.)*")|(?P<number>-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"""
    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_.]*)|(?P<punct>[{}\[\]:,;<>])"
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "'": "'", "\\": "\\"}


class ParseError(ValueError):
    pass


def _tokens(text: str) -> Iterator[tuple[str, str]]:
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            line = text.count("\n", 0, position) + 1
            raise ParseError(f"line {line}: unexpected {text[position : position + 20]!r}")
        position = match.end()
        if match.lastgroup is not None:
            yield match.lastgroup, match.group(match.lastgroup)


def _decode(kind: str, token: str) -> Scalar:
    if kind == "string":
        return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), token[1:-1])
    if kind == "number":
        return float(token) if any(c in token for c in ".eE") else int(token)
    if token in ("true", "false"):
        return token == "true"
    return Token(token)


class _Reader:
    def __init__(self, text: str) -> None:
        self.tokens = list(_tokens(text))
        self.index = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (expected is not None and token[1] != expected):
            raise ParseError(f"expected {expected or 'more'}, found {token[1] if token else 'the end'}")
        self.index += 1
        return token

    def message(self, closing: str | None) -> Message:
        message = Message()
        while (token := self.peek()) is not None and token[1] != closing:
            kind, name = self.take()
            if kind != "ident":
                raise ParseError(f"expected a field name, found {name}")
            if self.peek() == ("punct", ":"):
                self.take(":")
            message.add(name, self.value())
            if self.peek() in (("punct", ","), ("punct", ";")):
                self.take()
        if closing is not None:
            self.take(closing)
        return message

    def value(self) -> Value:
        kind, token = self.take()
        if token in ("{", "<"):
            return self.message("}" if token == "{" else ">")
        if token == "[":
            items: list[Scalar | Message] = []
            while self.peek() != ("punct", "]"):
                item = self.value()
                if not isinstance(item, Message | str | int | float | bool | Token):
                    raise ParseError("a list inside a list")
                items.append(item)
                if self.peek() == ("punct", ","):
                    self.take(",")
            self.take("]")
            return items  # type: ignore[return-value]  # a mixed list: every reader filters by type
        if kind == "punct":
            raise ParseError(f"unexpected {token}")
        return _decode(kind, token)


def parse(text: str) -> Message:
    """The message a protobuf text document spells (enum values come back as Token)."""
    return _Reader(text).message(None)
