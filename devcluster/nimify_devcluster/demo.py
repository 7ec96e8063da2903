"""The demo: a NimService served end to end on the local cluster.

With the real node, Nimify is installed the way a user installs it on their own cluster, with the Helm
chart (`helm install nimify charts/nimify`): the operator runs as a pod of the nimify image on the real node
with the chart's ServiceAccount and RBAC. The demo stores a small ONNX model (built by `nimify.model.samples`)
on a PersistentVolumeClaim, applies a NimService for it and waits until it is Ready: the conversion Job and
Triton really run there (nimify and triton-cpu images), and the demo ends with an inference through the
Service's ClusterIP next to ONNX Runtime's answer on the same input. Without one (not root), kwok cannot run
the operator pod, so the operator runs on this machine, kwok simulates the Triton pods and a runner here
plays the conversion pod's kubelet.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from nimify.api.crd import nimservice_crd
from nimify.engine.reference import OnnxRuntimeModel
from nimify.model.digest import file_sha256
from nimify.model.samples import build_mlp, write_model
from nimify.ports import free_ports
from nimify_devcluster.build_runner import claim_host_path, create_local_claim
from nimify_devcluster.build_runner import operator_environment as kwok_operator_environment
from nimify_devcluster.chart_release import HelmRelease, real_node_values, write_values
from nimify_devcluster.cluster import LocalCluster, get_json, wait_established
from nimify_devcluster.real_node import RealNodeInfo

NAMESPACE = "demo"
SERVICE = "mlp-classifier"
MODEL_CLAIM = "models"
#: The Helm release of the chart, as docs/install.md names it.
RELEASE = "nimify"
RELEASE_NAMESPACE = "nimify-system"


def _spawn(cluster: LocalCluster, name: str, args: list[str], env: dict[str, str]) -> None:
    log = cluster.directory / "logs" / f"{name}.log"
    nimify = str(Path(sys.executable).parent / "nimify")
    with log.open("ab") as out:
        process = subprocess.Popen(
            [nimify, *args],
            env=os.environ | env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    cluster.adopt(name, process)


def demo_nimservice(sha256: str, node: RealNodeInfo | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"uri": f"pvc://{MODEL_CLAIM}/mlp.onnx", "sha256": sha256},
        "engine": {"backend": "onnxruntime"},
        "triton": {"dynamicBatching": {"maxQueueDelayMicroseconds": 200}},
    }
    if node is None:  # simulated GPU replicas, autoscaled
        spec["resources"] = {"gpus": 1, "gpuProduct": "NVIDIA-L4", "cpu": "2", "memory": "4Gi"}
        spec["autoscaling"] = {"minReplicas": 1, "maxReplicas": 3, "targetCpuUtilization": 80}
    else:  # a real replica on the real node: ONNX Runtime on CPU in the triton-cpu image
        spec["triton"]["image"] = node.images["triton-cpu"]
        spec["resources"] = {"gpus": 0, "cpu": "250m", "memory": "1Gi"}
        spec["placement"] = {"runtimeClassName": node.runtime_class}
    return {
        "apiVersion": "nimify.dev/v1alpha1",
        "kind": "NimService",
        "metadata": {"name": SERVICE, "namespace": NAMESPACE},
        "spec": spec,
    }


def chart_release(cluster: LocalCluster) -> HelmRelease:
    return HelmRelease(RELEASE, RELEASE_NAMESPACE, cluster.kubeconfig, cluster.bin_path)


def install_with_chart(cluster: LocalCluster, node: RealNodeInfo, say: Callable[[str], None]) -> None:
    """`helm install` of charts/nimify, cluster-wide, with the values that point it at the real node."""
    values = write_values(cluster.directory / "nimify-values.yaml", real_node_values(node))
    say(
        f"installing Nimify with its Helm chart (the operator runs as a pod on {node.name}):\n"
        f"  helm install {RELEASE} charts/nimify --namespace {RELEASE_NAMESPACE} --create-namespace "
        f"--values {values}\n" + "\n".join(f"    {line}" for line in values.read_text().splitlines())
    )
    started = time.monotonic()
    chart_release(cluster).install(values)
    say(f"the operator pod is Ready ({time.monotonic() - started:.0f}s); its log: kubectl logs -n "
        f"{RELEASE_NAMESPACE} deployment/{RELEASE}")  # fmt: skip
    # Helm installs the chart's crds/ before the rest and waits for them; the NimService needs it served.
    wait_established(cluster, "nimservices.nimify.dev")


def run_operator_here(cluster: LocalCluster, say: Callable[[str], None]) -> None:
    """kwok-only: the CRD, and the operator and conversion-pod runner as processes on this machine (tracked
    in the cluster's state, so `hack/cluster.sh down` stops them)."""
    say("installing the NimService CRD")
    cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(nimservice_crd()))
    wait_established(cluster, "nimservices.nimify.dev")
    say(f"no real node ({cluster.real_node_absent}): Triton pods are simulated by kwok")
    say("starting the operator (logs: logs/nimify-operator.log) and the conversion-pod runner")
    environment = kwok_operator_environment(cluster.operator_kubeconfig, free_ports(1)[0])
    _spawn(cluster, "nimify-operator", ["run"], environment)
    _spawn(
        cluster,
        "build-runner",
        ["dev-cluster", "run-builds", "--kubeconfig", str(cluster.kubeconfig)],
        {"NIMIFY_BIN_PATH": cluster.bin_path},
    )


def run_demo(cluster: LocalCluster, say: Callable[[str], None]) -> None:
    kubectl = cluster.kubectl
    node = cluster.node
    if node is not None:
        install_with_chart(cluster, node, say)
    else:
        run_operator_here(cluster, say)

    say(f"storing a small ONNX model on PersistentVolumeClaim {NAMESPACE}/{MODEL_CLAIM}")
    kubectl("create", "namespace", NAMESPACE)
    model = write_model(build_mlp(), create_local_claim(cluster, NAMESPACE, MODEL_CLAIM) / "mlp.onnx")

    manifest = demo_nimservice(file_sha256(model), node)
    say("applying this NimService:\n" + yaml.safe_dump(manifest, sort_keys=False))
    kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(manifest))
    say("waiting for Ready (a conversion Job validates the model and checks parity, then Triton rolls out)")
    kubectl(
        "wait",
        "-n",
        NAMESPACE,
        "--for=condition=Ready",
        f"nimservice/{SERVICE}",
        "--timeout=300s",
        timeout=310,
    )


def claim_directory(cluster: LocalCluster) -> Path:
    return claim_host_path(cluster, NAMESPACE, MODEL_CLAIM)


def show_inference(cluster: LocalCluster) -> str:
    """One inference through the Service's ClusterIP (kube-proxy on this machine), next to ONNX Runtime on
    the same model file and input; raises when they differ."""
    model = claim_directory(cluster) / "mlp.onnx"
    service = get_json(cluster, f"service/{SERVICE}", "-n", NAMESPACE)
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "http")
    url = f"http://{service['spec']['clusterIP']}:{port}/v2/models/{SERVICE}/infer"
    features = np.linspace(-1.0, 1.0, 16, dtype=np.float32).reshape(1, 16)
    tensor = {"name": "input", "shape": [1, 16], "datatype": "FP32", "data": features.ravel().tolist()}
    deadline = time.monotonic() + 30
    while True:  # kube-proxy programs a just-Ready endpoint asynchronously; the ClusterIP refuses until then
        try:
            response = httpx.post(url, json={"inputs": [tensor]}, timeout=30)
            break
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    response.raise_for_status()
    answer = np.array(response.json()["outputs"][0]["data"], dtype=np.float32)
    expected = OnnxRuntimeModel(model).run({"input": features})["logits"].ravel()
    if not np.allclose(answer, expected, rtol=1e-5, atol=1e-6):
        raise RuntimeError(f"the cluster answered {answer}, ONNX Runtime {expected}")
    return (
        f"POST {url}\n"
        f"  input  {np.array2string(features.ravel(), precision=3, max_line_width=200)}\n"
        f"  logits from Triton on the real node: {np.array2string(answer, precision=6)}\n"
        f"  logits from ONNX Runtime here:       {np.array2string(expected, precision=6)} (equal, 1e-5)"
    )
