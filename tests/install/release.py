"""A Helm release of the chart in a test cluster, its ServiceAccount's credentials, and the operator run with
exactly those credentials (so that the chart's RBAC, not an admin identity, is what it works with)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from nimify.ports import free_ports
from nimify_devcluster.build_runner import operator_environment
from tests.install.helm import CHART, Helm
from tests.kube import ExistingCluster


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    helm: Helm

    @property
    def service_account(self) -> str:
        return self.name if "nimify" in self.name else f"{self.name}-nimify"

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    def install(self, *values: str) -> subprocess.CompletedProcess[str]:
        return self.helm(
            "install",
            self.name,
            str(CHART),
            f"--namespace={self.namespace}",
            "--create-namespace",
            "--wait",
            "--timeout=180s",
            *values,
        )

    def upgrade(self, *values: str) -> subprocess.CompletedProcess[str]:
        return self.helm(
            "upgrade",
            self.name,
            str(CHART),
            f"--namespace={self.namespace}",
            "--wait",
            "--timeout=180s",
            *values,
        )

    def uninstall(self) -> subprocess.CompletedProcess[str]:
        return self.helm("uninstall", self.name, f"--namespace={self.namespace}", "--wait", "--timeout=180s")


def can_i(cluster: ExistingCluster, user: str, verb: str, resource: str, *scope: str) -> bool:
    """`kubectl auth can-i VERB RESOURCE --as=USER SCOPE...`: the apiserver's own RBAC answer. A
    `resource/subresource` is asked as such (kubectl reads `resource/x` as the object named x otherwise)."""
    resource, _, subresource = resource.partition("/")
    sub = (f"--subresource={subresource}",) if subresource else ()
    result = cluster.kubectl("auth", "can-i", verb, resource, *sub, f"--as={user}", *scope, check=False)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), f"can-i {verb} {resource}: {result.stdout}{result.stderr}"
    return answer == "yes"


def token_kubeconfig(cluster: ExistingCluster, release: Release, path: Path) -> Path:
    """A kubeconfig that authenticates as the release's ServiceAccount (a bound token, 2 h)."""
    token = cluster.kubectl(
        "create", "token", release.service_account, f"--namespace={release.namespace}", "--duration=2h"
    ).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    (entry,) = admin["clusters"]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [entry],
                "users": [{"name": "operator", "user": {"token": token}}],
                "contexts": [{"name": "operator", "context": {"cluster": entry["name"], "user": "operator"}}],
                "current-context": "operator",
            }
        )
    )
    path.chmod(0o600)
    return path


@dataclass
class OperatorRun:
    """`nimify run ARGS` on this machine with the given kubeconfig, logging to `log`."""

    kubeconfig: Path
    log: Path
    args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.metrics_port = free_ports(1)[0]
        self.returncode: int | None = None

    def __enter__(self) -> OperatorRun:
        env = (
            os.environ
            | operator_environment(self.kubeconfig, self.metrics_port)
            | {"NIMIFY_RESYNC_SECONDS": "10"}
        )
        nimify = Path(sys.executable).parent / "nimify"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(nimify), "run", "--verbose", *self.args], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"operator exited: {self.log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).close()
                return self
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("operator metrics endpoint did not come up")

    def __exit__(self, *_: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # what the kubelet sends first when the pod is deleted or rolled
            self.returncode = self.process.wait(timeout=30)

    def permission_problems(self) -> list[str]:
        """Log lines where kopf or the API said the operator lacks a permission."""
        markers = ("Forbidden", "forbidden", "Not enough permissions")
        return [line for line in self.log.read_text().splitlines() if any(m in line for m in markers)]
