"""The demo: a NimService served end to end on the local cluster.

Starts the operator and the conversion-pod runner next to the cluster, stores a small ONNX model (built by
`nimify.model.samples`) on a PersistentVolumeClaim, applies a NimService for it and waits until it is Ready.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from nimify.api.crd import nimservice_crd
from nimify.devcluster.build_runner import create_local_claim, operator_environment
from nimify.devcluster.cluster import LocalCluster, free_ports
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


def demo_nimservice(sha256: str) -> dict[str, Any]:
    return {
        "apiVersion": "nimify.dev/v1alpha1",
        "kind": "NimService",
        "metadata": {"name": SERVICE, "namespace": NAMESPACE},
        "spec": {
            "model": {"uri": f"pvc://{MODEL_CLAIM}/mlp.onnx", "sha256": sha256},
            "engine": {"backend": "onnxruntime"},
            "triton": {"dynamicBatching": {"maxQueueDelayMicroseconds": 200}},
            "resources": {"gpus": 1, "gpuProduct": "NVIDIA-L4", "cpu": "2", "memory": "4Gi"},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 3, "targetCpuUtilization": 80},
        },
    }


def run_demo(cluster: LocalCluster, say: Callable[[str], None]) -> None:
    kubectl = cluster.kubectl
    say("installing the NimService CRD")
    kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(nimservice_crd()))
    kubectl("wait", "--for=condition=Established", "crd/nimservices.nimify.dev", "--timeout=60s")

    say("starting the operator (logs: logs/nimify-operator.log) and the conversion-pod runner")
    _spawn(
        cluster,
        "nimify-operator",
        ["run"],
        operator_environment(cluster.operator_kubeconfig, free_ports(1)[0]),
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

    manifest = demo_nimservice(file_sha256(model))
    say("applying this NimService:\n" + yaml.safe_dump(manifest, sort_keys=False))
    kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(manifest))
    say("waiting for Ready (a conversion Job validates the model and checks parity, then Triton rolls out)")
    kubectl(
        "wait",
        "-n",
        NAMESPACE,
        "--for=condition=Ready",
        f"nimservice/{SERVICE}",
        "--timeout=180s",
        timeout=200,
    )
