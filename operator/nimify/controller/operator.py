"""kopf registrations: watches and indexes of NimServices and their children, and what triggers a reconcile.

A NimService is reconciled when it appears (the operator's start included) and when its spec changes (a new
generation), on a resync loop (the level-triggered safety net), after a backoff when a child was refused or
the reconcile failed, and whenever an owned Job, conversion Pod, Deployment or autoscaler (HPA, KEDA
ScaledObject, and the HPA KEDA makes) changes or a Triton pod gets into trouble. Every trigger only queues the
NimService's key (work_queue.py): a fixed number of workers reconcile, a burst of triggers queues, one failure
re-queues only its own NimService.

Children are watched with a server-side label selector, so the operator never sees, let alone lists, objects
it does not manage. Kinds, indexes and selectors all come from `children.py`; each index keeps only what the
reconcile reads (projection.py).

kopf's own bookkeeping on NimServices is none: every handler is an event handler (so kopf writes no
`last-handled-configuration` or progress annotations and adds no finalizer) and never raises (so kopf has
nothing to retry). Operator-wide state (settings, the Reconciler, kopf's index views, the queue) lives in
kopf's `memo`, set up in the startup handler.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
from prometheus_client import start_http_server
from pydantic import ValidationError

from nimify.api import NimService, NimServiceStatus, TuningStatus, UnitRole
from nimify.api.nimservice import GROUP, KIND, PLURAL, VERSION
from nimify.controller import kopf_namespaces, kopf_resources, kopf_watchers, metrics
from nimify.controller.children import CHILD_KINDS, CLAIM, JOB, ChildKind, Index
from nimify.controller.desired import unused_shared_claim
from nimify.controller.engine_step import is_engine_ready
from nimify.controller.kube import KubeWriter
from nimify.controller.model_images import ImageResolver
from nimify.controller.observed import ObjectKey, Observed, ReadyEngine, RecordedTuning
from nimify.controller.pods import pod_trouble
from nimify.controller.projection import project_build_pod, project_child, project_nimservice
from nimify.controller.reconcile import Reconciler
from nimify.controller.rollout_analyst import RolloutAnalyst
from nimify.controller.work_queue import WorkQueue
from nimify.render.identity import (
    ANNOTATION_PREFIX,
    COMPONENT_BUILD,
    COMPONENT_SERVER,
    NIMSERVICE_LABEL,
    build_job_name,
)
from nimify.render.identity import MANAGED_BY_SELECTOR as MANAGED
from nimify.render.units import serving_units
from nimify.settings import OperatorSettings

logger = logging.getLogger(__name__)
kopf_namespaces.install()  # before kopf starts: namespaces created during start-up are watched too
kopf_resources.install()  # APIs installed later (Gateway API, KEDA) are watched once discovery shows them
kopf_watchers.install()  # a watcher stopped before its first listing no longer holds every handler back

MANAGED_SELECTOR = ",".join(f"{key}={value}" for key, value in MANAGED.items())
COMPONENT = "app.kubernetes.io/component"
PODS_SELECTOR = f"{MANAGED_SELECTOR},{COMPONENT} in ({COMPONENT_BUILD},{COMPONENT_SERVER})"
RECONCILE_WORKERS = 8
"""Reconciles at a time: each sends its requests one after another, so this also bounds the operator's
requests in flight. Eight keep the apiserver busy on a small machine; more would only queue there."""


@dataclass
class OperatorState:
    """What the operator keeps between handler calls (in kopf's memo)."""

    settings: OperatorSettings
    reconciler: Reconciler
    indexes: Mapping[str, Any]  # kopf's live index views, by Index id
    queue: WorkQueue[ObjectKey] = field(init=False)
    generations: dict[str, int | None] = field(default_factory=dict)  # uid -> generation last queued for
    # uid -> (generation, the (claim, conversion Job) of each of its units)
    engines: dict[str, tuple[int | None, tuple[tuple[str, str], ...]]] = field(default_factory=dict)
    build_ends: dict[str, str | None] = field(default_factory=dict)  # Job or build pod uid -> how it ended
    pod_troubles: dict[str, Any] = field(default_factory=dict)  # pod uid -> its last trouble (or None)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def _state(memo: kopf.Memo) -> OperatorState:
    state: OperatorState = memo["nimify"]
    return state


def _resource(group: str, version: str, plural: str) -> tuple[str, str] | tuple[str, str, str]:
    """The positional form kopf's decorators take: (group, version, plural), or (version, plural) for core."""
    return (group, version, plural) if group else (version, plural)


class NoEssence(kopf.AnnotationsDiffBaseStorage):
    """kopf builds each watched object's "essence" (a deep copy of it) on every watch event, to tell on.create
    and on.update handlers and daemons what changed. The operator has neither (every handler is an event
    handler; tests/controller/test_operator_registry.py keeps it so), so that copy, the largest part of kopf's
    work per event, is skipped: the essence is empty."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    operator_settings = OperatorSettings()
    settings.persistence.finalizer = f"{ANNOTATION_PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = NoEssence(prefix=ANNOTATION_PREFIX)
    # Only warnings of kopf's own become Events; the operator posts its own, specific ones.
    settings.posting.level = logging.WARNING
    # A watch the apiserver ends after 5 minutes, one the client ends 30 s later if the server did not (a
    # connection that died without a reset delivers nothing and would otherwise be waited on forever), one
    # restarted when two of the apiserver's minutely bookmarks are missing: a stuck stream costs at most two
    # minutes of events, never the operator's view of a namespace.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.watching.inactivity_timeout = 130
    # kopf keeps a worker task per object while its events come, and lets it go after this much idle time
    # (default 5 s): with a thousand NimServices converging, each with its children and pods, fewer live at
    # once. Every event still gets its worker; one that finds none starts one.
    settings.queueing.idle_timeout = 1.0
    for child in CHILD_KINDS:
        settings.watching.label_selectors[_resource(child.group, child.version, child.plural)] = (
            MANAGED_SELECTOR
        )
    settings.watching.label_selectors[_resource("", "v1", "pods")] = PODS_SELECTOR
    start_http_server(operator_settings.metrics_port)
    writer = KubeWriter()
    reconciler = Reconciler(
        writer,
        operator_settings,
        images=ImageResolver(operator_settings, read_secret=writer.read_secret),
        analyst=RolloutAnalyst(operator_settings, pods=writer.ready_pod_ips),
    )
    # kopf hands its indexes (live views) to every handler, this one included: keep them for the resync.
    state = OperatorState(
        operator_settings, reconciler, {index.value: kwargs[index.value] for index in Index}
    )
    state.queue = WorkQueue(
        functools.partial(_reconcile_by_key, state),
        workers=RECONCILE_WORKERS,
        max_delay=operator_settings.resync_seconds,
    )
    memo["nimify"] = state
    state.queue.start()
    _spawn(state, _resync_forever(state))


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    state = _state(memo)
    for task in list(state.tasks):
        task.cancel()
    await state.queue.stop()
    await state.reconciler.writer.close()


def _spawn(state: OperatorState, coroutine: Any) -> None:
    task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
    state.tasks.add(task)
    task.add_done_callback(state.tasks.discard)


# --- indexes: kopf keeps them current from its watch streams ------------------------------------------------
# Index functions are coroutines: kopf runs plain functions in a thread pool, one hop per watch event.


def _object_key(body: kopf.Body) -> ObjectKey:
    return body.metadata.namespace or "", body.metadata.name or ""


def _register_child_index(child: ChildKind) -> None:
    async def index(body: kopf.Body, **_: Any) -> dict[ObjectKey, dict[str, Any]]:
        return {_object_key(body): project_child(body, child)}

    index.__name__ = child.index.value
    kopf.index(*_resource(child.group, child.version, child.plural), labels=MANAGED, id=child.index.value)(
        index
    )


def _register_unit_index(child: ChildKind, index_id: Index) -> None:
    """Names of a unit-scoped kind by (namespace, NimService): the desired set deletes retired units'."""

    async def index(body: kopf.Body, **_: Any) -> dict[ObjectKey, str] | None:
        owner = (body.metadata.labels or {}).get(NIMSERVICE_LABEL)
        if not owner:
            return None
        return {(body.metadata.namespace or "", owner): body.metadata.name or ""}

    index.__name__ = index_id.value
    kopf.index(*_resource(child.group, child.version, child.plural), labels=MANAGED, id=index_id.value)(index)


for _child in CHILD_KINDS:
    _register_child_index(_child)
    if _child.unit_index is not None:
        _register_unit_index(_child, _child.unit_index)

BUILD_POD_LABELS = MANAGED | {COMPONENT: COMPONENT_BUILD}
SERVER_POD_LABELS = MANAGED | {COMPONENT: COMPONENT_SERVER}


@kopf.index("v1", "pods", labels=BUILD_POD_LABELS, id=Index.BUILD_PODS.value)
async def build_pod_index(body: kopf.Body, **_: Any) -> dict[ObjectKey, dict[str, Any]]:
    job = (body.metadata.labels or {}).get("batch.kubernetes.io/job-name", "")
    return {(body.metadata.namespace or "", job): project_build_pod(body)}


@kopf.index("v1", "pods", labels=SERVER_POD_LABELS, id=Index.SERVER_PODS.value)
async def server_pod_index(body: kopf.Body, **_: Any) -> dict[ObjectKey, Any] | None:
    """Only Triton pods in trouble, and only what is wrong with them: a healthy pod costs nothing here."""
    trouble = pod_trouble(dict(body))
    if trouble is None:
        return None
    owner = (body.metadata.labels or {}).get(NIMSERVICE_LABEL, "")
    return {(body.metadata.namespace or "", owner): trouble}


@kopf.index(GROUP, VERSION, PLURAL, id=Index.NIMSERVICES.value)
async def nimservice_index(body: kopf.Body, **_: Any) -> dict[ObjectKey, dict[str, Any]]:
    return {_object_key(body): project_nimservice(body)}


@kopf.index(GROUP, VERSION, PLURAL, id=Index.READY_ENGINES.value)
async def ready_engine_index(body: kopf.Body, status: kopf.Status, **_: Any) -> dict[Any, Any] | None:
    """Ready engines by (namespace, claim, cache key): another NimService reuses them with no Job. The
    serving unit's once its EngineReady condition says so, every other unit's once its status holds one."""
    document = dict(status)
    try:
        recorded = NimServiceStatus.model_validate(document)
    except ValidationError:
        return None
    records = [unit.record() for unit in recorded.units or () if unit.role is not UnitRole.SERVING]
    if is_engine_ready(document):
        records.append(recorded.record())
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    engines = {}
    for record in records:
        if record is not None and record.engine.location and record.engine.cache_key:
            if record.engine.location.startswith("oci://"):
                continue  # a model image's engine is on no claim: nothing to share
            claim = record.engine.location.split("/", 1)[0]
            engines[(namespace, claim, record.engine.cache_key)] = ReadyEngine(record, name)
    return engines or None


@kopf.index(GROUP, VERSION, PLURAL, id=Index.TUNINGS.value)
async def tuning_index(body: kopf.Body, status: kopf.Status, **_: Any) -> dict[Any, Any] | None:
    """Recorded tunings by (namespace, tuning key): another NimService serving the same engine on the same
    GPU product with the same objective reuses one with no sweep (controller/tuning.py)."""
    document = dict(status).get("tuning")
    try:
        recorded = TuningStatus.model_validate(document) if document else None
    except ValidationError:
        return None
    if recorded is None:
        return None
    return {(body.metadata.namespace or "", recorded.key): RecordedTuning(recorded, body.metadata.name or "")}


def _unit_engines(body: kopf.Body, memo: kopf.Memo) -> tuple[tuple[str, str], ...]:
    """The (engine claim, conversion Job) of each of the NimService's serving units (none for a spec that does
    not validate), computed once per generation: two indexes need them on every watch event, status patches
    included."""
    uid, generation = body.metadata.uid or "", body.metadata.get("generation")
    state = _state(memo) if "nimify" in memo else None
    if state is not None and (known := state.engines.get(uid)) is not None and known[0] == generation:
        return known[1]
    try:
        nim = NimService.model_validate(dict(body))
        units = serving_units(nim, state.settings if state is not None else OperatorSettings())
    except (ValidationError, ValueError):
        units = ()  # the reconcile reports what is wrong with it
    engines = tuple(
        (u.location.claim, build_job_name(u.location.claim, u.location.cache_key, u.location.conversion_key))
        for u in units
        # A pipeline's unit serves its members' engines and builds none; a model image needs no Job, no claim.
        if not u.members and u.location.model_image is None
    )
    if state is not None:
        state.engines[uid] = (generation, engines)
    return engines


@kopf.index(GROUP, VERSION, PLURAL, id=Index.BUILD_JOBS.value)
async def build_job_index(body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict[ObjectKey, str] | None:
    """NimServices by the conversion Jobs their units need, so a Job's progress wakes exactly them."""
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    return {(namespace, job): name for _, job in _unit_engines(body, memo)} or None


@kopf.index(GROUP, VERSION, PLURAL, id=Index.CLAIM_USERS.value)
async def claim_user_index(body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict[ObjectKey, str] | None:
    """NimServices by the engine claims their units use: the shared claim goes with the last of them."""
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    return {(namespace, claim): name for claim, _ in _unit_engines(body, memo)} or None


# --- reconciling -------------------------------------------------------------------------------------------


async def _reconcile_by_key(state: OperatorState, key: ObjectKey) -> float | None:
    """Reconcile the NimService as the index holds it now, if it still exists; the queue retries what this
    raises. Returns the delay after which to run again (a child was refused), or None."""
    body = next(iter(state.indexes[Index.NIMSERVICES].get(key, ())), None)
    if body is None:
        return None
    return await state.reconciler.reconcile(body, Observed.from_indexes(state.indexes))


async def _resync_forever(state: OperatorState) -> None:
    """The level-triggered safety net: reconcile every known NimService from the in-memory index.

    Not a kopf timer: kopf puts a finalizer on every object with a timer, and a finalizer would make deleting
    a NimService depend on the operator running, with nothing outside the cluster to clean up.
    """
    while True:
        await asyncio.sleep(state.settings.resync_seconds)
        for key in list(state.indexes[Index.NIMSERVICES].keys()):
            state.queue.add(key)
        for namespace, name in list(state.indexes[Index.CLAIMS].keys()):
            if name == state.settings.engine_cache_claim:
                await _retire_shared_claim(state, namespace)


async def _retire_shared_claim(state: OperatorState, namespace: str) -> None:
    """Delete the namespace's shared engine claim once no NimService uses it (it has no owner to be garbage
    collected with). A NimService created meanwhile gets it back: the claim's deletion wakes its users."""
    users = len(state.indexes[Index.CLAIM_USERS].get((namespace, state.settings.engine_cache_claim), ()))
    observed = Observed.from_indexes(state.indexes)
    if (claim := unused_shared_claim(namespace, observed, users, state.settings)) is None:
        return
    logger.info("deleting the engine claim %s/%s: no NimService uses it any more", namespace, claim)
    try:
        await state.reconciler.writer.delete(CLAIM.kind, namespace, claim)
    except Exception as error:  # the next resync tries again
        logger.warning("engine claim %s/%s not deleted: %s", namespace, claim, error)


# --- triggers ----------------------------------------------------------------------------------------------


@kopf.on.event(GROUP, VERSION, PLURAL)
async def nimservice_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Queue a NimService that is new to the operator or has a new spec (generation); the events of its
    status patches are ours and need no reconcile."""
    state = _state(memo)
    key, uid = _object_key(body), body.metadata.uid or ""
    if type == "DELETED":
        metrics.READY.forget(*key)
        state.reconciler.forget(uid)
        state.queue.forget(key)
        state.generations.pop(uid, None)
        state.engines.pop(uid, None)
        await _retire_shared_claim(state, key[0])
        return
    state.reconciler.observed(uid, body.metadata.get("resourceVersion"))
    generation = body.metadata.get("generation")
    if uid in state.generations and state.generations[uid] == generation:
        return
    state.generations[uid] = generation
    state.queue.add(key)


def _queue_owners(state: OperatorState, body: kopf.Body) -> None:
    """A child changed: queue the NimService that owns it."""
    namespace = body.metadata.namespace or ""
    names = {ref["name"] for ref in body.metadata.get("ownerReferences") or [] if ref.get("kind") == KIND}
    if not names and (labelled := (body.metadata.labels or {}).get(NIMSERVICE_LABEL)):
        names.add(labelled)  # an object made from a child of ours: KEDA's HPA, owned by our ScaledObject
    for name in sorted(names):
        state.queue.add((namespace, name))


def _build_end(body: kopf.Body) -> str | None:
    """How a conversion Job or pod ended (its terminal condition or phase), or None while it runs."""
    if body.get("kind") == JOB.kind:
        for condition in body.get("status", {}).get("conditions") or []:
            if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
                return str(condition["type"])
        return None
    phase = body.get("status", {}).get("phase")
    return phase if phase in ("Succeeded", "Failed") else None


def _queue_waiters(state: OperatorState, type: str | None, body: kopf.Body, job_name: str) -> None:
    """A conversion Job or pod ended (or went): queue every NimService waiting for that Job, once per end.

    While it runs, its events change nothing for the NimServices waiting (a thousand of them, when they share
    an engine); its end, or its deletion (a Job expires after its TTL), is what each must act on.
    """
    uid = body.metadata.uid or ""
    end = None if type == "DELETED" else _build_end(body)
    if type != "DELETED" and (end is None or state.build_ends.get(uid) == end):
        return
    if type == "DELETED":
        state.build_ends.pop(uid, None)
    else:
        state.build_ends[uid] = end
    namespace = body.metadata.namespace or ""
    for name in state.indexes[Index.BUILD_JOBS].get((namespace, job_name), ()):
        state.queue.add((namespace, name))


def _register_child_trigger(child: ChildKind) -> None:
    """A deleted child is written again at the next reconcile (not skipped as a recent write); changes of a
    kind that `wakes_owner` reconcile the NimService owning it (and, for a conversion Job, every NimService
    waiting for it) right away instead of at the next resync."""

    async def changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        state = _state(memo)
        namespace = body.metadata.namespace or ""
        if type == "DELETED":
            state.reconciler.recent.forget((child.kind, namespace, body.metadata.name or ""))
            if child is CLAIM:  # the shared claim has no owner: its users are who need it back
                for name in state.indexes[Index.CLAIM_USERS].get((namespace, body.metadata.name or ""), ()):
                    state.queue.add((namespace, name))
        if child.wakes_owner or type == "DELETED":
            _queue_owners(state, body)
        if child is JOB:
            _queue_waiters(state, type, body, body.metadata.name or "")

    changed.__name__ = f"{child.plural}_changed"
    kopf.on.event(*_resource(child.group, child.version, child.plural), labels=MANAGED, id=changed.__name__)(
        changed
    )


for _child in CHILD_KINDS:
    _register_child_trigger(_child)


@kopf.on.event("v1", "pods", labels=BUILD_POD_LABELS)
async def build_pod_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A conversion pod's result is what the NimServices waiting for its Job read (engine_step.py)."""
    job_name = (body.metadata.labels or {}).get("batch.kubernetes.io/job-name")
    if job_name:
        _queue_waiters(_state(memo), type, body, job_name)


@kopf.on.event("v1", "pods", labels=SERVER_POD_LABELS)
async def server_pod_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
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
        state.queue.add((body.metadata.namespace or "", owner))
