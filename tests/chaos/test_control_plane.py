"""Part 2 of the chaos suite: control-plane faults under a running operator, on a kwok-only cluster of this
module's own (the session's cluster is never disturbed).

- kube-apiserver restarted (SIGTERM, then SIGKILL) while NimServices reconcile;
- etcd restarted (the same), the apiserver answering errors meanwhile;
- watches expiring: the apiserver serves watches from etcd (`--watch-cache=false`) and compacts etcd every
  2 s, and a proxy between the operator and the apiserver cuts every connection now and then (as a load
  balancer's idle timeout does); kopf resumes each watch from its last resourceVersion, which etcd no longer
  holds: `410 Gone`, and kopf lists again;
- API Priority and Fairness throttling the operator: a FlowSchema sends its ServiceAccount to a priority
  level of one seat and a queue of one, which rejects the rest (429 with Retry-After).

Each time the operator must converge with no restart of its own (one process, one pid throughout), no
duplicate conversion Job and nothing left behind; figures go into the chaos table.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from nimify.install.rbac import operator_grants
from nimify.settings import OperatorSettings
from nimify_devcluster.build_runner import BuildPodKubelet
from nimify_devcluster.cluster import (
    LocalCluster,
    get_json,
    start_cluster,
    start_component,
    stop_cluster,
    stop_component,
    wait_established,
)
from nimify_devcluster.real_node import RealNodeMode
from tests.chaos.convergence import duplicate_job_creates, not_converged, wait_for_garbage_collection
from tests.chaos.proxy import CuttingProxy
from tests.chaos.report import ChaosReport, Figure
from tests.chaos.scale import scaled
from tests.chaos.workload import Model, apply_specs, cpu_spec, store_models
from tests.conftest import REPO_ROOT, _bin_path
from tests.controller.conftest import OperatorProcess
from tests.kube import ExistingCluster, eventually, fresh_namespace

pytestmark = [pytest.mark.chaos, pytest.mark.cluster, pytest.mark.own_cluster, pytest.mark.timeout(600)]

NIMSERVICES = scaled(ci=8, full=24)
RESTARTS = scaled(ci=2, full=6)
CUTS = scaled(ci=4, full=12)
CONVERGE_SECONDS = 240
#: The common name of the operator's client certificate (devcluster/pki.py), whose requests the audit log
#: records in full.
OPERATOR_USER = "nimify-operator"
#: Fewer seats in all (the default is 400 + 200), so that one share of them is one seat: see the APF test.
APISERVER_ARGS = ("--max-requests-inflight=50", "--max-mutating-requests-inflight=25")
#: Watches served from etcd, whose history is compacted every two seconds: a watch resumed from a
#: resourceVersion a few seconds old is answered `410 Gone`.
EXPIRING_WATCHES = ("--watch-cache=false", "--etcd-compaction-interval=2s")


@dataclass
class Faulty:
    """The module's cluster, its operator (connected through the cutting proxy) and the build runner."""

    local: LocalCluster
    cluster: ExistingCluster
    proxy: CuttingProxy
    operator: OperatorProcess
    builds: BuildPodKubelet

    @property
    def pid(self) -> int:
        assert self.operator.process is not None
        return self.operator.process.pid

    def restart(self, component: str, sig: int, down: float, extra: tuple[str, ...] = ()) -> None:
        """Stop `component` with `sig` (SIGKILL after 5 s, as a kubelet's short grace period would: the
        apiserver drains for longer), keep it down `down` seconds, start it again."""
        stop_component(self.local, component, sig, grace=5)
        time.sleep(down)
        args = (*APISERVER_ARGS, *extra) if component == "kube-apiserver" else extra
        start_component(self.local, component, args)


def _proxied_kubeconfig(source: Path, port: int, target: Path) -> Path:
    config = yaml.safe_load(source.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    target.write_text(yaml.safe_dump(config))
    target.chmod(0o600)
    return target


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faulty]:
    directory = tmp_path_factory.mktemp("faulty-cluster")
    local = start_cluster(f"chaos-cp-{os.getpid()}", _bin_path(), directory, real_node=RealNodeMode.OFF)
    try:
        cluster = ExistingCluster(
            local.kubeconfig, local.bin_path, local.operator_kubeconfig, local.audit_log
        )
        stop_component(local, "kube-apiserver")
        start_component(local, "kube-apiserver", APISERVER_ARGS)
        cluster.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
        wait_established(cluster, "nimservices.nimify.dev")
        wait_for_garbage_collection(cluster)
        upstream = urlparse(local.server)
        assert upstream.hostname is not None and upstream.port is not None
        with CuttingProxy((upstream.hostname, upstream.port)) as proxy, BuildPodKubelet(cluster) as builds:
            kubeconfig = _proxied_kubeconfig(
                local.operator_kubeconfig, proxy.port, directory / "operator-proxied.kubeconfig"
            )
            operator = OperatorProcess(kubeconfig, directory / "operator.log")
            operator.start()
            try:
                yield Faulty(local, cluster, proxy, operator, builds)
            finally:
                operator.stop()
    finally:
        stop_cluster(local.directory, remove=False)  # its logs stay in pytest's temporary directory


@pytest.fixture
def workload(faulty: Faulty) -> Iterator[tuple[str, dict[str, Model]]]:
    with fresh_namespace(faulty.cluster, "e2e-cp") as namespace:
        yield namespace, store_models(faulty.cluster, namespace)


def _specs(models: dict[str, Model], prefix: str, replicas: int = 1) -> dict[str, dict[str, Any]]:
    """NIMSERVICES NimServices over four engines (two models, two batch sizes)."""
    labels = sorted(models)
    return {
        f"{prefix}-{i:02d}": cpu_spec(models[labels[i % 2]], batch=(4, 8)[i // 2 % 2], replicas=replicas)
        for i in range(NIMSERVICES)
    }


STUCK_POD_SECONDS = 20.0


def _restart_stuck_kwok_pods(cluster: ExistingCluster, namespace: str) -> list[str]:
    """Deletes Triton pods bound to a kwok node that never started: kwok v0.7.0 drops a pod's stage when its
    status patch fails (a 500 while etcd is down) and never retries it, which a real kubelet does. The
    ReplicaSet replaces them; what is under test (the operator) is untouched."""
    stuck = []
    now = time.time()
    pods = get_json(cluster, "pods", "-n", namespace, "-l", "app.kubernetes.io/component=inference-server")[
        "items"
    ]
    for pod in pods:
        created = datetime.fromisoformat(pod["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
        if (
            pod["spec"].get("nodeName")
            and pod.get("status", {}).get("phase") == "Pending"
            and now - created.timestamp() > STUCK_POD_SECONDS
        ):
            stuck.append(pod["metadata"]["name"])
    if stuck:
        cluster.kubectl("delete", "pods", "-n", namespace, "--wait=false", *stuck, check=False)
    return stuck


def _converge(
    faulty: Faulty,
    namespace: str,
    expected: dict[str, dict[str, Any]],
    since: float,
    operator: OperatorProcess | None = None,
) -> float:
    """Waits for every NimService to converge; returns the seconds since `since`. Fails with what differs,
    or when the operator (the module's unless given) restarted: its process ended."""
    operator = operator or faulty.operator
    settings = OperatorSettings()
    problems = ["not checked yet"]
    restarted: list[str] = []
    deadline = time.monotonic() + CONVERGE_SECONDS
    while problems and time.monotonic() < deadline:
        assert operator.process is not None and operator.process.poll() is None, (
            "the operator exited:\n" + operator.log.read_text(errors="replace")[-4000:]
        )
        time.sleep(2)
        try:
            problems = not_converged(faulty.cluster, namespace, expected, settings)
            if problems:
                restarted.extend(_restart_stuck_kwok_pods(faulty.cluster, namespace))
        except Exception as error:  # a slow answer is no verdict
            problems = [repr(error)]
    log = operator.log.read_text(errors="replace")[-4000:]
    if restarted:
        print(f"\n[chaos] kwok pods that never started, replaced: {', '.join(restarted)}")
    builds = [f"{uid}: {run}" for uid, run in faulty.builds.handled.items() if "error" in run]
    assert not problems, (
        "\n".join(problems) + "\n--- conversion pods the runner could not run\n" + "\n".join(builds)
        + f"\n--- cluster logs in {faulty.local.directory / 'logs'}\n--- operator log\n" + log
    )  # fmt: skip
    assert faulty.local.audit_log is not None
    duplicates = duplicate_job_creates(faulty.local.audit_log, namespace)
    assert not duplicates, "\n".join(duplicates)
    return time.monotonic() - since


def _operator_lists(faulty: Faulty, namespace: str) -> dict[str, int]:
    """The operator's list requests in `namespace` by resource, from the audit log: one per watched kind
    when it starts watching there, one more each time a watch had to start over (410 Gone)."""
    counts: dict[str, int] = {}
    assert faulty.local.audit_log is not None
    with faulty.local.audit_log.open() as log:
        for line in log:
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            if (
                event.get("user", {}).get("username") == OPERATOR_USER
                and event.get("verb") == "list"
                and ref.get("namespace") == namespace
            ):
                counts[ref["resource"]] = counts.get(ref["resource"], 0) + 1
    return counts


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_a_restarted_control_plane_component_during_reconciles_converges(
    faulty: Faulty, workload: tuple[str, dict[str, Model]], chaos_report: ChaosReport, component: str
) -> None:
    namespace, models = workload
    pid = faulty.pid
    prefix = "api" if component == "kube-apiserver" else "etcd"
    expected = _specs(models, prefix)
    apply_specs(faulty.cluster, namespace, expected)
    restarts = []
    for attempt in range(RESTARTS):
        time.sleep(1.0 + attempt)  # in the middle of the reconciles: Jobs, Deployments, status patches
        sig = signal.SIGKILL if attempt % 2 else signal.SIGTERM
        down = time.monotonic()
        faulty.restart(component, sig, down=3)
        restarts.append(f"{signal.Signals(sig).name}, down {time.monotonic() - down:.1f}s")
        if attempt == 0:  # a new spec for half of them while the operator reconnects
            expected |= {name: spec | {"replicas": 2} for name, spec in list(expected.items())[::2]}
            apply_specs(faulty.cluster, namespace, expected)
    back = time.monotonic()
    seconds = _converge(faulty, namespace, expected, back)
    assert faulty.pid == pid, "the operator was restarted"
    print(f"\n{component} restarts: {'; '.join(restarts)}; converged {seconds:.1f}s after the last one")
    chaos_report.add(
        Figure(
            f"{component} restarted during reconciles (SIGTERM/SIGKILL, 3 s down)",
            RESTARTS,
            len(expected),
            "converged, operator not restarted, no duplicate Job",
            seconds,
        )
    )


def throttle(account: tuple[str, str]) -> list[dict[str, Any]]:
    """A priority level of the smallest share (one seat with APISERVER_ARGS) and a queue of one, beyond which
    requests are rejected (429 with Retry-After), and a FlowSchema sending every request of the
    ServiceAccount `account` (namespace, name) there, ahead of the built-in schemas."""
    namespace, name = account
    return [
        {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "PriorityLevelConfiguration",
            "metadata": {"name": "chaos-throttled"},
            "spec": {
                "type": "Limited",
                "limited": {
                    "nominalConcurrencyShares": 1,
                    "lendablePercent": 0,
                    "borrowingLimitPercent": 0,
                    # One queue of one: what waits longer, or does not fit, is rejected (429). With four,
                    # a starved machine once sent too few requests at a time to be rejected at all.
                    "limitResponse": {
                        "type": "Queue",
                        "queuing": {"queues": 1, "handSize": 1, "queueLengthLimit": 1},
                    },
                },
            },
        },
        {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "FlowSchema",
            "metadata": {"name": "chaos-throttled"},
            "spec": {
                "priorityLevelConfiguration": {"name": "chaos-throttled"},
                "matchingPrecedence": 100,
                "distinguisherMethod": {"type": "ByUser"},
                "rules": [
                    {
                        "subjects": [
                            {
                                "kind": "ServiceAccount",
                                "serviceAccount": {"name": name, "namespace": namespace},
                            }
                        ],
                        "resourceRules": [
                            {
                                "verbs": ["*"],
                                "apiGroups": ["*"],
                                "resources": ["*"],
                                "namespaces": ["*"],
                                "clusterScope": True,
                            }
                        ],
                        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                    }
                ],
            },
        },
    ]


def operator_rbac(name: str, namespace: str) -> list[dict[str, Any]]:
    """The operator's least-privilege RBAC (generated from the code, as the Helm chart's), bound to the
    ServiceAccount nimify-operator in `namespace`."""
    rules = [
        {"apiGroups": [grant.group], "resources": [grant.resource], "verbs": list(grant.verbs)}
        for grant in operator_grants()
    ]
    account = {"kind": "ServiceAccount", "name": "nimify-operator", "namespace": namespace}
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "nimify-operator", "namespace": namespace},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [account],
        },
    ]


def _service_account_kubeconfig(faulty: Faulty, home: str) -> Path:
    """A kubeconfig (through the proxy) for the ServiceAccount nimify-operator in `home`, with the operator's
    generated least-privilege RBAC and the namespace listing a pattern of namespaces needs. The operator's
    own identity is in system:masters, which API Priority and Fairness always exempts."""
    name = f"chaos-throttled-{home}"
    objects = [*operator_rbac(name, home)]
    objects[1]["rules"].append({"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]})
    faulty.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    token = faulty.cluster.kubectl(
        "create", "token", "nimify-operator", "-n", home, "--duration=2h"
    ).stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": f"https://127.0.0.1:{faulty.proxy.port}",
                    "certificate-authority": str(faulty.local.directory / "pki" / "ca.crt"),
                },
            }
        ],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "operator"}}],
        "current-context": "local",
    }
    path = faulty.local.directory / f"{name}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def test_priority_and_fairness_throttling_the_operator_backs_off_and_converges(
    faulty: Faulty, workload: tuple[str, dict[str, Model]], chaos_report: ChaosReport
) -> None:
    namespace, models = workload
    cluster = faulty.cluster
    # The earlier tests' namespaces gone first: throttling alone is the fault here. (Twice in six runs, an
    # operator started under this throttle while two of them were still terminating never saw its Jobs
    # complete: kopf left events of those namespaces' objects unprocessed. Not diagnosed further yet.)
    eventually(lambda: _other_namespaces(cluster, namespace) == [], timeout=180, interval=2)
    with fresh_namespace(cluster, "chaos-operator") as home:
        kubeconfig = _service_account_kubeconfig(faulty, home)
        user = f"system:serviceaccount:{home}:nimify-operator"
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(throttle((home, "nimify-operator"))))
        # The same operator under an identity APF can throttle, for the length of this test.
        faulty.operator.stop()
        throttled = OperatorProcess(kubeconfig, faulty.local.directory / "operator-throttled.log")
        try:
            throttled.start()
            pid = throttled.process.pid if throttled.process else 0
            rejected_before = _throttled(faulty, user)
            started = time.monotonic()
            expected = _specs(models, "apf", replicas=2)
            apply_specs(cluster, namespace, expected)
            seconds = _converge(faulty, namespace, expected, started, throttled)
            rejected = _throttled(faulty, user) - rejected_before
            assert rejected > 0, "the priority level rejected nothing: no throttling happened"
            assert throttled.process is not None and throttled.process.pid == pid
        finally:
            throttled.stop()
            cluster.kubectl(
                "delete", "flowschema/chaos-throttled", "prioritylevelconfiguration/chaos-throttled"
            )
            faulty.operator.start()
    print(f"\n{rejected} writes of the operator rejected (429); converged {seconds:.1f}s after the apply")
    chaos_report.add(
        Figure(
            "API Priority and Fairness: the operator's ServiceAccount at one seat and 1 queued, the rest 429",
            rejected,
            len(expected),
            "backed off, converged, operator not restarted",
            seconds,
        )
    )


def _other_namespaces(cluster: ExistingCluster, namespace: str) -> list[str]:
    names = [item["metadata"]["name"] for item in get_json(cluster, "namespaces")["items"]]
    return [name for name in names if name.startswith("e2e-") and name != namespace]


def _throttled(faulty: Faulty, user: str) -> int:
    """Writes of `user` answered 429, from the audit log (it records every write)."""
    count = 0
    assert faulty.local.audit_log is not None
    with faulty.local.audit_log.open() as log:
        for line in log:
            event = json.loads(line)
            if (
                event.get("user", {}).get("username") == user
                and (event.get("responseStatus") or {}).get("code") == 429
            ):
                count += 1
    return count


def test_stopped_and_started_components_keep_their_arguments(faulty: Faulty) -> None:
    """The restart hook itself: same binary and arguments (extras appended), a new process, log appended."""
    local = faulty.local
    before = local.pids["kube-scheduler"]
    log = local.directory / "logs" / "kube-scheduler.log"
    size = log.stat().st_size
    stop_component(local, "kube-scheduler")
    process = start_component(local, "kube-scheduler", ("--v=1",))
    assert local.pids["kube-scheduler"] == process.pid != before
    command = subprocess.run(["cat", f"/proc/{process.pid}/cmdline"], capture_output=True, check=True).stdout
    args = command.decode().split("\0")
    assert args[1:-1] == [*local.commands["kube-scheduler"]["args"], "--v=1"]
    assert log.stat().st_size >= size  # appended to, not truncated
    stored = LocalCluster.load(local.directory)
    assert stored.pids["kube-scheduler"] == process.pid  # what stopping the cluster stops


def test_watches_that_expire_are_listed_again_and_converge_without_a_restart(
    faulty: Faulty, workload: tuple[str, dict[str, Model]], chaos_report: ChaosReport
) -> None:
    namespace, models = workload
    pid = faulty.pid
    # Last in the module: the cluster keeps these flags until it is stopped. (Restarting the apiserver once
    # more without them left kube-controller-manager's informers silent for minutes.)
    faulty.restart("kube-apiserver", signal.SIGTERM, down=0, extra=EXPIRING_WATCHES)
    # The apiserver itself says 410 to a watch from a compacted resourceVersion.
    eventually(lambda: '"code":410' in _old_watch(faulty), timeout=60, interval=1)
    expected = _specs(models, "expiry")
    apply_specs(faulty.cluster, namespace, expected)
    cut = 0
    for cut in range(1, CUTS + 1):
        time.sleep(6)  # longer than etcd keeps history: the next resume is from a compacted version
        faulty.proxy.cut()
        if cut == 1:
            expected |= {name: spec | {"replicas": 2} for name, spec in list(expected.items())[::2]}
            apply_specs(faulty.cluster, namespace, expected)
    seconds = _converge(faulty, namespace, expected, time.monotonic())
    lists = _operator_lists(faulty, namespace)
    relists = sum(count - 1 for count in lists.values())
    assert lists.get("nimservices", 0) >= 2, f"NimServices were never listed again after a 410: {lists}"
    assert faulty.pid == pid, "the operator was restarted"
    print(f"\n{cut} cuts; lists by kind {lists}; converged {seconds:.1f}s after the last cut")
    chaos_report.add(
        Figure(
            "watches expired (410 Gone: etcd compacted every 2 s, connections cut)",
            cut,
            len(expected),
            f"{relists} watches listed again, converged, operator not restarted",
            seconds,
        )
    )


def _old_watch(faulty: Faulty) -> str:
    """The apiserver's answer to a watch resumed from a resourceVersion five seconds old (a ConfigMap
    written then): a `410 Gone` once etcd has compacted that version away and no watch cache holds it."""
    cluster = faulty.cluster
    cluster.kubectl("create", "configmap", f"probe-{time.monotonic_ns()}", "-n", "default")
    version = max(
        int(item["metadata"]["resourceVersion"])
        for item in get_json(cluster, "configmaps", "-n", "default")["items"]
    )
    time.sleep(5)
    result = cluster.kubectl(
        "get", "--raw",
        f"/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={version}&timeoutSeconds=2",
        check=False, timeout=20,
    )  # fmt: skip
    return result.stdout + result.stderr
