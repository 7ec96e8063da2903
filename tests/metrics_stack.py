"""The metrics pipeline (metrics-server, Prometheus, KEDA) for the tests that need it: on a local cluster of
its own (kwok-only), or on the session's cluster for a while (the real node is one per machine, so tests that
need it and the pipeline share the session's cluster).

Built binaries come from hack/ensure-metrics-stack.sh (cached; a cold machine builds them here, minutes) or
NIMIFY_METRICS_BIN_PATH; the control plane from NIMIFY_BIN_PATH or hack/ensure-binaries.sh.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from nimify_devcluster.cluster import LocalCluster, running_cluster
from nimify_devcluster.metrics_stack import COMPONENTS, MetricsStack, start_metrics_stack, stop_metrics_stack
from tests.kube import ExistingCluster

REPO_ROOT = Path(__file__).resolve().parent.parent


def _script_output(variable: str, script: str, *args: str) -> str:
    if path := os.environ.get(variable):
        return path
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / script), *args], check=True, stdout=subprocess.PIPE, text=True
    )
    path = result.stdout.strip().splitlines()[-1]
    os.environ[variable] = path
    return path


def control_plane_bin_path() -> str:
    return _script_output("NIMIFY_BIN_PATH", "ensure-binaries.sh")


def metrics_bin_path() -> str:
    return _script_output("NIMIFY_METRICS_BIN_PATH", "ensure-metrics-stack.sh")


@dataclass(frozen=True)
class MetricsCluster:
    local: LocalCluster
    stack: MetricsStack

    @property
    def client(self) -> ExistingCluster:
        local = self.local
        return ExistingCluster(local.kubeconfig, local.bin_path, local.operator_kubeconfig, local.audit_log)


@contextlib.contextmanager
def metrics_cluster(
    name: str, directory: Path, components: Sequence[str] = COMPONENTS
) -> Iterator[MetricsCluster]:
    bin_path = control_plane_bin_path()
    metrics = metrics_bin_path()
    with running_cluster(name, bin_path, directory) as local:
        yield MetricsCluster(local, start_metrics_stack(local, metrics, components))


@contextlib.contextmanager
def metrics_stack_on(
    cluster: ExistingCluster, components: Sequence[str] = COMPONENTS
) -> Iterator[MetricsStack]:
    """The pipeline on the session's local cluster, stopped afterwards (that cluster lives on)."""
    if cluster.directory is None:
        raise RuntimeError("the metrics stack joins a local cluster this session started")
    local = LocalCluster.load(cluster.directory)
    stack = start_metrics_stack(local, metrics_bin_path(), components)
    try:
        yield stack
    finally:
        stop_metrics_stack(local, stack)
