from typing import Any

from nimify_devcluster.topology import (
    DEFAULT_POOLS,
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    NodePool,
    bootstrap_manifests,
    kwok_pod_stages,
    node_manifest,
)


def test_gpu_node_is_labelled_sized_and_tainted_like_a_managed_gpu_pool() -> None:
    node = node_manifest(
        NodePool("gpu-a", 2, gpus_per_node=8, gpu_product="NVIDIA-A100", gpu_memory_mib=1), 1
    )
    assert node["metadata"]["name"] == "gpu-a-1"
    assert node["metadata"]["labels"][GPU_PRODUCT_LABEL] == "NVIDIA-A100"
    assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    assert node["status"]["allocatable"][GPU_RESOURCE] == "8"
    assert node["spec"]["taints"] == [{"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}]


def test_cpu_node_has_no_gpu_and_no_taint() -> None:
    node = node_manifest(NodePool("cpu", 1), 0)
    assert GPU_RESOURCE not in node["status"]["capacity"]
    assert GPU_PRODUCT_LABEL not in node["metadata"]["labels"]
    assert node["spec"] == {}


def test_default_topology_has_two_gpu_products_and_a_cpu_pool() -> None:
    manifests = bootstrap_manifests(DEFAULT_POOLS)
    assert manifests[0]["kind"] == "StorageClass"
    nodes = [m for m in manifests if m["kind"] == "Node"]
    products = {n["metadata"]["labels"].get(GPU_PRODUCT_LABEL) for n in nodes}
    assert products == {"NVIDIA-H100-80GB-HBM3", "NVIDIA-L4", None}
    assert len({n["metadata"]["name"] for n in nodes}) == len(nodes) == 8


def test_kwok_leaves_custom_status_pods_alone_except_for_deletion() -> None:
    defaults: list[dict[str, Any]] = [
        {"metadata": {"name": name}, "spec": {"selector": {"matchExpressions": []}}}
        for name in ("pod-ready", "pod-complete", "pod-delete")
    ]
    stages = {
        s["metadata"]["name"]: s["spec"]["selector"]["matchExpressions"] for s in kwok_pod_stages(defaults)
    }
    custom = {"key": '.metadata.labels["kwok.x-k8s.io/status"]', "operator": "DoesNotExist"}
    assert stages == {"pod-ready": [custom], "pod-complete": [custom], "pod-delete": []}
    assert defaults[0]["spec"]["selector"]["matchExpressions"] == [], "the defaults are not modified"
