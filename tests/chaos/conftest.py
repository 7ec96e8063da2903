"""Fixtures of the chaos suite: the operator under test and the conversion-pod runner (as the controller
e2e tests run them), restricted namespaces, and the figures table printed at the end of the run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from nimify_devcluster.build_runner import BuildPodKubelet
from tests.chaos.report import ChaosReport
from tests.chaos.scale import SCALE
from tests.controller.conftest import OperatorProcess
from tests.kube import ExistingCluster, fresh_namespace

_REPORT = ChaosReport()

#: PodSecurity admission at its strictest, enforcing and warning (warnings show on workload objects too).
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/warn-version": "latest",
}


@pytest.fixture(scope="session")
def chaos_report() -> ChaosReport:
    return _REPORT


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _REPORT.figures:
        terminalreporter.section(f"chaos figures (NIMIFY_CHAOS_SCALE={SCALE})")
        for line in _REPORT.table():
            terminalreporter.write_line(line)
        terminalreporter.write_line(
            "Triton's process killed, a replica OOMKilled (real node): tests/controller/test_real_pods.py"
        )


@pytest.fixture(scope="module")
def chaos_operator(
    cluster: ExistingCluster, nimservice_crd: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """`nimify run` as a process with its own identity, watching e2e-* namespaces (chaos ones among them)."""
    kubeconfig = cluster.operator_kubeconfig or cluster.kubeconfig
    process = OperatorProcess(kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log")
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def build_pods(cluster: ExistingCluster) -> Iterator[BuildPodKubelet]:
    """Runs the conversion pods the operator creates, for real, on this machine."""
    with BuildPodKubelet(cluster) as runner:
        yield runner


@contextlib.contextmanager
def restricted_namespace(cluster: ExistingCluster, prefix: str = "e2e-chaos") -> Iterator[str]:
    """A fresh namespace (watched by the chaos operator) that enforces PodSecurity `restricted`."""
    with fresh_namespace(cluster, prefix) as name:
        cluster.kubectl("label", "namespace", name, *(f"{k}={v}" for k, v in RESTRICTED.items()))
        yield name
