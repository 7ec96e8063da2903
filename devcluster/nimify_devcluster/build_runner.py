"""Plays the kubelet for conversion pods in the local cluster: runs the pod's `nimify convert` for real, on
this machine, against the claims' hostPath volumes, then writes the pod's phase and termination message as a
kubelet would.

kwok leaves pods labelled `kwok.x-k8s.io/status: custom` alone; the operator under test adds that label to its
build pods (NIMIFY_BUILD_POD_LABELS), so everything else about the Job stays real (Job controller, scheduler).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nimify_devcluster.cluster import Kubectl, get_json
from nimify_devcluster.topology import KWOK_CUSTOM_STATUS_LABEL

CUSTOM_STATUS = "=".join(KWOK_CUSTOM_STATUS_LABEL)
#: What the operator under test must add to its build pods (NIMIFY_BUILD_POD_LABELS) to be run here.
BUILD_POD_LABELS = dict([KWOK_CUSTOM_STATUS_LABEL])


def claim_host_path(cluster: Kubectl, namespace: str, claim: str) -> Path:
    volume = get_json(cluster, "pvc", claim, "-n", namespace)["spec"]["volumeName"]
    return Path(get_json(cluster, "pv", volume)["spec"]["hostPath"]["path"])


def create_local_claim(cluster: Kubectl, namespace: str, name: str, size: str = "1Gi") -> Path:
    """A bound ReadWriteMany claim; returns the directory on this machine that backs it (to put files on)."""
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": size}}},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(claim))
    cluster.kubectl(
        "wait", "-n", namespace, "--for=jsonpath={.status.phase}=Bound", f"pvc/{name}", "--timeout=60s"
    )
    return claim_host_path(cluster, namespace, name)


def operator_environment(kubeconfig: Path, metrics_port: int) -> dict[str, str]:
    """Environment for `nimify run` against the local cluster: its own identity, and build pods labelled so
    that a BuildPodKubelet runs them."""
    return {
        "KUBECONFIG": str(kubeconfig),
        "NIMIFY_BUILD_POD_LABELS": json.dumps(BUILD_POD_LABELS),
        "NIMIFY_METRICS_PORT": str(metrics_port),
    }


def _local_args(cluster: Kubectl, pod: dict[str, Any], scratch: Path) -> tuple[list[str], Path]:
    """The container's command with each mount path replaced by where that volume lives on this machine."""
    namespace = pod["metadata"]["namespace"]
    container = pod["spec"]["containers"][0]
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    mounts: dict[str, Path] = {}
    for mount in container["volumeMounts"]:
        if mount["name"] in claims:
            mounts[mount["mountPath"]] = claim_host_path(cluster, namespace, claims[mount["name"]])
        else:
            mounts[mount["mountPath"]] = scratch / mount["name"]
            mounts[mount["mountPath"]].mkdir(parents=True, exist_ok=True)
    termination_log = scratch / "termination-log"

    def local(value: str) -> str:
        if value == container.get("terminationMessagePath"):
            return str(termination_log)
        children = {m: p for m, p in mounts.items() if m.startswith(value.rstrip("/") + "/")}
        if value not in mounts and children:  # a root that holds mounts, e.g. --pvc-root=/mnt/pvc
            root = scratch / "roots" / value.strip("/").replace("/", "_")
            root.mkdir(parents=True, exist_ok=True)
            for mount_path, host in children.items():
                link = root / mount_path[len(value.rstrip("/")) + 1 :]
                if not link.exists():
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.symlink_to(host)
            return str(root)
        for mount_path in sorted(mounts, key=len, reverse=True):
            if value == mount_path or value.startswith(mount_path + "/"):
                return str(mounts[mount_path]) + value[len(mount_path) :]
        return value

    args = []
    for arg in container["args"]:
        flag, sep, value = arg.partition("=")
        args.append(f"{flag}={local(value)}" if sep else arg)
    return args, termination_log


def _container_env(cluster: Kubectl, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """The environment a kubelet gives the container: envFrom Secrets and ConfigMaps, then env values."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        for key, kind in (("secretRef", "secret"), ("configMapRef", "configmap")):
            if (ref := source.get(key)) is None:
                continue
            data = get_json(cluster, kind, ref["name"], "-n", pod["metadata"]["namespace"]).get("data") or {}
            if kind == "secret":
                data = {name: base64.b64decode(value).decode() for name, value in data.items()}
            env |= {source.get("prefix", "") + name: value for name, value in data.items()}
    return env | {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def run_build_pod(cluster: Kubectl, pod: dict[str, Any]) -> dict[str, Any]:
    """Runs one conversion pod to completion and reports it through the pod's status."""
    container = pod["spec"]["containers"][0]
    with tempfile.TemporaryDirectory(prefix="nimify-kubelet-") as tmp:
        args, termination_log = _local_args(cluster, pod, Path(tmp))
        env = _container_env(cluster, pod, container)
        started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        nimify = Path(sys.executable).parent / "nimify"
        result = subprocess.run(
            [str(nimify), *container["command"][1:], *args, "--quiet"],
            env=env | {"PATH": str(nimify.parent) + ":/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        message = termination_log.read_text() if termination_log.exists() else result.stderr[-4000:]
    finished = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    succeeded = result.returncode == 0
    status = {
        "phase": "Succeeded" if succeeded else "Failed",
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": finished}
        ],
        "startTime": started,
        "containerStatuses": [
            {
                "name": container["name"],
                "image": container["image"],
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "started": False,
                "state": {
                    "terminated": {
                        "exitCode": result.returncode,
                        "reason": "Completed" if succeeded else "Error",
                        "message": message,
                        "startedAt": started,
                        "finishedAt": finished,
                    }
                },
            }
        ],
    }
    _report(cluster, pod, status)
    return {"returncode": result.returncode, "message": message, "stderr": result.stderr}


def _report(cluster: Kubectl, pod: dict[str, Any], status: dict[str, Any], timeout: float = 120) -> None:
    """Patch the pod's status as a kubelet does: again and again while the apiserver is away (a restart,
    a throttled request), until it takes or the pod is gone."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = cluster.kubectl(
                "patch", "pod", pod["metadata"]["name"], "-n", pod["metadata"]["namespace"],
                "--subresource=status", "--type=merge", "-p", json.dumps({"status": status}),
                check=False, timeout=30,
            )  # fmt: skip
            if result.returncode == 0 or "NotFound" in result.stderr:
                return
            error = result.stderr.strip()
        except subprocess.TimeoutExpired:
            error = "kubectl patch timed out"
        if time.monotonic() > deadline:
            raise RuntimeError(f"pod status not reported: {error}")
        time.sleep(1)


#: How long a pod that cannot be run (the apiserver away) is tried again before it counts as failed.
RETRY_SECONDS = 60.0


class BuildPodKubelet:
    """Runs every scheduled, not yet handled conversion pod in the background."""

    def __init__(self, cluster: Kubectl, interval: float = 0.5) -> None:
        self.cluster = cluster
        self.interval = interval
        self.handled: dict[str, dict[str, Any]] = {}
        self._failing_since: dict[str, float] = {}
        #: While set, pods wait (a build that takes its time); clear it to let them run.
        self.hold = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="build-pod-kubelet", daemon=True)

    def __enter__(self) -> BuildPodKubelet:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if self.hold.is_set():
                continue
            try:
                pods = get_json(self.cluster, "pods", "-A", "-l", CUSTOM_STATUS)["items"]
            except Exception:  # a busy apiserver (429, a timeout) fails one poll, not every later build
                continue
            for pod in pods:
                uid = pod["metadata"]["uid"]
                if uid in self.handled or not pod["spec"].get("nodeName"):
                    continue
                if pod["status"].get("phase") != "Pending" or pod["metadata"].get("deletionTimestamp"):
                    continue
                try:
                    self.handled[uid] = run_build_pod(self.cluster, pod)
                except Exception as error:  # a failure here must show up in the test, not kill the thread
                    # Tried again for a while: the apiserver may be away for a moment (fault tests).
                    first = self._failing_since.setdefault(uid, time.monotonic())
                    if time.monotonic() - first > RETRY_SECONDS:
                        self.handled[uid] = {"error": repr(error)}
