"""kopf registrations: watches and indexes of NimServices and their children, and what triggers a reconcile.

A reconcile runs on resume, create and spec update, on a resync loop (the level-triggered safety net),
after a backoff when a child was refused, and whenever an owned Job, conversion Pod or Deployment changes or
a Triton pod gets into trouble. Children are watched with a server-side label selector, so the operator never
sees, let alone lists, objects it does not manage. Kinds, indexes and selectors all come from `children.py`.

Operator-wide state (settings, the Reconciler, kopf's index views, locks, timers) lives in kopf's `memo`, set
up in the startup handler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
from prometheus_client import start_http_server
from pydantic import ValidationError

from nimify.api import NimService
from nimify.api.nimservice import GROUP, KIND, PLURAL, VERSION
from nimify.controller import metrics
from nimify.controller.children import CHILD_KINDS, JOB, ChildKind, Index
from nimify.controller.engine_step import is_engine_ready
from nimify.controller.kube import KubeWriter
from nimify.controller.observed import ObjectKey, Observed
from nimify.controller.pods import pod_trouble
from nimify.controller.reconcile import Reconciler
from nimify.engine.location import engine_location
from nimify.render.identity import (
    ANNOTATION_PREFIX,
    COMPONENT_BUILD,
    COMPONENT_SERVER,
    NIMSERVICE_LABEL,
    build_job_name,
)
from nimify.render.identity import MANAGED_BY_SELECTOR as MANAGED
from nimify.settings import OperatorSettings

logger = logging.getLogger(__name__)

MANAGED_SELECTOR = ",".join(f"{key}={value}" for key, value in MANAGED.items())
COMPONENT = "app.kubernetes.io/component"
PODS_SELECTOR = f"{MANAGED_SELECTOR},{COMPONENT} in ({COMPONENT_BUILD},{COMPONENT_SERVER})"


@dataclass
class OperatorState:
    """What the operator keeps between handler calls (in kopf's memo)."""

    settings: OperatorSettings
    reconciler: Reconciler
    indexes: Mapping[str, Any]  # kopf's live index views, by Index id
    locks: dict[ObjectKey, asyncio.Lock] = field(default_factory=dict)
    retries: dict[ObjectKey, asyncio.TimerHandle] = field(default_factory=dict)
    pod_troubles: dict[str, Any] = field(default_factory=dict)  # pod uid -> its last trouble (or None)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def lock(self, key: ObjectKey) -> asyncio.Lock:
        return self.locks.setdefault(key, asyncio.Lock())


def _state(memo: kopf.Memo) -> OperatorState:
    state: OperatorState = memo["nimify"]
    return state


def _resource(group: str, version: str, plural: str) -> tuple[str, str] | tuple[str, str, str]:
    """The positional form kopf's decorators take: (group, version, plural), or (version, plural) for core."""
    return (group, version, plural) if group else (version, plural)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    operator_settings = OperatorSettings()
    settings.persistence.finalizer = f"{ANNOTATION_PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    # Only warnings of kopf's own become Events; the operator posts its own, specific ones.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.inactivity_timeout = 600
    for child in CHILD_KINDS:
        settings.watching.label_selectors[_resource(child.group, child.version, child.plural)] = (
            MANAGED_SELECTOR
        )
    settings.watching.label_selectors[_resource("", "v1", "pods")] = PODS_SELECTOR
    start_http_server(operator_settings.metrics_port)
    writer = KubeWriter()
    reconciler = Reconciler(writer, operator_settings)
    # kopf hands its indexes (live views) to every handler, this one included: keep them for the resync.
    state = OperatorState(
        operator_settings, reconciler, {index.value: kwargs[index.value] for index in Index}
    )
    memo["nimify"] = state
    _spawn(state, _resync_forever(state))


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    state = _state(memo)
    for task in list(state.tasks):
        task.cancel()
    for timer in state.retries.values():
        timer.cancel()
    await state.reconciler.writer.close()


def _spawn(state: OperatorState, coroutine: Any) -> None:
    task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
    state.tasks.add(task)
    task.add_done_callback(state.tasks.discard)


# --- indexes: kopf keeps them current from its watch streams ------------------------------------------------


def _object_key(body: kopf.Body) -> ObjectKey:
    return body.metadata.namespace or "", body.metadata.name or ""


def _register_child_index(child: ChildKind) -> None:
    def index(body: kopf.Body, **_: Any) -> dict[ObjectKey, dict[str, Any]]:
        return {_object_key(body): dict(body)}

    index.__name__ = child.index.value
    kopf.index(*_resource(child.group, child.version, child.plural), labels=MANAGED, id=child.index.value)(
        index
    )


for _child in CHILD_KINDS:
    _register_child_index(_child)

BUILD_POD_LABELS = MANAGED | {COMPONENT: COMPONENT_BUILD}
SERVER_POD_LABELS = MANAGED | {COMPONENT: COMPONENT_SERVER}


@kopf.index("v1", "pods", labels=BUILD_POD_LABELS, id=Index.BUILD_PODS.value)
def build_pod_index(body: kopf.Body, **_: Any) -> dict[ObjectKey, dict[str, Any]]:
    job = (body.metadata.labels or {}).get("batch.kubernetes.io/job-name", "")
    return {(body.metadata.namespace or "", job): dict(body)}


@kopf.index("v1", "pods", labels=SERVER_POD_LABELS, id=Index.SERVER_PODS.value)
def server_pod_index(body: kopf.Body, **_: Any) -> dict[ObjectKey, Any] | None:
    """Only Triton pods in trouble, and only what is wrong with them: a healthy pod costs nothing here."""
    trouble = pod_trouble(dict(body))
    if trouble is None:
        return None
    owner = (body.metadata.labels or {}).get(NIMSERVICE_LABEL, "")
    return {(body.metadata.namespace or "", owner): trouble}


@kopf.index(GROUP, VERSION, PLURAL, id=Index.NIMSERVICES.value)
def nimservice_index(body: kopf.Body, **_: Any) -> dict[ObjectKey, dict[str, Any]]:
    return {_object_key(body): dict(body)}


@kopf.index(GROUP, VERSION, PLURAL, id=Index.READY_ENGINES.value)
def ready_engine_index(body: kopf.Body, status: kopf.Status, **_: Any) -> dict[Any, Any] | None:
    """Ready engines by (namespace, claim, cache key): another NimService reuses them with no Job."""
    status_dict = dict(status)
    engine = status_dict.get("engine") or {}
    location, key = engine.get("location"), engine.get("cacheKey")
    if not (location and key and status_dict.get("signature") and is_engine_ready(status_dict)):
        return None
    claim = location.split("/", 1)[0]
    record = {name: status_dict[name] for name in ("engine", "signature", "parity") if status_dict.get(name)}
    record["servedBy"] = body.metadata.name
    return {(body.metadata.namespace or "", claim, key): record}


@kopf.index(GROUP, VERSION, PLURAL, id=Index.BUILD_JOBS.value)
def build_job_index(body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict[ObjectKey, str] | None:
    """NimServices by the conversion Job their current spec needs, so a Job's progress wakes exactly them."""
    try:
        nim = NimService.model_validate(dict(body))
    except ValidationError:
        return None  # the reconcile reports what is wrong with it
    settings = _state(memo).settings if "nimify" in memo else OperatorSettings()
    location = engine_location(nim, settings)
    job = build_job_name(location.claim, location.cache_key, location.conversion_key)
    return {(body.metadata.namespace or "", job): body.metadata.name or ""}


# --- reconciling -------------------------------------------------------------------------------------------


async def _reconcile(state: OperatorState, body: Mapping[str, Any]) -> None:
    key = (body["metadata"].get("namespace", ""), body["metadata"]["name"])
    async with state.lock(key):
        retry_after = await state.reconciler.reconcile(dict(body), Observed.from_indexes(state.indexes))
    _schedule_retry(state, key, retry_after)


def _schedule_retry(state: OperatorState, key: ObjectKey, delay: float | None) -> None:
    """One pending retry per NimService: a refused child is retried after `delay` (its backoff)."""
    if (pending := state.retries.pop(key, None)) is not None:
        pending.cancel()
    if delay is None:
        return

    def fire() -> None:
        state.retries.pop(key, None)
        _spawn(state, _reconcile_by_key(state, key))

    state.retries[key] = asyncio.get_running_loop().call_later(delay, fire)


async def _reconcile_by_key(state: OperatorState, key: ObjectKey) -> None:
    """Reconcile the NimService as the index holds it now (if it still exists); never raises."""
    body = next(iter(state.indexes[Index.NIMSERVICES].get(key, ())), None)
    if body is None:
        return
    try:
        await _reconcile(state, body)
    except Exception:  # one broken NimService must not stop the resync of the others
        logger.exception("reconcile of %s/%s failed", *key)


# --- triggers ----------------------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _reconcile(_state(memo), body)


async def _resync_forever(state: OperatorState) -> None:
    """The level-triggered safety net: reconcile every known NimService from the in-memory index.

    Not a kopf timer: kopf puts a finalizer on every object with a timer, and a finalizer would make deleting
    a NimService depend on the operator running, with nothing outside the cluster to clean up.
    """
    while True:
        await asyncio.sleep(state.settings.resync_seconds)
        for key in list(state.indexes[Index.NIMSERVICES].keys()):
            await _reconcile_by_key(state, key)


@kopf.on.event(GROUP, VERSION, PLURAL)
def forget_deleted(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if type == "DELETED":
        key = _object_key(body)
        metrics.READY.forget(*key)
        if "nimify" in memo:
            state = _state(memo)
            state.reconciler.forget(body.metadata.uid or "")
            _schedule_retry(state, key, None)
            state.locks.pop(key, None)


async def _reconcile_owners(state: OperatorState, body: kopf.Body, job_name: str | None = None) -> None:
    """A child changed: reconcile its owner and, for a conversion Job or Pod, every NimService needing it."""
    namespace = body.metadata.namespace or ""
    names = {ref["name"] for ref in body.metadata.get("ownerReferences") or [] if ref.get("kind") == KIND}
    if job_name:
        names |= set(state.indexes[Index.BUILD_JOBS].get((namespace, job_name), ()))
    for name in sorted(names):
        await _reconcile_by_key(state, (namespace, name))


def _register_owner_trigger(child: ChildKind) -> None:
    """Changes of this kind reconcile the NimService that owns the object (and, for a conversion Job, every
    NimService waiting for it) right away instead of at the next resync."""

    async def changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        await _reconcile_owners(_state(memo), body, job_name=body.metadata.name if child is JOB else None)

    changed.__name__ = f"{child.plural}_changed"
    kopf.on.event(*_resource(child.group, child.version, child.plural), labels=MANAGED, id=changed.__name__)(
        changed
    )


for _child in CHILD_KINDS:
    if _child.wakes_owner:
        _register_owner_trigger(_child)


@kopf.on.event("v1", "pods", labels=BUILD_POD_LABELS)
async def build_pod_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    job_name = (body.metadata.labels or {}).get("batch.kubernetes.io/job-name")
    await _reconcile_owners(_state(memo), body, job_name=job_name)


@kopf.on.event("v1", "pods", labels=SERVER_POD_LABELS)
async def server_pod_changed(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A Triton pod's trouble began, changed or ended: tell its NimService (its other changes show up in the
    Deployment's status, which wakes the NimService anyway)."""
    state = _state(memo)
    uid = body.metadata.uid or ""
    trouble = None if type == "DELETED" else pod_trouble(dict(body))
    if state.pod_troubles.get(uid) == trouble:
        return
    if trouble is None:
        state.pod_troubles.pop(uid, None)
    else:
        state.pod_troubles[uid] = trouble
    owner = (body.metadata.labels or {}).get(NIMSERVICE_LABEL)
    if owner:
        await _reconcile_by_key(state, (body.metadata.namespace or "", owner))
