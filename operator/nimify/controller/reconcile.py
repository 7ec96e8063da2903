"""One idempotent reconcile of a NimService from its whole spec: the desired set, one writer pass, the status.

Everything it reads comes from `Observed` (kopf's watches); it writes only what differs from what is there,
so a NimService whose children match its spec costs no request at all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Protocol

from lightkube import ApiError

from nimify.api import Condition, NimService, NimServiceStatus, UnitRole, semantic_errors
from nimify.api.conditions import ConditionReason, ConditionType
from nimify.controller import metrics
from nimify.controller.actions import Create
from nimify.controller.conditions import events_for
from nimify.controller.desired import DesiredSet, UnitPlan, Units, desired_set
from nimify.controller.engine_step import served_record
from nimify.controller.model_images import ImageResolver, recorded_image
from nimify.controller.observed import Body, Observed
from nimify.controller.rollout_analyst import RolloutAnalyst
from nimify.controller.status import desired_status
from nimify.controller.writes import RecentWrites, Writer, write_all
from nimify.render.identity import server_name
from nimify.render.units import ServingUnit, serving_units
from nimify.settings import OperatorSettings

# Reasons of progress and success: their events are Normal; any other reason of a False condition warns.
NORMAL_REASONS = frozenset(
    {
        ConditionReason.SERVING,
        ConditionReason.PAUSED,
        ConditionReason.BUILDING_ENGINE,
        ConditionReason.CHECKING_PIPELINE,
        ConditionReason.DEPLOYING,
        ConditionReason.SCALING,
        ConditionReason.ENGINE_BUILT,
        ConditionReason.ENGINE_CACHE_HIT,
        ConditionReason.RECONCILED,
        ConditionReason.AUTOSCALER_PENDING,
        ConditionReason.TUNING,
        ConditionReason.TUNING_APPLIED,
        ConditionReason.TUNING_REUSED,
        ConditionReason.ROLLOUT_PROGRESSING,
        ConditionReason.ROLLOUT_PAUSED,
        ConditionReason.PROMOTING,
    }
)
RETRY_FIRST_SECONDS = 5.0
STATUS_BATCH_SECONDS = 30.0
"""How long a status change that moves no condition (replica counts, a message) may wait to be written with
the next one: a rollout's counts tick several times before Ready, and each tick would be a patch."""
COUNTS = ("replicas", "readyReplicas")

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]


class EventSink(Protocol):
    async def post_event(self, involved: dict[str, Any], kind: str, reason: str, message: str) -> None: ...


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) turning `old` into `new`: changed keys, and None for removed ones."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            if nested := merge_patch(before, value):
                patch[key] = nested
        elif value != before or key not in old:
            patch[key] = value
    return patch


def moves_nothing(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether `after` differs from `before` only in replica counts and condition messages: no condition
    changed its status or reason, nothing else in the status changed."""

    def essence(status: dict[str, Any]) -> dict[str, Any]:
        kept = {key: value for key, value in status.items() if key not in (*COUNTS, "conditions")}
        kept["conditions"] = [
            {key: value for key, value in condition.items() if key != "message"}
            for condition in status.get("conditions") or []
        ]
        return kept

    return essence(before) == essence(after)


def retry_delay(attempts: int, cap: float) -> float:
    """Backoff for a refused child: 5 s, 10 s, 20 s, ... up to `cap` (the resync retries anyway)."""
    return float(min(RETRY_FIRST_SECONDS * 2 ** max(attempts - 1, 0), max(cap, RETRY_FIRST_SECONDS)))


class Reconciler:
    def __init__(
        self,
        writer: Writer,
        settings: OperatorSettings,
        events: EventSink | None = None,
        clock: Clock = _now,
        monotonic: Callable[[], float] = time.monotonic,
        units: Units = serving_units,
        images: ImageResolver | None = None,
        analyst: RolloutAnalyst | None = None,
    ) -> None:
        self.writer = writer
        self.analyst = analyst or RolloutAnalyst(settings)  # a canary's gate and figures (rollout_analyst.py)
        self.images = images or ImageResolver(settings)  # model images' registries (model_images.py)
        self.units = units  # a NimService's serving units (render/units.py)
        self.events: EventSink = events or writer  # where Events go: the API writer, or a sink in tests
        self.settings = settings
        self.clock = clock
        self.monotonic = monotonic
        self._waiting: dict[str, float] = {}  # uid -> since when a status change that moves nothing waits
        # uid -> (resourceVersion the status was patched over, the status written). Two triggers can reconcile
        # back to back before the watch delivers our own patch; the second must build on what we wrote.
        self._written: dict[str, tuple[str | None, dict[str, Any]]] = {}
        self._refused: dict[str, int] = {}  # uid -> reconciles in a row with a refused child
        self.recent = RecentWrites()  # children written that the watch may not show yet
        # NimServices the apiserver says are gone although the index still holds them: kopf stops watching a
        # namespace once it is terminating and never sees the DELETED events of what was in it.
        self._gone: set[str] = set()

    def _previous_status(self, nim: NimService) -> NimServiceStatus:
        written = self._written.get(nim.metadata.uid or "")
        if written is not None and written[0] == nim.metadata.resource_version:
            return NimServiceStatus.model_validate(written[1])
        return nim.status or NimServiceStatus()

    def observed(self, uid: str, resource_version: str | None) -> None:
        """The watch delivered this version of the NimService: a status written over an older one is in it."""
        written = self._written.get(uid)
        if written is not None and written[0] != resource_version:
            del self._written[uid]

    def forget(self, uid: str) -> None:
        self._written.pop(uid, None)
        self._waiting.pop(uid, None)
        self._refused.pop(uid, None)
        self._gone.discard(uid)

    async def reconcile(self, body: Body, observed: Observed) -> float | None:
        """Reconcile once; returns the delay after which to retry (a child was refused), or None."""
        if body.get("metadata", {}).get("uid") in self._gone:
            return None
        started = time.perf_counter()
        try:
            return await self._reconcile(body, observed)
        except Exception as error:
            metrics.RECONCILE_ERRORS.labels(reason=type(error).__name__).inc()
            raise
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)

    async def _reconcile(self, body: Body, observed: Observed) -> float | None:
        nim = NimService.model_validate(body)
        namespace, name, uid = nim.metadata.namespace or "", server_name(nim), nim.metadata.uid or ""
        previous = self._previous_status(nim)
        nim = nim.model_copy(update={"status": previous})  # every step works from the freshest status known
        observed = await self._with_model_images(nim, observed)
        now = self.clock()
        observed = await self.analyst.observe(nim, observed, now)
        desired = desired_set(nim, observed, self.settings, self.units, now)
        written = await write_all(self.writer, namespace, desired.actions, self.recent)
        self._count_builds(nim, desired, written.created)
        report = desired_status(nim, previous, desired, written, observed, now)

        before = previous.model_dump(mode="json", by_alias=True, exclude_none=True)
        wait = self._batched(uid, before, report.status)
        if wait is not None:
            return wait
        if report.status != before:
            try:
                await self.writer.patch_status(namespace, name, merge_patch(before, report.status))
            except ApiError as error:
                if error.status.code != HTTPStatus.NOT_FOUND:
                    raise
                logger.info("%s/%s is gone; no more reconciles of it", namespace, name)
                self._gone.add(uid)
                return None
            self._written[uid] = (nim.metadata.resource_version, report.status)
        for kind, condition in events_for(previous.conditions, report.conditions, NORMAL_REASONS):
            await self._post_event(body, kind, condition)
        ready = next(c.status.value for c in report.conditions if c.type == ConditionType.READY.value)
        metrics.READY.observe(namespace, name, ready)

        if not written.refusals:
            self._refused.pop(uid, None)
            return desired.wake_in  # a rollout's step ends then (None: nothing to come back for)
        self._refused[uid] = attempts = self._refused.get(uid, 0) + 1
        delay = retry_delay(attempts, self.settings.resync_seconds)
        return min(delay, desired.wake_in) if desired.wake_in is not None else delay

    async def _with_model_images(self, nim: NimService, observed: Observed) -> Observed:
        """`observed` with the model images the NimService's units need resolved (none for most: a unit
        whose status records its image for this generation needs no registry, engine_step.image_outcome)."""
        model = nim.spec.model
        if model is None or not model.is_image or semantic_errors(nim.spec):
            return observed  # most reconciles stop here; a faulty spec is desired_set's to report
        try:
            units = self.units(nim, self.settings)
        except ValueError:
            return observed
        pending = tuple(
            unit
            for unit in units
            if unit.location.model_image is not None
            and not recorded_image(nim, unit, _served_location(nim, unit))
        )
        if not pending:
            return observed
        return replace(observed, model_images=await self.images.resolve(nim, pending))

    def _batched(self, uid: str, before: dict[str, Any], after: dict[str, Any]) -> float | None:
        """Seconds to wait before writing a status change that moves nothing (reconcile again then), or None
        to write now: any other change, or one that waited long enough, goes out at once (with the counts)."""
        if after == before or not moves_nothing(before, after):
            self._waiting.pop(uid, None)
            return None
        since = self._waiting.setdefault(uid, self.monotonic())
        left = STATUS_BATCH_SECONDS - (self.monotonic() - since)
        if left > 0:
            return left
        self._waiting.pop(uid, None)
        return None

    async def _post_event(self, body: Body, kind: str, condition: Condition) -> None:
        """Events are for people watching: one that cannot be posted (its namespace is going away, say) must
        not fail the reconcile that already did its work."""
        message = f"{condition.type}={condition.status.value}: {condition.message}"[:1024]
        try:
            await self.events.post_event(body, kind, condition.reason, message)
        except Exception as error:
            logger.warning("event %s on %s not posted: %s", condition.reason, body["metadata"]["name"], error)

    def _count_builds(self, nim: NimService, desired: DesiredSet, created: set[tuple[str, str]]) -> None:
        """Engine build metrics, each build counted once: started when its Job was created, finished when the
        reconcile first reads its result."""
        if any(isinstance(a, Create) and a.target in created for a in desired.actions):
            metrics.ENGINE_BUILDS.labels(outcome="started").inc()
        for plan in desired.units:
            outcome = plan.outcome
            if not outcome.finished_build or _was_finished(nim, plan):
                continue
            metrics.ENGINE_BUILDS.labels(outcome="succeeded" if outcome.state.ready else "failed").inc()
            if outcome.record is not None and outcome.record.engine.build_seconds is not None:
                metrics.ENGINE_BUILD_SECONDS.observe(outcome.record.engine.build_seconds)


def _served_location(nim: NimService, unit: ServingUnit) -> str | None:
    record = served_record(nim, unit)
    return record.engine.location if record is not None else None


def _was_finished(nim: NimService, plan: UnitPlan) -> bool:
    """Whether the previous reconcile already saw this build end (so metrics count each build once): the
    serving unit's EngineReady condition no longer said it was building; another unit's status entry
    already held the engine."""
    if nim.status is None:
        return False
    if plan.unit.role is not UnitRole.SERVING:
        before = nim.status.unit(plan.unit.name)
        location = plan.record.engine.location if plan.record is not None else None
        return before is not None and before.engine is not None and before.engine.location == location
    if (engine := nim.status.condition(ConditionType.ENGINE_READY.value)) is None:
        return False
    return engine.reason != ConditionReason.BUILDING_ENGINE.value
