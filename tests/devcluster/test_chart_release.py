"""The values that point the Helm chart at the real node, rendered by Helm itself (no cluster)."""

from __future__ import annotations

from pathlib import Path

from nimify_devcluster.chart_release import KOPF_SERVER_NAME, chart_directory, real_node_values, write_values
from nimify_devcluster.cluster import SERVICE_IP
from nimify_devcluster.real_node import RealNodeInfo
from tests.conftest import _bin_path
from tests.install.helm import CHART, Helm, one

NODE = RealNodeInfo(
    name="nimify-real-node",
    gpu_product="NIMIFY-REAL-CPU",
    runtime_class="nimify-real-node",
    images={
        "nimify": "localhost/nimify/nimify:0123abcd",
        "triton-cpu": "localhost/nimify/triton-cpu:24.10-ab",
    },
    containerd_root="/nowhere",
    timings={},
)


def test_the_chart_is_the_checkouts() -> None:
    assert chart_directory() == CHART


def test_real_node_values_run_the_operator_there_with_the_imported_image(tmp_path: Path) -> None:
    values = write_values(tmp_path / "values.yaml", real_node_values(NODE))
    deployment = one(Helm.on(_bin_path()).template(f"--values={values}"), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == NODE.images["nimify"]  # a tag of hex digits stays a string
    assert container["imagePullPolicy"] == "Never"
    assert pod["runtimeClassName"] == NODE.runtime_class  # selects the node, tolerates its taints
    assert pod["hostAliases"] == [{"ip": SERVICE_IP, "hostnames": [KOPF_SERVER_NAME]}]
    env = {e["name"]: e["value"] for e in container["env"]}
    # The pods it creates: conversion Jobs in the same image, nothing pulled.
    assert env["NIMIFY_ONNXRUNTIME_BUILDER_IMAGE"] == NODE.images["nimify"]
    assert env["NIMIFY_IMAGE_PULL_POLICY"] == "Never"
