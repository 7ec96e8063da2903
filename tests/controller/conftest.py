"""The operator under test, running as a real process against the cluster, and the conversion-pod runner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from nimify.model.digest import file_sha256
from nimify.model.samples import build_cnn, build_mlp, write_model
from nimify.ports import free_ports
from nimify_devcluster.build_runner import BuildPodKubelet, create_local_claim, operator_environment
from nimify_devcluster.cluster import get_json
from tests.kube import ExistingCluster, fresh_namespace, wait_nimservice_ready

E2E_NAMESPACES = "e2e-*"


@dataclass
class OperatorProcess:
    kubeconfig: Path
    log: Path
    metrics_port: int = field(default_factory=lambda: free_ports(1)[0])
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = (
            os.environ
            | operator_environment(self.kubeconfig, self.metrics_port)
            | {"NIMIFY_RESYNC_SECONDS": "10"}
        )
        nimify = Path(sys.executable).parent / "nimify"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(nimify), "run", "--namespace", E2E_NAMESPACES, "--verbose"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"operator exited: {self.log.read_text()[-3000:]}")
            try:
                self.metrics()
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("operator metrics endpoint did not come up")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)
        self.process = None

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def writes(self) -> float:
        """Write requests the operator counted (nimify_api_write_requests_total, all labels)."""
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in self.metrics().splitlines()
            if line.startswith("nimify_api_write_requests_total{")
        )


@pytest.fixture(scope="module")
def operator(
    cluster: ExistingCluster,
    nimservice_crd: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    kubeconfig = cluster.operator_kubeconfig or cluster.kubeconfig
    process = OperatorProcess(kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log")
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def build_runner(cluster: ExistingCluster) -> Iterator[BuildPodKubelet]:
    with BuildPodKubelet(cluster) as runner:
        yield runner


@pytest.fixture
def e2e_namespace(cluster: ExistingCluster) -> Iterator[str]:
    """A namespace the operator under test watches (it runs with --namespace e2e-*)."""
    with fresh_namespace(cluster, "e2e") as name:
        yield name


@dataclass(frozen=True)
class StoredModel:
    uri: str
    sha256: str


@pytest.fixture
def models(cluster: ExistingCluster, e2e_namespace: str) -> dict[str, StoredModel]:
    """Real ONNX models on a PersistentVolumeClaim `models` in the test namespace, by name."""
    root = create_local_claim(cluster, e2e_namespace, "models")
    stored = {}
    for name, model in (("mlp", build_mlp()), ("cnn", build_cnn())):
        path = write_model(model, root / f"{name}.onnx")
        stored[name] = StoredModel(f"pvc://models/{name}.onnx", file_sha256(path))
    return stored


@dataclass(frozen=True)
class E2E:
    """What an operator e2e test works with: the cluster, the operator, the build runner, a namespace the
    operator watches, and models stored in it."""

    cluster: ExistingCluster
    operator: OperatorProcess
    builds: BuildPodKubelet
    namespace: str
    models: dict[str, StoredModel]


@pytest.fixture
def e2e(
    cluster: ExistingCluster,
    operator: OperatorProcess,
    build_runner: BuildPodKubelet,
    e2e_namespace: str,
    models: dict[str, StoredModel],
) -> E2E:
    return E2E(cluster, operator, build_runner, e2e_namespace, models)


# --- NimServices and what the e2e tests read back ------------------------------------------------------

L4 = "NVIDIA-L4"


def nimservice(name: str, stored: StoredModel, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "nimify.dev/v1alpha1",
        "kind": "NimService",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": stored.uri, "sha256": stored.sha256},
            "engine": {"backend": "onnxruntime"},
            "resources": {"gpus": 1, "gpuProduct": L4},
        },
    }
    for key, value in spec.items():
        body["spec"][key] = value
    return body


def apply(cluster: ExistingCluster, namespace: str, *objects: dict[str, Any]) -> None:
    cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=e2e",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump_all(objects),
    )


def condition(cluster: ExistingCluster, namespace: str, name: str, kind: str) -> dict[str, Any] | None:
    status = get_json(cluster, f"nimservice/{name}", "-n", namespace).get("status") or {}
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), None)


def wait_ready(cluster: ExistingCluster, namespace: str, name: str, timeout: int = 120) -> None:
    wait_nimservice_ready(cluster, namespace, name, timeout)


def jobs(cluster: ExistingCluster, namespace: str) -> list[dict[str, Any]]:
    return list(get_json(cluster, "jobs", "-n", namespace)["items"])


def template_annotations(cluster: ExistingCluster, ns: str, name: str) -> dict[str, str]:
    """The annotations of a Deployment's pod template: which engine and config it serves."""
    return dict(
        get_json(cluster, f"deployment/{name}", "-n", ns)["spec"]["template"]["metadata"]["annotations"]
    )
