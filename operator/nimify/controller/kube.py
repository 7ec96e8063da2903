"""Writes to the Kubernetes API: server-side apply, create, delete and patches of children, NimService status
and Events. Nothing here decides anything; `desired.py` says what to write, `writes.py` runs it.

Reads come from kopf's watch-fed indexes (see observed.py), never from list calls. Every write is counted, so
"a steady-state operator sends no writes" is something a test can check.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from functools import cache
from http import HTTPStatus
from typing import Any

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.codecs import from_dict
from lightkube.core.resource_registry import resource_registry
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.types import PatchType

from nimify.api.nimservice import GROUP, KIND, PLURAL, VERSION
from nimify.controller import metrics
from nimify.controller.children import CHILD_BY_KIND, ChildKind
from nimify.controller.drift import with_applied_hash
from nimify.render.identity import FIELD_MANAGER

REPLICAS_HANDOVER_MANAGER = f"{FIELD_MANAGER}-replicas-handover"
# A busy apiserver answers slowly, not never: wait for it as long as it waits for itself (its own request
# timeout is 60 s) rather than give up after lightkube's 10 s and send the same write again. The reconcile
# workers bound how many requests are in flight, far below the connection pool's 100, so none waits for one.
REQUEST_TIMEOUT = httpx2.Timeout(60.0, connect=10.0)

NimServiceResource = create_namespaced_resource(GROUP, VERSION, KIND, PLURAL)


@cache
def _resource(child: ChildKind) -> Any:
    """lightkube's class for a child kind: its own model for built-in kinds, a generic one for CRDs."""
    if child.optional:
        return create_namespaced_resource(child.group, child.version, child.kind, child.plural)
    return resource_registry.load(child.api_version, child.kind)


def resource_of(kind: str) -> Any:
    return _resource(CHILD_BY_KIND[kind])


class KubeWriter:
    def __init__(self, client: AsyncClient | None = None) -> None:
        self._client = client

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            self._client = AsyncClient(field_manager=FIELD_MANAGER, timeout=REQUEST_TIMEOUT)
        return self._client

    async def apply(self, desired: dict[str, Any]) -> None:
        """Server-side apply `desired`, stamped with its applied hash, taking over fields others changed."""
        meta = desired["metadata"]
        metrics.API_WRITES.labels(verb="apply", kind=desired["kind"]).inc()
        await self.client.patch(
            resource_of(desired["kind"]),
            meta["name"],
            with_applied_hash(desired),
            namespace=meta["namespace"],
            patch_type=PatchType.APPLY,
            field_manager=FIELD_MANAGER,
            force=True,
        )

    async def create(self, desired: dict[str, Any]) -> bool:
        """Create an immutable, deterministically named object (a conversion Job); False if it exists.

        Never applied: its pod template is immutable, and another NimService with the same engine may have
        created it a moment ago (not yet in our watch): "already exists" then just means "being built".
        """
        metrics.API_WRITES.labels(verb="create", kind=desired["kind"]).inc()
        try:
            await self.client.create(from_dict(desired), field_manager=FIELD_MANAGER)
        except ApiError as error:
            if error.status.code == HTTPStatus.CONFLICT:
                return False
            raise
        return True

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete a child; one that is already gone is fine."""
        metrics.API_WRITES.labels(verb="delete", kind=kind).inc()
        try:
            await self.client.delete(resource_of(kind), name, namespace=namespace)
        except ApiError as error:
            if error.status.code != HTTPStatus.NOT_FOUND:
                raise

    async def remove_elements(self, kind: str, namespace: str, name: str, pointers: list[str]) -> None:
        """JSON-patch away list elements (last first), so that an apply can put nimify's own back."""
        metrics.API_WRITES.labels(verb="patch", kind=kind).inc()
        await self.client.patch(
            resource_of(kind),
            name,
            [{"op": "remove", "path": pointer} for pointer in pointers],
            namespace=namespace,
            patch_type=PatchType.JSON,
            field_manager=FIELD_MANAGER,
        )

    async def hand_over_replicas(self, namespace: str, name: str, replicas: int) -> None:
        """Give spec.replicas a second owner before nimify stops applying it.

        Server-side apply removes a field its only manager stops sending, and the Deployment would fall back
        to one replica before the HPA acts. Kubernetes' documented hand-over: another manager applies the live
        value first, so the field survives; the HPA's updates (or nobody's) then keep it.
        """
        metrics.API_WRITES.labels(verb="apply", kind="Deployment").inc()
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas},
        }
        await self.client.patch(
            Deployment,
            name,
            body,
            namespace=namespace,
            patch_type=PatchType.APPLY,
            field_manager=REPLICAS_HANDOVER_MANAGER,
            force=True,
        )

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        metrics.API_WRITES.labels(verb="patch", kind=KIND).inc()
        await self.client.patch(
            NimServiceResource.Status,
            name,
            {"status": status},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )

    async def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Secret's data (base64 values), or None when there is no such Secret (or it may not be read:
        the registry's refusal then says what is missing)."""
        from lightkube.resources.core_v1 import Secret

        try:
            secret = await self.client.get(Secret, name, namespace=namespace)
        except ApiError as error:
            if error.status.code in (HTTPStatus.NOT_FOUND, HTTPStatus.FORBIDDEN):
                return None
            raise
        return dict(secret.data or {})

    async def ready_pod_ips(self, namespace: str, labels: dict[str, str]) -> list[str]:
        """Addresses of the ready pods the labels select, by pod name (a canary's answer gate asks one)."""
        from lightkube.resources.core_v1 import Pod

        selector: dict[str, Any] = dict(labels)
        found = []
        async for pod in self.client.list(Pod, namespace=namespace, labels=selector):
            conditions = (pod.status.conditions if pod.status else None) or []
            ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
            meta = pod.metadata
            if ready and pod.status and pod.status.podIP and meta is not None and not meta.deletionTimestamp:
                found.append((meta.name or "", pod.status.podIP))
        return [ip for _, ip in sorted(found)]

    async def post_event(self, involved: dict[str, Any], kind: str, reason: str, message: str) -> None:
        """A core/v1 Event about a NimService, posted from wherever the reconcile runs."""
        metrics.API_WRITES.labels(verb="create", kind="Event").inc()
        meta = involved["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", f"{GROUP}/{VERSION}"),
                "kind": KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": FIELD_MANAGER, "host": _host()},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": _host(),
        }
        await self.client.create(from_dict(event))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


@cache
def _host() -> str:
    return socket.gethostname()[:128]
