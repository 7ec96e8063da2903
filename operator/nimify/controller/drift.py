"""Whether a live child still is what nimify applied, without a request and without guessing at defaults.

Two facts decide it, both on the live object the watch delivered:
- the applied-hash annotation: the hash of the desired object nimify last applied. A different hash means the
  spec (or the operator) wants something new.
- `metadata.managedFields`: server-side apply records, per field manager, every field it set. When anyone else
  changes or removes one of those fields (`kubectl set image`, `kubectl edit`, another controller's update),
  the apiserver moves that field out of nimify's set. So "every field of the desired object is still in
  nimify's set" means nobody has touched what nimify sets, whatever the apiserver did to defaults and
  formats (quantities, ports' protocol, probe defaults).
Fields nimify does not set (an HPA's replicas, other controllers' annotations, a Service's clusterIP) are not
in the desired object, so they are never compared and never reverted.

The comparison walks the desired object and the managed-fields tree together and takes the list types from
that tree (`k:` keyed entries for map lists, `v:` for sets, a leaf for atomic lists and structs), so no list
of Kubernetes' merge keys lives here. The one exception is `conflicting_elements`: an edit of a port number
leaves an element that carries nimify's port name under someone else's key; Kubernetes requires port names to
be unique, so that element must be removed before nimify's apply can put its own back.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Any

from nimify.render.identity import ANNOTATION_PREFIX, FIELD_MANAGER

APPLIED_HASH_ANNOTATION = f"{ANNOTATION_PREFIX}/applied-hash"
# Identity, not content: never in a managed-fields set.
_UNTRACKED_TOP = ("apiVersion", "kind")
_UNTRACKED_METADATA = ("name", "namespace")


class ChildState(StrEnum):
    CURRENT = "current"
    MISSING = "missing"
    CHANGED = "changed"  # nimify wants something new
    DRIFTED = "drifted"  # someone else changed what nimify set


def applied_hash(desired: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(desired, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[
        :20
    ]


def with_applied_hash(desired: dict[str, Any]) -> dict[str, Any]:
    """The object stamped with the hash of its own desired content."""
    stamped: dict[str, Any] = json.loads(json.dumps(desired))
    stamped["metadata"].setdefault("annotations", {})[APPLIED_HASH_ANNOTATION] = applied_hash(desired)
    return stamped


def applied_fields(live: dict[str, Any], manager: str = FIELD_MANAGER) -> dict[str, Any] | None:
    """The fields `manager` owns through server-side apply on the main resource (not a subresource).

    `fieldsV1` is the apiserver's tree, or that tree as compact JSON text: what the operator's indexes
    keep (controller/projection.py), a tenth of the memory of the parsed tree, parsed here when asked."""
    for entry in live.get("metadata", {}).get("managedFields") or []:
        if (
            entry.get("manager") == manager
            and entry.get("operation") == "Apply"
            and not entry.get("subresource")
        ):
            kept = entry.get("fieldsV1") or {}
            fields: dict[str, Any] = json.loads(kept) if isinstance(kept, str) else kept
            return fields
    return None


def _empty(value: Any) -> bool:
    return value is None or value == {} or value == []


def _key_matches(item: dict[str, Any], key: dict[str, Any]) -> bool:
    """A map-list element matches a `k:{...}` entry when every key field it sets has that value (key fields it
    leaves out, such as a port's protocol, were defaulted by the apiserver)."""
    present = [name for name in key if name in item]
    return bool(present) and all(item[name] == key[name] for name in present)


def _covers_list(items: list[Any], node: dict[str, Any]) -> bool:
    keyed = [(json.loads(entry[2:]), sub) for entry, sub in node.items() if entry.startswith("k:")]
    values = {entry[2:] for entry in node if entry.startswith("v:")}
    for position, item in enumerate(items):
        if isinstance(item, dict) and keyed:
            sub = next((sub for key, sub in keyed if _key_matches(item, key)), None)
            if sub is None or not covers(item, sub):
                return False
        elif f"i:{position}" in node:
            if not covers(item, node[f"i:{position}"]):
                return False
        elif json.dumps(item, separators=(",", ":")) not in values:
            return False
    return True


def covers(value: Any, node: dict[str, Any]) -> bool:
    """Whether the managed-fields tree `node` still holds every field of `value`."""
    if not node or not isinstance(value, dict | list):
        return True  # a leaf: a scalar, or an atomic list or struct owned whole
    if isinstance(value, list):
        return _covers_list(value, node)
    for key, item in value.items():
        if _empty(item):
            continue  # the apiserver may drop an empty value; nothing in it to revert
        sub = node.get(f"f:{key}")
        if sub is None or not covers(item, sub):
            return False
    return True


def _tracked(desired: dict[str, Any]) -> dict[str, Any]:
    tracked = {key: value for key, value in desired.items() if key not in _UNTRACKED_TOP}
    tracked["metadata"] = {
        key: value for key, value in desired["metadata"].items() if key not in _UNTRACKED_METADATA
    }
    return tracked


def child_state(desired: dict[str, Any], live: dict[str, Any] | None, *, drift: bool = True) -> ChildState:
    """Where `live` stands against `desired` (unstamped); `drift=False` trusts the hash alone."""
    if live is None:
        return ChildState.MISSING
    annotations = live.get("metadata", {}).get("annotations") or {}
    if annotations.get(APPLIED_HASH_ANNOTATION) != applied_hash(desired):
        return ChildState.CHANGED
    if not drift:
        return ChildState.CURRENT
    fields = applied_fields(live)
    if fields is None or not covers(_tracked(with_applied_hash(desired)), fields):
        return ChildState.DRIFTED
    return ChildState.CURRENT


def _renamed(desired: list[dict[str, Any]], live: list[dict[str, Any]], key: str, path: str) -> list[str]:
    """Pointers to live elements that carry a desired element's name under a different key."""
    wanted = {item.get("name"): item.get(key) for item in desired if item.get("name")}
    return [
        f"{path}/{index}"
        for index, item in enumerate(live)
        if item.get("name") in wanted and item.get(key) != wanted[item.get("name")]
    ]


def conflicting_elements(desired: dict[str, Any], live: dict[str, Any] | None) -> list[str]:
    """JSON pointers (in `live`) to port entries someone renumbered: removed before nimify re-applies its own,
    last index first so that each pointer stays valid while the patch runs."""
    if live is None:
        return []
    pointers: list[str] = []
    if desired["kind"] == "Service":
        pointers += _renamed(
            desired["spec"].get("ports") or [], live.get("spec", {}).get("ports") or [], "port", "/spec/ports"
        )
    elif desired["kind"] == "Deployment":
        live_containers = live.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
        for container in desired["spec"]["template"]["spec"]["containers"]:
            for index, found in enumerate(live_containers):
                if found.get("name") == container["name"]:
                    pointers += _renamed(
                        container.get("ports") or [],
                        found.get("ports") or [],
                        "containerPort",
                        f"/spec/template/spec/containers/{index}/ports",
                    )
    return sorted(pointers, key=lambda pointer: [int(p) if p.isdigit() else p for p in pointer.split("/")])[
        ::-1
    ]


def owns_replicas(deployment: dict[str, Any]) -> bool:
    """Whether nimify's field manager applied the Deployment's spec.replicas."""
    fields = applied_fields(deployment) or {}
    return "f:replicas" in fields.get("f:spec", {})
