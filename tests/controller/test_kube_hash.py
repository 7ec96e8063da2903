"""The applied-hash annotation: an unchanged child needs no API request."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from nimify.controller.kube import (
    APPLIED_HASH_ANNOTATION,
    applied_hash,
    is_current,
    owns_replicas,
    with_applied_hash,
)

DESIRED: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "resnet50", "namespace": "ml", "labels": {"app.kubernetes.io/name": "nimservice"}},
    "spec": {"ports": [{"name": "http", "port": 8000}], "selector": {"a": "b"}},
}


def live_of(desired: dict[str, Any]) -> dict[str, Any]:
    """What the apiserver returns after applying `desired`: our fields plus its own."""
    live = with_applied_hash(desired)
    live["metadata"] |= {
        "uid": "1234",
        "resourceVersion": "42",
        "annotations": dict(live["metadata"]["annotations"]),
    }
    live["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied"] = "x"
    live["status"] = {"loadBalancer": {}}
    live["spec"]["clusterIP"] = "10.0.0.1"
    return live


def test_hash_is_stable_and_short() -> None:
    assert applied_hash(DESIRED) == applied_hash(copy.deepcopy(DESIRED))
    assert len(applied_hash(DESIRED)) == 20
    assert int(applied_hash(DESIRED), 16) >= 0


def test_hash_ignores_key_order() -> None:
    reordered = {key: DESIRED[key] for key in reversed(list(DESIRED))}
    reordered["metadata"] = {key: DESIRED["metadata"][key] for key in reversed(list(DESIRED["metadata"]))}
    assert applied_hash(reordered) == applied_hash(DESIRED)


def test_hash_follows_content() -> None:
    changed = copy.deepcopy(DESIRED)
    changed["spec"]["ports"][0]["port"] = 9000
    assert applied_hash(changed) != applied_hash(DESIRED)


def test_with_applied_hash_stamps_a_copy() -> None:
    original = copy.deepcopy(DESIRED)
    stamped = with_applied_hash(DESIRED)
    assert original == DESIRED, "the desired object is not modified"
    assert stamped["metadata"]["annotations"] == {APPLIED_HASH_ANNOTATION: applied_hash(DESIRED)}
    assert {k: v for k, v in stamped["metadata"].items() if k != "annotations"} == DESIRED["metadata"]
    assert stamped["spec"] == DESIRED["spec"]


def test_with_applied_hash_keeps_other_annotations() -> None:
    desired = copy.deepcopy(DESIRED)
    desired["metadata"]["annotations"] = {"nimify.dev/engine-key": "abc"}
    stamped = with_applied_hash(desired)
    assert stamped["metadata"]["annotations"] == {
        "nimify.dev/engine-key": "abc",
        APPLIED_HASH_ANNOTATION: applied_hash(desired),
    }
    assert desired["metadata"]["annotations"] == {"nimify.dev/engine-key": "abc"}


def test_current_when_live_carries_the_desired_hash() -> None:
    assert is_current(DESIRED, with_applied_hash(DESIRED))
    assert is_current(DESIRED, live_of(DESIRED))


def changed_spec() -> dict[str, Any]:
    changed = copy.deepcopy(DESIRED)
    changed["spec"]["selector"] = {"a": "c"}
    return changed


@pytest.mark.parametrize(
    "live",
    [
        pytest.param(None, id="missing"),
        pytest.param(copy.deepcopy(DESIRED), id="no-annotation"),
        pytest.param({"metadata": {"annotations": None}}, id="null-annotations"),
        pytest.param({}, id="no-metadata"),
        pytest.param(with_applied_hash(changed_spec()), id="older-desired-state"),
        pytest.param(
            {**DESIRED, "metadata": {**DESIRED["metadata"], "annotations": {APPLIED_HASH_ANNOTATION: ""}}},
            id="empty-hash",
        ),
    ],
)
def test_not_current_otherwise(live: dict[str, Any] | None) -> None:
    assert not is_current(DESIRED, live)


def test_stamping_is_deterministic() -> None:
    assert with_applied_hash(DESIRED) == with_applied_hash(copy.deepcopy(DESIRED))


def _managed(manager: str, operation: str, spec_fields: dict[str, Any]) -> dict[str, Any]:
    return {"manager": manager, "operation": operation, "fieldsV1": {"f:spec": spec_fields}}


@pytest.mark.parametrize(
    ("entries", "owned"),
    [
        ([_managed("nimify-operator", "Apply", {"f:replicas": {}, "f:template": {}})], True),
        ([_managed("nimify-operator", "Apply", {"f:template": {}})], False),
        ([_managed("kube-controller-manager", "Update", {"f:replicas": {}})], False),
        ([], False),
    ],
)
def test_owns_replicas_reads_managed_fields(entries: list[dict[str, Any]], owned: bool) -> None:
    assert owns_replicas({"metadata": {"managedFields": entries}}) is owned
