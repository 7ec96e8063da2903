"""One idempotent reconcile of a NimService from its whole spec: engine, serving children, status.

Everything it reads comes from `Observed` (kopf's watches); it writes only what differs from what is there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from nimify.api import NimService, NimServiceStatus
from nimify.api.conditions import ConditionReason, ConditionType
from nimify.api.semantics import semantic_errors
from nimify.controller import metrics
from nimify.controller.conditions import (
    EngineState,
    Observation,
    ServingState,
    desired_conditions,
    merge_conditions,
    transitions,
)
from nimify.controller.engine_step import engine_outcome
from nimify.controller.kube import KubeWriter, owns_replicas
from nimify.controller.observed import Body, Observed
from nimify.render.autoscaler import render_autoscaler
from nimify.render.build_job import render_build_job
from nimify.render.deployment import ServedEngine, render_deployment
from nimify.render.disruption_budget import render_disruption_budget
from nimify.render.engine import EngineLocation, engine_location
from nimify.render.engine_claim import render_engine_claim
from nimify.render.identity import (
    CONFIG_HASH_ANNOTATION,
    ENGINE_KEY_ANNOTATION,
    owner_reference,
    server_name,
    server_selector,
)
from nimify.render.service import render_service, service_endpoints
from nimify.render.triton_config import config_hash, render_config_text, render_triton_config
from nimify.settings import OperatorSettings

#: (body, event type, reason, message) -> None; kopf.event in the operator, a list in unit tests.
EventSink = Callable[[Any, str, str, str], None]

WARNING_REASONS = {
    ConditionReason.INVALID_SPEC.value,
    ConditionReason.ENGINE_BUILD_FAILED.value,
    ConditionReason.ENGINE_BUILD_TIMED_OUT.value,
    ConditionReason.CHECKSUM_MISMATCH.value,
    ConditionReason.MODEL_FETCH_FAILED.value,
    ConditionReason.PARITY_FAILED.value,
    ConditionReason.MODEL_INVALID.value,
    ConditionReason.REPLICAS_UNAVAILABLE.value,
}


def _serving_state(deployment: Body | None, engine_key: str | None, config: str | None) -> ServingState:
    if deployment is None:
        return ServingState(None, 0, 0, rolled_out=False, serves_current_engine=False)
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    annotations = spec.get("template", {}).get("metadata", {}).get("annotations") or {}
    desired = spec.get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    rolled_out = (
        status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
        and status.get("replicas", 0) == updated
    )
    return ServingState(
        desired_replicas=desired,
        ready_replicas=status.get("readyReplicas", 0),
        updated_replicas=updated,
        rolled_out=rolled_out,
        serves_current_engine=engine_key is not None
        and annotations.get(ENGINE_KEY_ANNOTATION) == engine_key
        and annotations.get(CONFIG_HASH_ANNOTATION) == config,
    )


class Reconciler:
    def __init__(self, writer: KubeWriter, settings: OperatorSettings, post_event: EventSink) -> None:
        self.writer = writer
        self.settings = settings
        self.post_event = post_event
        # uid -> (resourceVersion the status was patched over, the status written). Two triggers can reconcile
        # back to back before the watch delivers our own patch; the second must build on what we wrote.
        self._written: dict[str, tuple[str | None, dict[str, Any]]] = {}

    def _previous_status(self, nim: NimService) -> NimServiceStatus:
        written = self._written.get(nim.metadata.uid or "")
        if written is not None and written[0] == nim.metadata.resource_version:
            return NimServiceStatus.model_validate(written[1])
        return nim.status or NimServiceStatus()

    def forget(self, uid: str) -> None:
        self._written.pop(uid, None)

    async def reconcile(self, body: Body, observed: Observed) -> None:
        started = time.perf_counter()
        try:
            await self._reconcile(body, observed)
        except Exception as error:
            metrics.RECONCILE_ERRORS.labels(reason=type(error).__name__).inc()
            raise
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)

    async def _reconcile(self, body: Body, observed: Observed) -> None:
        nim = NimService.model_validate(body)
        namespace, name = nim.metadata.namespace or "", server_name(nim)
        generation = nim.metadata.generation or 0
        previous = self._previous_status(nim)
        nim = nim.model_copy(update={"status": previous})  # every step works from the freshest status known
        status = previous.model_dump(mode="json", by_alias=True, exclude_none=True)

        invalid = "; ".join(str(error) for error in semantic_errors(nim.spec)) or None
        engine_key: str | None = None
        config: str | None = None
        if invalid is not None:
            engine = EngineState(False, ConditionReason.INVALID_SPEC.value, invalid, failed=True)
        else:
            location = engine_location(nim, self.settings)
            engine, record = await self._engine_step(nim, location, observed)
            if record is not None:
                status |= record
                engine_key = location.cache_key
                config = await self._serving_step(nim, location, record, observed)
            elif not nim.spec.paused:
                await self._apply(render_service(nim), observed)

        deployment = observed.get("Deployment", namespace, name)
        serving = _serving_state(deployment, engine_key, config)
        observation = Observation(generation, invalid, nim.spec.paused, engine, serving)
        conditions = merge_conditions(
            desired_conditions(observation),
            previous.conditions,
            generation,
            datetime.now(UTC).replace(microsecond=0),
        )
        status["conditions"] = [
            c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions
        ]
        status["observedGeneration"] = generation
        if deployment is not None:
            status["replicas"] = deployment.get("status", {}).get("replicas", 0)
            status["readyReplicas"] = deployment.get("status", {}).get("readyReplicas", 0)
            status["endpoints"] = service_endpoints(nim)
        status["selector"] = ",".join(f"{k}={v}" for k, v in server_selector(nim).items())

        if status != previous.model_dump(mode="json", by_alias=True, exclude_none=True):
            await self.writer.patch_status(namespace, name, status)
            self._written[nim.metadata.uid or ""] = (nim.metadata.resource_version, status)
        for condition in transitions(previous.conditions, conditions):
            if condition.type in (ConditionType.RECONCILING.value, ConditionType.STALLED.value):
                continue  # kstatus bookkeeping; the other conditions' events already tell the story
            kind = (
                "Warning"
                if condition.reason in WARNING_REASONS and condition.status.value == "False"
                else "Normal"
            )
            self.post_event(
                body,
                kind,
                condition.reason,
                f"{condition.type}={condition.status.value}: {condition.message}"[:1024],
            )
        ready = next(c.status.value for c in conditions if c.type == ConditionType.READY.value)
        metrics.READY.observe(namespace, name, ready)

    async def _engine_step(
        self, nim: NimService, location: EngineLocation, observed: Observed
    ) -> tuple[EngineState, dict[str, Any] | None]:
        if not nim.spec.paused:
            await self._ensure_claim(nim, location, observed)
        outcome = engine_outcome(nim, location, observed)
        job = render_build_job(nim, location, self.settings) if outcome.create_job else None
        if job is not None and not nim.spec.paused:
            meta = job["metadata"]
            if await self.writer.create_if_absent(job, observed.get("Job", meta["namespace"], meta["name"])):
                metrics.ENGINE_BUILDS.labels(outcome="started").inc()
        if outcome.finished_build and not _was_finished(nim):
            metrics.ENGINE_BUILDS.labels(outcome="succeeded" if outcome.state.ready else "failed").inc()
            seconds = (outcome.engine_status or {}).get("engine", {}).get("buildSeconds")
            if seconds is not None:
                metrics.ENGINE_BUILD_SECONDS.observe(seconds)
        return outcome.state, outcome.engine_status

    async def _ensure_claim(self, nim: NimService, location: EngineLocation, observed: Observed) -> None:
        desired = render_engine_claim(nim, location.claim, self.settings)
        if desired is None:
            return
        namespace = nim.metadata.namespace or ""
        live = observed.get("PersistentVolumeClaim", namespace, location.claim)
        if nim.spec.storage is not None or live is None:
            await self._apply(desired, observed)
            return
        # The shared claim: every NimService using it becomes one of its owners, without rewriting the others.
        owners = {ref.get("uid") for ref in live["metadata"].get("ownerReferences") or []}
        if nim.metadata.uid not in owners:
            await self.writer.add_claim_owner(
                namespace, location.claim, owner_reference(nim, controller=False)
            )

    async def _serving_step(
        self, nim: NimService, location: EngineLocation, record: dict[str, Any], observed: Observed
    ) -> str:
        signature = NimServiceStatus.model_validate({"signature": record["signature"]}).signature
        assert signature is not None
        text = render_config_text(nim, signature, int(record["engine"].get("maxBatchSize") or 0))
        digest = config_hash(text)
        if nim.spec.paused:
            return digest
        served = ServedEngine(location, digest, record["engine"].get("gpuProduct"))
        live = observed.get("Deployment", nim.metadata.namespace or "", server_name(nim))
        if nim.spec.autoscaling is not None and live is not None and owns_replicas(live):
            await self.writer.hand_over_replicas(
                nim.metadata.namespace or "", server_name(nim), int(live["spec"].get("replicas", 1))
            )
        for desired in (
            render_triton_config(nim, text),
            render_deployment(nim, served, self.settings),
            render_service(nim),
            render_autoscaler(nim),
            render_disruption_budget(nim),
        ):
            if desired is not None:
                await self._apply(desired, observed)
        return digest

    async def _apply(self, desired: dict[str, Any], observed: Observed) -> bool:
        meta = desired["metadata"]
        return await self.writer.apply(
            desired, observed.get(desired["kind"], meta["namespace"], meta["name"])
        )


def _was_finished(nim: NimService) -> bool:
    """Whether the previous reconcile already saw this build end (so metrics count each build once)."""
    if nim.status is None or (engine := nim.status.condition(ConditionType.ENGINE_READY.value)) is None:
        return False
    return engine.reason != ConditionReason.BUILDING_ENGINE.value
