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
from collections.abc import Callable
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


def run_build_pod(
    cluster: Kubectl,
    pod: dict[str, Any],
    started: Callable[[subprocess.Popen[str]], None] = lambda _: None,
    stopped: Callable[[], bool] = lambda: False,
) -> dict[str, Any] | None:
    """Runs one conversion pod to completion and reports it through the pod's status. `started` gets the
    process once it runs (the runner kills what is still running when it stops); a pod whose process ended
    because the runner `stopped` is not reported (None), as a kubelet that stops reports nothing."""
    container = pod["spec"]["containers"][0]
    with tempfile.TemporaryDirectory(prefix="nimify-kubelet-") as tmp:
        args, termination_log = _local_args(cluster, pod, Path(tmp))
        env = _container_env(cluster, pod, container)
        started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        nimify = Path(sys.executable).parent / "nimify"
        with subprocess.Popen(
            [str(nimify), *container["command"][1:], *args, "--quiet"],
            env=env | {"PATH": str(nimify.parent) + ":/usr/bin:/bin"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as process:
            started(process)
            try:
                _, stderr = process.communicate(timeout=POD_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                _, stderr = process.communicate()
        message = termination_log.read_text() if termination_log.exists() else stderr[-4000:]
    if stopped():
        return None
    finished = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    succeeded = process.returncode == 0
    status = {
        "phase": "Succeeded" if succeeded else "Failed",
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": finished}
        ],
        "startTime": started_at,
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
                        "exitCode": process.returncode,
                        "reason": "Completed" if succeeded else "Error",
                        "message": message,
                        "startedAt": started_at,
                        "finishedAt": finished,
                    }
                },
            }
        ],
    }
    _report(cluster, pod, status)
    return {"returncode": process.returncode, "message": message, "stderr": stderr}


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
#: How long one conversion may run before it is killed (and reported failed).
POD_TIMEOUT_SECONDS = 600.0
#: How many pods run at once: like a kubelet, one slow conversion (a model server that never answers) does
#: not hold up the others.
PARALLEL_PODS = 4


def _created(pod: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(pod["metadata"]["creationTimestamp"].replace("Z", "+00:00"))


class BuildPodKubelet:
    """Runs every scheduled, not yet handled conversion pod in the background, several at once.

    With `only_new` (the default) it leaves alone the pods created before it started: an earlier test
    module's pods (a Job's retry created as its namespace goes away, its model server already stopped) are
    not this runner's to run; the development cluster's runner (`only_new=False`) takes over whatever waits.
    Stopping it kills the conversions still running.
    """

    def __init__(self, cluster: Kubectl, interval: float = 0.5, only_new: bool = True) -> None:
        self.cluster = cluster
        self.interval = interval
        self.only_new = only_new
        self.handled: dict[str, dict[str, Any]] = {}
        self._failing_since: dict[str, float] = {}
        self._running: dict[str, subprocess.Popen[str] | None] = {}
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(PARALLEL_PODS)
        self._since = datetime.now(UTC).replace(microsecond=0)
        #: While set, pods wait (a build that takes its time); clear it to let them run.
        self.hold = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="build-pod-kubelet", daemon=True)

    def __enter__(self) -> BuildPodKubelet:
        self._since = datetime.now(UTC).replace(microsecond=0)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        with self._lock:
            processes = [p for p in self._running.values() if p is not None]
        for process in processes:
            if process.poll() is None:
                process.kill()

    @property
    def running(self) -> list[str]:
        """The uids of the pods whose conversion runs now."""
        with self._lock:
            return list(self._running)

    def _wanted(self, pod: dict[str, Any]) -> bool:
        uid = pod["metadata"]["uid"]
        with self._lock:
            if uid in self.handled or uid in self._running:
                return False
        if not pod["spec"].get("nodeName") or pod["metadata"].get("deletionTimestamp"):
            return False
        if pod["status"].get("phase") != "Pending":
            return False
        return not self.only_new or _created(pod) >= self._since

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if self.hold.is_set():
                continue
            try:
                pods = get_json(self.cluster, "pods", "-A", "-l", CUSTOM_STATUS)["items"]
            except Exception:  # a busy apiserver (429, a timeout) fails one poll, not every later build
                continue
            for pod in pods:
                if not self._wanted(pod) or not self._slots.acquire(blocking=False):
                    continue
                with self._lock:
                    self._running[pod["metadata"]["uid"]] = None
                threading.Thread(target=self._run, args=(pod,), name="build-pod", daemon=True).start()

    def _run(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]

        def started(process: subprocess.Popen[str]) -> None:
            with self._lock:
                self._running[uid] = process

        try:
            outcome = run_build_pod(self.cluster, pod, started, self._stop.is_set)
        except Exception as error:  # a failure here must show up in the test, not kill the thread
            # Tried again for a while: the apiserver may be away for a moment (fault tests).
            first = self._failing_since.setdefault(uid, time.monotonic())
            if time.monotonic() - first > RETRY_SECONDS:
                with self._lock:
                    self.handled[uid] = {"error": repr(error)}
        else:
            if outcome is not None:
                with self._lock:
                    self.handled[uid] = outcome
        finally:
            with self._lock:
                self._running.pop(uid, None)
            self._slots.release()
