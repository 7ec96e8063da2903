"""Helpers shared by the CEL rules and their Python twins."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nimify.api import NimService
from nimify.api.validation import FieldError, cel_string, field_errors, join_path, matches


def test_cel_string_escapes_backslashes_and_quotes() -> None:
    assert cel_string(r"^a\.b'c$") == r"'^a\\.b\'c$'"


@pytest.mark.parametrize(
    ("parts", "path"),
    [
        (("spec", "engine", ".precision"), "spec.engine.precision"),
        (("spec", "engine", "profiles", 0), "spec.engine.profiles[0]"),
        (("", ".metadata.name"), "metadata.name"),
        (("spec", ""), "spec"),
    ],
)
def test_join_path(parts: tuple[str | int, ...], path: str) -> None:
    assert join_path(*parts) == path


def test_matches_searches_like_cel() -> None:
    assert matches(r"\.onnx$", "s3://bucket/model.onnx")
    assert not matches(r"^model", "s3://bucket/model.onnx")


def test_every_problem_becomes_one_field_error() -> None:
    document = {
        "metadata": {"name": "fine"},
        "spec": {
            "model": {"uri": "s3://bucket/model.bin"},
            "expose": {
                "httpPort": 8001,
                "ingress": {"host": "a.b"},
                "httpRoute": {"host": "a.b", "gatewayRef": {"name": "g"}},
            },
        },
    }
    with pytest.raises(ValidationError) as caught:
        NimService.model_validate(document)
    assert sorted(field_errors(caught.value)) == [
        FieldError("spec.expose", "httpPort, grpcPort and metricsPort must differ"),
        FieldError("spec.expose.httpRoute", "set ingress or httpRoute, not both"),
        FieldError(
            "spec.model.format", "format is required when the uri does not end in .onnx, .plan or .engine"
        ),
    ]


def test_rules_on_the_whole_object_run_once_its_parts_are_valid() -> None:
    document = {"metadata": {"name": "Bad_Name"}, "spec": {"model": {"uri": "s3://bucket/model.onnx"}}}
    with pytest.raises(ValidationError) as caught:
        NimService.model_validate(document)
    assert field_errors(caught.value) == [FieldError("metadata.name", NimService.cel_rules[0].message)]
