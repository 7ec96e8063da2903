"""Writes to the Kubernetes API: server-side apply of children and merge patches of NimService status.

Reads come from kopf's watch-fed indexes (see observed.py), never from list calls. Every write is counted, so
"a steady-state operator sends no writes" is something a test can check.
"""

from __future__ import annotations

import hashlib
import json
from http import HTTPStatus
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.codecs import from_dict
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import PersistentVolumeClaim
from lightkube.types import PatchType

from nimify.api.nimservice import GROUP, KIND, PLURAL, VERSION
from nimify.controller import metrics
from nimify.render.identity import ANNOTATION_PREFIX, FIELD_MANAGER

APPLIED_HASH_ANNOTATION = f"{ANNOTATION_PREFIX}/applied-hash"
REPLICAS_HANDOVER_MANAGER = f"{FIELD_MANAGER}-replicas-handover"


def owns_replicas(deployment: dict[str, Any]) -> bool:
    """Whether nimify's field manager owns the Deployment's spec.replicas (from its managedFields)."""
    for entry in deployment.get("metadata", {}).get("managedFields") or []:
        if entry.get("manager") == FIELD_MANAGER and entry.get("operation") == "Apply":
            return "f:replicas" in (entry.get("fieldsV1") or {}).get("f:spec", {})
    return False


NimServiceResource = create_namespaced_resource(GROUP, VERSION, KIND, PLURAL)


def applied_hash(desired: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(desired, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[
        :20
    ]


def with_applied_hash(desired: dict[str, Any]) -> dict[str, Any]:
    """The object stamped with the hash of its own desired content, so an unchanged child needs no request."""
    stamped: dict[str, Any] = json.loads(json.dumps(desired))
    stamped["metadata"].setdefault("annotations", {})[APPLIED_HASH_ANNOTATION] = applied_hash(desired)
    return stamped


def is_current(desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
    if live is None:
        return False
    annotations = live.get("metadata", {}).get("annotations") or {}
    return bool(annotations.get(APPLIED_HASH_ANNOTATION) == applied_hash(desired))


class KubeWriter:
    def __init__(self, client: AsyncClient | None = None) -> None:
        self._client = client

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            self._client = AsyncClient(field_manager=FIELD_MANAGER)
        return self._client

    async def apply(self, desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
        """Server-side apply `desired` unless `live` already carries it; True when a request was sent."""
        if is_current(desired, live):
            return False
        metrics.API_WRITES.labels(verb="apply", kind=desired["kind"]).inc()
        await self.client.apply(
            from_dict(with_applied_hash(desired)), field_manager=FIELD_MANAGER, force=True
        )
        return True

    async def create_if_absent(self, desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
        """Create an immutable, deterministically named object (a conversion Job) unless it exists.

        Never applied: its pod template is immutable, and another NimService with the same engine may have
        created it a moment ago (not yet in our watch): "already exists" then just means "being built".
        """
        if live is not None:
            return False
        metrics.API_WRITES.labels(verb="create", kind=desired["kind"]).inc()
        try:
            await self.client.create(from_dict(desired), field_manager=FIELD_MANAGER)
        except ApiError as error:
            if error.status.code == HTTPStatus.CONFLICT:
                return False
            raise
        return True

    async def hand_over_replicas(self, namespace: str, name: str, replicas: int) -> None:
        """Give spec.replicas a second owner before nimify stops applying it (autoscaling turned on).

        Server-side apply removes a field its only manager stops sending, and the Deployment would fall back
        to one replica before the HPA acts. Kubernetes' documented hand-over: another manager applies the live
        value first, so the field survives; the HPA's updates then take it over.
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

    async def add_claim_owner(self, namespace: str, name: str, owner: dict[str, Any]) -> None:
        """Adds a non-controlling owner to a shared claim (strategic merge keys ownerReferences by uid)."""
        metrics.API_WRITES.labels(verb="patch", kind="PersistentVolumeClaim").inc()
        await self.client.patch(
            PersistentVolumeClaim,
            name,
            {"metadata": {"ownerReferences": [owner]}},
            namespace=namespace,
            patch_type=PatchType.STRATEGIC,
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

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
