"""Where the engine for the current spec stands: already served, reusable from a peer, built by a Job,
still building, or failed. Pure: it reads observed objects and says what to do."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nimify.api import NimService
from nimify.api.conditions import ConditionReason, ConditionType
from nimify.api.status import ConditionStatus
from nimify.controller.conditions import EngineState
from nimify.controller.observed import Body, Observed
from nimify.engine.location import EngineLocation
from nimify.engine.result import decode_termination_message
from nimify.render.identity import build_job_name

# Error reasons `nimify convert` reports that have a condition reason of their own; others keep theirs.
_REASON_BY_PREFIX = (
    ("Checksum", ConditionReason.CHECKSUM_MISMATCH),
    ("Digest", ConditionReason.CHECKSUM_MISMATCH),
    ("Fetch", ConditionReason.MODEL_FETCH_FAILED),
    ("Download", ConditionReason.MODEL_FETCH_FAILED),
    ("ParityInputsRequired", ConditionReason.PARITY_INPUTS_REQUIRED),
    ("Parity", ConditionReason.PARITY_FAILED),
)


@dataclass(frozen=True)
class EngineOutcome:
    state: EngineState
    engine_status: dict[str, Any] | None = None  # status.engine / signature / parity to record, when ready
    create_job: bool = False
    finished_build: bool = False  # the Job's result was read just now (count it once in metrics)


def _location_text(location: EngineLocation) -> str:
    return f"{location.claim}/{location.repository}"


def _condition_status(nim: NimService, kind: ConditionType) -> tuple[str, str] | None:
    if nim.status is None or (condition := nim.status.condition(kind.value)) is None:
        return None
    return condition.status.value, condition.reason


def served_record(nim: NimService) -> dict[str, Any] | None:
    """The engine/signature/parity triple in the NimService's status, as camelCase dicts."""
    if nim.status is None or nim.status.engine is None:
        return None
    status = nim.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {key: status[key] for key in ("engine", "signature", "parity") if key in status}


def termination_result(pod: Body | None) -> dict[str, Any] | None:
    if pod is None:
        return None
    for container in pod.get("status", {}).get("containerStatuses") or []:
        message = (container.get("state", {}).get("terminated") or {}).get("message")
        if message:
            result = decode_termination_message(message)
            if result is None:  # e.g. a crash: FallbackToLogsOnError put the log's tail there
                return {"ok": False, "error": {"reason": "EngineBuildFailed", "message": message[-1000:]}}
            return result
    return None


def _oom_killed(pod: Body | None) -> bool:
    statuses = (pod or {}).get("status", {}).get("containerStatuses") or []
    return any((c.get("state", {}).get("terminated") or {}).get("reason") == "OOMKilled" for c in statuses)


def _failure_reason(reason: str | None) -> str:
    if not reason:
        return ConditionReason.ENGINE_BUILD_FAILED.value
    for prefix, mapped in _REASON_BY_PREFIX:
        if reason.startswith(prefix):
            return mapped.value
    return reason


def _job_condition(job: Body, kind: str) -> Body | None:
    return next(
        (
            c
            for c in job.get("status", {}).get("conditions") or []
            if c.get("type") == kind and c.get("status") == "True"
        ),
        None,
    )


def _record_from_result(result: dict[str, Any], location: EngineLocation) -> dict[str, Any]:
    engine = dict(result.get("engine") or {})
    engine |= {
        "cacheKey": location.cache_key,
        "location": _location_text(location),
        "cacheHit": False,
        "maxBatchSize": result.get("maxBatchSize") or 0,
    }
    record: dict[str, Any] = {"engine": engine}
    for key in ("signature", "parity"):
        if result.get(key):
            record[key] = result[key]
    return record


def engine_outcome(nim: NimService, location: EngineLocation, observed: Observed) -> EngineOutcome:
    namespace = nim.metadata.namespace or ""
    served = served_record(nim)
    if served and served["engine"].get("location") == _location_text(location) and "signature" in served:
        reason = (_condition_status(nim, ConditionType.ENGINE_READY) or ("", ConditionReason.ENGINE_BUILT))[1]
        if reason not in (ConditionReason.ENGINE_BUILT, ConditionReason.ENGINE_CACHE_HIT):
            reason = ConditionReason.ENGINE_BUILT
        return EngineOutcome(EngineState(True, reason, f"engine {location.cache_key[:12]} ready"), served)

    if peer := observed.ready_engine(
        namespace, location.claim, location.cache_key, besides=nim.metadata.name or ""
    ):
        record = json.loads(json.dumps(peer))
        record["engine"]["cacheHit"] = True
        return EngineOutcome(
            EngineState(
                True,
                ConditionReason.ENGINE_CACHE_HIT.value,
                f"engine {location.cache_key[:12]} reused from the cache on {location.claim}",
            ),
            record,
        )

    job_name = build_job_name(location.claim, location.cache_key, location.conversion_key)
    # The same words whether the Job is being created, waits for a node or runs: the Job's own status tells
    # those apart, and a message that moved with them would be one more status patch per NimService.
    building = EngineState(False, ConditionReason.BUILDING_ENGINE.value, f"Job {job_name} builds the engine")
    job = observed.get("Job", namespace, job_name)
    if job is None:
        return EngineOutcome(building, create_job=True)
    pod = observed.build_pod(namespace, job_name)
    result = termination_result(pod)
    # A conversion pod that succeeded is the Job's success: its result is final, and waiting for the Job
    # controller to say so (it batches pod updates, and is rate limited like every controller) only delays
    # every NimService that waits for this engine.
    if _job_condition(job, "Complete") or (pod or {}).get("status", {}).get("phase") == "Succeeded":
        if result is None:  # the pod's watch event can trail the Job's: wait for it
            return EngineOutcome(building)
        if result.get("ok") and result.get("signature"):
            return EngineOutcome(
                EngineState(True, ConditionReason.ENGINE_BUILT.value, f"built by Job {job_name}"),
                _record_from_result(result, location),
                finished_build=True,
            )
        return EngineOutcome(
            EngineState(
                False,
                ConditionReason.ENGINE_BUILD_FAILED.value,
                f"Job {job_name} completed without a usable result",
                failed=True,
            ),
            finished_build=True,
        )
    if failed := _job_condition(job, "Failed"):
        if _oom_killed(pod):  # killed by the kernel: its termination message is only the log's tail
            reason = ConditionReason.OOM_KILLED.value
            message = (
                f"Job {job_name}: the conversion was killed for using more memory than its limit;"
                " raise spec.engine.buildResources.memoryLimit (or memory), and a new Job runs"
            )
        elif failed.get("reason") == "DeadlineExceeded":
            reason = ConditionReason.ENGINE_BUILD_TIMED_OUT.value
            message = f"Job {job_name} ran past spec.engine.buildTimeoutSeconds"
        elif result and result.get("error"):
            reason = _failure_reason(result["error"].get("reason"))
            message = f"Job {job_name}: {result['error'].get('message', '')}"
        else:
            reason = ConditionReason.ENGINE_BUILD_FAILED.value
            message = f"Job {job_name} failed: {failed.get('message') or failed.get('reason', '')}"
        return EngineOutcome(EngineState(False, reason, message, failed=True), finished_build=True)
    return EngineOutcome(building)


def is_engine_ready(nim_status: dict[str, Any]) -> bool:
    conditions = nim_status.get("conditions") or []
    return any(
        c.get("type") == ConditionType.ENGINE_READY.value and c.get("status") == ConditionStatus.TRUE.value
        for c in conditions
    )
