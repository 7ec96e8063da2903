"""The demo: a NimService served end to end on the local cluster.

Starts the operator next to the cluster, stores a small ONNX model (built by `nimify.model.samples`) on a
PersistentVolumeClaim, applies a NimService for it and waits until it is Ready. With the real node, the
conversion Job and Triton really run there (nimify and triton-cpu images), and the demo ends with an
inference through the Service's ClusterIP next to ONNX Runtime's answer on the same input. Without one
(not root), kwok simulates the Triton pods and a runner on this machine plays the conversion pod's kubelet.
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
from nimify.devcluster.build_runner import claim_host_path, create_local_claim
from nimify.devcluster.build_runner import operator_environment as kwok_operator_environment
from nimify.devcluster.cluster import LocalCluster, free_ports, get_json
from nimify.devcluster.real_node import RealNodeInfo
from nimify.devcluster.real_node import operator_environment as real_operator_environment
from nimify.engine.reference import OnnxRuntimeModel
from nimify.model.digest import file_sha256
from nimify.model.samples import build_mlp, write_model

NAMESPACE = "demo"
SERVICE = "mlp-classifier"
MODEL_CLAIM = "models"


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


def run_demo(cluster: LocalCluster, say: Callable[[str], None]) -> None:
    kubectl = cluster.kubectl
    node = cluster.node
    say("installing the NimService CRD")
    kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(nimservice_crd()))
    kubectl("wait", "--for=condition=Established", "crd/nimservices.nimify.dev", "--timeout=60s")

    metrics_port = free_ports(1)[0]
    if node is not None:
        say(f"starting the operator (logs: logs/nimify-operator.log); its pods run on {node.name}")
        env = real_operator_environment(node) | {
            "KUBECONFIG": str(cluster.operator_kubeconfig),
            "NIMIFY_METRICS_PORT": str(metrics_port),
        }
        _spawn(cluster, "nimify-operator", ["run"], env)
    else:
        say(f"no real node ({cluster.real_node_absent}): Triton pods are simulated by kwok")
        say("starting the operator (logs: logs/nimify-operator.log) and the conversion-pod runner")
        _spawn(
            cluster,
            "nimify-operator",
            ["run"],
            kwok_operator_environment(cluster.operator_kubeconfig, metrics_port),
        )
        _spawn(
            cluster,
            "build-runner",
            ["dev-cluster", "run-builds", "--kubeconfig", str(cluster.kubeconfig)],
            {"NIMIFY_BIN_PATH": cluster.bin_path},
        )

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
