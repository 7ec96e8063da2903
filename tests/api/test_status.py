"""The status models: what the operator writes round-trips through the YAML names."""

from __future__ import annotations

from datetime import UTC, datetime

from nimify.api import (
    Condition,
    ConditionReason,
    ConditionStatus,
    ConditionType,
    NimServiceStatus,
)
from tests.api.cases import FULL_STATUS


def test_status_round_trips_through_yaml_names() -> None:
    status = NimServiceStatus.model_validate(FULL_STATUS)
    assert status.engine is not None and status.engine.tensorrt_version == "10.13.3"
    assert status.model_dump(mode="json", by_alias=True, exclude_none=True) == FULL_STATUS


def test_condition_lookup_by_type() -> None:
    status = NimServiceStatus.model_validate(FULL_STATUS)
    ready = status.condition(ConditionType.READY)
    assert ready is not None and ready.status == ConditionStatus.TRUE
    assert ready.last_transition_time == datetime(2025, 11, 20, 10, tzinfo=UTC)
    assert status.condition(ConditionType.STALLED) is None


def test_a_condition_built_in_python_serializes_as_kubernetes_expects() -> None:
    condition = Condition(
        type=ConditionType.STALLED,
        status=ConditionStatus.TRUE,
        reason=ConditionReason.ENGINE_BUILD_FAILED,
        last_transition_time=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    assert condition.model_dump(mode="json", by_alias=True, exclude_none=True) == {
        "type": "Stalled",
        "status": "True",
        "reason": "EngineBuildFailed",
        "message": "",
        "lastTransitionTime": "2025-01-02T03:04:05Z",
    }


def test_status_from_a_newer_operator_still_reads() -> None:
    assert NimServiceStatus.model_validate({**FULL_STATUS, "futureField": 1}).replicas == 2
