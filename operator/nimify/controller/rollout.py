"""Canary rollouts (spec.rollout.strategy Canary): where one stands, how far it goes in a reconcile. Pure.

A rollout starts when the spec asks for an engine (its cache key) other than the one the serving unit serves.
The serving Deployment is then kept as it is, serving the old engine, and a candidate unit (`<name>-canary`,
with a Service of its own) builds and serves the spec's engine; the HTTPRoute's weighted backendRefs send it
each step's share of the requests (without a Gateway, the NimService's Service selects both units' pods and
the candidate runs as many replicas as its weight asks: the replicas' share). After the last step's hold the
rollout promotes: the serving Deployment rolls to the candidate's engine (already built and checked), and
once it has, the route drops the candidate. A candidate whose engine fails, whose pods crash, or that
`nimify rollout abort` stops is rolled back: the route drops it, the serving unit was never touched, and the
spec's engine is not tried again until the spec changes. Either way the candidate's objects go DRAIN_SECONDS
after the route dropped it. A new engine in the spec during a rollout supersedes the candidate (a new rollout
from step 0).

Judged on the way (rollout_analysis.py, with what rollout_analyst.py asked of the world): before its first
step the candidate must pass the answer gate, when one applies (equivalence when only the engine changed or
the update is declared equivalent, agreement when the spec sets it); while a step runs, a limit of
spec.rollout.analysis broken by its figures against the serving unit's rolls it back at once, and a step
whose hold ended passes once the candidate answered the step's minRequests.

Everything the next reconcile needs is in `status.rollout` (phase, step, when the step began), so an operator
restart resumes where the rollout stood. Manual control: spec.rollout.paused holds the step, and the
annotation `nimify.dev/rollout: promote=<candidate>` or `abort=<candidate>` (what `nimify rollout
promote|abort` writes) promotes now or rolls back; naming the candidate keeps a stale annotation from acting
on a later rollout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from nimify.api import EngineRecord, NimService, RolloutPhase, RolloutStatus, TrafficSplit, UnitRole
from nimify.api.conditions import ConditionReason, ConditionType
from nimify.api.spec.rollout import CANDIDATE_SUFFIX
from nimify.api.status import AnswerGateStatus, ConditionStatus, GateForm, RolloutAnalysisStatus
from nimify.controller.children import DEPLOYMENT
from nimify.controller.engine_step import EngineOutcome, engine_outcome
from nimify.controller.observed import Body, Observed
from nimify.controller.pods import ROLLBACK_TROUBLES
from nimify.controller.rollout_analysis import (
    POLL_SECONDS,
    Figures,
    agreement_problem,
    describe,
    figures_due,
    gate_form,
    judge,
)
from nimify.render.identity import ANNOTATION_PREFIX, ENGINE_KEY_ANNOTATION, name_of
from nimify.render.units import ServingUnit, extra_unit
from nimify.settings import OperatorSettings

#: How long a candidate's Deployment and Service outlive the end of its rollout, without traffic: the route
#: drops the candidate first, and a gateway applies that a moment later (Traefik throttles its provider's
#: changes by 2 s); deleting the candidate's Service with the route change made a gateway answer 503 "no
#: available server" for the whole route meanwhile.
DRAIN_SECONDS = 15.0
#: `promote=<candidate>` or `abort=<candidate>`: manual control of the rollout of that candidate.
ROLLOUT_ANNOTATION = f"{ANNOTATION_PREFIX}/rollout"


class Action(StrEnum):
    """What the rollout annotation asks of the current candidate."""

    PROMOTE = "promote"
    ABORT = "abort"


@dataclass(frozen=True)
class CandidateFacts:
    """What the watches show of the candidate and the serving Deployment, for one step of the machine."""

    outcome: EngineOutcome
    """Where the candidate's engine stands."""
    ready: bool
    """Its Deployment serves its engine, rolled out, with a ready replica."""
    trouble: str | None = None
    """A pod of the candidate that crashes, was OOM-killed or cannot pull its image (the trouble)."""
    serving_promoted: bool = False
    """The serving Deployment serves the candidate's engine, rolled out (a promotion is done)."""
    action: Action | None = None
    gate_form: GateForm | None = None
    """The answer gate the candidate must pass before it takes traffic (None: none applies)."""
    gate: AnswerGateStatus | None = None
    """The gate's verdict, when the analyst just asked both units (rollout_analyst.py)."""
    gate_problem: str | None = None
    """Why the spec's agreement gate cannot judge the candidate's model (its field named)."""
    figures: Figures | None = None
    """Both units' figures over the current step, when the analyst just read them."""


@dataclass(frozen=True)
class Canary:
    """A rollout that has a candidate (or had one: RolledBack keeps the record of it)."""

    status: RolloutStatus
    candidate: ServingUnit
    stable: EngineRecord | None
    """The engine the serving unit served before the rollout (what it keeps serving until promotion)."""
    draining: bool = False
    """The rollout ended a moment ago: the candidate stays, without traffic, until DRAIN_SECONDS passed."""

    @property
    def keeps_serving(self) -> bool:
        """The serving Deployment stays as it is (serving the stable engine)."""
        return self.status.phase in (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED, RolloutPhase.ROLLED_BACK)

    @property
    def active(self) -> bool:
        return self.status.phase in (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED, RolloutPhase.PROMOTING)

    @property
    def has_candidate(self) -> bool:
        """The candidate unit exists (its engine, Deployment and Service)."""
        return self.active or self.draining

    @property
    def weight(self) -> int:
        return self.status.candidate_weight if self.active else 0


@dataclass(frozen=True)
class RolloutDecision:
    """status.rollout after this reconcile, the canary it asks for (None: none runs), and when to look
    again."""

    status: RolloutStatus | None
    canary: Canary | None = None
    wake_in: float | None = None
    """Seconds until the current step's hold ends, or a drain (the reconcile comes back then)."""
    pending: bool = False
    """The spec asks for an engine the serving unit does not serve: a rollout brings it in, or rolled it
    back (the RolledOut condition is False)."""


def plan_rollout(
    nim: NimService,
    spec_unit: ServingUnit,
    observed: Observed,
    settings: OperatorSettings,
    now: datetime | None,
) -> RolloutDecision:
    """Where the NimService's rollout goes in this reconcile (`now` None: it stays where it stood)."""
    previous = nim.status.rollout if nim.status is not None else None
    stable = nim.status.record() if nim.status is not None else None
    if not uses_canary(nim):
        return _ended(
            nim, settings, superseded(previous, "the spec no longer asks for a canary", now), stable, now
        )
    key = spec_unit.location.cache_key
    promoting = (
        previous is not None and previous.candidate == key and previous.phase == RolloutPhase.PROMOTING
    )
    if not promoting and (stable is None or stable.engine.cache_key == key):
        # The first engine serves at once; the spec's engine serving already needs no rollout.
        ended = superseded(previous, "superseded: the spec asks for the serving engine again", now)
        return _ended(nim, settings, ended, stable, now)
    generation = nim.metadata.generation or 0
    retried = (
        previous is not None
        and previous.phase == RolloutPhase.ROLLED_BACK
        and previous.generation != generation
    )
    if previous is None or previous.candidate != key or retried:
        # A new candidate (one before it, if any, is superseded), or a rolled-back one the spec asks for again
        # after a change (more memory for a candidate that was OOM-killed, say).
        previous = started(nim, key)
    elif previous.phase != RolloutPhase.ROLLED_BACK:
        # The spec this rollout serves now (a route added or removed changes how it splits).
        previous = _with(previous, generation=generation, traffic=split_of(nim))
    if now is None:
        status, wake_in = previous, None
    else:
        candidate = sized_candidate(nim, settings, previous, observed)
        outcome = engine_outcome(nim, candidate, observed)
        status, wake_in = advance(nim, previous, candidate_facts(nim, candidate, outcome, observed), now)
    weighted = sized_candidate(nim, settings, status, observed)
    left = drain_left(status, now)
    if left is not None:
        return RolloutDecision(status, Canary(status, weighted, stable, draining=True), left, pending=True)
    return RolloutDecision(status, Canary(status, weighted, stable), wake_in, pending=True)


def _ended(
    nim: NimService,
    settings: OperatorSettings,
    status: RolloutStatus | None,
    stable: EngineRecord | None,
    now: datetime | None,
) -> RolloutDecision:
    """No rollout runs: none, or one that ended (its candidate drains for a moment)."""
    left = drain_left(status, now)
    if status is None or left is None or stable is None or nim.spec.model is None:
        return RolloutDecision(status)  # (a pipeline now: its units replace the candidate's at once)
    return RolloutDecision(status, Canary(status, candidate_unit(nim, settings), stable, draining=True), left)


def drain_left(status: RolloutStatus | None, now: datetime | None) -> float | None:
    """Seconds the candidate of a rollout that ended still drains, or None."""
    if status is None or now is None or status.finished_at is None:
        return None
    if status.phase not in (RolloutPhase.PROMOTED, RolloutPhase.ROLLED_BACK):
        return None
    left = DRAIN_SECONDS - (now - status.finished_at).total_seconds()
    return left if left > 0 else None


def uses_canary(nim: NimService) -> bool:
    rollout = nim.spec.rollout
    return rollout is not None and rollout.canary and nim.spec.pipeline is None


def candidate_unit(
    nim: NimService, settings: OperatorSettings, weight: int = 0, replicas: int | None = None
) -> ServingUnit:
    """The unit that serves the spec's engine beside the serving one during a rollout; `replicas`: as many
    as a split by replicas asks (no Gateway), its own count rather than the spec's or an autoscaler's."""
    spec = nim.spec
    if replicas is not None:
        spec = spec.model_copy(update={"replicas": replicas, "autoscaling": None})
    return extra_unit(nim, CANDIDATE_SUFFIX, UnitRole.CANDIDATE, spec, settings, traffic_percent=weight)


def split_of(nim: NimService) -> TrafficSplit:
    """How the NimService's rollout splits the requests: the Gateway's weights, or the units' replicas."""
    expose = nim.spec.expose
    routed = expose.http_route is not None or expose.grpc_route is not None
    return TrafficSplit.GATEWAY if routed else TrafficSplit.REPLICAS


def candidate_replicas(weight: int, serving: int) -> int:
    """Replicas that give the candidate about `weight` percent of the pods behind one Service, beside
    `serving` serving replicas (at least one: with one serving replica every step is about half)."""
    return max(1, round(serving * weight / (100 - weight)))


def sized_candidate(
    nim: NimService, settings: OperatorSettings, status: RolloutStatus, observed: Observed
) -> ServingUnit:
    """The candidate unit for this reconcile. Split by replicas: as many as the current step's weight asks
    beside the serving Deployment's replicas. With a Gateway: as the spec sizes it, or, when an autoscaler
    scales the serving Deployment, sized to its traffic share of what the autoscaler runs now
    (`share_replicas`), so a rollout never pins the capacity either unit has."""
    steps = (nim.spec.rollout.steps if nim.spec.rollout else None) or []
    serving_body = observed.get(DEPLOYMENT.kind, nim.metadata.namespace or "", name_of(nim)) or {}
    serving = int(serving_body.get("spec", {}).get("replicas", 1) or 1)
    if status.traffic != TrafficSplit.REPLICAS:
        scaling = nim.spec.autoscaling
        if scaling is None:
            return candidate_unit(nim, settings, status.candidate_weight)
        replicas = share_replicas(status.candidate_weight, serving, scaling.max_replicas)
        return candidate_unit(nim, settings, status.candidate_weight, replicas)
    weight = steps[min(status.step, len(steps) - 1)].weight if steps else 50
    return candidate_unit(nim, settings, status.candidate_weight, candidate_replicas(weight, serving))


def share_replicas(weight: int, serving: int, most: int) -> int:
    """Replicas for the candidate's `weight` percent of the requests, when `serving` replicas answer the
    rest (rounded up: capacity; at least one, which the answer gate and the first step need; at most the
    autoscaler's maximum)."""
    if weight <= 0:
        return 1
    return max(1, min(most, math.ceil(serving * weight / (100 - weight))))


def requested_action(nim: NimService, candidate: str) -> Action | None:
    """The rollout annotation's action, when it names this candidate."""
    value = (nim.metadata.annotations or {}).get(ROLLOUT_ANNOTATION, "")
    action, _, named = value.partition("=")
    if named != candidate or action not in {a.value for a in Action}:
        return None
    return Action(action)


def deployment_serves(deployment: Body | None, key: str) -> bool:
    """The Deployment's pods serve engine `key`, its rollout done, with a ready replica."""
    if deployment is None:
        return False
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    annotations = spec.get("template", {}).get("metadata", {}).get("annotations") or {}
    return (
        annotations.get(ENGINE_KEY_ANNOTATION) == key
        and status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
        and status.get("replicas", 0) == status.get("updatedReplicas", 0)
        and status.get("readyReplicas", 0) >= 1
    )


def candidate_facts(
    nim: NimService, candidate: ServingUnit, outcome: EngineOutcome, observed: Observed
) -> CandidateFacts:
    namespace, key = nim.metadata.namespace or "", candidate.location.cache_key
    live = observed.get(DEPLOYMENT.kind, namespace, candidate.name)
    trouble = observed.unit_pod_trouble(namespace, name_of(nim), candidate.name)
    form = gate_form(nim, nim.status.record() if nim.status is not None else None)
    problem = None
    gate = nim.spec.rollout.gate if nim.spec.rollout is not None else None
    if form is GateForm.AGREEMENT and gate is not None and gate.agreement is not None:
        record = outcome.record
        problem = agreement_problem(gate.agreement, record.signature) if record is not None else None
    figures = observed.rollout_figures
    return CandidateFacts(
        gate_form=form,
        gate=observed.rollout_gate,
        gate_problem=problem,
        figures=figures if figures is not None and figures.candidate == key else None,
        outcome=outcome,
        ready=deployment_serves(live, key),
        trouble=trouble.describe() if trouble is not None and trouble.reason in ROLLBACK_TROUBLES else None,
        serving_promoted=deployment_serves(observed.get(DEPLOYMENT.kind, namespace, name_of(nim)), key),
        action=requested_action(nim, key),
    )


def started(nim: NimService, key: str) -> RolloutStatus:
    return RolloutStatus(
        phase=RolloutPhase.PROGRESSING,
        candidate=key,
        generation=nim.metadata.generation or 0,
        traffic=split_of(nim),
        message="the candidate's engine is being built",
    )


def advance(
    nim: NimService, previous: RolloutStatus, facts: CandidateFacts, now: datetime
) -> tuple[RolloutStatus, float | None]:
    """The rollout after this reconcile, and the seconds until its step's hold ends (None: no clock runs)."""
    steps = (nim.spec.rollout.steps if nim.spec.rollout else None) or []
    if previous.phase in (RolloutPhase.ROLLED_BACK, RolloutPhase.PROMOTED):
        return previous, None
    if previous.phase == RolloutPhase.PROMOTING:
        # The serving Deployment rolls to the candidate's engine already: nothing goes back from here (an
        # abort, the candidate's own pods); the serving unit's trouble is the NimService's to report.
        if facts.serving_promoted:
            done = f"promoted: the serving Deployment serves engine {previous.candidate[:12]}"
            promoted = _with(
                previous, phase=RolloutPhase.PROMOTED, candidate_weight=0, finished_at=now, message=done
            )
            return promoted, None
        return previous, None
    if facts.action is Action.ABORT:
        return _rolled_back(previous, "aborted by `nimify rollout abort`", now), None
    if facts.outcome.state.failed:
        state = facts.outcome.state
        failed = f"the candidate's engine failed: {state.reason}: {state.message}"
        return _rolled_back(previous, failed, now), None
    if facts.trouble is not None:
        return _rolled_back(previous, f"the candidate's pods fail: {facts.trouble}", now), None
    if facts.action is Action.PROMOTE:
        return _promoting(previous, "promoted by `nimify rollout promote`"), None
    if not facts.outcome.state.ready or not facts.ready:
        waiting = (
            "the candidate's engine is being built"
            if not facts.outcome.state.ready
            else "the candidate's replicas are starting"
        )
        return _with(
            previous,
            phase=RolloutPhase.PROGRESSING,
            candidate_weight=0,
            step_started_at=None,
            message=waiting,
        ), None
    if facts.gate_problem is not None:
        return _rolled_back(previous, f"the answer gate cannot judge: {facts.gate_problem}", now), None
    if facts.gate_form is not None and previous.gate is None:
        form = facts.gate_form.value.lower()
        if facts.gate is None:
            asking = f"the answer gate ({form}) compares both units' answers on the same inputs"
            return _with(
                previous, phase=RolloutPhase.PROGRESSING, candidate_weight=0, step_started_at=None,
                message=asking,
            ), POLL_SECONDS  # fmt: skip
        previous = _with(previous, gate=facts.gate)
        if not facts.gate.passed:
            return _rolled_back(previous, f"the answer gate ({form}): {facts.gate.message}", now), None
    step = min(previous.step, len(steps))
    if step >= len(steps):
        return _promoting(previous, "every step passed"), None
    weight, hold = steps[step].weight, steps[step].hold_seconds
    if nim.spec.rollout is not None and nim.spec.rollout.paused:
        paused = f"paused at step {step + 1} of {len(steps)} ({weight}%)"
        return _with(
            previous, phase=RolloutPhase.PAUSED, step=step, candidate_weight=weight, step_started_at=None,
            message=paused,
        ), None  # fmt: skip
    begun = previous.step_started_at
    if begun is None or previous.phase == RolloutPhase.PAUSED:
        return _step(previous, step, len(steps), weight, hold, now), float(hold)
    analysis = nim.spec.rollout.analysis if nim.spec.rollout is not None else None
    interval = float(analysis.interval_seconds) if analysis is not None else 2 * POLL_SECONDS
    due = figures_due(nim, previous)
    figures = facts.figures
    enough = False
    if due and figures is not None and figures.step == step and figures.error is None:
        verdict = judge(analysis, steps[step].min_requests, figures)
        enough = verdict.enough_requests
        assert figures.candidate_figures is not None
        previous = _with(
            previous,
            analysis=RolloutAnalysisStatus(
                step=step,
                window_seconds=figures.window_seconds,
                candidate=figures.candidate_figures,
                serving=figures.serving_figures,
                verdicts=list(verdict.verdicts),
            ),
        )
        if verdict.broken is not None:
            return _rolled_back(previous, f"analysis: {describe(verdict.broken, figures)}", now), None
    left = hold - (now - begun).total_seconds()
    if left > 0:
        return _with(previous, step=step, candidate_weight=weight), min(left, interval) if due else left
    if due and not enough:
        if figures is not None and figures.error is not None:
            why = f"the analysis cannot read the figures: {figures.error}"
        else:
            seen = figures.candidate_figures.requests if figures and figures.candidate_figures else 0
            why = f"the candidate answered {seen} of the {steps[step].min_requests} requests it needs"
        held = f"step {step + 1} of {len(steps)} ({weight}%) holds: {why}"
        return _with(previous, step=step, candidate_weight=weight, message=held[:1024]), interval
    if step + 1 >= len(steps):
        return _promoting(_with(previous, step=len(steps)), "every step passed"), None
    following = steps[step + 1]
    return _step(previous, step + 1, len(steps), following.weight, following.hold_seconds, now), float(
        following.hold_seconds
    )


def _with(previous: RolloutStatus, **changes: object) -> RolloutStatus:
    return previous.model_copy(update=changes)


def _step(
    previous: RolloutStatus, step: int, steps: int, weight: int, hold: int, now: datetime
) -> RolloutStatus:
    return _with(
        previous,
        phase=RolloutPhase.PROGRESSING,
        step=step,
        step_started_at=now,
        candidate_weight=weight,
        message=f"step {step + 1} of {steps}: {weight}% of the traffic for {hold} s",
    )


def _promoting(previous: RolloutStatus, why: str) -> RolloutStatus:
    return _with(
        previous,
        phase=RolloutPhase.PROMOTING,
        step_started_at=None,
        message=f"{why}: the serving Deployment rolls to engine {previous.candidate[:12]}",
    )


def _rolled_back(previous: RolloutStatus, why: str, now: datetime | None) -> RolloutStatus:
    # step_started_at stays: when the step the candidate failed in began (traffic to rollback).
    return _with(
        previous, phase=RolloutPhase.ROLLED_BACK, candidate_weight=0, finished_at=now, message=why[:1024]
    )


def superseded(previous: RolloutStatus | None, why: str, now: datetime | None) -> RolloutStatus | None:
    """The rollout once the spec asks for the serving engine again (or no longer for a canary): one still
    running has nothing left to bring in."""
    if previous is None or previous.phase in (RolloutPhase.ROLLED_BACK, RolloutPhase.PROMOTED):
        return previous
    return _rolled_back(previous, why, now)


def rolled_out_condition(status: RolloutStatus | None, pending: bool) -> tuple[str, str, str, str]:
    """The RolledOut condition (with spec.rollout Canary): True once the spec's engine serves everything;
    `pending`: the spec asks for an engine the serving unit does not serve (a rollout runs or rolled it
    back)."""
    kind = ConditionType.ROLLED_OUT.value
    if not pending or status is None or status.phase == RolloutPhase.PROMOTED:
        reason = (
            ConditionReason.PROMOTED
            if status is not None and status.phase == RolloutPhase.PROMOTED
            else ConditionReason.SERVING
        )
        return kind, ConditionStatus.TRUE.value, reason.value, "the spec's engine serves all the traffic"
    reason = {
        RolloutPhase.PROGRESSING: ConditionReason.ROLLOUT_PROGRESSING,
        RolloutPhase.PAUSED: ConditionReason.ROLLOUT_PAUSED,
        RolloutPhase.PROMOTING: ConditionReason.PROMOTING,
        RolloutPhase.ROLLED_BACK: ConditionReason.ROLLED_BACK,
    }[status.phase]
    return kind, ConditionStatus.FALSE.value, reason.value, status.message
