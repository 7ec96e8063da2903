"""Where a serving unit's engine stands: already served, reusable from a peer, built by a Job, still
building, or failed. Pure: it reads observed objects and says what to do.

The engine travels typed (`EngineRecord`): decoded once from the Job's termination message (or read from a
status), dumped once into the status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from nimify.api import EngineRecord, NimService, UnitRole
from nimify.api.conditions import ConditionReason, ConditionType
from nimify.api.status import ConditionStatus
from nimify.controller.conditions import EngineState
from nimify.controller.model_images import failure_reason, image_refusal, recorded_image
from nimify.controller.observed import Body, Observed
from nimify.engine.location import EngineLocation
from nimify.engine.model_image import ResolvedImage, engine_document
from nimify.engine.result import decode_termination_message
from nimify.model.errors import ModelError
from nimify.render.identity import build_job_name
from nimify.render.units import ServingUnit

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
    record: EngineRecord | None = None  # the engine to serve and record, when ready
    create_job: bool = False
    finished_build: bool = False  # the Job's result was read just now (count it once in metrics)


def _location_text(location: EngineLocation) -> str:
    return f"{location.claim}/{location.repository}"


def _condition_status(nim: NimService, kind: ConditionType) -> tuple[str, str] | None:
    if nim.status is None or (condition := nim.status.condition(kind.value)) is None:
        return None
    return condition.status.value, condition.reason


def served_record(nim: NimService, unit: ServingUnit) -> EngineRecord | None:
    """The engine the NimService's status records for `unit` (the serving unit's is status.engine,
    .signature and .parity: statuses written before units have only those)."""
    if nim.status is None:
        return None
    if unit.role is UnitRole.SERVING:
        return nim.status.record()
    entry = nim.status.unit(unit.name)
    return entry.record() if entry is not None else None


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


def pod_finished(pod: Body | None) -> bool:
    """Whether the pod's containers have all terminated and it says it succeeded (so no result will come)."""
    status = (pod or {}).get("status", {})
    statuses = status.get("containerStatuses") or []
    return (
        status.get("phase") == "Succeeded"
        and bool(statuses)
        and all((c.get("state") or {}).get("terminated") for c in statuses)
    )


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


def job_condition(job: Body, kind: str) -> Body | None:
    return next(
        (
            c
            for c in job.get("status", {}).get("conditions") or []
            if c.get("type") == kind and c.get("status") == "True"
        ),
        None,
    )


def record_from_result(result: dict[str, Any], location: EngineLocation) -> EngineRecord | None:
    """The engine a conversion's result describes, where `location` puts it; None if it describes none."""
    engine = dict(result.get("engine") or {})
    engine |= {
        "cacheKey": location.cache_key,
        "location": _location_text(location),
        "cacheHit": False,
        "maxBatchSize": result.get("maxBatchSize") or 0,
    }
    if location.model:
        engine["model"] = location.model
    document = {"engine": engine} | {key: result[key] for key in ("signature", "parity") if result.get(key)}
    try:
        return EngineRecord.model_validate(document)
    except ValidationError:
        return None


def served_reason(nim: NimService, unit: ServingUnit) -> str:
    """How the served engine came to be (EngineBuilt or EngineCacheHit): the serving unit's condition says."""
    if unit.role is not UnitRole.SERVING:
        return ConditionReason.ENGINE_BUILT.value
    reason = (_condition_status(nim, ConditionType.ENGINE_READY) or ("", ConditionReason.ENGINE_BUILT))[1]
    if reason not in (ConditionReason.ENGINE_BUILT, ConditionReason.ENGINE_CACHE_HIT):
        return ConditionReason.ENGINE_BUILT.value
    return reason


def image_outcome(nim: NimService, unit: ServingUnit, observed: Observed) -> EngineOutcome:
    """A model image's engine: the one status records while it holds (model_images.recorded_image), else
    the image the reconcile resolved, once its labels fit the spec."""
    served = served_record(nim, unit)
    if served is not None and recorded_image(nim, unit, served.engine.location):
        return EngineOutcome(
            EngineState(
                True, ConditionReason.ENGINE_FROM_IMAGE.value, f"model image {served.engine.location}"
            ),
            served,
        )
    uri = unit.spec.the_model.uri
    found = observed.model_images.get(uri)
    if found is None:
        found = ModelError("ModelImageUnreachable", f"{uri} was not resolved")
    if isinstance(found, ModelError):
        return EngineOutcome(EngineState(False, failure_reason(found), found.message, failed=True))
    assert isinstance(found, ResolvedImage)
    if (refusal := image_refusal(unit, found.labels)) is not None:
        reason, message = refusal
        return EngineOutcome(EngineState(False, reason.value, f"{found.reference}: {message}", failed=True))
    try:
        record = EngineRecord.model_validate(engine_document(found.labels, str(found.reference)))
    except (ValidationError, ValueError) as error:
        return EngineOutcome(
            EngineState(
                False,
                ConditionReason.MODEL_IMAGE_UNLABELLED.value,
                f"{found.reference}: its dev.nimify.* labels do not describe an engine: {error}"[:1000],
                failed=True,
            )
        )
    return EngineOutcome(
        EngineState(True, ConditionReason.ENGINE_FROM_IMAGE.value, f"model image {found.reference}"), record
    )


def engine_outcome(nim: NimService, unit: ServingUnit, observed: Observed) -> EngineOutcome:
    namespace, location = nim.metadata.namespace or "", unit.location
    if location.model_image is not None:
        return image_outcome(nim, unit, observed)
    served = served_record(nim, unit)
    if served is not None and served.engine.location == _location_text(location):
        reason = served_reason(nim, unit)
        return EngineOutcome(EngineState(True, reason, f"engine {location.cache_key[:12]} ready"), served)

    if peer := observed.ready_engine(
        namespace, location.claim, location.cache_key, besides=nim.metadata.name or ""
    ):
        record = peer.model_copy(update={"engine": peer.engine.model_copy(update={"cache_hit": True})})
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
    if job_condition(job, "Complete") or (pod or {}).get("status", {}).get("phase") == "Succeeded":
        if result is None and pod_finished(pod):
            message = (
                f"Job {job_name} completed, but its pod left no result in its termination message (was the"
                " container's command overridden, or did it run on a node that runs no containers?); delete"
                " the Job to run it again"
            )
            return EngineOutcome(
                EngineState(False, ConditionReason.ENGINE_RESULT_MISSING.value, message, failed=True),
                finished_build=True,
            )
        if result is None:  # the pod's watch event can trail the Job's: wait for it
            return EngineOutcome(building)
        built = record_from_result(result, location) if result.get("ok") else None
        if built is not None:
            return EngineOutcome(
                EngineState(True, ConditionReason.ENGINE_BUILT.value, f"built by Job {job_name}"),
                built,
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
    if failed := job_condition(job, "Failed"):
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
