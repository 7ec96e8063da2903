"""Drift detection from managedFields, against objects as a real apiserver returned them.

`data/live-*.json` are children that the operator applied on the local control plane (kube-apiserver 1.34),
read back with `kubectl get -o json --show-managed-fields` and trimmed to metadata, spec and nimify's own
managed-fields entry. They carry what a hand-written example would miss: atomic maps and structs
(`nodeSelector`, `selector`), keyed lists whose keys include a defaulted field (a port's protocol), elements
owned as a whole (`ownerReferences`), empty structs (`emptyDir: {}`) and apiserver defaults nimify never set.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from nimify.controller.drift import (
    APPLIED_HASH_ANNOTATION,
    ChildState,
    applied_fields,
    applied_hash,
    child_state,
    conflicting_elements,
    covers,
    owns_replicas,
    with_applied_hash,
)

DATA = Path(__file__).parent / "data"


def live(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((DATA / f"live-{name}.json").read_text())
    return body


def project(value: Any, fields: dict[str, Any]) -> Any:
    """The part of a live object that a managed-fields tree names: what nimify had sent."""
    if not fields or not isinstance(value, dict | list):
        return copy.deepcopy(value)
    if isinstance(value, list):
        projected = []
        for entry, sub in fields.items():
            if entry.startswith("k:"):
                key = json.loads(entry[2:])
                item = next(i for i in value if all(i.get(k) == v for k, v in key.items()))
                projected.append(project(item, sub))
        return projected
    return {
        entry[2:]: project(value[entry[2:]], sub)
        for entry, sub in fields.items()
        if entry.startswith("f:") and entry[2:] in value
    }


def desired_of(body: dict[str, Any]) -> dict[str, Any]:
    """The desired object nimify applied (without the hash it stamps), rebuilt from the live object: the
    fields in nimify's set, with defaulted key fields (a port's protocol) left out, as nimify leaves them."""
    fields = applied_fields(body)
    assert fields is not None
    desired = project(body, fields)
    desired |= {"apiVersion": body["apiVersion"], "kind": body["kind"]}
    desired["metadata"] |= {"name": body["metadata"]["name"], "namespace": body["metadata"]["namespace"]}
    desired["metadata"]["annotations"].pop(APPLIED_HASH_ANNOTATION)
    if not desired["metadata"]["annotations"]:
        del desired["metadata"]["annotations"]
    for container in desired.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
        for port in container.get("ports", []):
            port.pop("protocol", None)
    return desired


def stamped(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(desired, live) as after nimify's apply: the live object carries the desired object's hash."""
    body = live(name)
    desired = desired_of(body)
    body["metadata"]["annotations"][APPLIED_HASH_ANNOTATION] = applied_hash(desired)
    return desired, body


def drop(body: dict[str, Any], *path: str) -> None:
    """Another manager took the field at `path` (entries as in fieldsV1) from nimify's set."""
    fields = applied_fields(body)
    assert fields is not None
    for entry in path[:-1]:
        fields = fields[entry]
    del fields[path[-1]]


@pytest.mark.parametrize("name", ["deployment", "service", "pdb", "configmap"])
def test_an_applied_child_is_current(name: str) -> None:
    desired, body = stamped(name)
    assert child_state(desired, body) is ChildState.CURRENT


def test_missing_and_changed() -> None:
    desired, body = stamped("service")
    assert child_state(desired, None) is ChildState.MISSING
    wanted = copy.deepcopy(desired)
    wanted["spec"]["type"] = "NodePort"
    assert child_state(wanted, body) is ChildState.CHANGED


TRITON = ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"triton"}')


@pytest.mark.parametrize(
    "path",
    [
        pytest.param((*TRITON, "f:image"), id="set-image"),
        pytest.param(("f:metadata", "f:labels", "f:app.kubernetes.io/instance"), id="label"),
        pytest.param((*TRITON, "f:readinessProbe", "f:periodSeconds"), id="probe-field"),
        pytest.param((*TRITON, "f:livenessProbe"), id="probe"),
        pytest.param(("f:spec", "f:template", "f:spec", "f:nodeSelector"), id="atomic-map"),
        pytest.param((*TRITON, "f:ports", 'k:{"containerPort":8000,"protocol":"TCP"}'), id="keyed-element"),
        pytest.param(("f:spec", "f:replicas"), id="replicas"),
    ],
)
def test_a_field_someone_else_took_is_drift(path: tuple[str, ...]) -> None:
    desired, body = stamped("deployment")
    drop(body, *path)
    assert child_state(desired, body) is ChildState.DRIFTED


def test_a_field_nimify_does_not_set_is_never_drift() -> None:
    desired, body = stamped("deployment")
    body["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "7"
    body["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "DEBUG", "value": "1"}]
    assert child_state(desired, body) is ChildState.CURRENT


def test_without_drift_checks_only_the_hash_counts() -> None:
    desired, body = stamped("service")
    drop(body, "f:spec", "f:type")
    assert child_state(desired, body, drift=False) is ChildState.CURRENT
    assert child_state(desired, body) is ChildState.DRIFTED


def test_a_child_nimify_never_applied_is_drift() -> None:
    desired, body = stamped("pdb")
    body["metadata"]["managedFields"] = [
        {"manager": "kubectl-create", "operation": "Update", "fieldsV1": {"f:spec": {}}}
    ]
    assert child_state(desired, body) is ChildState.DRIFTED


def test_owns_replicas_reads_nimify_s_entry() -> None:
    _, body = stamped("deployment")
    assert owns_replicas(body)
    drop(body, "f:spec", "f:replicas")
    assert not owns_replicas(body)


def test_covers_sets_and_leaves() -> None:
    assert covers({"finalizers": ["a", "b"]}, {"f:finalizers": {'v:"a"': {}, 'v:"b"': {}}})
    assert not covers({"finalizers": ["a", "c"]}, {"f:finalizers": {'v:"a"': {}}})
    assert covers({"args": ["--x", "--y"]}, {"f:args": {}}), "an atomic list is owned whole"
    assert covers({"emptyDir": {}}, {}), "nothing to revert in an empty struct"


def test_a_renumbered_service_port_is_found_by_its_name() -> None:
    desired, body = stamped("service")
    body["spec"]["ports"][0]["port"] = 9000
    assert conflicting_elements(desired, body) == ["/spec/ports/0"]
    assert conflicting_elements(desired, live("service")) == []


def test_renumbered_container_ports_are_removed_last_first() -> None:
    desired, body = stamped("deployment")
    ports = body["spec"]["template"]["spec"]["containers"][0]["ports"]
    ports[0]["containerPort"], ports[2]["containerPort"] = 9000, 9002
    assert conflicting_elements(desired, body) == [
        "/spec/template/spec/containers/0/ports/2",
        "/spec/template/spec/containers/0/ports/0",
    ]


def test_with_applied_hash_stamps_a_copy() -> None:
    desired, _ = stamped("configmap")
    original = copy.deepcopy(desired)
    result = with_applied_hash(desired)
    assert desired == original
    assert result["metadata"]["annotations"] == {APPLIED_HASH_ANNOTATION: applied_hash(desired)}
    assert applied_hash(desired) == applied_hash(json.loads(json.dumps(desired)))
