"""Small helpers for tests that talk to a cluster through kubectl."""

from __future__ import annotations

import contextlib
import inspect
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nimify_devcluster.cluster import KubectlClient
from nimify_devcluster.real_node import RealNodeInfo


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


def eventually(
    check: Callable[[], Any], timeout: float = 60, interval: float = 0.5, what: str | None = None
) -> Any:
    """`check()`'s first truthy result, asked every `interval` seconds for at most `timeout` seconds.

    On time-out the failure names what was waited for (`what`, else the check's source line) and what was
    seen last (its last falsy result and its last error), so a slow machine's failure reads as such.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    last_seen: Any = None
    asked = 0
    while True:
        asked += 1
        try:
            if result := check():
                return result
            last_seen, last_error = result, None
        except Exception as error:
            last_error = error
        if time.monotonic() + interval > deadline:
            break
        time.sleep(interval)
    seen = f"last error: {last_error!r}" if last_error is not None else f"last seen: {last_seen!r}"
    raise AssertionError(
        f"waited {timeout:g}s ({asked} checks) for {what or _describe(check)}; {seen}"[:4000]
    )


def wait_nimservice_ready(cluster: ExistingCluster, namespace: str, name: str, timeout: float) -> None:
    """`kubectl wait --for=condition=Ready` on a NimService; on time-out, an AssertionError that shows its
    conditions as they were then (what it was waiting on), not only kubectl's "timed out"."""
    waited = cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Ready", f"nimservice/{name}", f"--timeout={timeout:g}s",
        check=False, timeout=timeout + 10,
    )  # fmt: skip
    if waited.returncode == 0:
        return
    found = cluster.kubectl("get", "-n", namespace, f"nimservice/{name}", "-o", "json", check=False)
    conditions = (
        json.loads(found.stdout).get("status", {}).get("conditions", []) if found.returncode == 0 else []
    )
    seen = "; ".join(
        f"{c.get('type')}={c.get('status')} {c.get('reason', '')}: {c.get('message', '')}"[:300]
        for c in conditions
    )
    # The namespace's pods as they were (a conversion pod never run, a replica never scheduled).
    pods = cluster.kubectl(
        "get", "pods", "-n", namespace, "--no-headers", "-o",
        "custom-columns=NAME:.metadata.name,PHASE:.status.phase,NODE:.spec.nodeName", check=False,
    )  # fmt: skip
    raise AssertionError(
        f"NimService {namespace}/{name} not Ready within {timeout:g}s ({waited.stderr.strip()}); "
        f"its conditions: {seen or found.stderr.strip() or 'none yet'}; "
        f"pods: {' | '.join(' '.join(line.split()) for line in pods.stdout.splitlines()) or 'none'}"
    )


def _describe(check: Callable[[], Any]) -> str:
    """The check's own source line(s) (a lambda's), else its name."""
    try:
        source = " ".join(line.strip() for line in inspect.getsource(check).splitlines())
    except (OSError, TypeError):
        source = ""
    return source[:300] or getattr(check, "__qualname__", repr(check))


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
