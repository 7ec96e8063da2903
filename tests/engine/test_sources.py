"""Model URIs: parsing, display without secrets, external data siblings, the Hub URL pattern."""

from __future__ import annotations

from pathlib import Path

import pytest

from nimify.engine.sources import hf_url, parse_uri, pvc_path
from nimify.model.errors import ModelError


@pytest.mark.parametrize(
    ("uri", "scheme", "display", "filename"),
    [
        ("/models/m.onnx", "local", "/models/m.onnx", "m.onnx"),
        ("file:///models/m.onnx", "local", "/models/m.onnx", "m.onnx"),
        ("https://h.example:8443/a/m.onnx?sig=1", "http", "https://h.example:8443/a/m.onnx", "m.onnx"),
        ("s3://bucket/a/b/m.onnx", "s3", "s3://bucket/a/b/m.onnx", "m.onnx"),
        ("gs://bucket/m.plan", "gs", "gs://bucket/m.plan", "m.plan"),
        ("pvc://claim/dir/m.onnx", "pvc", "pvc://claim/dir/m.onnx", "m.onnx"),
        ("hf://org/repo/onnx/m.onnx", "hf", "hf://org/repo@main/onnx/m.onnx", "m.onnx"),
        ("hf://org/repo@v1.2/m.onnx", "hf", "hf://org/repo@v1.2/m.onnx", "m.onnx"),
    ],
)
def test_parse(uri: str, scheme: str, display: str, filename: str) -> None:
    source = parse_uri(uri)
    assert (source.scheme, source.display, source.filename) == (scheme, display, filename)


@pytest.mark.parametrize(
    "uri", ["ftp://h/m.onnx", "s3://bucket", "hf://org/m.onnx", "https:///m.onnx", "s3://b/../m.onnx"]
)
def test_invalid(uri: str) -> None:
    with pytest.raises(ModelError) as error:
        parse_uri(uri)
    assert error.value.reason == "InvalidModelUri"


def test_siblings() -> None:
    assert parse_uri("https://h/a/m.onnx?x=1").sibling("w b.bin").location == "https://h/a/w%20b.bin?x=1"
    assert parse_uri("s3://b/a/m.onnx").sibling("w.bin").path == "a/w.bin"
    assert parse_uri("/x/m.onnx").sibling("w.bin").location == "/x/w.bin"


def test_hf_url() -> None:
    source = parse_uri("hf://org/repo@refs/pr/1/m.onnx".replace("refs/pr/1", "pr-1"))
    assert hf_url(source) == "https://huggingface.co/org/repo/resolve/pr-1/m.onnx"


def test_pvc_path(tmp_path: Path) -> None:
    assert (
        pvc_path(parse_uri("pvc://data/x/m.onnx"), tmp_path) == (tmp_path / "data" / "x" / "m.onnx").resolve()
    )


def test_invalid_uris_are_quoted_without_their_query() -> None:
    with pytest.raises(ModelError) as error:
        parse_uri("https://h/a/../m.onnx?X-Amz-Signature=s3cr3t")
    assert "s3cr3t" not in str(error.value) and "https://h/a/../m.onnx?<redacted>" in error.value.message
