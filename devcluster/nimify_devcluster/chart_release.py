"""Nimify installed with its Helm chart onto the local cluster, the way a platform team installs it on theirs.

On the real node the operator pod runs from the nimify image imported into the node's containerd. The values
here are all that differs from an install on a real cluster: the images are named as imported and never
pulled (no registry), the operator pod opts into the real node through its RuntimeClass (which also selects
the node and tolerates its taints), and kopf's in-cluster address `kubernetes.default.svc` is an /etc/hosts
entry, since the local cluster runs no DNS. NimServices on the real node still set `triton.image` and
`resources.gpus: 0` themselves (`nimify_devcluster.demo`).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nimify_devcluster.cluster import SERVICE_IP
from nimify_devcluster.images import source_root
from nimify_devcluster.real_node import RealNodeInfo

#: kopf's fixed in-cluster server (`kopf._core.intents.piggybacking.login_with_service_account`), where
#: client-go would read KUBERNETES_SERVICE_HOST.
KOPF_SERVER_NAME = "kubernetes.default.svc"


def chart_directory() -> Path:
    """charts/nimify of the checkout this package is installed from."""
    return source_root() / "charts" / "nimify"


def real_node_values(node: RealNodeInfo) -> dict[str, Any]:
    """Helm values that run the chart's operator on the real node with its imported images."""
    repository, _, tag = node.images["nimify"].rpartition(":")
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        # The conversion Jobs (the chart's own image by default) and Triton pods it creates: never pulled.
        "settings": {"imagePullPolicy": "Never"},
        "runtimeClassName": node.runtime_class,
        "hostAliases": [{"ip": SERVICE_IP, "hostnames": [KOPF_SERVER_NAME]}],
    }


class HelmError(RuntimeError):
    pass


@dataclass(frozen=True)
class HelmRelease:
    """`helm install|upgrade|uninstall` of charts/nimify as release `name` in `namespace`."""

    name: str
    namespace: str
    kubeconfig: Path
    bin_path: str

    def helm(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        binary = shutil.which("helm", path=self.bin_path)
        if binary is None:
            raise HelmError(f"helm not found on {self.bin_path!r}: run hack/ensure-binaries.sh")
        command = [binary, *args, f"--namespace={self.namespace}", f"--kubeconfig={self.kubeconfig}"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            output = result.stderr + result.stdout
            raise HelmError(f"helm {' '.join(args)} failed ({result.returncode}):\n{output}")
        return result

    def install(self, values: Path, *flags: str) -> subprocess.CompletedProcess[str]:
        """Installs and waits until the operator pod is Ready (its probes hit kopf's liveness endpoint)."""
        return self.helm(
            "install", self.name, str(chart_directory()), "--create-namespace", f"--values={values}",
            "--wait", "--timeout=180s", *flags,
        )  # fmt: skip

    def upgrade(self, values: Path, *flags: str) -> subprocess.CompletedProcess[str]:
        return self.helm(
            "upgrade", self.name, str(chart_directory()), f"--values={values}",
            "--wait", "--timeout=180s", *flags,
        )  # fmt: skip

    def uninstall(self) -> subprocess.CompletedProcess[str]:
        return self.helm("uninstall", self.name, "--wait", "--timeout=180s")


def write_values(path: Path, values: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path
