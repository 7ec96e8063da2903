"""One placement for the conversion Job and the Triton pods: the same fields from spec.placement, and only the
documented differences (render/placement.py) between them."""

from __future__ import annotations

from typing import Any

import pytest

from nimify.engine.location import EngineLocation
from nimify.render.build_job import render_build_job
from nimify.render.deployment import ServedEngine, render_deployment
from nimify.render.placement import pod_placement
from nimify.settings import OperatorSettings
from tests.render.conftest import nimservice, unit_of

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
PRODUCT = "nvidia.com/gpu.product"
NODE_AFFINITY = {
    "requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["gpu"]}]}]
    }
}
POD_ANTI_AFFINITY = {
    "preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {}}}
    ]
}
PLACEMENT = {
    "nodeSelector": {"pool": "gpu"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": NODE_AFFINITY, "podAntiAffinity": POD_ANTI_AFFINITY},
    "priorityClassName": "inference",
    "runtimeClassName": "nvidia",
}
PLACED = ("nodeSelector", "tolerations", "affinity", "priorityClassName", "runtimeClassName")


def pods(spec: dict[str, Any], built_on: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the conversion Job's pod spec, the Triton pod spec) of one NimService."""
    nim, settings = nimservice(spec), OperatorSettings()
    unit = unit_of(nim, EngineLocation("c" * 64, "nimify-engines"))
    job = render_build_job(nim, unit, settings)["spec"]["template"]["spec"]
    deployment = render_deployment(nim, unit, ServedEngine("0" * 16, built_on), settings)
    return job, deployment["spec"]["template"]["spec"]


def placed(pod: dict[str, Any]) -> dict[str, Any]:
    return {key: pod[key] for key in PLACED if key in pod}


def test_both_take_the_same_placement_but_for_the_documented_differences() -> None:
    job, server = pods({"placement": PLACEMENT, "resources": {"gpus": 1, "gpuProduct": "NVIDIA-L4"}})
    for pod in (job, server):
        assert pod["nodeSelector"] == {"pool": "gpu", PRODUCT: "NVIDIA-L4"}
        assert pod["tolerations"] == [GPU_TOLERATION, *PLACEMENT["tolerations"]]
        assert pod["priorityClassName"] == "inference" and pod["runtimeClassName"] == "nvidia"
    # Pod (anti-)affinity places replicas; the Job takes the node affinity only.
    assert server["affinity"] == PLACEMENT["affinity"]
    assert job["affinity"] == {"nodeAffinity": NODE_AFFINITY}


def test_the_job_tolerates_gpu_nodes_even_when_the_replicas_request_no_gpu() -> None:
    job, server = pods({"engine": {"backend": "onnxruntime"}, "resources": {"gpus": 0}})
    assert job["tolerations"] == [GPU_TOLERATION]
    assert "tolerations" not in server


def test_replicas_follow_the_product_the_engine_was_built_on_and_the_job_what_was_asked() -> None:
    job, server = pods({"resources": {"gpus": 1}}, built_on="NVIDIA-A100-SXM4-80GB")
    assert server["nodeSelector"] == {PRODUCT: "NVIDIA-A100-SXM4-80GB"}
    assert "nodeSelector" not in job, "nothing asked: the build runs on any GPU, and names it in its result"
    job, server = pods(
        {"resources": {"gpus": 1, "gpuProduct": "NVIDIA-L4"}}, built_on="NVIDIA-A100-SXM4-80GB"
    )
    assert job["nodeSelector"] == server["nodeSelector"] == {PRODUCT: "NVIDIA-L4"}


@pytest.mark.parametrize("node_affinity_only", [True, False])
def test_no_placement_places_nothing_but_the_gpu_toleration(node_affinity_only: bool) -> None:
    spec = nimservice().spec
    assert (
        pod_placement(spec, gpu_product=None, tolerate_gpus=False, node_affinity_only=node_affinity_only)
        == {}
    )
    assert pod_placement(
        spec, gpu_product=None, tolerate_gpus=True, node_affinity_only=node_affinity_only
    ) == {"tolerations": [GPU_TOLERATION]}


def test_pod_affinity_alone_gives_the_job_no_affinity() -> None:
    job, server = pods({"placement": {"affinity": {"podAntiAffinity": POD_ANTI_AFFINITY}}})
    assert "affinity" not in job
    assert server["affinity"] == {"podAntiAffinity": POD_ANTI_AFFINITY}
    assert placed(job).keys() == {"tolerations"}
