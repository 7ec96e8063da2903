"""The Service in front of Triton: HTTP, gRPC and metrics ports."""

from __future__ import annotations

from typing import Any

from nimify.api import NimService
from nimify.render.identity import (
    COMPONENT_SERVER,
    nimservice_pods_selector,
    object_meta,
    server_name,
    server_selector,
)
from nimify.render.units import ServingUnit, unit_selector


def render_service(nim: NimService, every_unit: bool = False) -> dict[str, Any]:
    """The NimService's Service: its serving unit's pods; with `every_unit`, every unit's (a canary rollout
    without a Gateway: the candidate's ready replicas take their share of the requests)."""
    selector = nimservice_pods_selector(nim) if every_unit else server_selector(nim)
    return _service(nim, server_name(nim), selector)


def render_unit_service(nim: NimService, unit: ServingUnit) -> dict[str, Any]:
    """The Service of a unit beside the serving one (a rollout's candidate): its pods only, so that a route
    can give it a weight of its own."""
    return _service(nim, unit.name, unit_selector(unit))


def _service(nim: NimService, name: str, selector: dict[str, str]) -> dict[str, Any]:
    expose = nim.spec.expose
    ports = [
        {
            "name": name,
            "port": port,
            "targetPort": name,
            "protocol": "TCP",
            **({"appProtocol": "kubernetes.io/h2c"} if name == "grpc" else {}),
        }
        for name, port in (
            ("http", expose.http_port),
            ("grpc", expose.grpc_port),
            ("metrics", expose.metrics_port),
        )
    ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(nim, name, COMPONENT_SERVER),
        "spec": {"type": expose.service_type.value, "selector": selector, "ports": ports},
    }


def service_endpoints(nim: NimService) -> dict[str, str]:
    expose = nim.spec.expose
    host = f"{server_name(nim)}.{nim.metadata.namespace}.svc"
    return {
        "http": f"http://{host}:{expose.http_port}",
        "grpc": f"{host}:{expose.grpc_port}",
        "metrics": f"http://{host}:{expose.metrics_port}/metrics",
    }
