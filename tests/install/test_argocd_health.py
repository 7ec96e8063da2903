"""The Argo CD health check against the statuses the operator writes, built by the controller's own pure
condition functions for each situation a NimService can be in."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from nimify.api.conditions import ConditionReason
from nimify.controller.conditions import (
    EngineState,
    Observation,
    ServingState,
    desired_conditions,
    merge_conditions,
)
from tests.install.argocd import HEALTH_CHECK, argocd_health

GENERATION = 4
NOW = datetime(2026, 1, 1, tzinfo=UTC)
BUILDING = EngineState(False, ConditionReason.BUILDING_ENGINE.value, "Job nimify-engine-1 running")
BUILT = EngineState(True, ConditionReason.ENGINE_BUILT.value, "engine abc ready")
FAILED = EngineState(False, ConditionReason.CHECKSUM_MISMATCH.value, "sha256 differs", failed=True)
NO_DEPLOYMENT = ServingState(None, 0, 0, rolled_out=False, serves_current_engine=False)
SERVING = ServingState(2, 2, 2, rolled_out=True, serves_current_engine=True)
ROLLING = ServingState(2, 1, 1, rolled_out=False, serves_current_engine=True)
SCALED_TO_ZERO = ServingState(0, 0, 0, rolled_out=True, serves_current_engine=True)


def nimservice(observation: Observation | None, observed_generation: int = GENERATION) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "nimify.dev/v1alpha1",
        "kind": "NimService",
        "metadata": {"name": "resnet50", "namespace": "ml", "generation": GENERATION},
        "spec": {"model": {"uri": "s3://models/resnet50.onnx"}},
    }
    if observation is not None:
        conditions = merge_conditions(desired_conditions(observation), [], observed_generation, NOW)
        body["status"] = {
            "observedGeneration": observed_generation,
            "conditions": [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions],
        }
    return body


def observation(
    engine: EngineState, serving: ServingState, *, invalid: str | None = None, paused: bool = False
) -> Observation:
    return Observation(GENERATION, invalid, paused, engine, serving)


@pytest.mark.parametrize(
    ("body", "status", "message_part"),
    [
        (nimservice(None), "Progressing", "report status"),
        (nimservice(observation(BUILDING, NO_DEPLOYMENT)), "Progressing", "BuildingEngine"),
        (nimservice(observation(BUILT, ROLLING)), "Progressing", "1/2 replicas"),
        (nimservice(observation(BUILT, SERVING)), "Healthy", "2 replica(s) serving"),
        (nimservice(observation(BUILT, SERVING), observed_generation=3), "Progressing", "generation 4"),
        (nimservice(observation(FAILED, NO_DEPLOYMENT)), "Degraded", "ChecksumMismatch: sha256 differs"),
        (
            nimservice(observation(BUILDING, NO_DEPLOYMENT, invalid="spec.engine.precision: bf16 needs 8.0")),
            "Degraded",
            "InvalidSpec: spec.engine.precision",
        ),
        (nimservice(observation(BUILT, SERVING, paused=True)), "Suspended", "Paused"),
        (nimservice(observation(BUILT, SCALED_TO_ZERO)), "Healthy", "0 replica(s) serving"),
    ],
    ids=[
        "no-status",
        "building",
        "rolling-out",
        "ready",
        "spec-not-yet-seen",
        "failed-build",
        "invalid-spec",
        "paused",
        "scaled-to-zero",
    ],
)
def test_health(body: dict[str, Any], status: str, message_part: str) -> None:
    health, message = argocd_health(body)
    assert health == status
    assert message_part in message


def test_install_docs_carry_the_check_verbatim() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "install.md").read_text()
    key = "  resource.customizations.health.nimify.dev_NimService: |\n"
    block = docs[docs.index(key) + len(key) :]
    block = block[: block.index("```")]
    assert textwrap.dedent(block) == HEALTH_CHECK.read_text(), (
        "docs/install.md: paste files/argocd-health.lua"
    )
