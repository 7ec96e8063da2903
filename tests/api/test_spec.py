"""The spec models: defaults, YAML names, strictness, helpers, and the refusal tables checked in Python."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from nimify.api import (
    DEFAULT_TRITON_IMAGE,
    Backend,
    ModelFormat,
    NimService,
    NimServiceSpec,
    Precision,
    StorageSpec,
    field_errors,
    nimservice_errors,
)
from tests.api.cases import INVALID_PARAMS, VALID_PARAMS, Case


def spec(**fields: Any) -> NimServiceSpec:
    return NimServiceSpec.model_validate({"model": {"uri": "s3://models/resnet/model.onnx"}, **fields})


def test_a_model_uri_is_enough_and_everything_else_has_a_default() -> None:
    minimal = spec()
    assert minimal.engine.backend == Backend.TENSORRT
    assert minimal.engine.precision == Precision.AUTO
    assert minimal.triton.image == DEFAULT_TRITON_IMAGE
    assert minimal.resources.gpus == 1
    assert (minimal.expose.http_port, minimal.expose.grpc_port, minimal.expose.metrics_port) == (
        8000,
        8001,
        8002,
    )
    assert minimal.replicas is None
    assert minimal.autoscaling is None
    assert minimal.desired_replicas == 1


def test_yaml_uses_camel_case_and_python_snake_case() -> None:
    parsed = spec(engine={"maxBatchSize": 8, "buildTimeoutSeconds": 600})
    assert parsed.engine.max_batch_size == 8
    dumped = parsed.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert dumped["engine"]["maxBatchSize"] == 8
    assert dumped["engine"]["buildTimeoutSeconds"] == 600
    assert "max_batch_size" not in dumped["engine"]


def test_python_code_may_build_specs_by_attribute_name() -> None:
    built = NimServiceSpec.model_validate(
        {"model": {"uri": "s3://models/m/model.onnx", "credentials_secret": "s3"}, "paused": True}
    )
    assert built.the_model.credentials_secret == "s3"


def test_types_are_not_coerced_like_the_apiserver() -> None:
    with pytest.raises(ValidationError):
        spec(replicas="3")
    with pytest.raises(ValidationError):
        spec(paused="true")


def test_quantities_keep_the_type_they_were_written_in() -> None:
    parsed = spec(resources={"cpu": 4, "memory": "16Gi"})
    assert parsed.resources.cpu == 4
    assert parsed.resources.memory == "16Gi"


@pytest.mark.parametrize(
    ("uri", "declared", "resolved"),
    [
        ("s3://bucket/m/model.onnx", None, ModelFormat.ONNX),
        ("s3://bucket/m/model.plan", None, ModelFormat.TENSORRT_PLAN),
        ("https://h/m/model.engine?sig=1", None, ModelFormat.TENSORRT_PLAN),
        ("gs://bucket/m/weights.bin", "tensorrt-plan", ModelFormat.TENSORRT_PLAN),
    ],
)
def test_model_format_is_inferred_from_the_suffix(
    uri: str, declared: str | None, resolved: ModelFormat
) -> None:
    model = {"uri": uri, **({"format": declared} if declared else {})}
    assert spec(model=model).the_model.resolved_format == resolved


def test_desired_replicas_follow_replicas_or_the_autoscaler_minimum() -> None:
    assert spec(replicas=3).desired_replicas == 3
    assert (
        spec(autoscaling={"minReplicas": 2, "maxReplicas": 5, "targetGpuUtilization": 70}).desired_replicas
        == 2
    )


def test_triton_model_name_defaults_to_the_nimservice_name() -> None:
    def named(model: dict[str, str]) -> NimService:
        return NimService.model_validate({"metadata": {"name": "resnet"}, "spec": {"model": model}})

    assert named({"uri": "s3://bucket/m/model.onnx"}).triton_model_name == "resnet"
    assert named({"uri": "s3://bucket/m/model.onnx", "name": "classifier"}).triton_model_name == "classifier"


def test_a_rule_failure_names_the_field_it_guards() -> None:
    with pytest.raises(ValidationError) as caught:
        NimService.model_validate(
            {
                "metadata": {"name": "x"},
                "spec": {
                    "model": {"uri": "s3://bucket/m/model.onnx"},
                    "replicas": 1,
                    "autoscaling": {"maxReplicas": 2, "targetGpuUtilization": 50},
                },
            }
        )
    [error] = field_errors(caught.value)
    assert error.path == "spec.replicas"
    assert error.message.startswith("set replicas or autoscaling, not both")


@pytest.mark.parametrize("case", INVALID_PARAMS)
def test_invalid_spec_is_refused_naming_the_field(case: Case) -> None:
    errors = nimservice_errors(case.document())
    assert errors, f"{case.id} was accepted"
    assert any(error.path.startswith(case.path) for error in errors), [str(error) for error in errors]
    assert case.message is None or any(case.message in str(error) for error in errors), errors


@pytest.mark.parametrize("case", VALID_PARAMS)
def test_valid_spec_is_accepted(case: Case) -> None:
    assert nimservice_errors(case.document()) == []


def test_storage_claim_and_class_cannot_change() -> None:
    old = spec(storage={"size": "10Gi", "storageClassName": "fast"})
    grown = spec(storage={"size": "20Gi", "storageClassName": "fast"})
    moved = spec(storage={"size": "10Gi", "storageClassName": "slow"})
    assert grown.transition_errors(old, "spec") == []
    assert [error.path for error in moved.transition_errors(old, "spec")] == ["spec.storage.storageClassName"]
    claimed = spec(storage={"existingClaim": "a"})
    reclaimed = spec(storage={"existingClaim": "b"})
    assert [error.path for error in reclaimed.transition_errors(claimed, "spec")] == [
        "spec.storage.existingClaim"
    ]


def test_storage_added_later_is_not_a_change_of_class() -> None:
    # Like the apiserver, transition rules only apply where the object existed before.
    assert spec(storage={"size": "1Gi", "storageClassName": "x"}).transition_errors(spec(), "spec") == []
    assert StorageSpec(size="1Gi").transition_errors(StorageSpec(size="2Gi")) == []
