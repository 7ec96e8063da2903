"""Credentials inside URLs kept out of messages and logs."""

from __future__ import annotations

import logging

import pytest

from nimify.redaction import RedactingFilter, redact, redact_logs


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        (
            "GET https://cdn.example/b.onnx?X-Amz-Signature=abc&X-Amz-Credential=k failed",
            "GET https://cdn.example/b.onnx?<redacted> failed",
        ),
        ("for url 'https://h:8443/m.onnx?sig=zz'", "for url 'https://h:8443/m.onnx?<redacted>'"),
        ("https://user:pass@h/x.onnx", "https://<redacted>@h/x.onnx"),
        ("s3://bucket/key and hf://org/repo@v1/m.onnx", "s3://bucket/key and hf://org/repo@v1/m.onnx"),
    ],
)
def test_redact(text: str, redacted: str) -> None:
    assert redact(text) == redacted


def test_log_records_are_redacted_once_formatted(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("nimify.test.redaction")
    logger.addFilter(RedactingFilter())
    with caplog.at_level(logging.DEBUG, logger="nimify.test.redaction"):
        logger.debug("Creation is in progress: %r", {"uri": "https://h/m.onnx?X-Amz-Signature=s3cr3t"})
    assert caplog.messages == ["Creation is in progress: {'uri': 'https://h/m.onnx?<redacted>'}"]


def test_redact_logs_adds_one_filter() -> None:
    redact_logs("nimify.test.twice")
    redact_logs("nimify.test.twice")
    filters = logging.getLogger("nimify.test.twice").filters
    assert len([f for f in filters if isinstance(f, RedactingFilter)]) == 1
