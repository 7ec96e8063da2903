"""Traffic through a real Gateway API implementation and canary rollouts judged for real (issue 21):
Traefik's kubernetesgateway provider (built from its module, running against the cluster's apiserver) accepts
the HTTPRoute and GRPCRoute the operator renders and proxies clients' requests, by their host, to the Triton
pods on the real node; Prometheus scrapes those pods; the operator asks both units of a canary for the answer
gate and Prometheus for the analysis. Requests flow through the Gateway throughout each case (bounded: a few
per second, at most a few minutes); each case prints its figures.

- an HTTPRoute serves through the Gateway, answers equal to ONNX Runtime's, another host answered 404;
- a good update goes through its steps, each unit's share measured from Triton's own counters, the operator
  restarted mid-rollout resumes at its step, the candidate is promoted, no request fails;
- a candidate declared equivalent that answers otherwise is rolled back by the gate before any traffic;
- an agreement gate: a retrained model that agrees on 40 % is rolled back, one that agrees on 97 % promoted;
- an erroring candidate is rolled back on its error ratio, a slow one on its p99 latency;
- a new model mid-rollout supersedes the candidate; a candidate whose build fails leaves the serving unit as
  it was;
- gRPC requests are split by the GRPCRoute like HTTP ones.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from onnx import ModelProto

from nimify.engine.reference import OnnxRuntimeModel
from nimify.model.digest import file_sha256
from nimify.model.samples import build_mlp, write_model
from nimify_devcluster.build_runner import create_local_claim
from nimify_devcluster.cluster import get_json
from nimify_devcluster.gateway import CONTROLLER_NAME, LocalGateway
from nimify_devcluster.metrics_stack import PROMETHEUS, MetricsStack
from nimify_devcluster.real_node import RealNodeInfo
from tests.controller import canary_models
from tests.controller.test_real_pods import (
    INPUT,
    HostOperator,
    Model,
    apply,
    infer,
    real_nimservice,
    wait_ready,
)
from tests.gateway import gateway_on
from tests.kube import ExistingCluster, eventually, fresh_namespace
from tests.metrics_stack import metrics_stack_on

pytestmark = [pytest.mark.cluster, pytest.mark.real_node]

NAME = "mlp"
WATCHED = "canary-*"
#: Big enough for the erroring candidate to fail on (canary_models.FAILING_ABOVE).
BIG_INPUT = INPUT * 1000


@pytest.fixture(scope="module")
def gateway(cluster: ExistingCluster, real_node: RealNodeInfo) -> Iterator[LocalGateway]:
    with gateway_on(cluster) as running:
        yield running


@pytest.fixture(scope="module")
def prometheus(cluster: ExistingCluster, real_node: RealNodeInfo) -> Iterator[MetricsStack]:
    with metrics_stack_on(cluster, (PROMETHEUS,)) as stack:
        yield stack


@pytest.fixture(scope="module")
def canary_operator(
    cluster: ExistingCluster,
    nimservice_crd: str,
    real_node: RealNodeInfo,
    gateway: LocalGateway,
    prometheus: MetricsStack,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[HostOperator]:
    assert prometheus.prometheus_url is not None
    operator = HostOperator(
        cluster.operator_kubeconfig or cluster.kubeconfig,
        real_node,
        tmp_path_factory.mktemp("canary-operator") / "operator.log",
        namespaces=WATCHED,
        settings={"NIMIFY_ANALYSIS_PROMETHEUS_URL": prometheus.prometheus_url},
    )
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()


def _accepted(route: dict[str, Any]) -> bool:
    parents = (route.get("status") or {}).get("parents") or []
    return any(
        parent.get("controllerName") == CONTROLLER_NAME
        and {c["type"]: c["status"] for c in parent.get("conditions") or []}.get("Accepted") == "True"
        and {c["type"]: c["status"] for c in parent.get("conditions") or []}.get("ResolvedRefs") == "True"
        for parent in parents
    )


def get(cluster: ExistingCluster, what: str, namespace: str) -> dict[str, Any] | None:
    found = cluster.kubectl("get", "-o", "json", what, "-n", namespace, check=False)
    return dict(json.loads(found.stdout)) if found.returncode == 0 else None


@dataclass
class Case:
    """One test's namespace, its models' claim, its route's host (a host per test: an earlier test's route
    for the same host outlives its namespace for a while)."""

    cluster: ExistingCluster
    node: RealNodeInfo
    gateway: LocalGateway
    namespace: str
    root: Path
    host: str

    def store(self, name: str, model: ModelProto) -> Model:
        path = write_model(model, self.root / f"{name}.onnx")
        return Model(f"pvc://models/{name}.onnx", file_sha256(path), path)

    def serve(self, model: Model, rollout: dict[str, Any]) -> None:
        route = {
            "host": self.host,
            "gatewayRef": {"name": self.gateway.name, "namespace": self.gateway.namespace},
        }
        body = real_nimservice(NAME, model, self.node, expose={"httpRoute": route}, rollout=rollout)
        apply(self.cluster, self.namespace, body)

    def rollout(self) -> dict[str, Any]:
        status = get_json(self.cluster, f"nimservice/{NAME}", "-n", self.namespace).get("status") or {}
        return dict(status.get("rollout") or {})

    def wait_phase(self, phase: str, timeout: float = 300) -> dict[str, Any]:
        return dict(eventually(
            lambda: (found := self.rollout()).get("phase") == phase and found, timeout=timeout, interval=1,
            what=f"rollout phase {phase}",
        ))  # fmt: skip

    def wait_step(self, step: int) -> None:
        def there() -> bool:
            rollout = self.rollout()
            return rollout.get("step") == step and bool(rollout.get("candidateWeight"))

        eventually(there, timeout=240, interval=1, what=f"step {step + 1} taking traffic")

    def start_serving(self, model: Model, rollout: dict[str, Any]) -> None:
        self.serve(model, rollout)
        wait_ready(self.cluster, self.namespace, NAME, timeout=300)
        eventually(lambda: _accepted(get_json(self.cluster, f"httproute/{NAME}", "-n", self.namespace)), 60)
        eventually(lambda: [infer(self.gateway.url, NAME, INPUT, host=self.host)], timeout=60, interval=0.5)


@pytest.fixture
def case(
    cluster: ExistingCluster, real_node: RealNodeInfo, gateway: LocalGateway, canary_operator: HostOperator
) -> Iterator[Case]:
    with fresh_namespace(cluster, "canary") as namespace:
        root = create_local_claim(cluster, namespace, "models")
        yield Case(cluster, real_node, gateway, namespace, root, f"{namespace}.gateway.test")


@dataclass
class Traffic:
    """Requests through the Gateway, one at a time, until stopped; each answer sorted by which model gave
    it (the models answer INPUT differently), each failure kept."""

    case: Case
    models: dict[str, Path]
    data: np.ndarray = field(default_factory=lambda: INPUT)
    interval: float = 0.1
    answered: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[float, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.expected = {
            name: OnnxRuntimeModel(path).run({"input": self.data})["logits"]
            for name, path in self.models.items()
        }
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                answer = infer(self.case.gateway.url, NAME, self.data, host=self.case.host)
            except Exception as error:
                self.failures.append((time.time(), repr(error)[:200]))
                continue
            who = next(
                (n for n, want in self.expected.items() if np.allclose(answer, want, rtol=1e-5, atol=1e-5)),
                "neither",
            )
            self.answered[who] = self.answered.get(who, 0) + 1

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def _canary(steps: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
    return {"strategy": "Canary", "steps": steps} | more


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def success_counts(case: Case, deployment: str) -> float:
    """nv_inference_request_success of the model, summed over the Deployment's pods' own metrics."""
    pods = get_json(case.cluster, "pods", "-n", case.namespace)["items"]
    total = 0.0
    for pod in pods:
        owner = pod["metadata"].get("generateName", "")
        if owner.rsplit("-", 2)[0] != deployment or pod["status"].get("phase") != "Running":
            continue
        with urllib.request.urlopen(f"http://{pod['status']['podIP']}:8002/metrics", timeout=10) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("nv_inference_request_success{") and f'model="{NAME}"' in line:
                    total += float(line.rsplit(" ", 1)[1])
    return total


def measured_share(case: Case, requests: int) -> tuple[float, int]:
    """The candidate's share of `requests` sent through the Gateway, from both units' Triton counters."""
    before = success_counts(case, f"{NAME}-canary"), success_counts(case, NAME)
    for _ in range(requests):
        infer(case.gateway.url, NAME, INPUT, host=case.host)
    after = success_counts(case, f"{NAME}-canary"), success_counts(case, NAME)
    candidate, serving = after[0] - before[0], after[1] - before[1]
    return 100 * candidate / max(candidate + serving, 1), int(candidate + serving)


def test_an_http_route_serves_through_the_gateway(case: Case) -> None:
    v1 = case.store("v1", build_mlp())
    case.start_serving(v1, {"strategy": "Replace"})
    nim = get_json(case.cluster, f"nimservice/{NAME}", "-n", case.namespace)
    assert nim["status"]["endpoints"].get("http") and nim["status"]["endpoints"]["external"] == case.host
    expected = OnnxRuntimeModel(v1.path).run({"input": INPUT})["logits"]
    np.testing.assert_allclose(
        infer(case.gateway.url, NAME, INPUT, host=case.host), expected, rtol=1e-5, atol=1e-6
    )
    # Another host is not this route's: the gateway answers 404 itself.
    other = httpx.get(f"{case.gateway.url}/v2/models/{NAME}", headers={"Host": "other.test"}, timeout=10)
    assert other.status_code == 404


def test_a_good_update_goes_through_its_steps_and_an_operator_restart(
    case: Case, canary_operator: HostOperator, capsys: pytest.CaptureFixture[str]
) -> None:
    v1, v2 = case.store("v1", build_mlp()), case.store("v2", build_mlp(hidden=24))
    steps = [{"weight": 20, "holdSeconds": 40, "minRequests": 30}, {"weight": 60, "holdSeconds": 30}]
    analysis = {"maxErrorRatio": 0.01, "maxLatencyRatio": 3, "minRequests": 10, "intervalSeconds": 5}

    def serve(model: Model, paused: bool) -> None:
        case.serve(model, _canary(steps, analysis=analysis, paused=paused))

    def measure(weight: int) -> None:
        """The share of 500 requests, with the step held (paused: its hold cannot end while measured)."""
        case.wait_phase("Paused", 240)
        time.sleep(3)  # the Gateway applies the route's new weights (Traefik throttles by 2 s)
        share, counted = measured_share(case, 500)
        shares.append((weight, share, counted))

    case.start_serving(v1, _canary(steps, analysis=analysis))
    shares: list[tuple[int, float, int]] = []
    with Traffic(case, {"v1": v1.path, "v2": v2.path}, interval=0.2) as traffic:
        updated = time.monotonic()
        serve(v2, paused=True)
        case.wait_step(0)
        measure(20)
        serve(v2, paused=False)
        case.wait_phase("Progressing", 60)
        case.wait_step(0)
        # The operator goes away mid-step and comes back: the step goes on where it was, its clock too.
        started = case.rollout()["stepStartedAt"]
        canary_operator.stop()
        time.sleep(5)
        canary_operator.start()
        time.sleep(5)
        resumed = case.rollout()
        assert (resumed["phase"], resumed["step"], resumed["stepStartedAt"]) == ("Progressing", 0, started)
        case.wait_step(1)
        serve(v2, paused=True)
        measure(60)
        serve(v2, paused=False)
        promoted = case.wait_phase("Promoted", 240)
        took = time.monotonic() - updated
        eventually(lambda: get(case.cluster, "deployment/mlp-canary", case.namespace) is None, timeout=60)
        eventually(lambda: get(case.cluster, "service/mlp-canary", case.namespace) is None, timeout=30)
        eventually(lambda: all(traffic.answered.get("v2", 0) and infer(case.gateway.url, NAME, INPUT,
                   host=case.host) is not None for _ in range(3)), timeout=30)  # fmt: skip
    with capsys.disabled():
        print(
            "\n[real node, gateway, Prometheus] good update: "
            + "; ".join(f"step at {w} %: {s:.1f} % of {n} requests (Triton's counters)" for w, s, n in shares)
            + f"; spec change -> promoted in {took:.0f} s (each step paused while measured, the operator "
            f"restarted in step 1); analysis "
            f"{promoted.get('analysis')}; {sum(traffic.answered.values())} background requests, "
            f"{len(traffic.failures)} failed"
        )
    for weight, share, counted in shares:
        assert counted >= 500 and abs(share - weight) <= 5, shares
    assert not traffic.failures, traffic.failures[:5]
    assert traffic.answered.get("neither", 0) == 0
    assert all(v["passed"] for v in promoted["analysis"]["verdicts"]), promoted["analysis"]
    backends = get_json(case.cluster, f"httproute/{NAME}", "-n", case.namespace)["spec"]["rules"][0][
        "backendRefs"
    ]
    assert [ref["name"] for ref in backends] == [NAME]


def test_a_declared_equivalent_candidate_that_answers_otherwise_never_takes_traffic(
    case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    v1, v2 = case.store("v1", build_mlp()), case.store("v2", build_mlp(hidden=24))
    rollout = _canary([{"weight": 50, "holdSeconds": 30}], answers={"equivalence": "Declared", "samples": 8})
    case.start_serving(v1, rollout)
    with Traffic(case, {"v1": v1.path, "v2": v2.path}) as traffic:
        updated = time.monotonic()
        case.serve(v2, rollout)
        rolled_back = case.wait_phase("RolledBack")
        took = time.monotonic() - updated
        eventually(lambda: get(case.cluster, "deployment/mlp-canary", case.namespace) is None, timeout=60)
    with capsys.disabled():
        print(
            f"\n[real node] equivalence gate: rolled back {took:.0f} s after the spec change: "
            f"{rolled_back['message']}; client answers {traffic.answered}, {len(traffic.failures)} failed"
        )
    gate = rolled_back["gate"]
    assert (gate["form"], gate["passed"], gate["samples"]) == ("Equivalence", False, 8)
    assert rolled_back["message"].startswith("the answer gate (equivalence): max abs error")
    assert "stepStartedAt" not in rolled_back and rolled_back.get("candidateWeight", 0) == 0
    assert traffic.answered.get("v2", 0) == 0 and traffic.answered.get("v1", 0) > 0, traffic.answered
    assert not traffic.failures
    nim = get_json(case.cluster, f"nimservice/{NAME}", "-n", case.namespace)
    rolled_out = next(c for c in nim["status"]["conditions"] if c["type"] == "RolledOut")
    assert (rolled_out["status"], rolled_out["reason"]) == ("False", "RolledBack")


def test_an_agreement_gate_refuses_a_model_that_disagrees_and_promotes_one_that_agrees(
    case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    (far, far_share), (near, near_share) = canary_models.agreeing(0.4), canary_models.agreeing(0.97)
    v1, disagreeing, agreeing = (
        case.store("v1", build_mlp()),
        case.store("far", far),
        case.store("near", near),
    )
    rollout = _canary(
        [{"weight": 50, "holdSeconds": 5}],
        answers={"samples": 32, "agreement": {"rule": "Top1", "minFraction": 0.9}},
    )
    case.start_serving(v1, rollout)
    models = {"v1": v1.path, "far": disagreeing.path, "near": agreeing.path}
    with Traffic(case, models) as traffic:
        case.serve(disagreeing, rollout)
        refused = case.wait_phase("RolledBack")
        case.serve(agreeing, rollout)
        eventually(lambda: case.rollout().get("candidate") != refused["candidate"], timeout=30)
        promoted = case.wait_phase("Promoted")
    with capsys.disabled():
        print(
            f"\n[real node] agreement gate (minFraction 0.9): {far_share:.0%} model -> {refused['message']}; "
            f"{near_share:.0%} model -> promoted ({promoted['gate']['message']}); client answers "
            f"{traffic.answered}, {len(traffic.failures)} failed"
        )
    assert refused["gate"]["form"] == "Agreement" and not refused["gate"]["passed"]
    assert refused["gate"]["figure"] < 0.6, refused["gate"]
    assert promoted["gate"]["passed"] and promoted["gate"]["figure"] >= 0.9
    assert traffic.answered.get("far", 0) == 0, "the refused model never answered a client"
    assert not traffic.failures


@pytest.mark.parametrize("bad", ["erroring", "slow"])
def test_a_bad_candidate_is_rolled_back_by_the_analysis(
    case: Case, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    v1 = case.store("v1", build_mlp())
    candidate = case.store(bad, canary_models.erroring() if bad == "erroring" else canary_models.slow())
    limit = {"maxErrorRatio": 0.05} if bad == "erroring" else {"maxLatencyRatio": 2}
    analysis = limit | {"minRequests": 10, "intervalSeconds": 5}
    rollout = _canary([{"weight": 30, "holdSeconds": 180}], analysis=analysis)
    case.start_serving(v1, rollout)
    data = BIG_INPUT if bad == "erroring" else INPUT
    with Traffic(case, {"v1": v1.path}, data=data, interval=0.1) as traffic:
        case.serve(candidate, rollout)
        rolled_back = case.wait_phase("RolledBack", 420)
        failed_by_then = len(traffic.failures)
    took = _seconds(rolled_back["stepStartedAt"], rolled_back["finishedAt"])
    figures = rolled_back["analysis"]["candidate"]
    with capsys.disabled():
        print(
            f"\n[real node, Prometheus] {bad} candidate at 30 %: rolled back {took:.0f} s after it took "
            f"traffic, having answered {figures['requests']} requests ({figures['failures']} failed; the "
            f"client saw {failed_by_then} failures): {rolled_back['message']}"
        )
    broken = next(v for v in rolled_back["analysis"]["verdicts"] if not v["passed"])
    if bad == "erroring":
        assert broken["metric"] == "errorRatio" and rolled_back["message"].startswith("analysis: error ratio")
    else:
        assert broken["metric"] == "latencyRatio" and "latency" in rolled_back["message"]
        assert not traffic.failures, "a slow candidate still answers"
    # No bound on `took`: it is printed; RolledBack within the 180 s hold is what the analysis must achieve.
    assert rolled_back["finishedAt"] and rolled_back["stepStartedAt"]


def test_a_new_model_supersedes_the_candidate_and_a_failed_build_leaves_the_serving_unit(
    case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    v1, v2, v3 = (case.store(n, build_mlp(hidden=h)) for n, h in (("v1", 32), ("v2", 24), ("v3", 20)))
    rollout = _canary([{"weight": 30, "holdSeconds": 600}])
    case.start_serving(v1, rollout)
    serving = get_json(case.cluster, f"deployment/{NAME}", "-n", case.namespace)["metadata"]["generation"]
    with Traffic(case, {"v1": v1.path, "v2": v2.path, "v3": v3.path}) as traffic:
        case.serve(v2, rollout)
        eventually(lambda: case.rollout().get("candidateWeight") == 30, timeout=240, interval=1)
        first = case.rollout()["candidate"]
        case.serve(v3, rollout)
        eventually(lambda: (r := case.rollout())["candidate"] != first and r.get("candidateWeight") == 30,
                   timeout=240, interval=1)  # fmt: skip
        eventually(lambda: traffic.answered.get("v3"), timeout=60)
        v2_after = traffic.answered.get("v2", 0)
        time.sleep(5)
        assert traffic.answered.get("v2", 0) == v2_after, "the superseded candidate no longer answers"
        broken = Model(v3.uri.replace("v3", "v2"), "0" * 64, v2.path)  # a digest the file does not have
        case.serve(broken, rollout)
        rolled_back = case.wait_phase("RolledBack")
        eventually(lambda: get(case.cluster, "deployment/mlp-canary", case.namespace) is None, timeout=60)
        before = sum(traffic.answered.values())
        eventually(lambda: sum(traffic.answered.values()) > before + 20, timeout=30)
    after = get_json(case.cluster, f"deployment/{NAME}", "-n", case.namespace)["metadata"]["generation"]
    with capsys.disabled():
        print(
            f"\n[real node] superseded, then a failed build: {rolled_back['message']}; "
            f"answers {traffic.answered}"
        )
    assert "the candidate's engine failed" in rolled_back["message"]
    assert after == serving, "the serving Deployment was never touched"
    assert not traffic.failures, traffic.failures[:5]


def grpc_infer(case: Case, host: str, data: np.ndarray) -> np.ndarray:
    """One inference over gRPC through the Gateway, the route chosen by the :authority `host`."""
    import tritonclient.grpc as grpcclient

    address = case.gateway.url.removeprefix("http://")
    client = grpcclient.InferenceServerClient(address, channel_args=[("grpc.default_authority", host)])
    try:
        item = grpcclient.InferInput("input", list(data.shape), "FP32")
        item.set_data_from_numpy(data)
        result = client.infer(NAME, [item])
        return np.asarray(result.as_numpy("logits"))
    finally:
        client.close()


def test_grpc_requests_are_split_by_the_grpc_route_too(
    case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    v1, v2 = case.store("v1", build_mlp()), case.store("v2", build_mlp(hidden=24))
    grpc_host = f"grpc-{case.namespace}.gateway.test"
    gateway_ref = {"name": case.gateway.name, "namespace": case.gateway.namespace}

    def serve(model: Model, paused: bool) -> None:
        rollout = _canary([{"weight": 30, "holdSeconds": 5}], paused=paused)
        expose = {
            "httpRoute": {"host": case.host, "gatewayRef": gateway_ref},
            "grpcRoute": {"host": grpc_host, "gatewayRef": gateway_ref},
        }
        apply(
            case.cluster,
            case.namespace,
            real_nimservice(NAME, model, case.node, expose=expose, rollout=rollout),
        )

    serve(v1, paused=True)
    wait_ready(case.cluster, case.namespace, NAME, timeout=300)
    eventually(lambda: _accepted(get_json(case.cluster, f"grpcroute/{NAME}", "-n", case.namespace)), 60)
    old = OnnxRuntimeModel(v1.path).run({"input": INPUT})["logits"]
    new = OnnxRuntimeModel(v2.path).run({"input": INPUT})["logits"]
    eventually(lambda: [grpc_infer(case, grpc_host, INPUT)], timeout=60, interval=0.5)

    def unit_of(answer: np.ndarray) -> str:
        return "serving" if np.allclose(answer, old, rtol=1e-5, atol=1e-5) else "candidate"

    serve(v2, paused=True)
    case.wait_phase("Paused", 240)
    eventually(lambda: unit_of(grpc_infer(case, grpc_host, INPUT)) == "candidate", timeout=60, interval=0.5)
    answered = [unit_of(grpc_infer(case, grpc_host, INPUT)) for _ in range(300)]
    share = 100 * answered.count("candidate") / len(answered)
    serve(v2, paused=False)
    case.wait_phase("Promoted", 180)
    eventually(lambda: get(case.cluster, "service/mlp-canary", case.namespace) is None, timeout=60)
    after = grpc_infer(case, grpc_host, INPUT)
    with capsys.disabled():
        print(f"\n[real node, gateway] gRPC canary at 30 %: {share:.1f} % of {len(answered)} gRPC requests")
    assert abs(share - 30) <= 5, share
    np.testing.assert_allclose(after, new, rtol=1e-5, atol=1e-5)
    routes = get_json(case.cluster, f"grpcroute/{NAME}", "-n", case.namespace)["spec"]["rules"][0][
        "backendRefs"
    ]
    assert [(ref["name"], ref["port"]) for ref in routes] == [(NAME, 8001)]
