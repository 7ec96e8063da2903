"""The status one reconcile reports, from the desired set, how its writes went and what the watches saw. Pure.

Refusals come first: a child the apiserver would not take is what the user must act on, whatever else is
going on. Then a Deployment that says it cannot progress, then trouble of the Triton pods; without any of them
the conditions follow the engine and the rollout.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nimify.api import Condition, EngineRecord, NimService, NimServiceStatus, UnitRole, UnitStatus
from nimify.api.conditions import ConditionReason, ConditionType
from nimify.api.spec import Autoscaler
from nimify.controller.autoscaling import autoscaler_status, keda_hpa_name, scaling_verdict
from nimify.controller.children import AUTOSCALER, CLAIM, DEPLOYMENT, JOB, SCALED_OBJECT
from nimify.controller.conditions import (
    EngineState,
    Observation,
    Problem,
    ServingState,
    desired_conditions,
    merge_conditions,
)
from nimify.controller.desired import DesiredSet, UnitPlan
from nimify.controller.observed import Body, Observed
from nimify.controller.rollout import rolled_out_condition, uses_canary
from nimify.controller.writes import Written
from nimify.render.identity import CONFIG_HASH_ANNOTATION, ENGINE_KEY_ANNOTATION, server_name, server_selector
from nimify.render.routes import route_host
from nimify.render.service import service_endpoints

# Children the engine cannot be built without: their refusal is the engine's failure too.
ENGINE_KINDS = (JOB.kind, CLAIM.kind)


@dataclass(frozen=True)
class Report:
    status: dict[str, Any]
    conditions: list[Condition]


def serving_state(
    deployment: Body | None, engine_key: str | None, config: str | None, *, changing: bool = False
) -> ServingState:
    """What the Deployment serves; `changing`: this pass applied a change to it, which its status (as the
    watch showed it before) does not describe yet, so its rollout is not done (Ready waits for the next look:
    a replica count raised from 1 to 2 is not Ready on the one replica there was)."""
    if deployment is None:
        return ServingState(None, 0, 0, rolled_out=False, serves_current_engine=False)
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    annotations = spec.get("template", {}).get("metadata", {}).get("annotations") or {}
    updated = status.get("updatedReplicas", 0)
    rolled_out = (
        not changing
        and status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
        and status.get("replicas", 0) == updated
    )
    return ServingState(
        desired_replicas=spec.get("replicas", 1),
        ready_replicas=status.get("readyReplicas", 0),
        updated_replicas=updated,
        rolled_out=rolled_out,
        serves_current_engine=engine_key is not None
        and annotations.get(ENGINE_KEY_ANNOTATION) == engine_key
        and annotations.get(CONFIG_HASH_ANNOTATION) == config,
    )


def deployment_problem(deployment: Body | None) -> Problem | None:
    """The Deployment's own word that it cannot progress: its deadline passed, or it may not create pods."""
    for condition in (deployment or {}).get("status", {}).get("conditions") or []:
        kind, status, reason = condition.get("type"), condition.get("status"), condition.get("reason")
        if kind == "Progressing" and status == "False" and reason == "ProgressDeadlineExceeded":
            message = condition.get("message") or "the rollout passed its progress deadline"
            return Problem(ConditionReason.DEPLOYMENT_FAILED.value, message, stalled=True)
        if kind == "ReplicaFailure" and status == "True":
            message = condition.get("message") or f"pods cannot be created ({reason})"
            return Problem(ConditionReason.DEPLOYMENT_FAILED.value, message, stalled=False)
    return None


def _problem(
    nim: NimService, written: Written, observed: Observed, deployment: Body | None, candidate: str | None
) -> Problem | None:
    if written.refusals:
        refused = written.refusals[0]
        more = f" (and {len(written.refusals) - 1} more)" if len(written.refusals) > 1 else ""
        return Problem(refused.reason, refused.message + more, stalled=True)
    if (problem := deployment_problem(deployment)) is not None:
        return problem
    # A rollout's candidate is judged apart (rollout.py): its trouble rolls it back, the NimService serves on.
    trouble = observed.pod_trouble(nim.metadata.namespace or "", nim.metadata.name or "", besides=candidate)
    if trouble is not None:
        return Problem(trouble.reason, trouble.describe(), stalled=False)
    return None


def _engine(engine: EngineState, written: Written) -> EngineState:
    refused = next((r for r in written.refusals if r.kind in ENGINE_KINDS), None)
    if refused is None:
        return engine
    return EngineState(False, refused.reason, refused.message, failed=True)


def desired_status(
    nim: NimService,
    previous: NimServiceStatus,
    desired: DesiredSet,
    written: Written,
    observed: Observed,
    now: datetime,
) -> Report:
    namespace, name = nim.metadata.namespace or "", server_name(nim)
    generation = nim.metadata.generation or 0
    status = previous.model_dump(mode="json", by_alias=True, exclude_none=True)
    _record_engines(status, desired, previous)
    serving = desired.serving
    deployment = observed.get(DEPLOYMENT.kind, namespace, name)
    if deployment is None and serving is not None and written.ok((DEPLOYMENT.kind, name)):
        deployment = serving.deployment  # created now: the status reports it before the watch shows it
    engine_key = (
        serving.unit.location.cache_key if serving is not None and serving.record is not None else None
    )
    observation = Observation(
        generation,
        desired.invalid_spec,
        nim.spec.paused,
        _engine(desired.engine, written),
        serving_state(
            deployment,
            engine_key,
            serving.config_hash if serving is not None else None,
            changing=serving is not None
            and serving.deployment_changed
            and written.ok((DEPLOYMENT.kind, name)),
        ),
        _problem(nim, written, observed, deployment, desired.candidate)
        if desired.invalid_spec is None
        else None,
    )
    wanted = desired_conditions(observation)
    if (scaling := _scaling(status, desired, observed, namespace, name)) is not None:
        wanted.append(scaling)
    if (tuned := _tuning(status, nim, desired)) is not None:
        wanted.append(tuned)
    if (rolled_out := _rollout(status, nim, desired)) is not None:
        wanted.append(rolled_out)
    conditions = merge_conditions(wanted, previous.conditions, generation, now)
    status["conditions"] = [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions]
    status["observedGeneration"] = generation
    if deployment is not None:
        status["replicas"] = deployment.get("status", {}).get("replicas", 0)
        status["readyReplicas"] = deployment.get("status", {}).get("readyReplicas", 0)
        status["endpoints"] = _endpoints(nim, desired, written, observed)
    status["selector"] = ",".join(f"{k}={v}" for k, v in server_selector(nim).items())
    return Report(status, conditions)


def _record_engines(status: dict[str, Any], desired: DesiredSet, previous: NimServiceStatus) -> None:
    """The serving unit's engine where it always was (when a new one is ready), and an entry per unit."""
    serving = desired.serving
    if serving is not None and serving.record is not None:
        status |= _dump(serving.record)
    if desired.units:
        status["units"] = [_dump(_unit_status(plan, previous)) for plan in desired.units]


def _scaling(
    status: dict[str, Any], desired: DesiredSet, observed: Observed, namespace: str, name: str
) -> tuple[str, str, str, str] | None:
    """The ScalingActive condition, recording the autoscaler's view in `status`; None without autoscaling."""
    autoscaler = desired.autoscaler if desired.invalid_spec is None else None
    if autoscaler is None:
        if desired.invalid_spec is None:
            status.pop("autoscaler", None)  # autoscaling turned off: nothing scales it any more
        return None
    hpa, scaled_object = _autoscaler_objects(observed, namespace, name, autoscaler)
    verdict = scaling_verdict(autoscaler, name, hpa, scaled_object)
    status["autoscaler"] = autoscaler_status(autoscaler, name, hpa, scaled_object).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    return ConditionType.SCALING_ACTIVE.value, verdict.status.value, verdict.reason.value, verdict.message


def _tuning(status: dict[str, Any], nim: NimService, desired: DesiredSet) -> tuple[str, str, str, str] | None:
    """The Tuned condition, recording the tuning in `status`; None without spec.triton.tuning (or before the
    serving unit's engine is ready: nothing to tune yet)."""
    if desired.invalid_spec is not None:
        return None
    if nim.spec.triton.tuning is None:
        status.pop("tuning", None)  # tuning turned off: the default config serves
        return None
    serving = desired.serving
    outcome = serving.tuning if serving is not None else None
    if outcome is None:
        return None
    if outcome.status is not None:
        status["tuning"] = outcome.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return outcome.condition()


def _rollout(
    status: dict[str, Any], nim: NimService, desired: DesiredSet
) -> tuple[str, str, str, str] | None:
    """The RolledOut condition (with a Canary strategy), recording the rollout in `status`."""
    if desired.rollout is None:
        status.pop("rollout", None)
    else:
        status["rollout"] = desired.rollout.model_dump(mode="json", by_alias=True, exclude_none=True)
    if desired.invalid_spec is not None or not uses_canary(nim):
        return None
    return rolled_out_condition(desired.rollout, pending=desired.rollout_pending)


def _endpoints(nim: NimService, desired: DesiredSet, written: Written, observed: Observed) -> dict[str, str]:
    endpoints: dict[str, str] = service_endpoints(nim)
    host = route_host(nim)
    if host is not None and _route_in_place(nim, desired, written, observed):
        endpoints["external"] = host
    return endpoints


def _autoscaler_objects(
    observed: Observed, namespace: str, name: str, autoscaler: Autoscaler
) -> tuple[Body | None, Body | None]:
    """(the HPA that computes the replicas, the ScaledObject): ours, or KEDA's HPA for our ScaledObject."""
    if autoscaler == Autoscaler.HORIZONTAL_POD_AUTOSCALER:
        return observed.get(AUTOSCALER.kind, namespace, name), None
    scaled_object = observed.get(SCALED_OBJECT.kind, namespace, name)
    return observed.get(AUTOSCALER.kind, namespace, keda_hpa_name(name, scaled_object)), scaled_object


def _dump(model: EngineRecord | UnitStatus) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def _unit_status(plan: UnitPlan, previous: NimServiceStatus) -> UnitStatus:
    """A unit's entry: its engine once ready, else the engine it served before (still serving meanwhile)."""
    unit, record = plan.unit, plan.record
    if record is None:
        before = previous.unit(unit.name)
        if before is not None:
            record = before.record()
        elif unit.role is UnitRole.SERVING:
            record = previous.record()  # a status written before units
    return UnitStatus(
        name=unit.name,
        role=unit.role,
        traffic_percent=unit.traffic_percent,
        engine=record.engine if record is not None else None,
        signature=record.signature if record is not None else None,
        parity=record.parity if record is not None else None,
    )


def _route_in_place(nim: NimService, desired: DesiredSet, written: Written, observed: Observed) -> bool:
    """The route the spec asks for exists (or was just applied) with nothing refused about it."""
    namespace, name = nim.metadata.namespace or "", server_name(nim)
    return all(
        written.ok((kind, name))
        and (observed.get(kind, namespace, name) is not None or (kind, name) in desired.rendered)
        for kind in desired.routes
    )
