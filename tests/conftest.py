"""Session fixtures shared by every test package.

`cluster` gives tests a running Kubernetes control plane: the cluster named by NIMIFY_TEST_KUBECONFIG when
set (kind, a laptop cluster, ...), otherwise a local one started from the Go-built binaries and removed at
the end of the session. The local one has a real node (containerd + kubelet running real pods) as
NIMIFY_REAL_NODE says: `auto` (default) wherever this machine can run it (root, packages present), `on`
insists, `off` keeps it kwok-only (for running beside another session that holds this machine's real node).
Its removal is checked: nothing of the real node may remain.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nimify.api import CRD_NAME
from nimify_devcluster.cluster import start_cluster, stop_cluster, wait_established
from nimify_devcluster.real_node import RealNodeInfo, RealNodeMode, mode_from_environment
from nimify_devcluster.real_node import leftovers as real_node_leftovers
from tests.kube import ExistingCluster, fresh_namespace

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


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the session's cluster are marked `session_cluster`, and those of a module where any test
    needs the real node also `real_node`. hack/test.sh runs four pytest processes side by side: the
    session-cluster tests of the real node (one per machine), the other session-cluster tests on a
    kwok-only cluster of their own, the modules marked `own_cluster`, and every other test."""
    on_session = [
        item
        for item in items
        if "cluster" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("own_cluster")
    ]
    real_node_modules = {item.path for item in on_session if "real_node" in getattr(item, "fixturenames", ())}
    for item in on_session:
        item.add_marker(pytest.mark.session_cluster)
        if item.path in real_node_modules:
            item.add_marker(pytest.mark.real_node)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExistingCluster]:
    if kubeconfig := os.environ.get("NIMIFY_TEST_KUBECONFIG"):
        absent = "NIMIFY_TEST_KUBECONFIG names a cluster this session did not start"
        yield ExistingCluster(
            Path(kubeconfig),
            os.environ.get("NIMIFY_BIN_PATH"),
            Path(kubeconfig),
            real_node_absent=absent,
        )
        return
    bin_path = _bin_path()
    directory = tmp_path_factory.mktemp("cluster")
    local = start_cluster(f"pytest-{os.getpid()}", bin_path, directory, real_node=mode_from_environment())
    try:
        yield ExistingCluster(
            local.kubeconfig,
            bin_path,
            local.operator_kubeconfig,
            local.audit_log,
            real_node=local.node,
            real_node_absent=local.real_node_absent,
            directory=local.directory,
        )
    finally:
        stop_cluster(local.directory)
    if local.node is not None:
        left = real_node_leftovers(local.directory)
        assert not left, "stopping the cluster left parts of its real node behind:\n" + "\n".join(left)


def own_kwok_cluster(name: str) -> tuple[Any, Any]:
    """Module-scoped `cluster` and `nimservice_crd` fixtures for a module marked `own_cluster`: a kwok-only
    cluster of its own (with its audit log) for heavy tests that need no real node, so that they run beside
    the session's cluster instead of on it. Use: `cluster, nimservice_crd = own_kwok_cluster("name")`.
    Its logs stay in pytest's temporary directory."""

    @pytest.fixture(scope="module", name="cluster")
    def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExistingCluster]:
        directory = tmp_path_factory.mktemp(f"{name}-cluster")
        local = start_cluster(f"{name}-{os.getpid()}", _bin_path(), directory, real_node=RealNodeMode.OFF)
        try:
            cluster = ExistingCluster(
                local.kubeconfig, local.bin_path, local.operator_kubeconfig, local.audit_log
            )
            cluster.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
            wait_established(cluster, CRD_NAME)
            yield cluster
        finally:
            stop_cluster(local.directory, remove=False)

    @pytest.fixture(scope="module", name="nimservice_crd")
    def own_crd(cluster: ExistingCluster) -> str:
        return CRD_NAME  # applied with the cluster

    return own_cluster, own_crd


@pytest.fixture(scope="session")
def real_node(cluster: ExistingCluster) -> RealNodeInfo:
    """The cluster's real node. Where one can run (root) and NIMIFY_REAL_NODE is not `off`, a missing node
    fails the test instead of skipping it."""
    if cluster.real_node is not None:
        return cluster.real_node
    mode = mode_from_environment()
    if mode is RealNodeMode.OFF or os.geteuid() != 0 or os.environ.get("NIMIFY_TEST_KUBECONFIG"):
        pytest.skip(f"no real node: {cluster.real_node_absent}")
    pytest.fail(
        f"NIMIFY_REAL_NODE={mode.value} and running as root, but the cluster has no real node: "
        f"{cluster.real_node_absent}"
    )


@pytest.fixture
def namespace(cluster: ExistingCluster) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting for its contents to go)."""
    with fresh_namespace(cluster, "t") as name:
        yield name


@pytest.fixture(scope="session")
def nimservice_crd(cluster: ExistingCluster) -> str:
    """The CRD from crds/, applied and Established."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"))
    wait_established(cluster, CRD_NAME)
    return CRD_NAME
