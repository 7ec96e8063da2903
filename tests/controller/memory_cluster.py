"""An in-memory stand-in for the apiserver, for fast Reconciler tests: it keeps objects, records every write
and event, keeps per-manager managed fields the way server-side apply does (enough for drift detection), and
can refuse writes like an admission policy would.

It models what the reconcile relies on, not all of Kubernetes: apply merges the applied object into the live
one and makes nimify own exactly what it sent (fields it stops sending and nobody else owns go away); an edit
by another manager changes a value and takes that field from nimify; a Deployment keeps `spec.replicas` at 1
when nobody sets it. Real apiserver behaviour is what the e2e tests check.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
from lightkube import ApiError
from lightkube.models.meta_v1 import Status

from nimify.controller.children import CHILD_BY_KIND
from nimify.controller.observed import Observed
from nimify.controller.projection import project_child
from nimify.render.identity import FIELD_MANAGER, NIMSERVICE_LABEL

Key = tuple[str, str, str]  # kind, namespace, name
Path = tuple[Any, ...]  # dict keys, and {key field: value} for a list element

# The fields that key list elements, in the order the fake looks for them (a port before its name).
_LIST_KEYS = ("uid", "containerPort", "port", "mountPath", "name", "input")


def _element_key(item: dict[str, Any]) -> dict[str, Any] | None:
    for name in _LIST_KEYS:
        if name in item:
            key = {name: item[name]}
            if name in ("port", "containerPort"):
                key["protocol"] = item.get("protocol", "TCP")
            return key
    return None


def fields_of(value: Any) -> dict[str, Any]:
    """A managed-fields tree for `value`, in the apiserver's fieldsV1 notation."""
    if isinstance(value, dict):
        return {f"f:{key}": fields_of(item) for key, item in value.items()}
    if isinstance(value, list) and value and all(isinstance(i, dict) and _element_key(i) for i in value):
        return {
            "k:" + json.dumps(_element_key(item), separators=(",", ":")): {".": {}, **fields_of(item)}
            for item in value
        }
    return {}  # a scalar, or an atomic list


def _without_identity(fields: dict[str, Any]) -> dict[str, Any]:
    """A whole object's fields as the apiserver records them: without apiVersion, kind, name, namespace."""
    metadata = {k: v for k, v in fields.get("f:metadata", {}).items() if k not in ("f:name", "f:namespace")}
    top = {k: v for k, v in fields.items() if k not in ("f:apiVersion", "f:kind")}
    return top | {"f:metadata": metadata}


def _prune(body: Any, before: dict[str, Any], now: dict[str, Any], others: list[dict[str, Any]]) -> None:
    """Remove from `body` the map keys (`f:` entries) an apply owned in `before` and not in `now`, unless
    another manager owns them (as server-side apply does); keyed list elements are left as they are."""
    if not isinstance(body, dict):
        return
    for entry, below in before.items():
        if not entry.startswith("f:"):
            continue
        key = entry[2:]
        theirs = [other[entry] for other in others if isinstance(other.get(entry), dict)]
        if entry not in now:
            if not theirs and key in body:
                del body[key]
        elif isinstance(below, dict) and isinstance(now[entry], dict):
            _prune(body.get(key), below, now[entry], theirs)


def _merge(live: Any, applied: Any) -> Any:
    if isinstance(live, dict) and isinstance(applied, dict):
        merged = dict(live)
        for key, value in applied.items():
            merged[key] = _merge(live.get(key), value)
        return merged
    return copy.deepcopy(applied)


def _drop(fields: dict[str, Any], path: Path) -> None:
    """Remove `path` (and what is under it) from a managed-fields tree, and parents left empty (the apiserver
    keeps no empty entry: an empty one would mean "this field itself is owned")."""
    if not path:
        return
    entry = _entry(path[0])
    if entry not in fields:
        return
    if len(path) == 1:
        del fields[entry]
        return
    _drop(fields[entry], path[1:])
    if not fields[entry]:
        del fields[entry]


def _entry(step: Any) -> str:
    if isinstance(step, dict):
        return "k:" + json.dumps(step, separators=(",", ":"))
    return f"f:{step}"


def _locate(obj: Any, path: Path) -> tuple[Any, Any]:
    """The container of the last step of `path` in `obj`, and the key or index to use in it."""
    node = obj
    for step in path[:-1]:
        node = _step(node, step)
    last = path[-1]
    if isinstance(last, dict):
        return node, next(i for i, item in enumerate(node) if all(item.get(k) == v for k, v in last.items()))
    return node, last


def _step(node: Any, step: Any) -> Any:
    if isinstance(step, dict):
        return next(
            item
            for item in node
            if all(item.get(k) == v for k, v in step.items() if k != "protocol" or k in item)
        )
    return node[step]


@dataclass
class Call:
    verb: str
    kind: str
    name: str
    detail: Any = field(default=None, repr=False)


@dataclass
class MemoryCluster:
    namespace: str = "ml"
    objects: dict[Key, dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    status_patches: list[dict[str, Any]] = field(default_factory=list)
    refusals: dict[str, tuple[int, str, bool]] = field(default_factory=dict)  # kind -> (code, message, bare)
    _versions: Iterator[int] = field(default_factory=lambda: itertools.count(100))

    # --- what tests read and arrange ----------------------------------------------------------------------

    def observed(self) -> Observed:
        """What the operator's indexes would hold: each object as its kind's projection keeps it, so every
        Reconciler test also checks that the projections keep what the reconcile reads."""
        children: dict[str, dict[tuple[str, str], list[dict[str, Any]]]] = {}
        unit_children: dict[str, dict[tuple[str, str], list[str]]] = {}
        for (kind, namespace, name), body in self.objects.items():
            kept = project_child(copy.deepcopy(body), CHILD_BY_KIND[kind])
            children.setdefault(kind, {})[(namespace, name)] = [kept]
            owner = (body["metadata"].get("labels") or {}).get(NIMSERVICE_LABEL)
            if CHILD_BY_KIND[kind].unit_index is not None and owner:
                unit_children.setdefault(kind, {}).setdefault((namespace, owner), []).append(name)
        return Observed(children=children, unit_children_by_kind=unit_children)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, self.namespace, name))

    def live(self, kind: str, name: str) -> dict[str, Any]:
        """The object, which must exist."""
        found = self.get(kind, name)
        assert found is not None, f"{kind} {name} does not exist"
        return found

    def writes(self) -> list[Call]:
        return [call for call in self.calls if call.verb != "event"]

    def forget_calls(self) -> None:
        self.calls.clear()
        self.events.clear()
        self.status_patches.clear()

    def put(self, body: dict[str, Any], manager: str = "someone-else") -> None:
        """An object someone else created (not server-side applied by nimify)."""
        body = copy.deepcopy(body)
        body["metadata"].setdefault("namespace", self.namespace)
        body["metadata"]["managedFields"] = [
            {"manager": manager, "operation": "Update", "fieldsV1": _without_identity(fields_of(body))}
        ]
        self._store(body)

    def edit(self, kind: str, name: str, path: Path, value: Any, manager: str = "kubectl-edit") -> None:
        """Another manager changes one field (value None removes it): nimify no longer owns it."""
        body = self.objects[(kind, self.namespace, name)]
        container, key = _locate(body, path)
        # Renumbering a keyed element (a port) makes it another element: the old one leaves every field set.
        owned = path[:-1] if len(path) > 1 and isinstance(path[-2], dict) and path[-1] in path[-2] else path
        if value is None:
            del container[key]
        else:
            container[key] = value
        for entry in body["metadata"]["managedFields"]:
            _drop(entry["fieldsV1"], owned)
        body["metadata"]["managedFields"].append({"manager": manager, "operation": "Update", "fieldsV1": {}})
        self._bump(body, spec_changed=path[0] == "spec")

    def roll_out(self, name: str, ready: int | None = None) -> None:
        """The Deployment controller has rolled the Deployment out, with `ready` (all) replicas ready."""
        body = self.objects[("Deployment", self.namespace, name)]
        replicas = body["spec"].get("replicas", 1)
        count = replicas if ready is None else ready
        body["status"] = {
            "observedGeneration": body["metadata"]["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": count,
            "availableReplicas": count,
        }

    def refuse(
        self, kind: str, message: str = "denied by policy", code: int = 422, *, bare: bool = False
    ) -> None:
        """Refuse writes of `kind` with a Status (as admission does), or a bare answer (`bare`: the 404 of an
        API group the apiserver does not serve)."""
        self.refusals[kind] = (code, message, bare)

    # --- the Writer protocol --------------------------------------------------------------------------------

    def _check(self, kind: str) -> None:
        if (refusal := self.refusals.get(kind)) is not None:
            code, message, bare = refusal
            if bare:
                request = httpx2.Request("PATCH", f"https://127.0.0.1/apis/{kind.lower()}")
                response = httpx2.Response(code, text=message, request=request)
                raise httpx2.HTTPStatusError(message, request=request, response=response)
            raise ApiError(status=Status(code=code, message=message, reason="Invalid", status="Failure"))

    def _store(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        meta.setdefault("uid", f"uid-{meta['name']}")
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = str(next(self._versions))
        self.objects[(body["kind"], meta["namespace"], meta["name"])] = body

    def _bump(self, body: dict[str, Any], *, spec_changed: bool) -> None:
        if spec_changed:
            body["metadata"]["generation"] += 1
        body["metadata"]["resourceVersion"] = str(next(self._versions))

    def _manager(self, body: dict[str, Any], manager: str) -> dict[str, Any] | None:
        return next(
            (
                e
                for e in body["metadata"]["managedFields"]
                if e["manager"] == manager and e["operation"] == "Apply"
            ),
            None,
        )

    async def apply(self, desired: dict[str, Any]) -> None:
        from nimify.controller.drift import with_applied_hash

        kind, name = desired["kind"], desired["metadata"]["name"]
        self.calls.append(Call("apply", kind, name, copy.deepcopy(desired)))
        self._check(kind)
        stamped = with_applied_hash(desired)
        live = self.objects.get((kind, self.namespace, name))
        fields = _without_identity(fields_of(stamped))
        if live is None:
            body = copy.deepcopy(stamped)
            body["metadata"]["managedFields"] = [
                {"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": fields}
            ]
            if kind == "Deployment":
                body["spec"].setdefault("replicas", 1)
            self._store(body)
            return
        before = json.dumps(live.get("spec"), sort_keys=True)
        ours = self._manager(live, FIELD_MANAGER)
        if (
            kind == "Deployment"
            and "replicas" not in desired["spec"]
            and ours
            and "f:replicas" in ours["fieldsV1"].get("f:spec", {})
        ):
            others = [e for e in live["metadata"]["managedFields"] if e is not ours]
            if not any("f:replicas" in e["fieldsV1"].get("f:spec", {}) for e in others):
                live["spec"]["replicas"] = 1  # the only owner stopped sending it: the default comes back
        merged = _merge(live, stamped)
        if ours is not None:  # what nimify sent before and sends no more, nobody else's, goes away
            others = [e["fieldsV1"] for e in live["metadata"]["managedFields"] if e is not ours]
            _prune(merged, ours["fieldsV1"], fields, others)
        merged["metadata"]["managedFields"] = [
            e
            for e in live["metadata"]["managedFields"]
            if not (e["manager"] == FIELD_MANAGER and e["operation"] == "Apply")
        ] + [{"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": fields}]
        # Whatever another manager changed and nimify sends again is nimify's again.
        self.objects[(kind, self.namespace, name)] = merged
        self._bump(merged, spec_changed=json.dumps(merged.get("spec"), sort_keys=True) != before)

    async def create(self, desired: dict[str, Any]) -> bool:
        kind, name = desired["kind"], desired["metadata"]["name"]
        self.calls.append(Call("create", kind, name))
        self._check(kind)
        if (kind, self.namespace, name) in self.objects:
            return False
        body = copy.deepcopy(desired)
        body["metadata"]["managedFields"] = [
            {"manager": FIELD_MANAGER, "operation": "Update", "fieldsV1": _without_identity(fields_of(body))}
        ]
        self._store(body)
        return True

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        self.calls.append(Call("delete", kind, name))
        self._check(kind)
        self.objects.pop((kind, namespace, name), None)

    async def remove_elements(self, kind: str, namespace: str, name: str, pointers: list[str]) -> None:
        self.calls.append(Call("remove", kind, name, list(pointers)))
        body = self.objects[(kind, namespace, name)]
        for pointer in pointers:
            *parents, last = pointer.strip("/").split("/")
            node: Any = body
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node[part]
            del node[int(last)]
        self._bump(body, spec_changed=True)

    async def hand_over_replicas(self, namespace: str, name: str, replicas: int) -> None:
        self.calls.append(Call("handover", "Deployment", name, replicas))
        body = self.objects[("Deployment", namespace, name)]
        body["spec"]["replicas"] = replicas
        body["metadata"]["managedFields"].append(
            {
                "manager": f"{FIELD_MANAGER}-replicas-handover",
                "operation": "Apply",
                "fieldsV1": {"f:spec": {"f:replicas": {}}},
            }
        )

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.calls.append(Call("status", "NimService", name, copy.deepcopy(status)))
        self._check("NimService")
        self.status_patches.append(copy.deepcopy(status))

    async def post_event(self, involved: dict[str, Any], kind: str, reason: str, message: str) -> None:
        self.calls.append(Call("event", "Event", involved["metadata"]["name"]))
        self._check("Event")
        self.events.append((kind, reason, message))

    async def close(self) -> None:
        return None
