"""spec.expose.httpRoute through a real Gateway API implementation: Traefik's kubernetesgateway provider
(built from its module, running against the cluster's apiserver) accepts the HTTPRoute the operator renders
and proxies a client's request, by its host, to the Triton pod on the real node, whose answer equals ONNX
Runtime's."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from nimify.engine.reference import OnnxRuntimeModel
from nimify_devcluster.cluster import get_json
from nimify_devcluster.gateway import CONTROLLER_NAME, LocalGateway
from nimify_devcluster.real_node import RealNodeInfo
from tests.controller.test_real_pods import (
    INPUT,
    HostOperator,
    Model,
    RequestLoop,
    apply,
    infer,
    real_nimservice,
    running_operator,
    store_models,
    wait_ready,
)
from tests.gateway import gateway_on
from tests.kube import ExistingCluster, eventually, fresh_namespace

pytestmark = [pytest.mark.cluster, pytest.mark.real_node]

HOST = "mlp.gateway.test"
#: Each test's route has a host of its own: an earlier test's route for the same host outlives its namespace
#: for a while (deleted without waiting), and the Gateway gives a host's requests to the oldest route.
CANARY_HOST = "canary.gateway.test"


@pytest.fixture(scope="module")
def gateway(cluster: ExistingCluster, real_node: RealNodeInfo) -> Iterator[LocalGateway]:
    with gateway_on(cluster) as running:
        yield running


@pytest.fixture(scope="module")
def gateway_operator(
    cluster: ExistingCluster,
    nimservice_crd: str,
    real_node: RealNodeInfo,
    gateway: LocalGateway,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[HostOperator]:
    # Started once the Gateway API is served, so it watches HTTPRoutes from the start.
    with running_operator(cluster, real_node, tmp_path_factory.mktemp("operator"), "gw-*") as operator:
        yield operator


@pytest.fixture
def models(
    cluster: ExistingCluster, gateway_operator: HostOperator
) -> Iterator[tuple[str, dict[str, Model]]]:
    with fresh_namespace(cluster, "gw") as namespace:
        yield namespace, store_models(cluster, namespace)


def _accepted(route: dict[str, Any]) -> bool:
    parents = (route.get("status") or {}).get("parents") or []
    return any(
        parent.get("controllerName") == CONTROLLER_NAME
        and {c["type"]: c["status"] for c in parent.get("conditions") or []}.get("Accepted") == "True"
        and {c["type"]: c["status"] for c in parent.get("conditions") or []}.get("ResolvedRefs") == "True"
        for parent in parents
    )


def test_an_http_route_serves_through_the_gateway(
    cluster: ExistingCluster,
    real_node: RealNodeInfo,
    gateway: LocalGateway,
    models: tuple[str, dict[str, Model]],
) -> None:
    namespace, stored = models
    route = {"host": HOST, "gatewayRef": {"name": gateway.name, "namespace": gateway.namespace}}
    apply(cluster, namespace, real_nimservice("mlp", stored["v1"], real_node, expose={"httpRoute": route}))
    nim = wait_ready(cluster, namespace, "mlp", timeout=300)
    assert nim["status"]["endpoints"].get("http")
    eventually(lambda: _accepted(get_json(cluster, "httproute/mlp", "-n", namespace)), timeout=60)

    expected = OnnxRuntimeModel(stored["v1"].path).run({"input": INPUT})["logits"]
    (answer,) = eventually(lambda: [infer(gateway.url, "mlp", INPUT, host=HOST)], timeout=60, interval=0.5)
    np.testing.assert_allclose(answer, expected, rtol=1e-5, atol=1e-6)
    # Another host is not this route's: the gateway answers 404 itself.
    assert (
        httpx.get(f"{gateway.url}/v2/models/mlp", headers={"Host": "other.test"}, timeout=10).status_code
        == 404
    )


def _rollout(cluster: ExistingCluster, namespace: str, name: str) -> dict[str, Any]:
    return dict(
        (get_json(cluster, f"nimservice/{name}", "-n", namespace).get("status") or {}).get("rollout") or {}
    )


def test_a_canary_takes_its_share_through_the_gateway_and_is_promoted(
    cluster: ExistingCluster,
    real_node: RealNodeInfo,
    gateway: LocalGateway,
    models: tuple[str, dict[str, Model]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A model update under a Canary rollout, with requests flowing through the Gateway all along: the
    candidate serves beside the old engine, takes its step's share (held by spec.rollout.paused while it is
    measured from the answers: each unit's model answers differently), then is promoted; no request fails."""
    namespace, stored = models
    route = {"host": CANARY_HOST, "gatewayRef": {"name": gateway.name, "namespace": gateway.namespace}}

    def nimservice(model: Model, paused: bool) -> dict[str, Any]:
        rollout = {"strategy": "Canary", "steps": [{"weight": 30, "holdSeconds": 5}], "paused": paused}
        return real_nimservice("mlp", model, real_node, expose={"httpRoute": route}, rollout=rollout)

    apply(cluster, namespace, nimservice(stored["v1"], paused=True))
    wait_ready(cluster, namespace, "mlp", timeout=300)
    eventually(lambda: _accepted(get_json(cluster, "httproute/mlp", "-n", namespace)), timeout=60)
    old = OnnxRuntimeModel(stored["v1"].path).run({"input": INPUT})["logits"]
    new = OnnxRuntimeModel(stored["v2"].path).run({"input": INPUT})["logits"]
    eventually(lambda: [infer(gateway.url, "mlp", INPUT, host=CANARY_HOST)], timeout=60, interval=0.5)

    def unit_of(answer: np.ndarray) -> str:
        if np.allclose(answer, old, rtol=1e-5, atol=1e-6):
            return "serving"
        assert np.allclose(answer, new, rtol=1e-5, atol=1e-6), f"an answer of neither model: {answer}"
        return "candidate"

    def ask() -> str:
        """Which unit answered one request through the Gateway."""
        return unit_of(infer(gateway.url, "mlp", INPUT, host=CANARY_HOST))

    def only_new(count: int) -> bool:
        return all(ask() == "candidate" for _ in range(count))

    loop = RequestLoop(gateway.url, "mlp", interval=0.1, host=CANARY_HOST)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        loop.note("applying the new model")
        updated = time.monotonic()
        apply(cluster, namespace, nimservice(stored["v2"], paused=True))
        eventually(
            lambda: (
                _rollout(cluster, namespace, "mlp").get("phase") == "Paused"
                and _rollout(cluster, namespace, "mlp").get("candidateWeight") == 30
            ),
            timeout=240,
            interval=1,
        )
        loop.note("the candidate takes 30 %")
        # The gateway applies the route's new weights once it has seen them: the candidate answers then.
        eventually(lambda: ask() == "candidate", timeout=60)
        answered = [ask() for _ in range(600)]
        share = 100 * answered.count("candidate") / len(answered)
        loop.note(f"measured: {share:.1f} % of {len(answered)} requests from the candidate")

        apply(cluster, namespace, nimservice(stored["v2"], paused=False))
        eventually(
            lambda: _rollout(cluster, namespace, "mlp").get("phase") == "Promoted", timeout=180, interval=1
        )
        promoted = time.monotonic() - updated
        loop.note("promoted")
        eventually(lambda: get(cluster, "deployment/mlp-canary", namespace) is None, timeout=60)
        # The serving Deployment's old pod drains its last requests as in any rolling update; then only the
        # new model answers.
        eventually(lambda: only_new(10), timeout=60, interval=0.5)
        after = [ask() for _ in range(50)]
    finally:
        loop.stop.set()
        thread.join(timeout=15)
    with capsys.disabled():  # the figures belong in the run's log, passed or not
        print(
            f"\n[real node, gateway] canary at 30 %: {share:.1f} % of {len(answered)} requests answered by"
            f" the candidate; spec change -> promoted in {promoted:.0f} s; {len(loop.answers)} background"
            f" requests, {len(loop.failures)} failed"
        )
    print("\n".join(loop.timeline))
    assert abs(share - 30) <= 5, f"the candidate answered {share:.1f} % instead of 30 %"
    assert after == ["candidate"] * 50, "after promotion the serving Deployment answers with the new model"
    assert not loop.failures, "\n".join(loop.timeline)
    routes = get_json(cluster, "httproute/mlp", "-n", namespace)["spec"]["rules"][0]["backendRefs"]
    assert [ref["name"] for ref in routes] == ["mlp"] and get(
        cluster, "service/mlp-canary", namespace
    ) is None


def get(cluster: ExistingCluster, what: str, namespace: str) -> dict[str, Any] | None:
    found = cluster.kubectl("get", "-o", "json", what, "-n", namespace, check=False)
    return dict(json.loads(found.stdout)) if found.returncode == 0 else None
