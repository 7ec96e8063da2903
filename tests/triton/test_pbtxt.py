"""The protobuf text writer and reader: scalars, enums, nested and repeated messages, escaping."""

from __future__ import annotations

from pathlib import Path

import pytest

from nimify.triton.config_reader import read_model_config
from nimify.triton.pbtxt import Message, ParseError, Token, parse, render


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


def test_parse_reads_back_what_render_writes() -> None:
    for golden in sorted((Path(__file__).parent / "golden").glob("*.pbtxt")):
        text = golden.read_text()
        assert render(parse(text)) == text, golden.name


def test_parse_agrees_with_tritons_own_parser() -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    text = (Path(__file__).parent / "golden" / "int_bool.onnxruntime_onnx.pbtxt").read_text()
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    read = read_model_config(text)
    assert read.max_batch_size == config.max_batch_size
    assert [(t.name, list(t.dims)) for t in read.outputs] == [(o.name, list(o.dims)) for o in config.output]
    assert read.outputs[0].reshape == tuple(config.output[0].reshape.shape) == ()
    assert [t.dtype for t in read.inputs] == ["INT64", "BOOL"]


def test_parse_other_spellings() -> None:
    message = parse('# a comment\nname: "a\\"b" ratio: -2.5e3, kind: KIND_CPU; nested: < x: 1 > on: true\n')
    assert message.first("name") == 'a"b' and message.first("ratio") == -2500.0
    assert message.first("kind") == Token("KIND_CPU") and message.first("on") is True
    nested = message.first("nested")
    assert isinstance(nested, Message) and nested.first("x") == 1


@pytest.mark.parametrize("text", ['name: "open', "dims: [ 1, 2", "{ x: 1 }", "a: }"])
def test_parse_errors(text: str) -> None:
    with pytest.raises(ParseError):
        parse(text)
