"""spec.expose.httpRoute through a real Gateway API implementation: Traefik's kubernetesgateway provider
(built from its module, running against the cluster's apiserver) accepts the HTTPRoute the operator renders
and proxies a client's request, by its host, to the Triton pod on the real node, whose answer equals ONNX
Runtime's."""

from __future__ import annotations

import json
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


def get(cluster: ExistingCluster, what: str, namespace: str) -> dict[str, Any] | None:
    found = cluster.kubectl("get", "-o", "json", what, "-n", namespace, check=False)
    return dict(json.loads(found.stdout)) if found.returncode == 0 else None
