"""Autoscaling that really scales: real Triton pods on the real node, a real metrics pipeline, a bounded load.

Two paths, one test each, on the same loop: a NimService with minReplicas 1 / maxReplicas 3 Ready on one
replica; its autoscaler reports the metric (ScalingActive True); a bounded load through the Service's
ClusterIP scales it to at least 2 replicas, each of which answers an inference sent to its own pod IP; after
the load stops it scales back to 1, and the NimService's status.autoscaler follows. Meanwhile the operator
writes nothing to the Deployment, the HPA or the ScaledObject (the apiserver's audit log; status patches and
events it may write), while the autoscaler's writes to deployments/scale show up there.

- Queue time: KEDA's ScaledObject with the Prometheus trigger; Prometheus scrapes the Triton pods' metrics
  port on the real node; KEDA's metrics adapter serves the value to KEDA's HPA.
- CPU utilization: the HPA with a Resource metric from metrics.k8s.io, which metrics-server takes from the
  real kubelet.

Why Triton's queue fills on CPU: the clients send full batches (batch size = the model's max_batch_size 8),
so the dynamic batcher cannot merge requests, and one model instance (the default instancesPerGpu) runs one
request at a time: every request that arrives while the instance is busy waits in Triton's queue, which is
what nv_inference_queue_duration_us measures. How long it waits depends on how fast the machine is (0.9 ms
per request on one machine, 3 ms on another), so the queue-time target is not a constant: the test measures
the queue at rest and under a first burst of the same load, read from the serving pod's own Triton counters,
and sets the target to a quarter of the burst's figure (the load then crosses it fourfold on any machine,
while the idle queue stays at 0). More replicas split the same concurrency (on one 2-core machine they also
share the same CPUs). The CPU path needs no calibration: the closed-loop load keeps at least one core busy
whatever the machine's speed, and the target is half of a 100m request (5 % of one core), far above an idle
Triton's use and far below a loaded one's.

`NIMIFY_LOAD_SCALE` (default 1) multiplies the load's concurrency, to check that the tests hold with more
load (hack/test.sh passes it through; docs/development.md lists the timing-sensitive tests).

The load reconnects every few seconds, as a fleet of clients would; kube-proxy balances connections, so new
connections reach the new replicas. Short HPA behaviour windows (spec.autoscaling.behavior, which KEDA
passes to its HPA) keep the test within minutes. The figures (scale-up and scale-down times, the metric
values) are printed (`pytest -s`); the test asserts no timings.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nimify.engine.reference import OnnxRuntimeModel
from nimify.model.digest import file_sha256
from nimify.model.samples import build_mlp, write_model
from nimify.triton.load import LoadResult, percentile, run_load
from nimify_devcluster.build_runner import create_local_claim
from nimify_devcluster.cluster import LocalCluster, get_json
from nimify_devcluster.metrics_stack import BINARIES, MetricsStack, metrics_stack_logs
from nimify_devcluster.real_node import RealNodeInfo
from tests.controller.test_real_pods import (
    INPUT,
    HostOperator,
    Model,
    apply,
    first_answer,
    infer,
    real_nimservice,
    service_url,
    serving_pods,
    wait_ready,
)
from tests.kube import ExistingCluster, eventually, fresh_namespace
from tests.metrics_stack import metrics_stack_on

pytestmark = [pytest.mark.cluster, pytest.mark.real_node]

WATCHED = "scale-*"
NAME = "mlp"
#: Range of KEDA's queue-time query: four of the stack's 5 s scrapes.
QUERY_WINDOW = "20s"
#: Scale up at once (2 pods per HPA period at most), down once 10 s of recommendations agree.
BEHAVIOR = {
    "scaleUp": {
        "stabilizationWindowSeconds": 0,
        "policies": [{"type": "Pods", "value": 2, "periodSeconds": 15}],
    },
    "scaleDown": {
        "stabilizationWindowSeconds": 10,
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
    },
}
BOUNDS = {"minReplicas": 1, "maxReplicas": 3, "behavior": BEHAVIOR}
#: The load: at most this long, in chunks of new connections.
LOAD_SECONDS = 120.0
CHUNK_SECONDS = 5.0
CONCURRENCY = max(1, round(16 * float(os.environ.get("NIMIFY_LOAD_SCALE", "1"))))
BATCH_SIZE = 8
#: The queue-time target until the calibration sets it: out of reach (the spec's maximum, 60 s), so nothing
#: scales while the test measures.
UNREACHABLE_QUEUE_TIME = 60_000_000
#: The load's queue time over the calibrated target; the calibration burst's length.
QUEUE_MARGIN = 4
CALIBRATION_SECONDS = 10.0
#: Half the CPU request.
CPU_TARGET = 50
#: The Triton pods' CPU request (the HPA's 100 %); no limit, as the operator renders it.
CPU_REQUEST = "100m"
READ_VERBS = ("get", "list", "watch")


@pytest.fixture(scope="module")
def stack(
    cluster: ExistingCluster, real_node: RealNodeInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MetricsStack]:
    started_at = time.monotonic()
    with metrics_stack_on(cluster) as started:
        print(f"\n== metrics stack up on the session's cluster in {time.monotonic() - started_at:.1f}s")
        yield started
        costs, exited = process_costs(cluster, started)
        print("\n== metrics stack, at the end: " + "; ".join(costs))
        # The logs outlive the session's cluster directory, for a look afterwards.
        shutil.copytree(
            started.directory / "logs", tmp_path_factory.mktemp("metrics-stack-logs"), dirs_exist_ok=True
        )
        assert not exited, f"{exited} exited while the tests ran:\n{metrics_stack_logs(started, 40)}"
    # The session's cluster lives on: no aggregated API of the stack may remain (it would fail discovery).
    left = cluster.kubectl("get", "apiservices", "-o", "name").stdout
    assert "metrics.k8s.io" not in left, left


def process_costs(cluster: ExistingCluster, stack: MetricsStack) -> tuple[list[str], list[str]]:
    """Resident memory and CPU time so far of each of the stack's processes (what it costs a CI run), and
    the processes that are no longer there."""
    assert cluster.directory is not None
    pids = LocalCluster.load(cluster.directory).pids
    ticks = os.sysconf("SC_CLK_TCK")
    costs, exited = [], []
    for component in stack.components:
        for binary in BINARIES[component]:
            proc = Path(f"/proc/{pids[binary]}")
            if not proc.exists():
                exited.append(binary)
                continue
            rss = next(
                line for line in (proc / "status").read_text().splitlines() if line.startswith("VmRSS")
            )
            # utime and stime are fields 14 and 15 of stat; the command name (field 2) has no spaces here.
            fields = (proc / "stat").read_text().split()
            cpu = (int(fields[13]) + int(fields[14])) / ticks
            costs.append(f"{binary} {int(rss.split()[1]) // 1024} MiB, {cpu:.1f}s CPU")
    return costs, exited


@pytest.fixture(scope="module")
def scaling_operator(
    cluster: ExistingCluster,
    nimservice_crd: str,
    real_node: RealNodeInfo,
    stack: MetricsStack,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[HostOperator]:
    assert stack.prometheus_url is not None
    operator = HostOperator(
        cluster.operator_kubeconfig or cluster.kubeconfig,
        real_node,
        tmp_path_factory.mktemp("scaling-operator") / "operator.log",
        namespaces=WATCHED,
        settings={
            "NIMIFY_KEDA_PROMETHEUS_URL": stack.prometheus_url,
            "NIMIFY_KEDA_QUERY_WINDOW": QUERY_WINDOW,
        },
    )
    operator.start()
    yield operator
    operator.stop()


@pytest.fixture
def scaling(cluster: ExistingCluster, scaling_operator: HostOperator) -> Iterator[tuple[str, Model]]:
    with fresh_namespace(cluster, "scale") as namespace:
        path = write_model(build_mlp(), create_local_claim(cluster, namespace, "models") / "mlp.onnx")
        yield namespace, Model("pvc://models/mlp.onnx", file_sha256(path), path)
        # KEDA's finalizer on the ScaledObject needs KEDA: let it go while KEDA runs.
        cluster.kubectl("delete", "nimservice", NAME, "-n", namespace, "--wait", "--timeout=60s", check=False)


# --- the load -----------------------------------------------------------------------------------------------


@dataclass
class ChunkedLoad:
    """`nimify load`'s generator against the Service, in chunks of CHUNK_SECONDS with new connections each,
    for at most LOAD_SECONDS or until stopped."""

    url: str  # host:port
    model: str
    results: list[LoadResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    started: float = 0.0
    ended: float = 0.0
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        deadline = self.started + LOAD_SECONDS
        while not self.stop.is_set() and (left := deadline - time.monotonic()) > 0.5:
            try:
                self.results.append(
                    asyncio.run(
                        run_load(
                            self.url,
                            self.model,
                            duration=min(CHUNK_SECONDS, left),
                            concurrency=CONCURRENCY,
                            batch_size=BATCH_SIZE,
                        )
                    )
                )
            except Exception as error:  # the Service unreachable: recorded, and the test reports it
                self.errors.append(repr(error))
                self.stop.wait(1)
        self.ended = time.monotonic()

    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def finish(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=CHUNK_SECONDS + 40)

    def summary(self) -> dict[str, Any]:
        requests = sum(r.requests for r in self.results)
        seconds = sum(r.duration_seconds for r in self.results)
        latencies = [latency for r in self.results for latency in r.latencies_seconds]
        return {
            "seconds": round(self.ended - self.started, 1),
            "requests": requests,
            "failed": sum(r.failed for r in self.results),
            "errors": self.errors[:3] + [e for r in self.results for e in r.errors][:3],
            "requestsPerSecond": round(requests / seconds, 1) if seconds else 0.0,
            "latencyMs": {f"p{q}": round(percentile(latencies, q) * 1000, 2) for q in (50, 99)}
            if latencies
            else {},
        }


# --- what the cluster says ------------------------------------------------------------------------------


def nimservice_condition(cluster: ExistingCluster, namespace: str, kind: str) -> dict[str, Any] | None:
    conditions = get_json(cluster, f"nimservice/{NAME}", "-n", namespace).get("status", {}).get("conditions")
    return next((c for c in conditions or [] if c["type"] == kind), None)


def deployment(cluster: ExistingCluster, namespace: str) -> dict[str, Any]:
    return dict(get_json(cluster, f"deployment/{NAME}", "-n", namespace))


def prometheus_value(stack: MetricsStack, query: str) -> float | None:
    assert stack.prometheus_url is not None
    url = f"{stack.prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    with urllib.request.urlopen(url, timeout=10) as response:
        result = json.load(response)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def hpa_metric(hpa: dict[str, Any]) -> float | None:
    """The HPA's view of its first metric (status.currentMetrics): a utilization in percent, or a value."""
    current = (hpa.get("status", {}).get("currentMetrics") or [{}])[0]
    for kind in ("external", "resource", "pods"):
        if kind in current:
            value = current[kind]["current"]
            if "averageUtilization" in value:
                return float(value["averageUtilization"])
            return _quantity(value.get("averageValue") or value["value"])
    return None


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the load started
    replicas: int  # the Deployment's spec.replicas (the autoscaler's)
    ready: int
    nimservice: str  # status.autoscaler current/desired, as the NimService reports them
    hpa: float | None  # the HPA's own view of its metric
    metric: float | None  # the metric at its source (Prometheus, metrics-server)


@dataclass
class Figures:
    """What one scaling run saw, seconds since the load started."""

    path: str
    samples: list[Sample] = field(default_factory=list)
    scaled_to_two: float | None = None
    two_ready: float | None = None
    load_stopped: float | None = None
    scaled_to_one: float | None = None
    load: dict[str, Any] = field(default_factory=dict)
    #: Pod -> seconds since the load started when it answered on its own address.
    served: dict[str, float] = field(default_factory=dict)
    scale_writes: list[str] = field(default_factory=list)
    #: The operator's writes meanwhile (none to what scales), by verb and resource.
    operator_writes: dict[str, int] = field(default_factory=dict)

    def report(self) -> str:
        lines = [
            f"== autoscaling on real pods: {self.path}",
            f"  scale-up: replicas >= 2 at {self.scaled_to_two}s, 2 Ready at {self.two_ready}s after the "
            f"load started; load stopped at {self.load_stopped}s; back to 1 replica "
            f"{self.scale_down_seconds}s after the load stopped",
            f"  load: {self.load}",
            f"  served on their pod IPs: {self.served}",
            f"  deployments/scale writes: {self.scale_writes}",
            f"  the operator's writes meanwhile: {self.operator_writes}",
            "   t(s)  replicas  ready  nimservice(cur/des)  hpa-metric  source-metric",
        ]
        for s in self.samples:
            hpa = "-" if s.hpa is None else f"{s.hpa:.1f}"
            metric = "-" if s.metric is None else f"{s.metric:.1f}"
            lines.append(
                f"  {s.at:5.1f}  {s.replicas:8d}  {s.ready:5d}  {s.nimservice:>19}  {hpa:>10}  {metric:>13}"
            )
        return "\n".join(lines)

    @property
    def scale_down_seconds(self) -> float | None:
        if self.scaled_to_one is None or self.load_stopped is None:
            return None
        return round(self.scaled_to_one - self.load_stopped, 1)

    def peak(self, of: str) -> float:
        return max((getattr(s, of) or 0.0) for s in self.samples)


#: What scales the NimService: the operator must not write these while the autoscaler works.
SCALING_RESOURCES = ("deployments", "horizontalpodautoscalers", "scaledobjects")


def audited_writes(
    cluster: ExistingCluster, namespace: str, since: float
) -> tuple[list[dict[str, Any]], Counter[str], list[str]]:
    """From the audit log since `since` (epoch seconds), in `namespace`: the operator's writes to what
    scales (SCALING_RESOURCES, any subresource), a count of its other writes (status, events), and who
    wrote deployments/scale."""
    assert cluster.audit_log is not None
    fighting, other, scalers = [], Counter[str](), []
    with cluster.audit_log.open() as log:
        for line in log:
            if namespace not in line:
                continue
            event = json.loads(line)
            ref = event.get("objectRef", {})
            if ref.get("namespace") != namespace or event["verb"] in READ_VERBS:
                continue
            if event.get("stage") != "ResponseComplete":
                continue
            stamp = datetime.datetime.fromisoformat(event["stageTimestamp"].replace("Z", "+00:00"))
            if stamp.timestamp() < since:
                continue
            user, resource = event.get("user", {}).get("username", ""), ref.get("resource", "")
            what = "/".join(filter(None, (resource, ref.get("subresource"))))
            if user == "nimify-operator":
                if resource in SCALING_RESOURCES:
                    fighting.append(
                        {"verb": event["verb"], "uri": event["requestURI"], "at": stamp.isoformat()}
                    )
                else:
                    other[f"{event['verb']} {what}"] += 1
            if what == "deployments/scale":
                scalers.append(f"{event['stageTimestamp'][11:19]} {user} {event['verb']}")
    return fighting, other, scalers


# --- calibration -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueCalibration:
    """Triton's queue time per request (µs) at rest and under a first burst of the test's load, from the
    serving pod's own counters, and the target set from them."""

    rest: float
    burst: float
    burst_requests: int
    target: int

    def __str__(self) -> str:
        return (
            f"queue time per request at rest {self.rest:.0f} µs, under a {CALIBRATION_SECONDS:.0f} s burst "
            f"({self.burst_requests} requests, concurrency {CONCURRENCY}, batch {BATCH_SIZE}) "
            f"{self.burst:.0f} µs: target {self.target} µs (1/{QUEUE_MARGIN} of the burst)"
        )


def triton_queue_counters(pod: dict[str, Any]) -> tuple[float, float]:
    """(nv_inference_queue_duration_us, nv_inference_request_success) of model NAME from the pod's metrics."""
    port = next(p["containerPort"] for p in pod["spec"]["containers"][0]["ports"] if p["name"] == "metrics")
    with urllib.request.urlopen(f"http://{pod['status']['podIP']}:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    totals = dict.fromkeys(("nv_inference_queue_duration_us", "nv_inference_request_success"), 0.0)
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name in totals and f'model="{NAME}"' in rest:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals["nv_inference_queue_duration_us"], totals["nv_inference_request_success"]


def calibrate_queue_time(cluster: ExistingCluster, namespace: str, url: str) -> QueueCalibration:
    """Measure the queue at rest and under CALIBRATION_SECONDS of the test's load; the target is the burst's
    queue time over QUEUE_MARGIN, so the same load crosses it by that margin however fast the machine is."""
    (pod,) = serving_pods(cluster, namespace, NAME)

    def per_request(before: tuple[float, float], after: tuple[float, float]) -> tuple[float, int]:
        requests = after[1] - before[1]
        return (after[0] - before[0]) / (1 + requests), int(requests)  # the operator's query's `1 +`

    start = triton_queue_counters(pod)
    time.sleep(CALIBRATION_SECONDS)  # a measurement window at rest, not a wait
    rested = triton_queue_counters(pod)
    rest, _ = per_request(start, rested)
    burst_result = asyncio.run(
        run_load(
            urllib.parse.urlsplit(url).netloc,
            NAME,
            duration=CALIBRATION_SECONDS,
            concurrency=CONCURRENCY,
            batch_size=BATCH_SIZE,
        )
    )
    assert burst_result.failed == 0, f"the calibration burst failed: {dict(burst_result.errors)}"
    burst, requests = per_request(rested, triton_queue_counters(pod))
    target = int(burst / QUEUE_MARGIN)
    calibration = QueueCalibration(rest, burst, requests, target)
    print(f"\n== calibration: {calibration}")
    assert target >= 1 and rest < target, (
        f"the load does not queue enough on this machine to tell load from rest: {calibration} "
        "(raise NIMIFY_LOAD_SCALE)"
    )
    return calibration


# --- the loop ------------------------------------------------------------------------------------------


def scale_up_and_down(
    cluster: ExistingCluster,
    namespace: str,
    model: Model,
    node: RealNodeInfo,
    autoscaling: dict[str, Any],
    metric: Callable[[], float | None],
    figures: Figures,
    diagnose: Callable[[], str],
    calibrate: Callable[[str], dict[str, Any]] | None = None,
) -> Figures:
    """Serve with `autoscaling`; once the autoscaler reads its metric, `calibrate(url)` (where given) measures
    the service and returns the autoscaling spec the load is run against; then scale up under the load and
    down after it."""

    def serve(autoscaling: dict[str, Any]) -> None:
        resources = {"gpus": 0, "cpu": CPU_REQUEST, "memory": "1Gi"}
        spec = real_nimservice(NAME, model, node, autoscaling=autoscaling, resources=resources)
        apply(cluster, namespace, spec)

    serve(autoscaling)
    nim = wait_ready(cluster, namespace, NAME)
    hpa_name = nim["status"]["autoscaler"]["hpaName"]
    url = service_url(cluster, namespace, NAME)
    first_answer(url, NAME)

    # The autoscaler reads its metric from the real pipeline before any load.
    def active() -> dict[str, Any] | None:
        found = nimservice_condition(cluster, namespace, "ScalingActive")
        return found if found is not None and found["status"] == "True" else None

    try:
        eventually(active, timeout=150, interval=2)
    except AssertionError:
        raise AssertionError(
            f"ScalingActive: {nimservice_condition(cluster, namespace, 'ScalingActive')}\n{diagnose()}"
        ) from None
    # spec.autoscaling.behavior reached the HPA that computes the replicas (KEDA's, for a ScaledObject).
    live_behavior = get_json(cluster, f"hpa/{hpa_name}", "-n", namespace)["spec"]["behavior"]
    assert live_behavior["scaleDown"]["stabilizationWindowSeconds"] == 10, live_behavior
    if calibrate is not None:
        serve(calibrate(url))

        def reconciled() -> bool:
            live = get_json(cluster, f"nimservice/{NAME}", "-n", namespace)
            return bool(live["status"].get("observedGeneration") == live["metadata"]["generation"])

        eventually(reconciled, timeout=60, what="the calibrated spec reconciled (status.observedGeneration)")

    load = ChunkedLoad(urllib.parse.urlsplit(url).netloc, NAME)
    since = time.time()
    load.start()

    expected = OnnxRuntimeModel(model.path).run({"input": INPUT})["logits"]

    def serve_new_pods(at: float) -> None:
        """An inference on its own address for every Ready replica not asked yet: each pod the autoscaler
        adds serves, as ONNX Runtime answers."""
        for pod in serving_pods(cluster, namespace, NAME):
            name, status = pod["metadata"]["name"], pod.get("status", {})
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
            if name in figures.served or not ready or pod["metadata"].get("deletionTimestamp"):
                continue
            assert pod["spec"]["nodeName"] == node.name
            answer = infer(f"http://{status['podIP']}:8000", NAME, INPUT)
            np.testing.assert_allclose(answer, expected, rtol=1e-5, atol=1e-6)
            figures.served[name] = at

    def sample() -> tuple[int, int]:
        """Record one sample; (replicas, ready) once the HPA wants what the Deployment has, else ready -1."""
        live = deployment(cluster, namespace)
        replicas, ready = live["spec"].get("replicas", 1), live.get("status", {}).get("readyReplicas", 0)
        hpa = get_json(cluster, f"hpa/{hpa_name}", "-n", namespace)
        reported = get_json(cluster, f"nimservice/{NAME}", "-n", namespace)["status"].get("autoscaler", {})
        at = round(time.monotonic() - load.started, 1)
        figures.samples.append(
            Sample(
                at,
                replicas,
                ready,
                f"{reported.get('currentReplicas')}/{reported.get('desiredReplicas')}",
                hpa_metric(hpa),
                metric(),
            )
        )
        serve_new_pods(at)
        if replicas >= 2 and figures.scaled_to_two is None:
            figures.scaled_to_two = at
        if ready >= 2 and figures.two_ready is None:
            figures.two_ready = at
        if replicas == 1 and figures.load_stopped is not None and figures.scaled_to_one is None:
            figures.scaled_to_one = at
        desired = hpa.get("status", {}).get("desiredReplicas")
        return replicas, (ready if desired == replicas else -1)

    try:
        while load.running():
            replicas, ready = sample()
            if replicas >= 2 and ready == replicas:
                break
            time.sleep(3)
        else:
            raise AssertionError(
                f"no scale-up within the load's {LOAD_SECONDS:.0f}s\n{figures.report()}\n{diagnose()}"
            )
    finally:
        load.finish()
    figures.load_stopped = round(load.ended - load.started, 1)
    figures.load = load.summary()

    # Back to minReplicas; replicas the autoscaler still adds meanwhile (its metric window) must serve too.
    deadline = time.monotonic() + 240
    while figures.scaled_to_one is None and time.monotonic() < deadline:
        sample()
        time.sleep(3)
    assert figures.scaled_to_one is not None, f"no scale-down\n{figures.report()}\n{diagnose()}"
    eventually(lambda: len(serving_pods(cluster, namespace, NAME)) == 1, timeout=90, interval=2)
    assert len(figures.served) >= 2, figures.report()
    # The NimService reported the autoscaler's replicas on the way up and on the way down.
    counts = [s.nimservice for s in figures.samples]
    assert any(c.endswith(("/2", "/3")) for c in counts), figures.report()
    eventually(
        lambda: (
            get_json(cluster, f"nimservice/{NAME}", "-n", namespace)["status"]["autoscaler"].get(
                "desiredReplicas"
            )
            == 1
        ),
        timeout=60,
        interval=2,
    )

    fighting, other, figures.scale_writes = audited_writes(cluster, namespace, since)
    figures.operator_writes = dict(other)
    print("\n" + figures.report())
    assert fighting == [], f"the operator wrote what the autoscaler scales while it scaled: {fighting}"
    assert figures.scale_writes, "the autoscaler's writes to deployments/scale should be in the audit log"
    assert load.summary()["failed"] == 0 and not load.errors, figures.report()
    return figures


def test_queue_time_scales_a_keda_scaled_object_up_and_down(
    cluster: ExistingCluster, real_node: RealNodeInfo, stack: MetricsStack, scaling: tuple[str, Model]
) -> None:
    namespace, model = scaling
    keda = {**BOUNDS, "autoscaler": "KEDA"}
    calibrated: list[QueueCalibration] = []

    def trigger() -> dict[str, Any]:
        (found,) = get_json(cluster, f"scaledobject/{NAME}", "-n", namespace)["spec"]["triggers"]
        return dict(found)

    def queue_time() -> float | None:
        return prometheus_value(stack, trigger()["metadata"]["query"])

    def calibrate(url: str) -> dict[str, Any]:
        calibrated.append(calibrate_queue_time(cluster, namespace, url))
        return {**keda, "targetQueueTimeMicroseconds": calibrated[0].target}

    def diagnose() -> str:
        return "\n".join(
            [
                cluster.kubectl("describe", f"scaledobject/{NAME}", "-n", namespace, check=False).stdout,
                cluster.kubectl("describe", f"hpa/keda-hpa-{NAME}", "-n", namespace, check=False).stdout,
                metrics_stack_logs(stack),
            ]
        )

    figures = scale_up_and_down(
        cluster,
        namespace,
        model,
        real_node,
        {**keda, "targetQueueTimeMicroseconds": UNREACHABLE_QUEUE_TIME},
        queue_time,
        Figures("KEDA, queue time (µs)"),
        diagnose,
        calibrate,
    )
    target = calibrated[0].target
    assert trigger()["metadata"]["threshold"] == str(target), trigger()
    assert figures.peak("metric") > target, (
        f"the queue never exceeded its calibrated target: {calibrated[0]}\n{figures.report()}"
    )


def test_cpu_utilization_scales_an_hpa_up_and_down(
    cluster: ExistingCluster, real_node: RealNodeInfo, stack: MetricsStack, scaling: tuple[str, Model]
) -> None:
    namespace, model = scaling
    autoscaling = {**BOUNDS, "autoscaler": "HorizontalPodAutoscaler", "targetCpuUtilization": CPU_TARGET}

    def cpu_millicores() -> float | None:
        """The serving pods' CPU use in millicores, summed, as metrics-server reports it."""
        raw = cluster.kubectl(
            "get", "--raw", f"/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods", check=False
        ).stdout
        if not raw:
            return None
        total = 0.0
        for pod in json.loads(raw)["items"]:
            if pod["metadata"]["name"].startswith(f"{NAME}-"):
                for container in pod["containers"]:
                    total += _millicores(container["usage"]["cpu"])
        return total

    def diagnose() -> str:
        return "\n".join(
            [
                cluster.kubectl("describe", f"hpa/{NAME}", "-n", namespace, check=False).stdout,
                cluster.kubectl("get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes", check=False).stdout,
                metrics_stack_logs(stack),
            ]
        )

    figures = scale_up_and_down(
        cluster,
        namespace,
        model,
        real_node,
        autoscaling,
        cpu_millicores,
        Figures("HPA, CPU utilization (% of 100m; metric column: millicores, all pods)"),
        diagnose,
    )
    assert figures.peak("hpa") > CPU_TARGET, f"CPU utilization never exceeded its target: {figures.report()}"


def _millicores(quantity: str) -> float:
    """A CPU quantity as metrics.k8s.io writes it (nanocores `n`, microcores `u`, millicores `m`, cores)."""
    return _quantity(quantity) * 1000


def _quantity(quantity: str) -> float:
    """A Kubernetes quantity as the metrics APIs write it (`n`, `u`, `m` suffixes, or none)."""
    for suffix, scale in (("n", 1e-9), ("u", 1e-6), ("m", 1e-3)):
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * scale
    return float(quantity)
