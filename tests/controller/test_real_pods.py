"""NimServices on the real node: nothing simulated between `kubectl apply` and an inference answer.

The conversion Job's pod runs `nimify convert` in the nimify image, the Triton pod runs the triton-cpu image
with the production config.pbtxt, readiness comes from Triton's own probes, and inferences travel through the
Service's ClusterIP (kube-proxy) from this machine. The operator runs on this machine here; as a pod of the
nimify image, installed with the Helm chart, in tests/install/test_chart_real_node.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from nimify.engine.reference import OnnxRuntimeModel
from nimify.model.digest import file_sha256
from nimify.model.samples import build_mlp, write_model
from nimify.ports import free_ports
from nimify.render.identity import COMPONENT_SERVER
from nimify_devcluster.build_runner import create_local_claim
from nimify_devcluster.cluster import get_json
from nimify_devcluster.real_node import RealNodeInfo, operator_environment
from tests.kube import ExistingCluster, eventually, fresh_namespace, wait_nimservice_ready

pytestmark = [pytest.mark.cluster, pytest.mark.real_node]

#: Namespaces the operator process under test watches (the kwok e2e tests' operator watches e2e-*).
WATCHED = "real-*"
INPUT = np.linspace(-1.0, 1.0, 16, dtype=np.float32).reshape(1, 16)


@dataclass
class HostOperator:
    """`nimify run` on this machine, configured for the real node's local images."""

    kubeconfig: Path
    node: RealNodeInfo
    log: Path
    metrics_port: int = field(default_factory=lambda: free_ports(1)[0])
    #: The namespaces it watches (a glob): each module's operator its own.
    namespaces: str = WATCHED
    #: More NIMIFY_* settings.
    settings: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = (
            os.environ
            | operator_environment(self.node)
            | {
                "KUBECONFIG": str(self.kubeconfig),
                "NIMIFY_METRICS_PORT": str(self.metrics_port),
                "NIMIFY_RESYNC_SECONDS": "10",
            }
            | self.settings
        )
        nimify = Path(sys.executable).parent / "nimify"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(nimify), "run", "--namespace", self.namespaces],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)


@contextlib.contextmanager
def running_operator(
    cluster: ExistingCluster, node: RealNodeInfo, directory: Path, namespaces: str = WATCHED
) -> Iterator[HostOperator]:
    """`nimify run` on this machine for the namespaces `namespaces` matches, logging into `directory`."""
    kubeconfig = cluster.operator_kubeconfig or cluster.kubeconfig
    operator = HostOperator(kubeconfig, node, directory / "operator.log", namespaces=namespaces)
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()


@pytest.fixture(scope="module")
def host_operator(
    cluster: ExistingCluster,
    nimservice_crd: str,
    real_node: RealNodeInfo,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[HostOperator]:
    with running_operator(cluster, real_node, tmp_path_factory.mktemp("operator")) as operator:
        yield operator


@dataclass(frozen=True)
class Model:
    uri: str
    sha256: str
    path: Path


def store_models(cluster: ExistingCluster, namespace: str) -> dict[str, Model]:
    """Two versions of a classifier (same signature, other weights) on a claim `models`."""
    root = create_local_claim(cluster, namespace, "models")
    stored = {}
    for name, model in (("v1", build_mlp()), ("v2", build_mlp(hidden=24))):
        path = write_model(model, root / f"mlp-{name}.onnx")
        stored[name] = Model(f"pvc://models/mlp-{name}.onnx", file_sha256(path), path)
    return stored


def real_nimservice(name: str, model: Model, node: RealNodeInfo, **spec: Any) -> dict[str, Any]:
    """A NimService that runs on the real node: onnxruntime on CPU (gpus 0) in the triton-cpu image."""
    body: dict[str, Any] = {
        "apiVersion": "nimify.dev/v1alpha1",
        "kind": "NimService",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": model.uri, "sha256": model.sha256},
            "engine": {"backend": "onnxruntime"},
            "triton": {
                "image": node.images["triton-cpu"],
                "dynamicBatching": {"maxQueueDelayMicroseconds": 100},
            },
            "resources": {"gpus": 0, "cpu": "100m", "memory": "1Gi"},
            "placement": {"runtimeClassName": node.runtime_class},
        },
    }
    body["spec"].update(spec)
    return body


def apply(cluster: ExistingCluster, namespace: str, *objects: dict[str, Any]) -> None:
    cluster.kubectl(
        "apply", "--server-side", "--field-manager=real-e2e", "-n", namespace, "-f", "-",
        input=yaml.safe_dump_all(objects),
    )  # fmt: skip


def wait_ready(cluster: ExistingCluster, namespace: str, name: str, timeout: int = 180) -> dict[str, Any]:
    wait_nimservice_ready(cluster, namespace, name, timeout)
    return dict(get_json(cluster, f"nimservice/{name}", "-n", namespace))


def condition(nim: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in nim["status"]["conditions"] if c["type"] == kind)


def serving_pods(cluster: ExistingCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    selector = f"app.kubernetes.io/instance={name},app.kubernetes.io/component={COMPONENT_SERVER}"
    return list(get_json(cluster, "pods", "-n", namespace, "-l", selector)["items"])


_TLS = ssl.create_default_context()


def infer(url: str, model: str, data: np.ndarray, host: str | None = None) -> np.ndarray:
    body = {
        "inputs": [
            {"name": "input", "shape": list(data.shape), "datatype": "FP32", "data": data.ravel().tolist()}
        ]
    }
    # A new connection per request, as separate clients would open: none is pinned to a terminating pod.
    # (Plain HTTP: the one TLS context only spares each client loading the CA bundle, 20 ms of CPU.)
    headers = {"Connection": "close"} | ({"Host": host} if host else {})
    with httpx.Client(timeout=10, headers=headers, verify=_TLS) as client:
        response = client.post(f"{url}/v2/models/{model}/infer", json=body)
    response.raise_for_status()
    (output,) = response.json()["outputs"]
    return np.array(output["data"], dtype=np.float32).reshape(output["shape"])


def first_answer(url: str, model: str, timeout: float = 30) -> np.ndarray:
    """The first answer through a Service whose replica just became Ready: kube-proxy programs the new
    endpoint asynchronously (up to its sync period later), and until then the ClusterIP refuses."""
    (answer,) = eventually(lambda: [infer(url, model, INPUT)], timeout=timeout, interval=0.2)
    return np.asarray(answer)


def service_url(cluster: ExistingCluster, namespace: str, name: str) -> str:
    service = get_json(cluster, f"service/{name}", "-n", namespace)
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "http")
    return f"http://{service['spec']['clusterIP']}:{port}"


@pytest.fixture
def real(cluster: ExistingCluster, host_operator: HostOperator) -> Iterator[tuple[str, dict[str, Model]]]:
    with fresh_namespace(cluster, "real") as namespace:
        yield namespace, store_models(cluster, namespace)


def test_apply_converts_serves_and_answers_through_the_service(
    cluster: ExistingCluster, real_node: RealNodeInfo, real: tuple[str, dict[str, Model]]
) -> None:
    namespace, models = real
    apply(cluster, namespace, real_nimservice("mlp", models["v1"], real_node))
    nim = wait_ready(cluster, namespace, "mlp")
    assert condition(nim, "Ready")["reason"] == "Serving"
    assert nim["status"]["parity"]["passed"] is True

    # The conversion really ran in the nimify image on the real node, and ended with its result.
    (job,) = get_json(cluster, "jobs", "-n", namespace)["items"]
    (build,) = get_json(
        cluster, "pods", "-n", namespace, "-l", f"batch.kubernetes.io/job-name={job['metadata']['name']}"
    )["items"]
    assert build["spec"]["nodeName"] == real_node.name
    (convert,) = build["status"]["containerStatuses"]
    assert convert["image"] == real_node.images["nimify"] and convert["imageID"]
    assert convert["state"]["terminated"]["exitCode"] == 0
    assert json.loads(convert["state"]["terminated"]["message"])  # the result, written by `nimify convert`

    # Triton in the triton-cpu image, Ready through its own probes, serving the production config.
    (pod,) = serving_pods(cluster, namespace, "mlp")
    (triton,) = pod["status"]["containerStatuses"]
    assert pod["spec"]["nodeName"] == real_node.name
    assert (
        triton["image"] == real_node.images["triton-cpu"] and triton["ready"] and triton["restartCount"] == 0
    )
    config = get_json(cluster, "configmap", "-n", namespace, "-l", "app.kubernetes.io/instance=mlp")["items"][
        0
    ]
    assert 'platform: "onnxruntime_onnx"' in config["data"]["config.pbtxt"]

    # An inference through the Service's ClusterIP equals ONNX Runtime's on the same input.
    answer = first_answer(service_url(cluster, namespace, "mlp"), "mlp")
    expected = OnnxRuntimeModel(models["v1"].path).run({"input": INPUT})["logits"]
    np.testing.assert_allclose(answer, expected, rtol=1e-5, atol=1e-6)
    print(
        f"\ncluster answer:      {answer.ravel().tolist()}\nONNX Runtime answer: {expected.ravel().tolist()}"
    )

    # The pod's metrics port counts it.
    metrics_port = next(
        p["containerPort"] for p in pod["spec"]["containers"][0]["ports"] if p["name"] == "metrics"
    )
    metrics = httpx.get(f"http://{pod['status']['podIP']}:{metrics_port}/metrics", timeout=10).text
    success = [
        line for line in metrics.splitlines() if line.startswith('nv_inference_request_success{model="mlp"')
    ]
    assert success and float(success[0].rsplit(" ", 1)[1]) >= 1


@dataclass
class RequestLoop:
    """A few requests per second against the Service, each on a new connection, until stopped; failures and
    the Service's endpoint changes go into one timeline (seconds since start), to tell why one failed."""

    url: str
    model: str
    interval: float = 0.2
    host: str | None = None  # the Host header (a Gateway route's host)
    answers: list[np.ndarray] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)

    def note(self, what: str) -> None:
        self.timeline.append(f"{time.monotonic() - self.started:6.2f}s {what}")

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.answers.append(infer(self.url, self.model, INPUT, host=self.host))
            except Exception as error:
                self.failures.append(repr(error))
                body = error.response.text[:200] if isinstance(error, httpx.HTTPStatusError) else ""
                self.note(f"request failed: {error!r} {body}")

    def watch_endpoints(self, cluster: ExistingCluster, namespace: str) -> subprocess.Popen[str]:
        kubectl = shutil.which("kubectl", path=cluster.bin_path) or "kubectl"
        watch = subprocess.Popen(
            [kubectl, f"--kubeconfig={cluster.kubeconfig}", "get", "endpointslices", "-n", namespace,
             "--watch", "-o", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip

        def read() -> None:
            assert watch.stdout is not None
            decoder, buffer = json.JSONDecoder(), ""
            for line in watch.stdout:  # a stream of pretty-printed objects
                buffer += line
                try:
                    slice_, end = decoder.raw_decode(buffer.lstrip())
                except ValueError:
                    continue
                buffer = buffer.lstrip()[end:]
                endpoints = [
                    f"{e['addresses'][0]} ready={e['conditions'].get('ready')} "
                    f"terminating={e['conditions'].get('terminating', False)}"
                    for e in slice_.get("endpoints") or []
                ]
                self.note("endpoints: " + ("; ".join(endpoints) or "none"))

        threading.Thread(target=read, daemon=True).start()
        return watch


def test_a_model_update_rolls_the_pods_without_a_failed_request(
    cluster: ExistingCluster,
    real_node: RealNodeInfo,
    real: tuple[str, dict[str, Model]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    namespace, models = real
    apply(cluster, namespace, real_nimservice("mlp", models["v1"], real_node))
    wait_ready(cluster, namespace, "mlp")
    (old_pod,) = serving_pods(cluster, namespace, "mlp")
    before = OnnxRuntimeModel(models["v1"].path).run({"input": INPUT})["logits"]
    after = OnnxRuntimeModel(models["v2"].path).run({"input": INPUT})["logits"]

    url = service_url(cluster, namespace, "mlp")
    first_answer(url, "mlp")  # the Service routes to the first replica before the loop starts
    loop = RequestLoop(url, "mlp")
    watch = loop.watch_endpoints(cluster, namespace)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        loop.note("applying the new model")
        apply(cluster, namespace, real_nimservice("mlp", models["v2"], real_node))

        def rolled() -> bool:
            pods = serving_pods(cluster, namespace, "mlp")
            nim = get_json(cluster, "nimservice/mlp", "-n", namespace)
            ready = condition(nim, "Ready")["status"] == "True"
            return (
                ready
                and [p["metadata"]["uid"] for p in pods] != [old_pod["metadata"]["uid"]]
                and len(pods) == 1
            )

        eventually(rolled, timeout=60 - (time.monotonic() - loop.started), interval=1)
        loop.note("rolled out: the old pod is gone")
        time.sleep(2)  # a few requests to the new pod alone
    finally:
        loop.stop.set()
        thread.join(timeout=15)
        watch.terminate()
        watch.wait(timeout=10)
    seconds = time.monotonic() - loop.started
    with capsys.disabled():  # the figure belongs in the run's log, passed or not
        print(
            f"\n[real node] {len(loop.answers)} requests in {seconds:.0f}s during the rollout, "
            f"{len(loop.failures)} failed"
        )
    print("\n".join(loop.timeline))
    assert not loop.failures, "\n".join(loop.timeline)
    assert len(loop.answers) >= 30
    # The loop saw the old model first and the new one at the end: the rollout happened under it.
    np.testing.assert_allclose(loop.answers[0], before, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loop.answers[-1], after, rtol=1e-5, atol=1e-6)


def tritonserver_pid(pod: dict[str, Any]) -> int:
    """The host pid of the pod's tritonserver (its cgroup carries the container id)."""
    container_id = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().strip() == "tritonserver" and container_id in (
                    proc / "cgroup"
                ).read_text():
                    return int(proc.name)
            except OSError:
                continue
    raise AssertionError(f"no tritonserver process in container {container_id}")


def test_a_killed_tritonserver_shows_in_status_and_recovers(
    cluster: ExistingCluster, real_node: RealNodeInfo, real: tuple[str, dict[str, Model]]
) -> None:
    namespace, models = real
    apply(cluster, namespace, real_nimservice("mlp", models["v1"], real_node))
    wait_ready(cluster, namespace, "mlp")
    (pod,) = serving_pods(cluster, namespace, "mlp")
    os.kill(tritonserver_pid(pod), signal.SIGKILL)

    def not_ready() -> dict[str, Any] | None:
        nim = get_json(cluster, "nimservice/mlp", "-n", namespace)
        ready = condition(nim, "Ready")
        return ready if ready["status"] == "False" else None

    down = eventually(not_ready, timeout=60, interval=0.2)
    assert down["reason"] == "Deploying" and "0/1" in down["message"]
    assert condition(get_json(cluster, "nimservice/mlp", "-n", namespace), "Available")["status"] == "False"
    wait_ready(cluster, namespace, "mlp", timeout=120)
    (restarted,) = serving_pods(cluster, namespace, "mlp")
    (triton,) = restarted["status"]["containerStatuses"]
    assert restarted["metadata"]["uid"] == pod["metadata"]["uid"]  # the kubelet restarted the container
    assert triton["restartCount"] == 1
    assert triton["lastState"]["terminated"]["exitCode"] == 137  # SIGKILL
    eventually(
        lambda: (
            condition(get_json(cluster, "nimservice/mlp", "-n", namespace), "Available")["status"] == "True"
        )
    )
    answer = first_answer(service_url(cluster, namespace, "mlp"), "mlp")
    np.testing.assert_allclose(
        answer, OnnxRuntimeModel(models["v1"].path).run({"input": INPUT})["logits"], rtol=1e-5, atol=1e-6
    )


def test_an_oom_killed_replica_shows_in_status_and_recovers_with_more_memory(
    cluster: ExistingCluster, real_node: RealNodeInfo, real: tuple[str, dict[str, Model]]
) -> None:
    namespace, models = real
    # Below what tritonserver alone needs at start-up (about 33 MiB of anonymous memory).
    starved = {"gpus": 0, "cpu": "100m", "memory": "16Mi"}
    apply(cluster, namespace, real_nimservice("mlp", models["v1"], real_node, resources=starved))

    def oom_killed() -> dict[str, Any] | None:
        for pod in serving_pods(cluster, namespace, "mlp"):
            for status in pod["status"].get("containerStatuses") or []:
                terminated = status.get("lastState", {}).get("terminated") or status.get("state", {}).get(
                    "terminated"
                )
                if terminated and terminated.get("reason") == "OOMKilled":
                    return pod
        return None

    pod = eventually(oom_killed, timeout=120, interval=1)
    nim = get_json(cluster, "nimservice/mlp", "-n", namespace)
    assert condition(nim, "Ready")["status"] == "False"
    assert condition(nim, "Available")["status"] == "False"
    assert pod["spec"]["containers"][0]["resources"]["limits"]["memory"] == "16Mi"

    apply(cluster, namespace, real_nimservice("mlp", models["v1"], real_node))
    wait_ready(cluster, namespace, "mlp", timeout=180)
    answer = first_answer(service_url(cluster, namespace, "mlp"), "mlp")
    np.testing.assert_allclose(
        answer, OnnxRuntimeModel(models["v1"].path).run({"input": INPUT})["logits"], rtol=1e-5, atol=1e-6
    )


def test_a_conversion_killed_for_its_memory_is_reported_and_runs_again_with_more(
    cluster: ExistingCluster, real_node: RealNodeInfo, real: tuple[str, dict[str, Model]]
) -> None:
    namespace, models = real
    # Far below what `nimify convert` needs to import ONNX Runtime: the kernel kills it, and the Job fails.
    starved = {"memory": "20Mi", "memoryLimit": "20Mi"}
    engine = {"backend": "onnxruntime", "buildResources": starved}
    apply(cluster, namespace, real_nimservice("mlp", models["v1"], real_node, engine=engine))

    def engine_condition() -> dict[str, Any] | None:
        nim = get_json(cluster, "nimservice/mlp", "-n", namespace)
        found = [c for c in nim.get("status", {}).get("conditions", []) if c["type"] == "EngineReady"]
        return found[0] if found and found[0]["reason"] == "OOMKilled" else None

    killed = eventually(engine_condition, timeout=150, interval=1)
    assert killed["status"] == "False" and "spec.engine.buildResources.memoryLimit" in killed["message"]
    selector = "--field-selector=involvedObject.name=mlp,type=Warning"
    events = get_json(cluster, "events", "-n", namespace, selector)["items"]
    assert "OOMKilled" in {event["reason"] for event in events}
    (job,) = get_json(cluster, "jobs", "-n", namespace)["items"]
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "20Mi"

    engine["buildResources"] = {"memory": "512Mi", "memoryLimit": "1Gi"}
    apply(cluster, namespace, real_nimservice("mlp", models["v1"], real_node, engine=engine))
    nim = wait_ready(cluster, namespace, "mlp", timeout=180)
    assert condition(nim, "EngineReady")["reason"] == "EngineBuilt"
    names = {item["metadata"]["name"] for item in get_json(cluster, "jobs", "-n", namespace)["items"]}
    assert names - {job["metadata"]["name"]}, "no new Job ran with more memory"
    answer = first_answer(service_url(cluster, namespace, "mlp"), "mlp")
    np.testing.assert_allclose(
        answer, OnnxRuntimeModel(models["v1"].path).run({"input": INPUT})["logits"], rtol=1e-5, atol=1e-6
    )
