"""The chart on the real node, as a platform team installs it: `helm install` runs the operator as a pod of
the nimify image with the chart's ServiceAccount and generated RBAC, and it serves a NimService that answers
inferences through its Service; `helm upgrade` with changed values rolls the operator (Recreate: the old pod
is gone before the new one starts) and leaves what serves alone; an operator pod deleted right after it
created a conversion Job converges with that one Job; `helm uninstall` removes the operator and leaves the
NimServices and their children serving (the choice docs/install.md states).

The release watches one namespace (the chart's namespaced mode: Roles there, nothing cluster-wide), so the
operators other tests of the session run never meet it. Figures (install, pod start, Ready, upgrade,
uninstall) are printed, not asserted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from nimify.engine.reference import OnnxRuntimeModel
from nimify.render.identity import COMPONENT_SERVER
from nimify_devcluster.chart_release import HelmRelease, real_node_values, write_values
from nimify_devcluster.cluster import get_json
from nimify_devcluster.real_node import RealNodeInfo
from tests.controller.test_real_pods import (
    INPUT,
    Model,
    first_answer,
    real_nimservice,
    service_url,
    store_models,
)
from tests.install.argocd import argocd_health
from tests.install.helm import Helm
from tests.kube import ExistingCluster, apply, eventually, fresh_namespace, wait_nimservice_ready

pytestmark = [pytest.mark.cluster, pytest.mark.real_node]

OPERATOR = "app.kubernetes.io/component=operator"
TIMINGS: dict[str, float] = {}


def timed(what: str, action: Any, *args: Any) -> Any:
    started = time.monotonic()
    result = action(*args)
    TIMINGS[what] = round(time.monotonic() - started, 1)
    print(f"[chart on the real node] {what}: {TIMINGS[what]} s")
    return result


def stamp(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class Installed:
    """The release, the namespace its operator watches, and the values file it was installed with."""

    release: HelmRelease
    watched: str
    values: dict[str, Any]
    directory: Path

    @property
    def service_account(self) -> str:
        return self.release.name  # the chart's full name: the release's, which contains "nimify"

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.release.namespace}:{self.service_account}"

    def values_file(self, name: str, **changes: Any) -> Path:
        values = self.values | changes
        values["settings"] = self.values["settings"] | changes.get("settings", {})
        return write_values(self.directory / f"{name}.yaml", values)


@pytest.fixture(scope="module")
def installed(
    cluster: ExistingCluster,
    helm: Helm,
    nimservice_crd: str,
    real_node: RealNodeInfo,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Installed]:
    suffix = uuid.uuid4().hex[:6]
    assert cluster.bin_path is not None
    release = HelmRelease(f"nimify-{suffix}", f"nimify-system-{suffix}", cluster.kubeconfig, cluster.bin_path)
    with fresh_namespace(cluster, "chart-real") as watched:
        values = real_node_values(real_node) | {"watchNamespaces": [watched]}
        values["settings"] |= {"resyncSeconds": 10}
        setup = Installed(release, watched, values, tmp_path_factory.mktemp("chart"))
        try:
            timed("helm install (operator pod Ready)", release.install, setup.values_file("install"))
            yield setup
        finally:
            subprocess.run(
                [helm.binary, "uninstall", release.name, f"--namespace={release.namespace}",
                 f"--kubeconfig={cluster.kubeconfig}"],
                capture_output=True, check=False, timeout=120,
            )  # fmt: skip
            cluster.kubectl("delete", "namespace", release.namespace, "--wait=false", check=False)


def operator_pods(cluster: ExistingCluster, installed: Installed) -> list[dict[str, Any]]:
    return list(get_json(cluster, "pods", "-n", installed.release.namespace, "-l", OPERATOR)["items"])


def ready_operator_pod(cluster: ExistingCluster, installed: Installed) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        pods = [p for p in operator_pods(cluster, installed) if not p["metadata"].get("deletionTimestamp")]
        if len(pods) == 1 and all(c["ready"] for c in pods[0]["status"].get("containerStatuses") or [{}]):
            return pods[0]
        return None

    return dict(eventually(ready, timeout=120))


def operator_logs(cluster: ExistingCluster, installed: Installed) -> str:
    result = cluster.kubectl(
        "logs", "-n", installed.release.namespace, f"deployment/{installed.release.name}", "--tail=60",
        check=False,
    )  # fmt: skip
    return result.stdout + result.stderr


def wait_ready(
    cluster: ExistingCluster, installed: Installed, name: str, timeout: int = 240
) -> dict[str, Any]:
    namespace = installed.watched
    try:
        wait_nimservice_ready(cluster, namespace, name, timeout)
    except AssertionError as error:
        raise AssertionError(f"{error}\noperator log:\n{operator_logs(cluster, installed)}") from None
    return dict(get_json(cluster, f"nimservice/{name}", "-n", namespace))


def answers(cluster: ExistingCluster, namespace: str, name: str, model: Model) -> np.ndarray:
    answer = first_answer(service_url(cluster, namespace, name), name)
    expected = OnnxRuntimeModel(model.path).run({"input": INPUT})["logits"]
    np.testing.assert_allclose(answer, expected, rtol=1e-5, atol=1e-6)
    return answer


def serving_pod(cluster: ExistingCluster, namespace: str, name: str) -> dict[str, Any]:
    selector = f"app.kubernetes.io/instance={name},app.kubernetes.io/component={COMPONENT_SERVER}"
    (pod,) = get_json(cluster, "pods", "-n", namespace, "-l", selector)["items"]
    return dict(pod)


def jobs(cluster: ExistingCluster, namespace: str) -> dict[str, str]:
    """The namespace's Jobs: name -> uid."""
    return {
        j["metadata"]["name"]: j["metadata"]["uid"]
        for j in get_json(cluster, "jobs", "-n", namespace)["items"]
    }


def audited(cluster: ExistingCluster, user: str | None = None) -> list[dict[str, Any]]:
    """Write requests in the apiserver's audit log (the local cluster records every write), by `user`."""
    assert cluster.audit_log is not None, "the session's own cluster keeps an audit log"
    events = [json.loads(line) for line in cluster.audit_log.read_text().splitlines()]
    return [
        e for e in events if "objectRef" in e and (user is None or e.get("user", {}).get("username") == user)
    ]


def job_creates(cluster: ExistingCluster, namespace: str) -> list[str]:
    """Jobs created (201) in `namespace`, by anyone: their names."""
    return [
        e["objectRef"].get("name") or e["requestURI"]
        for e in audited(cluster)
        if e["verb"] == "create"
        and e.get("objectRef", {}).get("resource") == "jobs"
        and e["objectRef"].get("namespace") == namespace
        and e.get("responseStatus", {}).get("code") == 201
    ]


@dataclass
class PodWatch:
    """`kubectl get pods --watch --output-watch-events` on the release namespace: each event's type and pod,
    in the apiserver's order."""

    cluster: ExistingCluster
    namespace: str
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None

    def __enter__(self) -> PodWatch:
        kubectl = shutil.which("kubectl", path=self.cluster.bin_path) or "kubectl"
        self.process = subprocess.Popen(
            [kubectl, f"--kubeconfig={self.cluster.kubeconfig}", "get", "pods", "-n", self.namespace, "-l",
             OPERATOR, "--watch", "--output-watch-events", "-o", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        decoder, buffer = json.JSONDecoder(), ""
        for line in self.process.stdout:  # a stream of pretty-printed watch events
            buffer += line
            try:
                event, end = decoder.raw_decode(buffer.lstrip())
            except ValueError:
                continue
            buffer = buffer.lstrip()[end:]
            self.events.append((event["type"], event["object"]))

    def __exit__(self, *_: object) -> None:
        time.sleep(1)  # the last events in flight
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def first(self, kind: str, uid: str) -> int:
        return next(
            i for i, (t, pod) in enumerate(self.events) if t == kind and pod["metadata"]["uid"] == uid
        )

    def last_seen(self, uid: str) -> dict[str, Any]:
        return [pod for _, pod in self.events if pod["metadata"]["uid"] == uid][-1]


def pod_start(pod: dict[str, Any]) -> tuple[float, float]:
    """Seconds from the pod's creation to its container running, and to Ready (1 s resolution)."""
    created = stamp(pod["metadata"]["creationTimestamp"])
    running = stamp(pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"])
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    return (running - created).total_seconds(), (stamp(ready["lastTransitionTime"]) - created).total_seconds()


@pytest.fixture(scope="module")
def served(cluster: ExistingCluster, installed: Installed, real_node: RealNodeInfo) -> dict[str, Model]:
    """A NimService `mlp` that the chart's operator serves, Ready: the stored models by version."""
    models = store_models(cluster, installed.watched)
    apply(cluster, installed.watched, real_nimservice("mlp", models["v1"], real_node))
    timed("NimService apply -> Ready", wait_ready, cluster, installed, "mlp")
    return models


# --- install


def test_install_runs_the_operator_pod_from_the_nimify_image_with_the_charts_identity(
    cluster: ExistingCluster, installed: Installed, real_node: RealNodeInfo
) -> None:
    pod = ready_operator_pod(cluster, installed)
    assert pod["spec"]["nodeName"] == real_node.name
    assert pod["spec"]["serviceAccountName"] == installed.service_account
    (container,) = pod["status"]["containerStatuses"]
    assert container["image"] == real_node.images["nimify"] and container["imageID"]
    # Ready: the chart's startup and readiness probes reached kopf's /healthz inside the pod.
    assert container["ready"] is True and container["restartCount"] == 0
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    running, ready = pod_start(pod)
    print(
        f"[chart on the real node] operator pod: running {running:.0f} s, Ready {ready:.0f} s after creation"
    )
    # The namespaced mode: a Role in the watched namespace, nothing cluster-wide for this release.
    roles = get_json(cluster, "roles", "-n", installed.watched)["items"]
    assert [r["metadata"]["name"] for r in roles] == [installed.release.name]
    bindings = get_json(
        cluster, "clusterrolebindings", "-l", f"app.kubernetes.io/instance={installed.release.name}"
    )
    assert bindings["items"] == []


def test_the_charts_operator_serves_a_nimservice_that_answers(
    cluster: ExistingCluster, installed: Installed, served: dict[str, Model], real_node: RealNodeInfo
) -> None:
    namespace = installed.watched
    nim = get_json(cluster, "nimservice/mlp", "-n", namespace)
    assert argocd_health(nim)[0] == "Healthy"
    assert nim["status"]["parity"]["passed"] is True
    pod = serving_pod(cluster, namespace, "mlp")
    assert pod["spec"]["nodeName"] == real_node.name
    assert pod["status"]["containerStatuses"][0]["image"] == real_node.images["triton-cpu"]
    answer = answers(cluster, namespace, "mlp", served["v1"])
    print(f"[chart on the real node] Triton's answer through the Service: {answer.ravel().tolist()}")
    # Every child was written by the operator pod, with the chart's ServiceAccount (the audit log's user).
    children = {
        (child["kind"].lower() + "s", child["metadata"]["name"])
        for child in get_json(
            cluster, "deployments,services,configmaps,jobs,persistentvolumeclaims", "-n", namespace,
            "-l", "app.kubernetes.io/managed-by=nimify-operator",
        )["items"]
    }  # fmt: skip
    assert {"deployments", "services", "configmaps", "jobs"} <= {kind for kind, _ in children}
    writers = {
        e["user"]["username"]
        for e in audited(cluster)
        if e["verb"] in ("create", "patch")
        and not e["objectRef"].get("subresource")  # status, written by the controllers too
        and e["objectRef"].get("namespace") == namespace
        and (e["objectRef"].get("resource"), e["objectRef"].get("name")) in children
    }
    assert writers == {installed.user}
    denied = [f"{e['verb']} {e['requestURI']}" for e in audited(cluster, installed.user)
              if e.get("responseStatus", {}).get("code") == 403]  # fmt: skip
    assert denied == [], "the operator hit a permission the chart's RBAC lacks"


# --- upgrade


def test_upgrade_rolls_the_operator_and_leaves_what_serves_alone(
    cluster: ExistingCluster, installed: Installed, served: dict[str, Model]
) -> None:
    namespace = installed.watched
    before_pod = ready_operator_pod(cluster, installed)
    before = get_json(cluster, "deployment/mlp", "-n", namespace)["metadata"]
    before_jobs = jobs(cluster, namespace)
    values = installed.values_file("upgrade", verbose=True, podAnnotations={"nimify.dev/upgraded": "1"})
    started = datetime.now().astimezone()
    with PodWatch(cluster, installed.release.namespace) as watch:
        timed("helm upgrade (new operator pod Ready)", installed.release.upgrade, values)
        after_pod = ready_operator_pod(cluster, installed)
    assert after_pod["metadata"]["uid"] != before_pod["metadata"]["uid"]
    assert "--verbose" in after_pod["spec"]["containers"][0]["args"]
    # Recreate: the old pod was gone before the new one existed (never two operators at once), and it
    # stopped on SIGTERM by itself, well within its grace period.
    old, new = before_pod["metadata"]["uid"], after_pod["metadata"]["uid"]
    assert watch.first("DELETED", old) < watch.first("ADDED", new), [
        (t, p["metadata"]["name"]) for t, p in watch.events
    ]
    (stopped,) = watch.last_seen(old)["status"]["containerStatuses"]
    assert stopped["state"]["terminated"]["exitCode"] == 0, stopped
    running, ready = pod_start(after_pod)
    print(f"[chart on the real node] upgraded operator pod: running {running:.0f} s, Ready {ready:.0f} s")

    # The new operator resumes the NimService from its spec (and resyncs it every 10 s): the children stay
    # as they were, with no write to them, and it keeps serving.
    def resumed() -> bool:
        metrics = httpx.get(f"http://{after_pod['status']['podIP']}:8080/metrics", timeout=5).text
        return any(
            line.startswith("nimify_reconcile_duration_seconds_count") and float(line.rsplit(" ", 1)[1]) >= 2
            for line in metrics.splitlines()
        )

    eventually(resumed, timeout=90)
    after = get_json(cluster, "deployment/mlp", "-n", namespace)["metadata"]
    assert (after["uid"], after["generation"]) == (before["uid"], before["generation"])
    assert jobs(cluster, namespace) == before_jobs
    child_writes = [
        f"{e['verb']} {e['requestURI']}"
        for e in audited(cluster, installed.user)
        if stamp(e["stageTimestamp"]) > started
        and e.get("objectRef", {}).get("resource") not in ("events", "nimservices")
    ]
    assert child_writes == []
    all_writes = [e for e in audited(cluster, installed.user) if stamp(e["stageTimestamp"]) > started]
    described = [
        (e["verb"], e["objectRef"].get("resource"), e["objectRef"].get("subresource")) for e in all_writes
    ]
    print(f"[chart on the real node] writes of the new operator after the upgrade: {described}")
    assert wait_ready(cluster, installed, "mlp", timeout=30)
    answers(cluster, namespace, "mlp", served["v1"])


# --- the operator pod deleted mid-reconcile


def test_operator_pod_deleted_mid_reconcile_converges_with_one_job(
    cluster: ExistingCluster, installed: Installed, real_node: RealNodeInfo, served: dict[str, Model]
) -> None:
    namespace = installed.watched
    before_jobs = jobs(cluster, namespace)
    apply(cluster, namespace, real_nimservice("mlp2", served["v2"], real_node))
    new_job = eventually(lambda: set(jobs(cluster, namespace)) - set(before_jobs), interval=0.1)
    (name,) = new_job
    uid = jobs(cluster, namespace)[name]
    status = get_json(cluster, "nimservice/mlp2", "-n", namespace).get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), None)
    assert ready is None or ready["status"] != "True", (
        "deleted mid-reconcile: the NimService was not Ready yet"
    )
    # One second of grace, then SIGKILL: the reconcile under way is cut off wherever it is.
    old = ready_operator_pod(cluster, installed)
    cluster.kubectl(
        "delete", "pod", "-n", installed.release.namespace, old["metadata"]["name"], "--grace-period=1",
        "--wait=false",
    )  # fmt: skip
    timed("operator pod deleted mid-reconcile -> NimService Ready", wait_ready, cluster, installed, "mlp2")
    new = ready_operator_pod(cluster, installed)
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    # The same Job (same uid: not deleted and made again), and it is the only one created for mlp2.
    assert jobs(cluster, namespace) == before_jobs | {name: uid}
    assert sorted(job_creates(cluster, namespace)) == sorted([*before_jobs, name])
    answers(cluster, namespace, "mlp2", served["v2"])


# --- uninstall


def test_uninstall_removes_the_operator_and_the_nimservices_keep_serving(
    cluster: ExistingCluster, installed: Installed, served: dict[str, Model]
) -> None:
    namespace = installed.watched
    wait_ready(cluster, installed, "mlp", timeout=60)
    pod_before = serving_pod(cluster, namespace, "mlp")
    children_before = get_json(cluster, "deployments,services,configmaps,jobs", "-n", namespace)["items"]
    timed("helm uninstall", installed.release.uninstall)
    eventually(lambda: operator_pods(cluster, installed) == [], timeout=60)
    release = installed.release
    for kind, name in (("deployment", release.name), ("serviceaccount", release.name),
                       ("service", f"{release.name}-metrics")):  # fmt: skip
        assert cluster.kubectl("get", kind, name, "-n", release.namespace, check=False).returncode != 0
    assert cluster.kubectl("get", "role", release.name, "-n", namespace, check=False).returncode != 0

    # What the operator ran stays: the NimServices, every child, the same Triton pod, still answering.
    assert get_json(cluster, "nimservices", "-n", namespace)["items"]
    children_after = get_json(cluster, "deployments,services,configmaps,jobs", "-n", namespace)["items"]
    assert {c["metadata"]["uid"] for c in children_after} == {c["metadata"]["uid"] for c in children_before}
    pod_after = serving_pod(cluster, namespace, "mlp")
    assert pod_after["metadata"]["uid"] == pod_before["metadata"]["uid"]
    assert all(c["ready"] for c in pod_after["status"]["containerStatuses"])
    answers(cluster, namespace, "mlp", served["v1"])
    answers(cluster, namespace, "mlp2", served["v2"])
    print(f"[chart on the real node] timings: {json.dumps(TIMINGS)}")
