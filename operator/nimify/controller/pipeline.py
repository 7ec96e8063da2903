"""Where a pipeline's serving unit stands, from its members' engines: building while any builds, failed when
any failed or when the members' real signatures do not connect as the spec says, else ready with the
ensemble's config beside the members', once a check Job has compared the ensemble served by a real Triton
with the members chained in ONNX Runtime (engine/pipeline_check.py). Pure.

The pipeline serves only once every member's engine is ready and the graph checks out; until then its
Deployment (if any) keeps serving the chain it had, so a change to one member never interrupts the others.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pydantic import ValidationError

from nimify.api import EngineRecord, EngineStatus, ModelSignature, NimService, ParityStatus, TensorSpec
from nimify.api.conditions import ConditionReason
from nimify.controller.conditions import EngineState
from nimify.controller.engine_step import EngineOutcome, job_condition, pod_finished, termination_result
from nimify.controller.observed import Body, Observed
from nimify.engine.location import REPOSITORY_MODEL_DIR
from nimify.engine.pipeline_document import CheckDocument
from nimify.model.errors import ModelError
from nimify.model.signature import TensorInfo
from nimify.render.pipeline_check import check_digest, render_check_job
from nimify.render.triton_config import CONFIG_KEY, config_text, member_config_key, toolkit_signature
from nimify.render.units import ServingUnit
from nimify.settings import OperatorSettings
from nimify.triton import ensemble
from nimify.triton.ensemble import Member, plan_ensemble, render_ensemble_config

Members = list[tuple[ServingUnit, EngineOutcome]]

_REASONS = {
    ensemble.TENSOR_UNKNOWN: ConditionReason.PIPELINE_TENSOR_UNKNOWN,
    ensemble.TENSOR_MISMATCH: ConditionReason.PIPELINE_TENSOR_MISMATCH,
    ensemble.INPUT_UNFED: ConditionReason.PIPELINE_INPUT_UNFED,
    ensemble.BATCHING_MISMATCH: ConditionReason.PIPELINE_BATCHING_MISMATCH,
}


@dataclass(frozen=True)
class PipelineOutcome:
    outcome: EngineOutcome
    config_hash: str | None = None
    config: dict[str, str] | None = None  # the ConfigMap's data: the ensemble's config and each member's
    job: Body | None = None  # the check Job (created when the outcome says create_job)


def _state(members: Members) -> EngineState | None:
    """The pipeline's engine state while a member is not ready (None once all are)."""
    for unit, outcome in members:
        if outcome.state.failed:
            state = outcome.state
            return EngineState(False, state.reason, f"member {unit.model_name}: {state.message}", True)
    waiting = [(unit, outcome) for unit, outcome in members if outcome.record is None]
    if not waiting:
        return None
    unit, outcome = waiting[0]
    return EngineState(
        False,
        outcome.state.reason,
        f"{len(members) - len(waiting)} of {len(members)} member engines ready; {unit.model_name}:"
        f" {outcome.state.message}",
    )


def _spec(tensor: TensorInfo) -> TensorSpec:
    return TensorSpec(name=tensor.name, dtype=tensor.dtype, shape=tensor.shape)


def pipeline_outcome(
    nim: NimService, unit: ServingUnit, members: Members, observed: Observed, settings: OperatorSettings
) -> PipelineOutcome:
    """Where the pipeline served by `unit` stands, from its members' outcomes (in `unit.members` order)."""
    pipeline = unit.spec.pipeline
    assert pipeline is not None, "a pipeline's unit"
    waiting = _state(members)
    if waiting is not None:
        return PipelineOutcome(EngineOutcome(waiting))
    records = {m.model_name: outcome.record for m, outcome in members if outcome.record is not None}
    try:
        planned = plan_ensemble(
            unit.model_name,
            pipeline,
            {
                name: Member(toolkit_signature(record.signature), record.engine.max_batch_size or 0)
                for name, record in records.items()
            },
        )
    except ModelError as error:
        reason = _REASONS[error.reason].value
        return PipelineOutcome(EngineOutcome(EngineState(False, reason, error.message, failed=True)))
    config = {CONFIG_KEY: render_ensemble_config(planned)}
    for member, outcome in members:
        assert outcome.record is not None
        config[member_config_key(member)] = config_text(member, outcome.record)
    digest = hashlib.sha256("".join(f"{k}\n{v}" for k, v in sorted(config.items())).encode()).hexdigest()[:16]
    check = check_digest(unit, digest)
    gpu_product = next(iter(records.values())).engine.gpu_product
    record = EngineRecord(
        engine=EngineStatus(
            cache_key=f"pipeline-{check}", gpu_product=gpu_product, max_batch_size=planned.max_batch_size
        ),
        signature=ModelSignature(
            inputs=[_spec(t) for t in planned.signature.inputs],
            outputs=[_spec(t) for t in planned.signature.outputs],
        ),
    )
    cached = all(o.state.reason == ConditionReason.ENGINE_CACHE_HIT.value for _, o in members)
    ready = EngineState(
        True,
        (ConditionReason.ENGINE_CACHE_HIT if cached else ConditionReason.ENGINE_BUILT).value,
        f"{len(members)} member engines and the ensemble ready",
    )
    if pipeline.parity.samples == 0:
        return PipelineOutcome(EngineOutcome(ready, record), digest, config)
    served = nim.status.record() if nim.status is not None else None
    if (
        served is not None
        and served.engine.cache_key == record.engine.cache_key
        and served.parity is not None
    ):
        return PipelineOutcome(EngineOutcome(ready, served), digest, config)  # checked before
    document = CheckDocument(
        unit.model_name,
        pipeline,
        config[CONFIG_KEY],
        {
            m.model_name: (config[member_config_key(m)], f"{m.location.repository}/{REPOSITORY_MODEL_DIR}")
            for m, _ in members
        },
        planned.signature,
        planned.max_batch_size,
    )
    job = render_check_job(nim, unit, document, check, settings, gpu_product)
    checked = _check(observed, nim.metadata.namespace or "", job["metadata"]["name"])
    if isinstance(checked, ParityStatus):
        checked_record = record.model_copy(update={"parity": checked})
        return PipelineOutcome(EngineOutcome(ready, checked_record), digest, config)
    if checked is None:
        return PipelineOutcome(EngineOutcome(_checking(job["metadata"]["name"]), create_job=True), job=job)
    return PipelineOutcome(EngineOutcome(checked), job=job)


def _checking(job: str) -> EngineState:
    message = f"Job {job} checks the pipeline end to end"
    return EngineState(False, ConditionReason.CHECKING_PIPELINE.value, message)


def _check_failed(message: str) -> EngineState:
    return EngineState(False, ConditionReason.PIPELINE_CHECK_FAILED.value, message, failed=True)


def _check(observed: Observed, namespace: str, name: str) -> ParityStatus | EngineState | None:
    """The check Job's verdict: its parity record when it passed, the state to report while it runs or after
    it failed, None when the Job is not there (to create)."""
    job = observed.get("Job", namespace, name)
    if job is None:
        return None
    pod = observed.build_pod(namespace, name)
    result = termination_result(pod)
    if result is None:
        if failed := job_condition(job, "Failed"):
            return _check_failed(f"Job {name} failed without a result: {failed.get('message', '')}")
        if job_condition(job, "Complete") and pod_finished(pod):
            return _check_failed(
                f"Job {name} completed, but its pod left no result; delete the Job to run it again"
            )
        return _checking(name)  # running, or its pod's end not seen yet (the watch can trail the Job's)
    if result.get("ok"):
        try:
            return ParityStatus.model_validate(result.get("parity") or {})
        except ValidationError:
            return _check_failed(f"Job {name} left a result that does not read")
    error = result.get("error") or {}
    return _check_failed(
        f"Job {name}: {error.get('reason', '')}: {error.get('message', '')}; delete the Job to run it again"
    )
