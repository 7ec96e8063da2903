"""The protobuf text writer: scalars, enums, nested and repeated messages, escaping."""

from __future__ import annotations

from nimify.triton.pbtxt import Message, Token, render


def test_render() -> None:
    message = (
        Message()
        .add("name", 'quote " and \\ backslash')
        .add("count", 3)
        .add("ratio", 0.5)
        .add("enabled", True)
        .add("kind", Token("KIND_GPU"))
        .add("dims", [-1, 3])
        .add("empty", [])
        .add("nested", Message().add("inner", False))
        .add("items", [Message().add("a", 1), Message().add("a", 2)])
    )
    assert render(message) == (
        'name: "quote \\" and \\\\ backslash"\n'
        "count: 3\n"
        "ratio: 0.5\n"
        "enabled: true\n"
        "kind: KIND_GPU\n"
        "dims: [ -1, 3 ]\n"
        "empty: [ ]\n"
        "nested {\n  inner: false\n}\n"
        "items [\n  {\n    a: 1\n  },\n  {\n    a: 2\n  }\n]\n"
    )
