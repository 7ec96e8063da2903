"""Session fixtures shared by every test package.

`cluster` gives tests a running Kubernetes control plane: the cluster named by NIMIFY_TEST_KUBECONFIG when
set (kind, a laptop cluster, ...), otherwise a local one started from the Go-built binaries and removed at
the end of the session.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nimify.api import CRD_NAME
from nimify.devcluster.cluster import running_cluster
from tests.kube import ExistingCluster, eventually, fresh_namespace

REPO_ROOT = Path(__file__).resolve().parent.parent


def _bin_path() -> str:
    if path := os.environ.get("NIMIFY_BIN_PATH"):
        return path
    # Cached binaries make this a no-op; a cold machine builds them here (minutes, with progress on stderr).
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "ensure-binaries.sh")],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    path = result.stdout.strip().splitlines()[-1]
    os.environ["NIMIFY_BIN_PATH"] = path
    return path


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExistingCluster]:
    if kubeconfig := os.environ.get("NIMIFY_TEST_KUBECONFIG"):
        yield ExistingCluster(Path(kubeconfig), os.environ.get("NIMIFY_BIN_PATH"), Path(kubeconfig))
        return
    bin_path = _bin_path()
    directory = tmp_path_factory.mktemp("cluster")
    with running_cluster(f"pytest-{os.getpid()}", bin_path, directory) as local:
        yield ExistingCluster(local.kubeconfig, bin_path, local.operator_kubeconfig, local.audit_log)


@pytest.fixture
def namespace(cluster: ExistingCluster) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting for its contents to go)."""
    with fresh_namespace(cluster, "t") as name:
        yield name


@pytest.fixture(scope="session")
def nimservice_crd(cluster: ExistingCluster) -> str:
    """The CRD from crds/, applied and Established."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"))
    # `kubectl wait` errors out instead of waiting while a new CRD has no status.conditions yet.
    eventually(
        lambda: (
            cluster.kubectl(
                "wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=30s", check=False
            ).returncode
            == 0
        )
    )
    return CRD_NAME
