"""From what the reconcile observed to status.conditions: every combination that matters to a user waiting on
`kubectl wait --for=condition=Ready`, Argo CD or Flux."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from nimify.api import Condition, ConditionStatus
from nimify.controller.conditions import (
    EngineState,
    Observation,
    Problem,
    ServingState,
    desired_conditions,
    events_for,
    merge_conditions,
    transitions,
)

BUILT = EngineState(True, "EngineBuilt", "engine abc ready")
BUILDING = EngineState(False, "BuildingEngine", "conversion Job nimify-engine-x is running")
FAILED = EngineState(False, "ChecksumMismatch", "Job nimify-engine-x: digest differs", failed=True)
SERVING = ServingState(
    desired_replicas=2, ready_replicas=2, updated_replicas=2, rolled_out=True, serves_current_engine=True
)
NO_DEPLOYMENT = ServingState(
    desired_replicas=None, ready_replicas=0, updated_replicas=0, rolled_out=False, serves_current_engine=False
)
# An older engine keeps serving while the Deployment rolls to the new one.
OLD_ENGINE_SERVING = ServingState(
    desired_replicas=2, ready_replicas=2, updated_replicas=0, rolled_out=False, serves_current_engine=False
)
HEALTHY = Observation(generation=4, invalid_spec=None, paused=False, engine=BUILT, serving=SERVING)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def conditions(observation: Observation) -> dict[str, tuple[str, str, str]]:
    rendered = desired_conditions(observation)
    by_type = {kind: (status, reason, message) for kind, status, reason, message in rendered}
    assert len(by_type) == len(rendered), "one condition per type"
    return by_type


def status(observation: Observation, kind: str) -> str:
    return conditions(observation)[kind][0]


def reason(observation: Observation, kind: str) -> str:
    return conditions(observation)[kind][1]


def test_stable_order_of_types() -> None:
    assert [kind for kind, *_ in desired_conditions(HEALTHY)] == [
        "Ready",
        "EngineReady",
        "Available",
        "Reconciling",
        "Stalled",
    ]


def test_healthy() -> None:
    assert conditions(HEALTHY) == {
        "Ready": ("True", "Serving", "2 replica(s) serving"),
        "EngineReady": ("True", "EngineBuilt", "engine abc ready"),
        "Available": ("True", "Serving", "2 replica(s) ready"),
        "Reconciling": ("False", "Reconciled", ""),
        "Stalled": ("False", "Reconciled", ""),
    }


@pytest.mark.parametrize(
    ("engine", "serving"),
    [
        pytest.param(BUILDING, SERVING, id="engine-building"),
        pytest.param(replace(BUILT, ready=False), SERVING, id="engine-not-ready"),
        pytest.param(BUILT, replace(SERVING, serves_current_engine=False), id="old-engine"),
        pytest.param(BUILT, replace(SERVING, rolled_out=False), id="rolling-out"),
        pytest.param(BUILT, replace(SERVING, ready_replicas=1), id="one-replica-not-ready"),
        pytest.param(BUILT, replace(SERVING, updated_replicas=1), id="one-replica-not-updated"),
        pytest.param(BUILT, NO_DEPLOYMENT, id="no-deployment"),
        pytest.param(BUILT, OLD_ENGINE_SERVING, id="old-engine-serving"),
    ],
)
def test_ready_needs_everything(engine: EngineState, serving: ServingState) -> None:
    assert status(replace(HEALTHY, engine=engine, serving=serving), "Ready") == "False"


@pytest.mark.parametrize("engine", [BUILDING, FAILED], ids=["building", "failed"])
def test_ready_false_carries_the_engine_reason(engine: EngineState) -> None:
    observation = replace(HEALTHY, engine=engine, serving=NO_DEPLOYMENT)
    assert conditions(observation)["Ready"] == ("False", engine.reason, engine.message)
    assert conditions(observation)["EngineReady"] == ("False", engine.reason, engine.message)


def test_ready_false_while_deploying_says_how_far() -> None:
    observation = replace(HEALTHY, serving=replace(SERVING, ready_replicas=1, updated_replicas=1))
    assert conditions(observation)["Ready"] == (
        "False",
        "Deploying",
        "1/2 replicas ready with the current engine",
    )


@pytest.mark.parametrize(
    ("engine", "serving", "available"),
    [
        pytest.param(BUILT, SERVING, "True", id="serving"),
        pytest.param(BUILDING, OLD_ENGINE_SERVING, "True", id="old-engine-serves-during-rebuild"),
        pytest.param(FAILED, OLD_ENGINE_SERVING, "True", id="old-engine-serves-after-failed-rebuild"),
        pytest.param(BUILT, replace(SERVING, ready_replicas=1), "True", id="one-of-two"),
        pytest.param(BUILT, replace(SERVING, ready_replicas=0), "False", id="none-ready"),
        pytest.param(BUILDING, NO_DEPLOYMENT, "False", id="first-build"),
    ],
)
def test_available_whenever_a_replica_is_ready(
    engine: EngineState, serving: ServingState, available: str
) -> None:
    observation = replace(HEALTHY, engine=engine, serving=serving)
    assert status(observation, "Available") == available
    if available == "False":
        assert reason(observation, "Available") == "ReplicasUnavailable"


def test_rebuild_keeps_old_engine_available_but_not_ready() -> None:
    observation = replace(HEALTHY, engine=BUILDING, serving=OLD_ENGINE_SERVING)
    assert status(observation, "Available") == "True"
    assert status(observation, "Ready") == "False"
    assert conditions(observation)["Reconciling"][:2] == ("True", "BuildingEngine")


@pytest.mark.parametrize(
    ("observation", "stalled", "stalled_reason"),
    [
        pytest.param(HEALTHY, "False", "Reconciled", id="healthy"),
        pytest.param(replace(HEALTHY, engine=BUILDING), "False", "Reconciled", id="building"),
        pytest.param(replace(HEALTHY, engine=FAILED), "True", "ChecksumMismatch", id="engine-failed"),
        pytest.param(
            replace(HEALTHY, invalid_spec="spec.engine.profiles: input x is not in the model"),
            "True",
            "InvalidSpec",
            id="invalid-spec",
        ),
    ],
)
def test_stalled(observation: Observation, stalled: str, stalled_reason: str) -> None:
    assert conditions(observation)["Stalled"][:2] == (stalled, stalled_reason)


def test_invalid_spec() -> None:
    message = "spec.engine.profiles: input x is not in the model"
    observation = replace(HEALTHY, invalid_spec=message)
    by_type = conditions(observation)
    assert by_type["Ready"] == ("False", "InvalidSpec", message)
    assert by_type["Stalled"] == ("True", "InvalidSpec", message)
    assert by_type["EngineReady"][:2] == ("False", "InvalidSpec")
    assert by_type["Reconciling"][0] == "False"
    # What still runs keeps serving, and the condition says so.
    assert by_type["Available"][0] == "True"


def test_failed_engine_is_a_dead_end_not_progress() -> None:
    by_type = conditions(replace(HEALTHY, engine=FAILED, serving=NO_DEPLOYMENT))
    assert by_type["Reconciling"][0] == "False"
    assert by_type["Stalled"] == ("True", FAILED.reason, FAILED.message)


@pytest.mark.parametrize(
    ("observation", "progress_reason"),
    [
        pytest.param(
            replace(HEALTHY, engine=BUILDING, serving=NO_DEPLOYMENT), "BuildingEngine", id="building"
        ),
        pytest.param(
            replace(HEALTHY, serving=replace(SERVING, rolled_out=False, updated_replicas=1)),
            "Deploying",
            id="deploying",
        ),
        pytest.param(replace(HEALTHY, serving=NO_DEPLOYMENT), "Deploying", id="deployment-not-seen-yet"),
    ],
)
def test_reconciling_while_building_or_deploying(observation: Observation, progress_reason: str) -> None:
    assert conditions(observation)["Reconciling"][:2] == ("True", progress_reason)
    assert status(observation, "Stalled") == "False"


@pytest.mark.parametrize(
    "observation",
    [
        pytest.param(replace(HEALTHY, paused=True), id="healthy"),
        pytest.param(replace(HEALTHY, paused=True, engine=BUILDING, serving=NO_DEPLOYMENT), id="building"),
        pytest.param(replace(HEALTHY, paused=True, engine=FAILED), id="failed"),
    ],
)
def test_paused_is_not_reconciling(observation: Observation) -> None:
    assert conditions(observation)["Reconciling"][:2] == ("False", "Paused")


def test_paused_still_reports_readiness() -> None:
    assert status(replace(HEALTHY, paused=True), "Ready") == "True"
    assert status(replace(HEALTHY, paused=True, engine=BUILDING), "Ready") == "False"


def test_engine_ready_reason_passes_through() -> None:
    hit = EngineState(True, "EngineCacheHit", "engine abc reused")
    assert conditions(replace(HEALTHY, engine=hit))["EngineReady"] == (
        "True",
        "EngineCacheHit",
        "engine abc reused",
    )


def test_reasons_are_camel_case() -> None:
    observations = [
        HEALTHY,
        replace(HEALTHY, engine=BUILDING, serving=NO_DEPLOYMENT),
        replace(HEALTHY, engine=FAILED),
        replace(HEALTHY, paused=True),
        replace(HEALTHY, invalid_spec="bad"),
        replace(HEALTHY, serving=replace(SERVING, ready_replicas=0)),
    ]
    for observation in observations:
        for _, state, why, _ in desired_conditions(observation):
            assert state in ("True", "False")
            assert why[:1].isupper() and why.isalnum(), why


# --- merge_conditions and transitions -------------------------------------------------------------------


def condition(kind: str, state: str, why: str, at: datetime = T0, generation: int = 1) -> Condition:
    return Condition(
        type=kind,
        status=ConditionStatus(state),
        reason=why,
        message="",
        last_transition_time=at,
        observed_generation=generation,
    )


def test_merge_sets_time_and_generation_for_new_conditions() -> None:
    merged = merge_conditions(desired_conditions(HEALTHY), [], generation=4, now=T1)
    assert [c.type for c in merged] == ["Ready", "EngineReady", "Available", "Reconciling", "Stalled"]
    assert all(c.last_transition_time == T1 for c in merged)
    assert all(c.observed_generation == 4 for c in merged)
    ready = merged[0]
    assert (ready.status, ready.reason, ready.message) == (
        ConditionStatus.TRUE,
        "Serving",
        "2 replica(s) serving",
    )


def test_merge_keeps_transition_time_unless_status_flips() -> None:
    previous = [
        condition("Ready", "True", "Serving"),
        condition("EngineReady", "False", "BuildingEngine"),
    ]
    desired = [
        ("Ready", "True", "Serving", "3 replica(s) serving"),  # same status, new message
        ("EngineReady", "False", "EngineBuildFailed", "it broke"),  # same status, new reason
    ]
    merged = merge_conditions(desired, previous, generation=7, now=T1)
    assert [c.last_transition_time for c in merged] == [T0, T0]
    assert [c.reason for c in merged] == ["Serving", "EngineBuildFailed"]
    assert merged[0].message == "3 replica(s) serving"
    assert all(c.observed_generation == 7 for c in merged)


def test_merge_moves_transition_time_when_status_flips() -> None:
    previous = [condition("Ready", "False", "BuildingEngine"), condition("Stalled", "False", "Reconciled")]
    desired = [("Ready", "True", "Serving", ""), ("Stalled", "False", "Reconciled", "")]
    merged = merge_conditions(desired, previous, generation=2, now=T1)
    assert [c.last_transition_time for c in merged] == [T1, T0]


def test_merge_drops_conditions_no_longer_desired() -> None:
    previous = [condition("ModelValidated", "True", "ModelValid"), condition("Ready", "True", "Serving")]
    merged = merge_conditions([("Ready", "True", "Serving", "")], previous, generation=2, now=T1)
    assert [c.type for c in merged] == ["Ready"]


def test_merge_output_round_trips_through_the_status_model() -> None:
    merged = merge_conditions(desired_conditions(HEALTHY), [], generation=4, now=T1)
    for item in merged:
        data = item.model_dump(mode="json", by_alias=True)
        assert data["lastTransitionTime"].startswith("2025-01-01T00:05:00")
        assert data["observedGeneration"] == 4
        assert Condition.model_validate(data) == item


def test_transitions_lists_changed_conditions_only() -> None:
    previous = [
        condition("Ready", "False", "BuildingEngine"),
        condition("EngineReady", "False", "BuildingEngine"),
        condition("Available", "False", "ReplicasUnavailable"),
        condition("Stalled", "False", "Reconciled"),
    ]
    current = [
        condition("Ready", "False", "Deploying", at=T1),  # reason changed
        condition("EngineReady", "True", "EngineBuilt", at=T1),  # status changed
        condition("Available", "False", "ReplicasUnavailable", at=T1, generation=2),  # unchanged
        condition("Stalled", "False", "Reconciled"),  # unchanged
        condition("Reconciling", "True", "Deploying", at=T1),  # new
    ]
    assert [c.type for c in transitions(previous, current)] == ["Ready", "EngineReady", "Reconciling"]


def test_no_transitions_in_steady_state() -> None:
    first = merge_conditions(desired_conditions(HEALTHY), [], generation=4, now=T0)
    again = merge_conditions(desired_conditions(HEALTHY), first, generation=4, now=T1)
    assert transitions(first, again) == []
    assert again == first


def test_message_only_change_is_not_a_transition() -> None:
    previous = merge_conditions(desired_conditions(HEALTHY), [], generation=4, now=T0)
    scaled = replace(
        HEALTHY, serving=replace(SERVING, desired_replicas=3, ready_replicas=3, updated_replicas=3)
    )
    current = merge_conditions(desired_conditions(scaled), previous, generation=5, now=T1)
    assert transitions(previous, current) == []


# --- problems besides the engine: refusals, a stuck Deployment, pods in trouble ----------------------------

REFUSED = Problem("ChildRejected", "Ingress resnet50 was refused: denied", stalled=True)
CRASHING = Problem("CrashLoopBackOff", "pod resnet50-abc: container triton keeps crashing", stalled=False)


def test_a_refusal_is_ready_false_and_stalled_even_when_everything_serves() -> None:
    found = conditions(replace(HEALTHY, problem=REFUSED))
    assert found["Ready"] == ("False", "ChildRejected", REFUSED.message)
    assert found["Stalled"] == ("True", "ChildRejected", REFUSED.message)
    assert found["Reconciling"][:2] == ("False", "ChildRejected")
    assert found["Available"][0] == "True", "what runs keeps serving"
    assert found["EngineReady"][0] == "True"


def test_a_refusal_wins_over_a_building_engine() -> None:
    found = conditions(replace(HEALTHY, engine=BUILDING, serving=NO_DEPLOYMENT, problem=REFUSED))
    assert found["Ready"][1] == "ChildRejected"
    assert found["EngineReady"][1] == "BuildingEngine"


def test_pod_trouble_names_why_replicas_are_not_ready() -> None:
    observation = replace(HEALTHY, serving=replace(SERVING, ready_replicas=1), problem=CRASHING)
    found = conditions(observation)
    assert found["Ready"] == ("False", "CrashLoopBackOff", CRASHING.message)
    assert found["Reconciling"] == ("True", "CrashLoopBackOff", CRASHING.message), "Kubernetes keeps trying"
    assert found["Stalled"][0] == "False"


def test_pod_trouble_does_not_hide_a_building_engine_nor_a_ready_one() -> None:
    assert reason(replace(HEALTHY, engine=BUILDING, problem=CRASHING), "Ready") == "BuildingEngine"
    assert status(replace(HEALTHY, problem=CRASHING), "Ready") == "True", "every desired replica is ready"


# --- events: one per meaningful transition ----------------------------------------------------------------


def listed(*triples: tuple[str, str, str]) -> list[Condition]:
    return [
        Condition(
            type=kind,
            status=ConditionStatus(status),
            reason=reason,
            message="",
            last_transition_time=datetime(2025, 1, 1, tzinfo=UTC),
            observed_generation=1,
        )
        for kind, status, reason in triples
    ]


NORMAL = frozenset({"BuildingEngine", "Deploying", "EngineBuilt", "Serving", "Reconciled"})


def test_events_on_the_happy_path_are_the_engine_and_serving() -> None:
    building = listed(
        ("Ready", "False", "BuildingEngine"),
        ("EngineReady", "False", "BuildingEngine"),
        ("Available", "False", "ReplicasUnavailable"),
        ("Reconciling", "True", "BuildingEngine"),
    )
    deploying = listed(
        ("Ready", "False", "Deploying"),
        ("EngineReady", "True", "EngineBuilt"),
        ("Available", "False", "ReplicasUnavailable"),
        ("Reconciling", "True", "Deploying"),
    )
    serving = listed(
        ("Ready", "True", "Serving"),
        ("EngineReady", "True", "EngineBuilt"),
        ("Available", "True", "Serving"),
        ("Reconciling", "False", "Reconciled"),
    )
    steps = [([], building), (building, deploying), (deploying, serving), (serving, serving)]
    posted = [(kind, c.reason) for before, after in steps for kind, c in events_for(before, after, NORMAL)]
    assert posted == [("Normal", "EngineBuilt"), ("Normal", "Serving")]


def test_a_failure_warns_once_whichever_conditions_carry_it() -> None:
    failed = listed(("Ready", "False", "ParityFailed"), ("EngineReady", "False", "ParityFailed"))
    assert [(kind, c.reason) for kind, c in events_for([], failed, NORMAL)] == [("Warning", "ParityFailed")]
    assert events_for(failed, failed, NORMAL) == []


def test_an_autoscaler_in_trouble_warns_and_one_that_works_is_no_news() -> None:
    ready = listed(("Ready", "True", "Serving"))
    pending = [*ready, *listed(("ScalingActive", "Unknown", "AutoscalerPending"))]
    missing = [*ready, *listed(("ScalingActive", "False", "MetricUnavailable"))]
    active = [*ready, *listed(("ScalingActive", "True", "ScalingActive"))]
    steps = [(ready, pending), (pending, missing), (missing, missing), (missing, active), (active, missing)]
    posted = [(kind, c.reason) for before, after in steps for kind, c in events_for(before, after, NORMAL)]
    assert posted == [("Warning", "MetricUnavailable"), ("Warning", "MetricUnavailable")]


def test_losing_readiness_for_a_problem_warns_and_regaining_it_is_news() -> None:
    serving = listed(("Ready", "True", "Serving"))
    trouble = listed(("Ready", "False", "CrashLoopBackOff"))
    assert [k for k, _ in events_for(serving, trouble, NORMAL)] == ["Warning"]
    assert [(k, c.reason) for k, c in events_for(trouble, serving, NORMAL)] == [("Normal", "Serving")]
