"""What the operator keeps of a watched object: the fields the reconcile reads, nothing else.

kopf's indexes hold what the index functions return for every NimService, child and conversion pod the
watches deliver, for as long as the object exists. Whole bodies would make the operator's memory grow with
everything in them that no decision reads: managedFields of every manager (the largest part of most
objects), `kubectl.kubernetes.io/last-applied-configuration` (a second copy of the object), a ConfigMap's
data, a pod's spec. So each index keeps a projection: identity and ownership, nimify's own applied hash and
applied fields (what drift.py compares), and the paths its kind declares in `children.py` (`reads`).
The projections share the watch event's values instead of copying them: the rest of the event is freed. Two
exceptions, where the shared value would be most of what is kept: nimify's managed-fields tree is kept as
compact JSON text (drift.applied_fields parses it when a reconcile asks: a Deployment's tree is ~30 KB as
Python dicts, ~4 KB as text), and a `reads` path ending in `[a,b]` keeps only those keys of each list
element (a container's name and ports, not its whole definition).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from nimify.controller.children import ChildKind
from nimify.controller.drift import APPLIED_HASH_ANNOTATION
from nimify.render.identity import FIELD_MANAGER

Body = dict[str, Any]

# Metadata every projection keeps: identity, versions, ownership, deletion.
IDENTITY = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp", "deletionTimestamp")
NIMSERVICE_METADATA = (*IDENTITY, "generation", "labels")
# What a conversion pod tells: its phase and the result in its termination message.
BUILD_POD_READS = ("status.phase", "status.containerStatuses")


def _pick(source: Mapping[str, Any], keys: tuple[str, ...]) -> Body:
    return {key: source[key] for key in keys if source.get(key) is not None}


def _put(target: Body, source: Mapping[str, Any], path: str) -> None:
    """Copy the value at dotted `path`; `path[a,b]` names a list whose elements keep only keys a and b."""
    path, _, element_keys = path.partition("[")
    keys = path.split(".")
    value: Any = source
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            return
        value = value[key]
    if element_keys and isinstance(value, list):
        wanted = tuple(element_keys.rstrip("]").split(","))
        value = [_pick(item, wanted) if isinstance(item, Mapping) else item for item in value]
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = value


def _own_applied_fields(managed: list[Mapping[str, Any]] | None) -> list[Mapping[str, Any]]:
    """nimify's server-side-apply entry on the main resource (drift.applied_fields reads it), alone, with its
    fields tree as compact JSON text."""
    return [
        {
            "manager": FIELD_MANAGER,
            "operation": "Apply",
            "fieldsV1": json.dumps(entry.get("fieldsV1") or {}, separators=(",", ":")),
        }
        for entry in managed or ()
        if entry.get("manager") == FIELD_MANAGER
        and entry.get("operation") == "Apply"
        and not entry.get("subresource")
    ]


def project_child(body: Mapping[str, Any], child: ChildKind) -> Body:
    """The child as its index keeps it."""
    metadata = body.get("metadata") or {}
    kept_meta = _pick(metadata, (*IDENTITY, "ownerReferences"))
    if (applied := (metadata.get("annotations") or {}).get(APPLIED_HASH_ANNOTATION)) is not None:
        kept_meta["annotations"] = {APPLIED_HASH_ANNOTATION: applied}
    if own := _own_applied_fields(metadata.get("managedFields")):
        kept_meta["managedFields"] = own
    kept: Body = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": kept_meta}
    for path in child.reads:
        _put(kept, body, path)
    return kept


def project_build_pod(body: Mapping[str, Any]) -> Body:
    kept: Body = {"metadata": _pick(body.get("metadata") or {}, IDENTITY)}
    for path in BUILD_POD_READS:
        _put(kept, body, path)
    return kept


def project_nimservice(body: Mapping[str, Any]) -> Body:
    """Identity, spec and status: what NimService.model_validate and the reconcile read."""
    kept: Body = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": _pick(body.get("metadata") or {}, NIMSERVICE_METADATA),
        "spec": body.get("spec") or {},
    }
    if body.get("status"):
        kept["status"] = body["status"]
    return kept
