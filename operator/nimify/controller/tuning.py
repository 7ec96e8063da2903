"""Tuned serving (spec.triton.tuning): which tuning the serving unit's engine needs, and where it stands.
Pure: it reads observed objects and says what to do.

A tuning is keyed by what its figures depend on (`tuning_key`): the engine, the GPU product it runs on, the
Triton image, the default config it starts from and the objective and search. While the status records a
tuning under the current key, that is the answer. Otherwise the tuning Job named from the key (one per key
and claim, so NimServices serving the same engine share it) measures, or finds the figures it left in the
engine cache before (`engines/KEY/tuning/TUNING.json` on the claim) and reports them without a sweep. The
default config serves while it runs, and whenever no config met the objective.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from nimify.api import (
    EngineRecord,
    NimService,
    TunedConfig,
    TuningMeasurement,
    TuningStatus,
)
from nimify.api.conditions import ConditionReason, ConditionType
from nimify.controller.engine_step import job_condition, pod_finished, termination_result
from nimify.controller.observed import Observed
from nimify.render.tuning_job import objective, tuning_job_name, tuning_key
from nimify.render.units import ServingUnit
from nimify.triton.tuning import Candidate, Objective, TuningResult

#: Rows of the measured table the status keeps (the default config's first, then the fastest).
STATUS_ROWS = 48


@dataclass(frozen=True)
class TuningOutcome:
    """Where the serving unit's tuning stands: the Tuned condition, what the status records, the config
    that serves (None: the default), and the Job to create."""

    ok: bool
    reason: str
    message: str
    key: str
    status: TuningStatus | None = None
    tuned: Candidate | None = None
    create_job: bool = False

    def condition(self) -> tuple[str, str, str, str]:
        return ConditionType.TUNED.value, "True" if self.ok else "False", self.reason, self.message


def _config(candidate: Candidate) -> TunedConfig:
    return TunedConfig(
        instances=candidate.instances,
        preferred_batch_sizes=list(candidate.preferred_batch_sizes) or None,
        max_queue_delay_microseconds=candidate.max_queue_delay_us,
    )


def tuning_status(key: str, goal: Objective, result: TuningResult) -> TuningStatus:
    """The status' record of a tuning: the choice, and the table (the default's rows, then the fastest)."""
    rows = [m for m in result.measurements if m.candidate == result.default]
    rest = sorted(
        (m for m in result.measurements if m.candidate != result.default), key=lambda m: -m.throughput
    )
    kept = [*rows, *rest][:STATUS_ROWS]
    closest = None
    if not result.met and result.chosen is not None:
        closest = _config(result.chosen)
    return TuningStatus(
        key=key,
        objective=goal.describe(),
        chosen=_config(result.chosen) if result.met and result.chosen is not None else None,
        closest=closest,
        met=result.met,
        partial=result.partial,
        capacity_per_replica=None if result.capacity is None else round(result.capacity, 2),
        trials=result.trials,
        seconds=round(result.seconds, 1),
        measurements=[
            TuningMeasurement(
                config=_config(m.candidate),
                concurrency=m.concurrency,
                throughput=round(m.throughput, 2),
                p50_milliseconds=round(m.p50_ms, 3),
                p99_milliseconds=round(m.p99_ms, 3),
                queue_microseconds=round(m.queue_us, 1),
                failed=m.failed,
            )
            for m in kept
        ],
    )


def _from_status(status: TuningStatus, *, reused: bool) -> tuple[bool, str, str, Candidate | None]:
    if status.met and status.chosen is not None:
        chosen = status.chosen
        candidate = Candidate(
            chosen.instances, tuple(chosen.preferred_batch_sizes or ()), chosen.max_queue_delay_microseconds
        )
        reason = ConditionReason.TUNING_REUSED if reused else ConditionReason.TUNING_APPLIED
        capacity = (
            f", {status.capacity_per_replica:g} infer/s per replica" if status.capacity_per_replica else ""
        )
        return True, reason.value, f"{_text(candidate)} ({status.objective}{capacity})", candidate
    return (
        False,
        ConditionReason.TUNING_OBJECTIVE_MISSED.value,
        f"no config met {status.objective} in {status.trials} measured; the default config serves"
        + (f" (closest: {_text_config(status.closest)})" if status.closest else ""),
        None,
    )


def _text(candidate: Candidate) -> str:
    sizes = ",".join(map(str, candidate.preferred_batch_sizes)) or "any"
    return (
        f"{candidate.instances} instance(s), preferred batch sizes {sizes},"
        f" queue delay {candidate.max_queue_delay_us} µs"
    )


def _text_config(config: TunedConfig) -> str:
    candidate = Candidate(
        config.instances, tuple(config.preferred_batch_sizes or ()), config.max_queue_delay_microseconds
    )
    return _text(candidate)


def tuning_outcome(
    nim: NimService, unit: ServingUnit, record: EngineRecord, observed: Observed
) -> TuningOutcome:
    """Where the serving unit's tuning stands (spec.triton.tuning set, its engine ready)."""
    key = tuning_key(unit, record)
    recorded = nim.status.tuning if nim.status is not None else None
    if recorded is not None and recorded.key == key:
        reused = _condition_reason(nim) == ConditionReason.TUNING_REUSED.value
        ok, reason, message, tuned = _from_status(recorded, reused=reused)
        return TuningOutcome(ok, reason, message, key, recorded, tuned)
    namespace = nim.metadata.namespace or ""
    if (peer := observed.tuning(namespace, key, besides=nim.metadata.name or "")) is not None:
        ok, reason, message, tuned = _from_status(peer, reused=True)
        if ok:
            reason = ConditionReason.TUNING_REUSED.value
        return TuningOutcome(ok, reason, message, key, peer, tuned)
    job_name = tuning_job_name(unit.location.claim, key)
    running = TuningOutcome(
        False,
        ConditionReason.TUNING.value,
        f"Job {job_name} measures configs; the default config serves",
        key,
    )
    job = observed.get("Job", namespace, job_name)
    if job is None:
        return replace(running, create_job=True)
    pod = observed.build_pod(namespace, job_name)
    result = termination_result(pod)
    if result is None:
        # Killed at its deadline, or a pod that ended leaving nothing; a Job expires after its TTL and the
        # tuning is tried again then, like a conversion.
        if job_condition(job, "Failed") or pod_finished(pod):
            return TuningOutcome(
                False, ConditionReason.TUNING_FAILED.value, f"Job {job_name} ended without a result", key
            )
        return running
    if not result.get("ok"):
        error = result.get("error") or {}
        message = f"Job {job_name}: {error.get('reason', 'TuningFailed')}: {error.get('message', '')}"[:1000]
        return TuningOutcome(False, ConditionReason.TUNING_FAILED.value, message, key)
    try:
        goal = objective(unit.spec.triton.tuning)  # type: ignore[arg-type]
        status = tuning_status(key, goal, TuningResult.from_json(result["tuning"]))
    except (KeyError, TypeError, ValueError) as error:
        return TuningOutcome(
            False,
            ConditionReason.TUNING_FAILED.value,
            f"Job {job_name} left an unreadable result: {error}",
            key,
        )
    ok, reason, message, tuned = _from_status(status, reused=False)
    return TuningOutcome(ok, reason, message, key, status, tuned)


def _condition_reason(nim: NimService) -> str | None:
    if nim.status is None or (condition := nim.status.condition(ConditionType.TUNED.value)) is None:
        return None
    return condition.reason
