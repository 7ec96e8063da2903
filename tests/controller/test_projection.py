"""What the indexes keep of watched objects: everything the reconcile reads (the same decisions as on the
whole object), nothing it does not (other managers' fields, a ConfigMap's data, last-applied copies)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from nimify.controller.children import CHILD_BY_KIND, CONFIG_MAP, DEPLOYMENT, JOB
from nimify.controller.drift import (
    APPLIED_HASH_ANNOTATION,
    ChildState,
    applied_fields,
    child_state,
    conflicting_elements,
    owns_replicas,
)
from nimify.controller.engine_step import termination_result
from nimify.controller.projection import project_build_pod, project_child, project_nimservice
from nimify.controller.status import deployment_problem, serving_state
from nimify.render.identity import FIELD_MANAGER
from tests.controller.test_drift import drop, live, stamped

KINDS = {
    "deployment": "Deployment",
    "service": "Service",
    "pdb": "PodDisruptionBudget",
    "configmap": "ConfigMap",
}


def with_other_managers(body: dict[str, Any]) -> dict[str, Any]:
    """The object as the watch delivers it: other managers' entries and a status subresource entry too."""
    body = copy.deepcopy(body)
    body["metadata"]["managedFields"] += [
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "subresource": "status",
            "fieldsV1": {},
        },
        {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:metadata": {}}},
        {"manager": FIELD_MANAGER, "operation": "Update", "fieldsV1": {"f:metadata": {}}},
    ]
    body["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = json.dumps(body)
    return body


@pytest.mark.parametrize("name", sorted(KINDS))
def test_drift_decides_the_same_on_the_projection(name: str) -> None:
    desired, body = stamped(name)
    body = with_other_managers(body)
    kept = project_child(body, CHILD_BY_KIND[KINDS[name]])
    assert child_state(desired, kept) is child_state(desired, body) is ChildState.CURRENT
    assert conflicting_elements(desired, kept) == conflicting_elements(desired, body)
    # Someone took a field nimify set: drift on both.
    path = ("f:metadata", "f:labels")
    drop(body, *path)
    kept = project_child(body, CHILD_BY_KIND[KINDS[name]])
    assert child_state(desired, kept) is child_state(desired, body) is ChildState.DRIFTED


def test_a_renumbered_port_is_found_on_the_projection() -> None:
    desired, body = stamped("deployment")
    ports = body["spec"]["template"]["spec"]["containers"][0]["ports"]
    ports[0]["containerPort"] = 9999
    kept = project_child(body, DEPLOYMENT)
    assert conflicting_elements(desired, kept) == conflicting_elements(desired, body) != []


def test_what_the_status_reads_of_a_deployment_is_kept() -> None:
    _, body = stamped("deployment")
    body["status"] = {
        "observedGeneration": body["metadata"].get("generation", 1),
        "replicas": 2,
        "updatedReplicas": 2,
        "readyReplicas": 1,
        "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}],
    }
    kept = project_child(with_other_managers(body), DEPLOYMENT)
    assert serving_state(kept, "k", "c") == serving_state(body, "k", "c")
    assert deployment_problem(kept) == deployment_problem(body) is not None
    assert owns_replicas(kept) == owns_replicas(body)
    claims = [v.get("persistentVolumeClaim") for v in body["spec"]["template"]["spec"]["volumes"]]
    assert [v.get("persistentVolumeClaim") for v in kept["spec"]["template"]["spec"]["volumes"]] == claims
    assert any(claims), "the claims the pods mount (desired.py keeps a claim a Deployment still mounts)"
    containers = kept["spec"]["template"]["spec"]["containers"]
    assert {key for container in containers for key in container} <= {"name", "ports"}


def test_nimify_s_fields_tree_is_kept_as_text_and_read_back_whole() -> None:
    _, body = stamped("deployment")
    kept = project_child(with_other_managers(body), DEPLOYMENT)
    (entry,) = kept["metadata"]["managedFields"]
    assert isinstance(entry["fieldsV1"], str), "a tree of dicts costs ten times the memory of its text"
    assert applied_fields(kept) == applied_fields(body) is not None


def test_only_nimify_s_own_fields_and_hash_are_kept() -> None:
    _, body = stamped("configmap")
    kept = project_child(with_other_managers(body), CONFIG_MAP)
    assert "data" not in kept, "nothing decides on a ConfigMap's content but nimify's own fields"
    assert list(kept["metadata"]["annotations"]) == [APPLIED_HASH_ANNOTATION]
    assert [(e["manager"], e["operation"]) for e in kept["metadata"]["managedFields"]] == [
        (FIELD_MANAGER, "Apply")
    ]
    assert kept["metadata"]["ownerReferences"] == body["metadata"]["ownerReferences"]
    assert len(json.dumps(kept)) < len(json.dumps(with_other_managers(body))) / 2


def test_a_job_keeps_its_conditions() -> None:
    job: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "j", "namespace": "ml", "uid": "1", "ownerReferences": [{"name": "a"}]},
        "spec": {"template": {"spec": {"containers": [{"name": "convert", "env": [{"value": "x" * 5000}]}]}}},
        "status": {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1},
    }
    kept = project_child(job, JOB)
    assert kept["status"] == {"conditions": job["status"]["conditions"]}
    assert "spec" not in kept and kept["metadata"]["ownerReferences"] == [{"name": "a"}]


def test_a_build_pod_keeps_its_phase_and_result() -> None:
    pod: dict[str, Any] = {
        "metadata": {"name": "p", "namespace": "ml", "creationTimestamp": "2025-01-01T00:00:00Z"},
        "spec": {"containers": [{"name": "convert", "env": [{"value": "x" * 5000}]}]},
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [{"name": "convert", "state": {"terminated": {"message": '{"ok": true}'}}}],
            "conditions": [{"type": "Ready"}],
        },
    }
    kept = project_build_pod(pod)
    assert termination_result(kept) == termination_result(pod) == {"ok": True}
    assert kept["status"]["phase"] == "Succeeded" and "spec" not in kept
    assert kept["metadata"]["creationTimestamp"] == pod["metadata"]["creationTimestamp"]


def test_a_nimservice_keeps_identity_spec_and_status() -> None:
    body: dict[str, Any] = {
        "apiVersion": "nimify.dev/v1alpha1",
        "kind": "NimService",
        "metadata": {
            "name": "a",
            "namespace": "ml",
            "uid": "1",
            "generation": 2,
            "resourceVersion": "7",
            "labels": {"team": "x"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {"model": {"uri": "pvc://m/a.onnx"}},
        "status": {"observedGeneration": 2},
    }
    kept = project_nimservice(body)
    assert kept["metadata"] == {
        "name": "a",
        "namespace": "ml",
        "uid": "1",
        "generation": 2,
        "resourceVersion": "7",
        "labels": {"team": "x"},
    }
    assert kept["spec"] is body["spec"] and kept["status"] is body["status"], "shared, not copied"


def test_kinds_without_reads_keep_only_what_every_kind_keeps() -> None:
    _, body = stamped("pdb")
    kept = project_child(body, CHILD_BY_KIND["PodDisruptionBudget"])
    assert set(kept) == {"apiVersion", "kind", "metadata"}
    assert live("pdb")["spec"], "the PDB's spec is nimify's own: drift compares it through managedFields"
