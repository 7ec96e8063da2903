"""The Argo CD health check against the statuses the operator writes, built by the controller's own pure
condition functions (and, for canary rollouts, its rollout state machine) for each situation a NimService can
be in."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from nimify.api import NimService, RolloutPhase, RolloutStatus
from nimify.api.conditions import ConditionReason
from nimify.controller.conditions import (
    EngineState,
    Observation,
    ServingState,
    desired_conditions,
    merge_conditions,
)
from nimify.controller.engine_step import EngineOutcome
from nimify.controller.rollout import CandidateFacts, advance, rolled_out_condition, started
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


CANARY_SPEC: dict[str, Any] = {
    "model": {"uri": "s3://models/resnet50.onnx"},
    "expose": {"httpRoute": {"host": "resnet50.example.com", "gatewayRef": {"name": "public"}}},
    "rollout": {"strategy": "Canary", "steps": [{"weight": 10, "holdSeconds": 60}, {"weight": 50}]},
}


def nimservice(
    observation: Observation | None,
    observed_generation: int = GENERATION,
    rollout: RolloutStatus | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "nimify.dev/v1alpha1",
        "kind": "NimService",
        "metadata": {"name": "resnet50", "namespace": "ml", "generation": GENERATION},
        "spec": CANARY_SPEC if rollout is not None else {"model": {"uri": "s3://models/resnet50.onnx"}},
    }
    if observation is not None:
        wanted = desired_conditions(observation)
        if rollout is not None:
            # As controller/status.py adds it; a Promoted rollout asks for nothing more.
            wanted.append(rolled_out_condition(rollout, pending=rollout.phase != RolloutPhase.PROMOTED))
        conditions = merge_conditions(wanted, [], observed_generation, NOW)
        body["status"] = {
            "observedGeneration": observed_generation,
            "conditions": [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions],
        }
        if rollout is not None:
            body["status"]["rollout"] = rollout.model_dump(mode="json", by_alias=True, exclude_none=True)
    return body


def observation(
    engine: EngineState, serving: ServingState, *, invalid: str | None = None, paused: bool = False
) -> Observation:
    return Observation(GENERATION, invalid, paused, engine, serving)


def rollout(facts: CandidateFacts, *, generation: int = GENERATION, promoting: bool = False) -> RolloutStatus:
    """status.rollout as the operator's state machine writes it, one step on from a rollout that began at
    `generation` (promoting: its steps done)."""
    nim = NimService.model_validate(
        {"metadata": {"name": "resnet50", "namespace": "ml", "generation": generation}, "spec": CANARY_SPEC}
    )
    begun = started(nim, "c" * 64)
    if promoting:
        begun = begun.model_copy(update={"phase": RolloutPhase.PROMOTING, "step": 2, "candidate_weight": 50})
    return advance(nim, begun, facts, NOW)[0]


CANDIDATE_SERVES = CandidateFacts(EngineOutcome(BUILT), ready=True)
CANDIDATE_CRASHES = CandidateFacts(
    EngineOutcome(BUILT), ready=True, trouble="pod resnet50-canary-5d9c-x2x9q: crashed"
)
STEP_ONE = rollout(CANDIDATE_SERVES)
ROLLED_BACK = rollout(CANDIDATE_CRASHES)
ROLLED_BACK_BEFORE = rollout(CANDIDATE_CRASHES, generation=GENERATION - 1)
PROMOTED = rollout(replace(CANDIDATE_SERVES, serving_promoted=True), promoting=True)


def test_the_rollouts_are_those_named() -> None:
    assert STEP_ONE.phase == RolloutPhase.PROGRESSING and STEP_ONE.candidate_weight == 10
    assert ROLLED_BACK.phase == RolloutPhase.ROLLED_BACK and ROLLED_BACK.generation == GENERATION
    assert ROLLED_BACK_BEFORE.phase == RolloutPhase.ROLLED_BACK and ROLLED_BACK_BEFORE.generation < GENERATION
    assert PROMOTED.phase == RolloutPhase.PROMOTED


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
        (
            nimservice(observation(BUILT, SERVING), rollout=STEP_ONE),
            "Progressing",
            "Rollout Progressing: step 1 of 2: 10% of the traffic",
        ),
        (
            nimservice(observation(BUILT, ROLLING), rollout=STEP_ONE),
            "Progressing",
            "for 60 s; Deploying: 1/2 replicas",  # and what Ready says of the serving unit
        ),
        (
            nimservice(observation(FAILED, NO_DEPLOYMENT), rollout=STEP_ONE),
            "Degraded",
            "ChecksumMismatch: sha256 differs",
        ),
        (
            nimservice(observation(BUILT, SERVING), rollout=ROLLED_BACK),
            "Degraded",
            "Rollout RolledBack: the candidate's pods fail: pod resnet50-canary-5d9c-x2x9q: crashed",
        ),
        (
            nimservice(observation(BUILT, SERVING), rollout=ROLLED_BACK_BEFORE),
            "Healthy",
            "2 replica(s) serving",
        ),
        (nimservice(observation(BUILT, SERVING), rollout=PROMOTED), "Healthy", "2 replica(s) serving"),
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
        "rollout-progressing",
        "rollout-while-the-serving-unit-rolls",
        "rollout-but-stalled",
        "rolled-back-now",
        "rolled-back-an-older-generation",
        "promoted",
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
