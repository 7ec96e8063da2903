"""The Service in front of Triton: its ports and selector must meet the Deployment's pods."""

from __future__ import annotations

from typing import Any

import pytest

from nimify.engine.location import EngineLocation
from nimify.render.deployment import ServedEngine, render_deployment
from nimify.render.service import render_service, service_endpoints
from nimify.settings import OperatorSettings
from tests.render.conftest import NAME, NAMESPACE, nimservice, unit_of

LOCATION = EngineLocation(cache_key="c" * 64, claim="nimify-engines")
ENGINE = ServedEngine(config_hash="0" * 16)


@pytest.mark.parametrize(
    "expose",
    [{}, {"httpPort": 9000, "grpcPort": 9001, "metricsPort": 9002}, {"serviceType": "LoadBalancer"}],
)
def test_ports_and_selector_meet_the_deployment(expose: dict[str, Any], settings: OperatorSettings) -> None:
    nim = nimservice({"expose": expose})
    service, deployment = (
        render_service(nim),
        render_deployment(nim, unit_of(nim, LOCATION), ENGINE, settings),
    )
    template = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    container_ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
    for port in service["spec"]["ports"]:
        # targetPort by name: the Service follows the container whatever number it listens on.
        assert port["targetPort"] in container_ports
        assert port["port"] == container_ports[port["targetPort"]]
        assert port["protocol"] == "TCP"


def test_default_service() -> None:
    service = render_service(nimservice())
    assert service["apiVersion"] == "v1" and service["kind"] == "Service"
    assert service["metadata"]["name"] == NAME and service["metadata"]["namespace"] == NAMESPACE
    assert service["spec"]["type"] == "ClusterIP"
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [
        ("http", 8000),
        ("grpc", 8001),
        ("metrics", 8002),
    ]


def test_grpc_port_declares_h2c() -> None:
    ports = {p["name"]: p for p in render_service(nimservice())["spec"]["ports"]}
    assert ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"
    assert "appProtocol" not in ports["http"]


@pytest.mark.parametrize("service_type", ["ClusterIP", "NodePort", "LoadBalancer"])
def test_service_type(service_type: str) -> None:
    assert (
        render_service(nimservice({"expose": {"serviceType": service_type}}))["spec"]["type"] == service_type
    )


def test_endpoints() -> None:
    assert service_endpoints(nimservice({"expose": {"httpPort": 9000}})) == {
        "http": f"http://{NAME}.{NAMESPACE}.svc:9000",
        "grpc": f"{NAME}.{NAMESPACE}.svc:8001",
        "metrics": f"http://{NAME}.{NAMESPACE}.svc:8002/metrics",
    }
