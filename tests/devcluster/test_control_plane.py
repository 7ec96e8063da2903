"""The local control plane is a real one: real scheduling, real controllers, real garbage collection."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from nimify_devcluster.cluster import get_json, wait_established
from nimify_devcluster.topology import GPU_PRODUCT_LABEL
from tests.kube import ExistingCluster, apply, eventually

pytestmark = pytest.mark.cluster

L4 = "NVIDIA-L4"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def gpu_deployment(name: str, product: str, replicas: int, gpus: int = 1) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {GPU_PRODUCT_LABEL: product},
                    "tolerations": [GPU_TOLERATION],
                    "containers": [
                        {
                            "name": "server",
                            "image": "nvcr.io/nvidia/tritonserver:25.10-py3",
                            "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                        }
                    ],
                },
            },
        },
    }


def test_gpu_pods_run_only_on_nodes_of_the_requested_product(
    cluster: ExistingCluster, namespace: str
) -> None:
    apply(cluster, namespace, gpu_deployment("l4-server", L4, replicas=3))
    cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Available", "deployment/l4-server", "--timeout=90s"
    )
    pods = get_json(cluster, "pods", "-n", namespace, "-l", "app=l4-server")["items"]
    assert len(pods) == 3
    l4_nodes = {
        n["metadata"]["name"] for n in get_json(cluster, "nodes", "-l", f"{GPU_PRODUCT_LABEL}={L4}")["items"]
    }
    assert l4_nodes, "the cluster has no L4 nodes"
    for pod in pods:
        assert pod["status"]["phase"] == "Running"
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready["Ready"] == "True"
        assert pod["spec"]["nodeName"] in l4_nodes


def test_pod_asking_for_more_gpus_than_free_stays_pending(cluster: ExistingCluster, namespace: str) -> None:
    # L4 nodes have 4 GPUs each; 5 fits on none of them.
    apply(cluster, namespace, gpu_deployment("too-big", L4, replicas=1, gpus=5))

    def failed_scheduling() -> dict[str, Any] | None:
        events = get_json(cluster, "events", "-n", namespace, "--field-selector=reason=FailedScheduling")[
            "items"
        ]
        return events[0] if events else None

    event = eventually(failed_scheduling)
    assert "Insufficient nvidia.com/gpu" in event["message"]
    pod = get_json(cluster, "pods", "-n", namespace, "-l", "app=too-big")["items"][0]
    assert pod["status"]["phase"] == "Pending"
    scheduled = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert (scheduled["status"], scheduled["reason"]) == ("False", "Unschedulable")


def test_job_completes(cluster: ExistingCluster, namespace: str) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "convert"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "convert", "image": "busybox"}]}
            },
        },
    }
    apply(cluster, namespace, job)
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Complete", "job/convert", "--timeout=90s")
    assert get_json(cluster, "job/convert", "-n", namespace)["status"]["succeeded"] == 1


def test_deleting_an_owner_garbage_collects_its_children(cluster: ExistingCluster, namespace: str) -> None:
    apply(cluster, namespace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}})
    owner_uid = get_json(cluster, "configmap/owner", "-n", namespace)["metadata"]["uid"]
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "child",
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": "owner",
                    "uid": owner_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
    }
    apply(cluster, namespace, child, gpu_deployment("owned", L4, replicas=1))
    eventually(lambda: get_json(cluster, "replicasets", "-n", namespace, "-l", "app=owned")["items"])

    cluster.kubectl("delete", "-n", namespace, "configmap/owner", "deployment/owned")

    def gone(*args: str) -> bool:
        return not get_json(cluster, *args, "-n", namespace)["items"]

    eventually(lambda: gone("configmaps", "--field-selector=metadata.name=child"))
    eventually(lambda: gone("replicasets", "-l", "app=owned"))
    eventually(lambda: gone("pods", "-l", "app=owned"))


def test_horizontal_pod_autoscaler_resolves_its_target(cluster: ExistingCluster, namespace: str) -> None:
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "scaled"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "scaled"},
            "minReplicas": 1,
            "maxReplicas": 4,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
                }
            ],
        },
    }
    apply(cluster, namespace, gpu_deployment("scaled", L4, replicas=1), hpa)

    def able_to_scale() -> dict[str, Any] | None:
        conditions = get_json(cluster, "hpa/scaled", "-n", namespace)["status"].get("conditions", [])
        return next((c for c in conditions if c["type"] == "AbleToScale"), None)

    # The controller-manager's HPA controller read the Deployment through its scale subresource.
    condition = eventually(able_to_scale, timeout=90)
    assert condition["status"] == "True", condition
    assert condition["reason"] == "SucceededGetScale"


def test_persistent_volume_claims_bind(cluster: ExistingCluster, namespace: str) -> None:
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "engines"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}},
    }
    apply(cluster, namespace, claim)
    cluster.kubectl(
        "wait", "-n", namespace, "--for=jsonpath={.status.phase}=Bound", "pvc/engines", "--timeout=60s"
    )


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.nimify.dev"},
    "spec": {
        "group": "example.nimify.dev",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "description": "A widget.",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "description": "What the widget should be.",
                                "properties": {
                                    "size": {
                                        "type": "integer",
                                        "description": "How many sprockets the widget holds.",
                                    }
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}


def test_custom_resource_definitions_are_served_and_explained(cluster: ExistingCluster) -> None:
    cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(CRD))
    try:
        wait_established(cluster, "widgets.example.nimify.dev")
        explained = eventually(lambda: cluster.kubectl("explain", "widget.spec", check=False).stdout)
        assert "How many sprockets the widget holds." in explained
    finally:
        cluster.kubectl("delete", "crd/widgets.example.nimify.dev", "--wait=false", check=False)


def test_cluster_has_the_documented_node_pools(cluster: ExistingCluster) -> None:
    nodes = get_json(cluster, "nodes", "-l", "type=kwok")["items"]
    gpus_by_product: dict[str, list[str]] = {}
    for node in nodes:
        product = node["metadata"]["labels"].get(GPU_PRODUCT_LABEL, "none")
        gpus_by_product.setdefault(product, []).append(
            node["status"]["allocatable"].get("nvidia.com/gpu", "0")
        )
    assert gpus_by_product == {"NVIDIA-H100-80GB-HBM3": ["8"] * 4, L4: ["4"] * 2, "none": ["0"] * 2}


def test_pods_labelled_custom_status_are_left_to_the_test(cluster: ExistingCluster, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "played", "labels": {"kwok.x-k8s.io/status": "custom"}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }
    apply(cluster, namespace, pod)
    eventually(lambda: get_json(cluster, "pod/played", "-n", namespace)["spec"].get("nodeName"))
    status = get_json(cluster, "pod/played", "-n", namespace)["status"]
    assert status["phase"] == "Pending" and "podIP" not in status, "kwok must not run this pod"
    cluster.kubectl("delete", "-n", namespace, "pod/played", "--timeout=30s")
