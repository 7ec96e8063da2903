"""From what the reconcile observed to `status.conditions`: pure, so every combination is unit-tested.

Ready is never True unless the engine for the current spec is ready, every child was taken by the apiserver
AND every replica runs the engine; Available says whether anything is serving at all (an older engine keeps
serving while a new one builds). A `Problem` (a refused child, a Deployment that cannot progress, Triton pods
in trouble) names why Ready is False when the engine is not the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from nimify.api import Condition
from nimify.api.conditions import ConditionReason, ConditionType
from nimify.api.status import ConditionStatus


@dataclass(frozen=True)
class EngineState:
    ready: bool
    reason: str
    message: str
    failed: bool = False  # a dead end until the spec changes (or the failed Job expires and is retried)


@dataclass(frozen=True)
class ServingState:
    desired_replicas: int | None  # None until the Deployment exists
    ready_replicas: int
    updated_replicas: int
    rolled_out: bool  # the Deployment controller has observed the current template and finished rolling it
    serves_current_engine: bool


@dataclass(frozen=True)
class Problem:
    """Something other than the engine that keeps the NimService from Ready."""

    reason: str
    message: str
    stalled: bool  # nothing changes until someone acts (a refusal); otherwise Kubernetes keeps trying


@dataclass(frozen=True)
class Observation:
    generation: int
    invalid_spec: str | None
    paused: bool
    engine: EngineState
    serving: ServingState
    problem: Problem | None = None


def _condition(kind: ConditionType, ok: bool, reason: str, message: str) -> tuple[str, str, str, str]:
    return kind.value, (ConditionStatus.TRUE if ok else ConditionStatus.FALSE).value, reason, message


def desired_conditions(observation: Observation) -> list[tuple[str, str, str, str]]:
    """(type, status, reason, message) for each condition, in a stable order."""
    engine, serving = observation.engine, observation.serving
    if observation.invalid_spec is not None:
        invalid = ConditionReason.INVALID_SPEC.value
        return [
            _condition(ConditionType.READY, False, invalid, observation.invalid_spec),
            _condition(ConditionType.ENGINE_READY, False, invalid, observation.invalid_spec),
            _available(serving),
            _condition(ConditionType.RECONCILING, False, invalid, "nothing to do until the spec changes"),
            _condition(ConditionType.STALLED, True, invalid, observation.invalid_spec),
        ]
    desired = serving.desired_replicas
    problem = observation.problem
    all_ready = (
        desired is not None and serving.ready_replicas >= desired and serving.updated_replicas >= desired
    )
    rolled_out = engine.ready and serving.serves_current_engine and serving.rolled_out and all_ready
    ready = rolled_out and (problem is None or not problem.stalled)
    if ready:
        ready_reason, ready_message = (
            ConditionReason.SERVING.value,
            f"{serving.ready_replicas} replica(s) serving",
        )
    elif problem is not None and (problem.stalled or engine.ready):
        ready_reason, ready_message = problem.reason, problem.message
    elif not engine.ready:
        ready_reason, ready_message = engine.reason, engine.message
    elif desired == 0:
        ready_reason, ready_message = ConditionReason.SCALING.value, "scaled to zero replicas"
    else:
        ready_reason = ConditionReason.DEPLOYING.value
        ready_message = f"{serving.ready_replicas}/{desired or '?'} replicas ready with the current engine"
    if observation.paused:
        reconciling = _condition(
            ConditionType.RECONCILING,
            False,
            ConditionReason.PAUSED.value,
            "spec.paused: children are left as they are",
        )
    elif problem is not None and problem.stalled:
        reconciling = _condition(
            ConditionType.RECONCILING, False, problem.reason, "retrying with backoff until it is accepted"
        )
    elif ready or engine.failed:
        reconciling = _condition(ConditionType.RECONCILING, False, ConditionReason.RECONCILED.value, "")
    else:
        reconciling = _condition(ConditionType.RECONCILING, True, ready_reason, ready_message)
    if problem is not None and problem.stalled:
        stalled = _condition(ConditionType.STALLED, True, problem.reason, problem.message)
    elif engine.failed:
        stalled = _condition(ConditionType.STALLED, True, engine.reason, engine.message)
    else:
        stalled = _condition(ConditionType.STALLED, False, ConditionReason.RECONCILED.value, "")
    return [
        _condition(ConditionType.READY, ready, ready_reason, ready_message),
        _condition(ConditionType.ENGINE_READY, engine.ready, engine.reason, engine.message),
        _available(serving),
        reconciling,
        stalled,
    ]


def _available(serving: ServingState) -> tuple[str, str, str, str]:
    if serving.ready_replicas > 0:
        return _condition(
            ConditionType.AVAILABLE,
            True,
            ConditionReason.SERVING.value,
            f"{serving.ready_replicas} replica(s) ready",
        )
    return _condition(
        ConditionType.AVAILABLE, False, ConditionReason.REPLICAS_UNAVAILABLE.value, "no replica is ready"
    )


def merge_conditions(
    desired: list[tuple[str, str, str, str]], previous: list[Condition], generation: int, now: datetime
) -> list[Condition]:
    """Conditions with lastTransitionTime kept from `previous` unless the status flipped."""
    before = {condition.type: condition for condition in previous}
    merged = []
    for kind, status, reason, message in desired:
        old = before.get(kind)
        changed = old is None or old.status.value != status
        merged.append(
            Condition(
                type=kind,
                status=ConditionStatus(status),
                reason=reason,
                message=message,
                last_transition_time=now if changed or old is None else old.last_transition_time,
                observed_generation=generation,
            )
        )
    return merged


def transitions(previous: list[Condition], current: list[Condition]) -> list[Condition]:
    """Conditions whose status or reason changed: each deserves an event."""
    before = {(c.type, c.status, c.reason) for c in previous}
    return [c for c in current if (c.type, c.status, c.reason) not in before]


# Conditions whose changes are news; the others (Available, Reconciling, Stalled) restate them.
NEWSWORTHY = (
    ConditionType.READY.value,
    ConditionType.ENGINE_READY.value,
    ConditionType.TUNED.value,
    ConditionType.ROLLED_OUT.value,
)
# Conditions whose trouble is news but whose success is not: an autoscaler that cannot read its metric leaves
# the NimService Ready but unscaled (a Warning); one that works is the normal case (no event).
TROUBLE_ONLY = (ConditionType.SCALING_ACTIVE.value,)


def events_for(
    previous: list[Condition], current: list[Condition], normal_reasons: frozenset[str]
) -> list[tuple[str, Condition]]:
    """The events a reconcile posts, as (type, condition): Normal when the engine becomes ready and when the
    NimService becomes Ready, a Warning for each new reason that is not progress (once, though Ready and
    EngineReady may both carry it). The happy path is two events: one per meaningful transition, not one per
    condition that moved."""
    before = {c.type: c for c in previous}
    events: list[tuple[str, Condition]] = []
    warned: set[str] = set()
    for condition in transitions(previous, current):
        if condition.type not in NEWSWORTHY and condition.type not in TROUBLE_ONLY:
            continue
        old = before.get(condition.type)
        if condition.type in TROUBLE_ONLY and condition.status is not ConditionStatus.FALSE:
            continue
        if condition.status is ConditionStatus.TRUE:
            if old is None or old.status is not ConditionStatus.TRUE:
                events.append(("Normal", condition))
        elif condition.reason not in normal_reasons and condition.reason not in warned:
            warned.add(condition.reason)
            events.append(("Warning", condition))
    return events
