"""Small helpers for tests that talk to a cluster through kubectl."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nimify.devcluster.cluster import KubectlClient
from nimify.devcluster.real_node import RealNodeInfo


@dataclass(frozen=True)
class ExistingCluster(KubectlClient):
    """A cluster this test session did not start and must not stop."""

    #: Credentials for an operator under test (its own identity in the local cluster).
    operator_kubeconfig: Path | None = None
    #: The apiserver's audit log of write requests, when this session started the cluster.
    audit_log: Path | None = None
    #: The cluster's real node (containerd + kubelet on this machine), when it has one.
    real_node: RealNodeInfo | None = None
    #: Why it has none (`NIMIFY_REAL_NODE=off`, not root, missing packages, another cluster holds it).
    real_node_absent: str | None = None
    #: The local cluster's directory (state, logs), when this session started it: helpers that join the
    #: cluster as host processes (the metrics stack) load it from there.
    directory: Path | None = None


def apply(cluster: ExistingCluster, namespace: str, *objects: dict[str, Any]) -> None:
    cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objects))


def eventually(check: Callable[[], Any], timeout: float = 60, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if result := check():
                return result
        except Exception as error:
            last_error = error
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last error: {last_error!r})")


@contextlib.contextmanager
def fresh_namespace(cluster: ExistingCluster, prefix: str) -> Iterator[str]:
    """A new namespace ready for pods (its default ServiceAccount exists), deleted afterwards (no waiting)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    # `kubectl wait` gives up at once on an object that does not exist yet, so poll for it instead.
    eventually(
        lambda: cluster.kubectl("get", "serviceaccount/default", "-n", name, check=False).returncode == 0
    )
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
