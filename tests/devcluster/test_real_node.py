"""The real node of the local cluster: a GPU node of its own product that runs real pods on containerd/runc,
reachable only from this machine, one per machine.

Removal is checked where the session's cluster stops (tests/conftest.py): no process, mount, cgroup, veth,
route or rule of the node may remain.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from nimify.render.pod_security import container_security_context, pod_security_context
from nimify_devcluster.cli import dev_cluster
from nimify_devcluster.cluster import ClusterError, get_json, start_cluster
from nimify_devcluster.node_config import (
    BRIDGE,
    GPU_COUNT,
    GPU_PRODUCT,
    HOST_IP,
    LOCK_FILE,
    NODE_NAME,
    POD_CIDR,
    RUNTIME_CLASS,
)
from nimify_devcluster.node_network import GUARD_CHAIN
from nimify_devcluster.real_node import (
    RealNodeError,
    RealNodeInfo,
    RealNodeMode,
    held_for_another,
    mode_from_environment,
    unavailable_reason,
)
from tests.kube import ExistingCluster, fresh_namespace

pytestmark = [pytest.mark.cluster, pytest.mark.real_node]

#: Runs inside a pod: what the pod sees of the network and of the apiserver, as JSON on stdout.
PROBE = textwrap.dedent(
    """
    import errno, json, os, socket, ssl, urllib.request
    account = "/var/run/secrets/kubernetes.io/serviceaccount"
    token = open(account + "/token").read()
    context = ssl.create_default_context(cafile=account + "/ca.crt")
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
    url = "https://%s:%s/version" % (host, port)
    request = urllib.request.Request(url, headers={"Authorization": "Bearer " + token})
    version = json.load(urllib.request.urlopen(request, context=context, timeout=10))["gitVersion"]
    routes = [line.split()[1] for line in open("/proc/net/route").read().splitlines()[1:]]
    probe = socket.socket()
    try:
        probe.connect(("203.0.113.1", 80))  # TEST-NET-3: with no route, nothing is ever sent
        outside = "connected"
    except OSError as error:
        outside = errno.errorcode.get(error.errno, str(error.errno))
    print(json.dumps({"version": version, "routes": routes, "outside": outside, "uid": os.getuid(),
                      "resolv": open("/etc/resolv.conf").read()}))
    """
)


def probe_pod(image: str, gpus: int) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "probe",
        "image": image,
        "imagePullPolicy": "Never",
        "command": ["python", "-c", PROBE],
        "securityContext": container_security_context(),
    }
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe"},
        "spec": {
            "runtimeClassName": RUNTIME_CLASS,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "securityContext": pod_security_context(),
            "containers": [container],
        },
    }


@pytest.fixture
def namespace(cluster: ExistingCluster) -> Iterator[str]:
    with fresh_namespace(cluster, "node") as name:
        yield name


def test_the_node_is_a_gpu_node_of_its_own_product(cluster: ExistingCluster, real_node: RealNodeInfo) -> None:
    node = get_json(cluster, "node", real_node.name)
    labels = node["metadata"]["labels"]
    assert labels["nvidia.com/gpu.product"] == real_node.gpu_product == GPU_PRODUCT
    assert "kwok.x-k8s.io/node" not in node["metadata"].get("annotations", {})
    taints = {(t["key"], t["effect"]) for t in node["spec"]["taints"]}
    assert ("nvidia.com/gpu", "NoSchedule") in taints
    # Advertised as Kubernetes documents for extended resources: the kubelet carries it into allocatable.
    assert node["status"]["capacity"]["nvidia.com/gpu"] == node["status"]["allocatable"]["nvidia.com/gpu"]
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == str(GPU_COUNT)
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == HOST_IP
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    runtime_class = get_json(cluster, "runtimeclass", real_node.runtime_class)
    assert runtime_class["handler"] == "runc"


def test_a_gpu_pod_runs_on_cpu_and_reaches_only_the_cluster(
    cluster: ExistingCluster, real_node: RealNodeInfo, namespace: str
) -> None:
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(probe_pod(real_node.images["nimify"], 1))
    )
    cluster.kubectl(
        "wait", "-n", namespace, "--for=jsonpath={.status.phase}=Succeeded", "pod/probe", "--timeout=120s",
        timeout=130,
    )  # fmt: skip
    pod = get_json(cluster, "pod/probe", "-n", namespace)
    assert pod["spec"]["nodeName"] == NODE_NAME
    assert pod["status"]["podIP"].startswith(POD_CIDR.rsplit(".", 1)[0] + ".")
    seen = json.loads(cluster.kubectl("logs", "-n", namespace, "probe").stdout)
    # The in-cluster apiserver, through the `kubernetes` Service (kube-proxy) on the bridge.
    assert seen["version"].startswith("v1.")
    assert seen["uid"] == 1000
    # No default route: only the pod range (on-link) and the service range via the bridge.
    assert "00000000" not in seen["routes"]
    assert seen["outside"] == "ENETUNREACH"
    assert seen["resolv"].split() == ["nameserver", "127.0.0.1"]


def test_the_network_guard_is_in_place(real_node: RealNodeInfo) -> None:
    forward = subprocess.run(
        ["iptables", "-w", "-t", "mangle", "-S", "FORWARD"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert forward[1] == f"-A FORWARD -j {GUARD_CHAIN}", "the guard must come first"
    guard = subprocess.run(
        ["iptables", "-w", "-t", "mangle", "-S", GUARD_CHAIN], capture_output=True, text=True, check=True
    ).stdout
    assert f"-A {GUARD_CHAIN} -i {BRIDGE} ! -o {BRIDGE} -j DROP" in guard
    assert f"-A {GUARD_CHAIN} ! -i {BRIDGE} -o {BRIDGE} -j DROP" in guard
    routes = subprocess.run(["ip", "route", "show"], capture_output=True, text=True, check=True).stdout
    assert "blackhole 10.244.0.0/16" in routes  # kwok's simulated pods
    assert f"10.96.0.0/16 dev {BRIDGE}" in routes
    nat = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True, check=True).stdout
    # No masquerading of the pod range out: kube-proxy masquerades only marked (service) traffic.
    assert not [line for line in nat.splitlines() if "MASQUERADE" in line and POD_CIDR in line]


def test_a_second_real_node_is_refused_while_one_runs(
    real_node: RealNodeInfo, tmp_path: Path, cluster: ExistingCluster
) -> None:
    bin_path = cluster.bin_path
    assert bin_path is not None
    for mode in (RealNodeMode.ON, RealNodeMode.AUTO):
        with pytest.raises(ClusterError, match="a real node already runs on this machine"):
            start_cluster("second", bin_path, tmp_path / mode.value, real_node=mode)
    # The refused cluster touched nothing of the running node.
    assert get_json(cluster, "node", real_node.name)["status"]["allocatable"]["nvidia.com/gpu"] == str(
        GPU_COUNT
    )


def test_down_of_a_dead_cluster_leaves_the_running_real_node_alone(
    real_node: RealNodeInfo, tmp_path: Path, cluster: ExistingCluster
) -> None:
    # A cluster whose processes and node are gone, its directory (network state included) still there.
    running = Path(json.loads(LOCK_FILE.read_text())["directory"])
    dead = tmp_path / "dead"
    (dead / "node").mkdir(parents=True)
    shutil.copy(running / "node" / "network.json", dead / "node" / "network.json")
    assert held_for_another(dead)
    assert not held_for_another(running)
    result = CliRunner().invoke(dev_cluster, ["down", "--dir", str(dead)])
    assert result.exit_code == 0, result.output
    assert "left alone" in result.output
    assert not dead.exists()
    assert Path(f"/sys/class/net/{BRIDGE}").exists()
    node = get_json(cluster, "node", real_node.name)
    assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"


def test_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, mode in (("", RealNodeMode.AUTO), ("on", RealNodeMode.ON), ("OFF", RealNodeMode.OFF)):
        monkeypatch.setenv("NIMIFY_REAL_NODE", value)
        assert mode_from_environment() is mode
    monkeypatch.setenv("NIMIFY_REAL_NODE", "yes")
    with pytest.raises(RealNodeError, match="use auto, on or off"):
        mode_from_environment()


def test_without_root_the_cluster_is_kwok_only_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert "not running as root" in (unavailable_reason("/nonexistent") or "")
