"""Part 2 of the chaos suite: control-plane faults under a running operator, on a kwok-only cluster of this
module's own (the session's cluster is never disturbed).

- kube-apiserver restarted (SIGTERM, then SIGKILL) while NimServices reconcile;
- etcd restarted (the same), the apiserver answering errors meanwhile;
- watches expiring: the apiserver serves watches from etcd (`--watch-cache=false`) and compacts etcd every
  2 s, and a proxy between the operator and the apiserver cuts every connection now and then (as a load
  balancer's idle timeout does); kopf resumes each watch from its last resourceVersion, which etcd no longer
  holds: `410 Gone`, and kopf lists again;
- API Priority and Fairness throttling the operator: a FlowSchema sends its user to a priority level of one
  seat that rejects the rest (429 with Retry-After).

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
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from nimify.devcluster.build_runner import BuildPodKubelet
from nimify.devcluster.cluster import (
    LocalCluster,
    start_cluster,
    start_component,
    stop_cluster,
    stop_component,
)
from nimify.devcluster.real_node import RealNodeMode
from nimify.settings import OperatorSettings
from tests.chaos.convergence import duplicate_job_creates, not_converged, wait_for_garbage_collection
from tests.chaos.proxy import CuttingProxy
from tests.chaos.report import ChaosReport, Figure
from tests.chaos.scale import scaled
from tests.chaos.workload import Model, apply_specs, cpu_spec, store_models
from tests.conftest import REPO_ROOT, _bin_path
from tests.controller.conftest import OperatorProcess
from tests.kube import ExistingCluster, eventually, fresh_namespace

pytestmark = [pytest.mark.chaos, pytest.mark.cluster, pytest.mark.timeout(600)]

NIMSERVICES = scaled(ci=8, full=24)
RESTARTS = scaled(ci=2, full=6)
CUTS = scaled(ci=4, full=12)
CONVERGE_SECONDS = 240
OPERATOR_USER = "nimify-operator"  # the common name of the operator's client certificate (devcluster/pki.py)
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
        stop_component(self.local, component, sig)
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
        cluster.kubectl("wait", "--for=condition=Established", "crd/nimservices.nimify.dev", "--timeout=60s")
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
        stop_cluster(local.directory)


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


def _converge(faulty: Faulty, namespace: str, expected: dict[str, dict[str, Any]], since: float) -> float:
    """Waits for every NimService to converge; returns the seconds since `since`. Fails with what differs,
    or when the operator restarted (its process ended)."""
    settings = OperatorSettings()
    problems = ["not checked yet"]
    deadline = time.monotonic() + CONVERGE_SECONDS
    while problems and time.monotonic() < deadline:
        assert faulty.operator.process is not None and faulty.operator.process.poll() is None, (
            "the operator exited:\n" + faulty.operator.log.read_text(errors="replace")[-4000:]
        )
        time.sleep(2)
        try:
            problems = not_converged(faulty.cluster, namespace, expected, settings)
        except Exception as error:  # a slow answer is no verdict
            problems = [repr(error)]
    assert not problems, "\n".join(problems) + "\n--- operator log\n" + _log_tail(faulty)
    assert faulty.local.audit_log is not None
    duplicates = duplicate_job_creates(faulty.local.audit_log, namespace)
    assert not duplicates, "\n".join(duplicates)
    return time.monotonic() - since


def _log_tail(faulty: Faulty) -> str:
    return faulty.operator.log.read_text(errors="replace")[-4000:]


def _operator_requests(faulty: Faulty, verb: str, resource: str, code: int | None = None) -> int:
    """Requests of the operator in the audit log, by verb and resource (and response code)."""
    count = 0
    assert faulty.local.audit_log is not None
    with faulty.local.audit_log.open() as log:
        for line in log:
            event = json.loads(line)
            if event.get("user", {}).get("username") != OPERATOR_USER:
                continue
            if event.get("verb") != verb or (event.get("objectRef") or {}).get("resource") != resource:
                continue
            if code is None or (event.get("responseStatus") or {}).get("code") == code:
                count += 1
    return count


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


def test_watches_that_expire_are_listed_again_and_converge_without_a_restart(
    faulty: Faulty, workload: tuple[str, dict[str, Model]], chaos_report: ChaosReport
) -> None:
    namespace, models = workload
    pid = faulty.pid
    faulty.restart("kube-apiserver", signal.SIGTERM, down=0, extra=EXPIRING_WATCHES)
    try:
        # The apiserver itself says 410 to a watch from a compacted resourceVersion.
        eventually(lambda: "410" in _old_watch(faulty), timeout=60, interval=2)
        lists_before = _operator_requests(faulty, "list", "nimservices")
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
        relists = _operator_requests(faulty, "list", "nimservices") - lists_before
        assert relists >= 1, "no watch was answered 410 and listed again"
        assert faulty.pid == pid, "the operator was restarted"
    finally:
        faulty.restart("kube-apiserver", signal.SIGTERM, down=0)
    print(f"\n{cut} cuts; NimServices listed again {relists}x; converged {seconds:.1f}s after the last cut")
    chaos_report.add(
        Figure(
            "watches expired (410 Gone: etcd compacted every 2 s, connections cut)",
            cut,
            len(expected),
            f"listed again ({relists}x), converged, operator not restarted",
            seconds,
        )
    )


def _old_watch(faulty: Faulty) -> str:
    """A watch of ConfigMaps from resourceVersion 1, as the apiserver answers it."""
    result = faulty.cluster.kubectl(
        "get", "--raw", "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=1&timeoutSeconds=2",
        check=False, timeout=20,
    )  # fmt: skip
    return result.stdout + result.stderr


def throttle(user: str) -> list[dict[str, Any]]:
    """A priority level of the smallest share (one seat here) that rejects what does not fit (429 with
    Retry-After, no queueing), and a FlowSchema sending every request of `user` there. The user is in
    system:masters, which the mandatory `exempt` FlowSchema (precedence 1) exempts from APF: ours has the same
    precedence and a name that sorts first, so it matches first."""
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
                    "limitResponse": {"type": "Reject"},
                },
            },
        },
        {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "FlowSchema",
            "metadata": {"name": "a-chaos-throttled"},
            "spec": {
                "priorityLevelConfiguration": {"name": "chaos-throttled"},
                "matchingPrecedence": 1,
                "distinguisherMethod": {"type": "ByUser"},
                "rules": [
                    {
                        "subjects": [{"kind": "User", "user": {"name": user}}],
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


def test_priority_and_fairness_throttling_the_operator_backs_off_and_converges(
    faulty: Faulty, workload: tuple[str, dict[str, Model]], chaos_report: ChaosReport
) -> None:
    namespace, models = workload
    pid = faulty.pid
    objects = throttle(OPERATOR_USER)
    faulty.cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(objects))
    try:
        rejected_before = _throttled(faulty)
        started = time.monotonic()
        expected = _specs(models, "apf", replicas=2)
        apply_specs(faulty.cluster, namespace, expected)
        seconds = _converge(faulty, namespace, expected, started)
        rejected = _throttled(faulty) - rejected_before
        assert rejected > 0, "the priority level rejected nothing: no throttling happened"
        assert faulty.pid == pid, "the operator was restarted"
    finally:
        faulty.cluster.kubectl(
            "delete", "flowschema/a-chaos-throttled", "prioritylevelconfiguration/chaos-throttled"
        )
    print(f"\n{rejected} requests of the operator rejected (429); converged {seconds:.1f}s after the apply")
    chaos_report.add(
        Figure(
            "API Priority and Fairness: the operator's user at one seat, the rest rejected (429)",
            rejected,
            len(expected),
            "backed off, converged, operator not restarted",
            seconds,
        )
    )


def _throttled(faulty: Faulty) -> int:
    """Requests of the operator answered 429 (any verb, any resource), from the audit log."""
    count = 0
    assert faulty.local.audit_log is not None
    with faulty.local.audit_log.open() as log:
        for line in log:
            event = json.loads(line)
            if (
                event.get("user", {}).get("username") == OPERATOR_USER
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
