"""kopf registrations: watches and indexes of NimServices and their children, and what triggers a reconcile.

A reconcile runs on resume, create and spec update, on a resync loop (the level-triggered safety net) and
whenever an owned Job, build Pod or Deployment changes. Children are watched with a server-side label
selector, so the operator never sees, let alone lists, objects it does not manage.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import kopf
from prometheus_client import start_http_server
from pydantic import ValidationError

from nimify.api import NimService
from nimify.api.nimservice import GROUP, KIND, PLURAL, VERSION
from nimify.controller import metrics
from nimify.controller.engine_step import is_engine_ready
from nimify.controller.kube import KubeWriter
from nimify.controller.observed import Observed
from nimify.controller.reconcile import Reconciler
from nimify.render.engine import engine_location
from nimify.render.identity import ANNOTATION_PREFIX, COMPONENT_BUILD, build_job_name
from nimify.render.identity import MANAGED_BY_SELECTOR as MANAGED
from nimify.settings import OperatorSettings

MANAGED_SELECTOR = ",".join(f"{key}={value}" for key, value in MANAGED.items())
# (kind, group, version, plural) of every child kind the reconcile reads back.
CHILD_KINDS = (
    ("Job", "batch", "v1", "jobs"),
    ("Deployment", "apps", "v1", "deployments"),
    ("Service", "", "v1", "services"),
    ("ConfigMap", "", "v1", "configmaps"),
    ("PersistentVolumeClaim", "", "v1", "persistentvolumeclaims"),
    ("HorizontalPodAutoscaler", "autoscaling", "v2", "horizontalpodautoscalers"),
    ("PodDisruptionBudget", "policy", "v1", "poddisruptionbudgets"),
)

_locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
_state: dict[str, Any] = {}


def _resource(group: str, version: str, plural: str) -> tuple[str, str] | tuple[str, str, str]:
    """The positional form kopf's decorators take: (group, version, plural), or (version, plural) for core."""
    return (group, version, plural) if group else (version, plural)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    operator_settings = OperatorSettings()
    settings.persistence.finalizer = f"{ANNOTATION_PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    # Only warnings of kopf's own become Events; the operator posts its own, specific ones via kopf.event.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.inactivity_timeout = 600
    for _kind, group, version, plural in CHILD_KINDS:
        settings.watching.label_selectors[_resource(group, version, plural)] = MANAGED_SELECTOR
    settings.watching.label_selectors[_resource("", "v1", "pods")] = (
        f"{MANAGED_SELECTOR},app.kubernetes.io/component={COMPONENT_BUILD}"
    )
    start_http_server(operator_settings.metrics_port)
    _state["settings"] = operator_settings
    _state["reconciler"] = Reconciler(KubeWriter(), operator_settings, _post_event)
    _state["resync"] = asyncio.create_task(_resync_forever(operator_settings.resync_seconds))


@kopf.on.cleanup()
async def close(**_: Any) -> None:
    if (resync := _state.get("resync")) is not None:
        resync.cancel()
    if (reconciler := _state.get("reconciler")) is not None:
        await reconciler.writer.close()


def _post_event(body: Any, kind: str, reason: str, message: str) -> None:
    kopf.event(body, type=kind, reason=reason, message=message)


# --- indexes: kopf keeps them current from its watch streams ------------------------------------------------


def _object_key(body: kopf.Body) -> tuple[str, str]:
    return body.metadata.namespace or "", body.metadata.name or ""


def _register_child_index(kind: str, group: str, version: str, plural: str) -> None:
    def index(body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
        return {_object_key(body): dict(body)}

    index.__name__ = f"{kind.lower()}_index"
    kopf.index(*_resource(group, version, plural), labels=MANAGED, id=index.__name__)(index)


for _kind, _group, _version, _plural in CHILD_KINDS:
    _register_child_index(_kind, _group, _version, _plural)


@kopf.index("v1", "pods", labels=MANAGED | {"app.kubernetes.io/component": COMPONENT_BUILD})
def build_pod_index(body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    job = (body.metadata.labels or {}).get("batch.kubernetes.io/job-name", "")
    return {(body.metadata.namespace or "", job): dict(body)}


@kopf.index(GROUP, VERSION, PLURAL)
def nimservice_index(body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {_object_key(body): dict(body)}


@kopf.index(GROUP, VERSION, PLURAL)
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


@kopf.index(GROUP, VERSION, PLURAL)
def build_job_index(body: kopf.Body, **_: Any) -> dict[tuple[str, str], str] | None:
    """NimServices by the conversion Job their current spec needs, so a Job's progress wakes exactly them."""
    try:
        nim = NimService.model_validate(dict(body))
    except ValidationError:
        return None  # the reconcile reports what is wrong with it
    location = engine_location(nim, _state.get("settings") or OperatorSettings())
    job = build_job_name(location.claim, location.cache_key)
    return {(body.metadata.namespace or "", job): body.metadata.name or ""}


INDEX_NAMES = (
    *(f"{kind.lower()}_index" for kind, *_ in CHILD_KINDS),
    "build_pod_index",
    "nimservice_index",
    "ready_engine_index",
)


def _observed(indexes: Mapping[str, Any]) -> Observed:
    return Observed(
        children={kind: indexes[f"{kind.lower()}_index"] for kind, *_ in CHILD_KINDS},
        build_pods=indexes["build_pod_index"],
        ready_engines=indexes["ready_engine_index"],
    )


async def _reconcile(body: Mapping[str, Any], indexes: Mapping[str, Any]) -> None:
    # kopf hands its indexes (live views) only to handlers; keep them for the resync loop.
    _state.setdefault("indexes", {name: indexes[name] for name in INDEX_NAMES})
    key = (body["metadata"].get("namespace", ""), body["metadata"]["name"])
    async with _locks[key]:
        await _state["reconciler"].reconcile(dict(body), _observed(indexes))


# --- triggers ----------------------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile(body: kopf.Body, **kwargs: Any) -> None:
    await _reconcile(body, kwargs)


async def _resync_forever(interval: float) -> None:
    """The level-triggered safety net: reconcile every known NimService from the in-memory index.

    Not a kopf timer: kopf puts a finalizer on every object with a timer, and a finalizer would make deleting
    a NimService depend on the operator running, with nothing outside the cluster to clean up.
    """
    while True:
        await asyncio.sleep(interval)
        indexes = _state.get("indexes")
        if indexes is None:
            continue
        for key, store in list(indexes["nimservice_index"].items()):
            for body in list(store):
                try:
                    await _reconcile(body, indexes)
                except Exception:  # one broken NimService must not stop the resync of the others
                    logging.getLogger(__name__).exception("resync of %s/%s failed", *key)


@kopf.on.event(GROUP, VERSION, PLURAL)
def forget_deleted(type: str, body: kopf.Body, **_: Any) -> None:
    if type == "DELETED":
        metrics.READY.forget(*_object_key(body))
        if (reconciler := _state.get("reconciler")) is not None:
            reconciler.forget(body.metadata.uid or "")


async def _reconcile_owners(body: kopf.Body, kwargs: Mapping[str, Any], job_name: str | None = None) -> None:
    """A child changed: reconcile its owner and, for a conversion Job or Pod, every NimService needing it."""
    namespace = body.metadata.namespace or ""
    names = {ref["name"] for ref in body.metadata.get("ownerReferences") or [] if ref.get("kind") == KIND}
    if job_name:
        names |= set(kwargs["build_job_index"].get((namespace, job_name), ()))
    nimservices = kwargs["nimservice_index"]
    for name in sorted(names):
        if (nim := next(iter(nimservices.get((namespace, name), [])), None)) is not None:
            await _reconcile(nim, kwargs)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
async def job_changed(body: kopf.Body, **kwargs: Any) -> None:
    await _reconcile_owners(body, kwargs, job_name=body.metadata.name)


@kopf.on.event("v1", "pods", labels=MANAGED | {"app.kubernetes.io/component": COMPONENT_BUILD})
async def build_pod_changed(body: kopf.Body, **kwargs: Any) -> None:
    await _reconcile_owners(
        body, kwargs, job_name=(body.metadata.labels or {}).get("batch.kubernetes.io/job-name")
    )


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def deployment_changed(body: kopf.Body, **kwargs: Any) -> None:
    await _reconcile_owners(body, kwargs)
