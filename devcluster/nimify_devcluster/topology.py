"""The simulated nodes and storage of the local cluster, as plain Kubernetes objects."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

#: kwok manages only nodes carrying this annotation, so real nodes (if any) are never touched.
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
#: Pods with this label are left alone by kwok: tests play the kubelet for them.
KWOK_CUSTOM_STATUS_LABEL = ("kwok.x-k8s.io/status", "custom")
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
POOL_LABEL = "nimify.dev/pool"


@dataclass(frozen=True)
class NodePool:
    name: str
    count: int
    gpus_per_node: int = 0
    gpu_product: str | None = None
    gpu_memory_mib: int | None = None
    cpu: str = "64"
    memory: str = "512Gi"


DEFAULT_POOLS: tuple[NodePool, ...] = (
    NodePool("gpu-h100", 4, gpus_per_node=8, gpu_product="NVIDIA-H100-80GB-HBM3", gpu_memory_mib=81559),
    NodePool(
        "gpu-l4", 2, gpus_per_node=4, gpu_product="NVIDIA-L4", gpu_memory_mib=23034, cpu="48", memory="192Gi"
    ),
    NodePool("cpu", 2, cpu="16", memory="64Gi"),
)


def node_manifest(pool: NodePool, index: int) -> dict[str, Any]:
    """A fake Node as GPU Feature Discovery and the NVIDIA device plugin would label and size it."""
    name = f"{pool.name}-{index}"
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": pool.name,
        "type": "kwok",
        POOL_LABEL: pool.name,
    }
    capacity = {"cpu": pool.cpu, "memory": pool.memory, "pods": "110", "ephemeral-storage": "500Gi"}
    taints: list[dict[str, str]] = []
    if pool.gpus_per_node:
        assert pool.gpu_product is not None
        labels |= {
            GPU_PRODUCT_LABEL: pool.gpu_product,
            "nvidia.com/gpu.count": str(pool.gpus_per_node),
            "nvidia.com/gpu.memory": str(pool.gpu_memory_mib),
            "nvidia.com/gpu.present": "true",
        }
        capacity[GPU_RESOURCE] = str(pool.gpus_per_node)
        # Managed GPU pools (GKE, AKS, EKS) taint GPU nodes so that CPU-only pods stay off them.
        taints.append({"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                KWOK_NODE_ANNOTATION[0]: KWOK_NODE_ANNOTATION[1],
                "node.alpha.kubernetes.io/ttl": "0",
            },
        },
        "spec": {"taints": taints} if taints else {},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "fake",
                "containerRuntimeVersion": "kwok",
            },
        },
    }


def storage_class_manifest() -> dict[str, Any]:
    """The default StorageClass, served by kube-controller-manager's built-in hostPath provisioner.

    That provisioner (enabled by --enable-hostpath-provisioner) is meant for single-node test clusters,
    which is exactly this one: PVCs bind to dynamically created PVs and are deleted with their claims.
    """
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": "standard",
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": "kubernetes.io/host-path",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


def kwok_pod_stages(default_stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """kwok's default pod stages, except that pods labelled `kwok.x-k8s.io/status: custom` only get deleted.

    Tests play the kubelet for those pods (e.g. run a conversion for real, write the termination message).
    """
    label_key, _ = KWOK_CUSTOM_STATUS_LABEL
    not_custom = {"key": f'.metadata.labels["{label_key}"]', "operator": "DoesNotExist"}
    stages = []
    for stage in default_stages:
        stage = copy.deepcopy(stage)
        if stage["metadata"]["name"] != "pod-delete":
            stage["spec"]["selector"].setdefault("matchExpressions", []).append(not_custom)
        stages.append(stage)
    return stages


def bootstrap_manifests(pools: tuple[NodePool, ...] = DEFAULT_POOLS) -> list[dict[str, Any]]:
    nodes = [node_manifest(pool, i) for pool in pools for i in range(pool.count)]
    return [storage_class_manifest(), *nodes]
