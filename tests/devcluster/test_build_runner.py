"""The conversion pods' kubelet of the development cluster (BuildPodKubelet), on a real control plane with
kwok nodes: it runs the pods created after it started, several at once (one conversion whose model server
never answers holds up no other), leaves earlier ones alone, and kills what still runs when it stops."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nimify_devcluster.build_runner import BUILD_POD_LABELS, BuildPodKubelet
from nimify_devcluster.cluster import get_json
from nimify_devcluster.topology import KWOK_NODE_ANNOTATION
from tests.kube import ExistingCluster, eventually, fresh_namespace


@pytest.fixture
def namespace(cluster: ExistingCluster) -> Iterator[str]:
    with fresh_namespace(cluster, "runner") as name:
        yield name


@pytest.fixture
def stalled_server() -> Iterator[str]:
    """A model server that takes connections (the kernel's backlog) and never answers: its URL."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"http://127.0.0.1:{server.getsockname()[1]}/model.onnx"


def kwok_node(cluster: ExistingCluster) -> str:
    key, value = KWOK_NODE_ANNOTATION
    nodes = get_json(cluster, "nodes")["items"]
    fake = [n for n in nodes if n["metadata"].get("annotations", {}).get(key) == value]
    return str(fake[0]["metadata"]["name"])


def create_build_pod(cluster: ExistingCluster, namespace: str, name: str, node: str, model: str) -> str:
    """A conversion pod as the operator makes one (labelled for the runner), bound to a kwok node; its uid."""
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": BUILD_POD_LABELS},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "volumes": [{"name": "out", "emptyDir": {}}, {"name": "work", "emptyDir": {}}],
            "containers": [
                {
                    "name": "convert",
                    "image": "nimify:test",
                    "command": ["nimify", "convert"],
                    "args": [model, "--backend=onnxruntime", "--repository=/out/repo", "--work-dir=/work"],
                    "volumeMounts": [
                        {"name": "out", "mountPath": "/out"},
                        {"name": "work", "mountPath": "/work"},
                    ],
                }
            ],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    return str(get_json(cluster, "pod", name, "-n", namespace)["metadata"]["uid"])


def phase(cluster: ExistingCluster, namespace: str, name: str) -> str:
    return str(get_json(cluster, "pod", name, "-n", namespace)["status"].get("phase", ""))


def test_new_pods_run_side_by_side_and_earlier_ones_are_left_alone(
    cluster: ExistingCluster, namespace: str, stalled_server: str
) -> None:
    node = kwok_node(cluster)
    create_build_pod(cluster, namespace, "earlier", node, "/missing/earlier.onnx")
    time.sleep(1.1)  # creation times count whole seconds: the runner starts in a later one
    with BuildPodKubelet(cluster) as runner:
        stalled = create_build_pod(cluster, namespace, "stalled", node, stalled_server)
        eventually(lambda: stalled in runner.running, timeout=60)
        quick = create_build_pod(cluster, namespace, "quick", node, "/missing/quick.onnx")

        # The quick one is run and reported while the stalled one still waits on its server.
        eventually(lambda: phase(cluster, namespace, "quick") == "Failed", timeout=90)
        assert stalled in runner.running
        assert phase(cluster, namespace, "stalled") == "Pending"
        reported = get_json(cluster, "pod", "quick", "-n", namespace)["status"]["containerStatuses"][0]
        assert "/missing/quick.onnx" in reported["state"]["terminated"]["message"]
        assert quick in runner.handled
        process = runner._running[stalled]
        assert process is not None and process.poll() is None

    # Stopped: the conversion still running is killed, and the earlier pod was never the runner's.
    assert process.wait(timeout=30) != 0
    assert phase(cluster, namespace, "earlier") == "Pending"
    assert stalled not in runner.handled
