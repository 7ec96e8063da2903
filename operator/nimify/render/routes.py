"""Routes from outside the cluster to Triton: to its HTTP port a networking.k8s.io/v1 Ingress or a Gateway
API HTTPRoute (spec.expose.ingress / spec.expose.httpRoute; at most one of them), to its gRPC port a Gateway
API GRPCRoute (spec.expose.grpcRoute)."""

from __future__ import annotations

from typing import Any

from nimify.api import NimService
from nimify.api.spec.expose import HttpRouteSpec
from nimify.render.identity import COMPONENT_SERVER, object_meta, server_name

GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"


def render_ingress(nim: NimService) -> dict[str, Any] | None:
    ingress = nim.spec.expose.ingress
    if ingress is None:
        return None
    backend = {"service": {"name": server_name(nim), "port": {"number": nim.spec.expose.http_port}}}
    spec: dict[str, Any] = {
        "rules": [
            {
                "host": ingress.host,
                "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]},
            }
        ]
    }
    if ingress.class_name:
        spec["ingressClassName"] = ingress.class_name
    if ingress.tls_secret:
        spec["tls"] = [{"hosts": [ingress.host], "secretName": ingress.tls_secret}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": object_meta(nim, server_name(nim), COMPONENT_SERVER),
        "spec": spec,
    }


def render_http_route(nim: NimService, candidate: tuple[str, int] | None = None) -> dict[str, Any] | None:
    """The HTTPRoute to the NimService's Service; with `candidate` (a Service and its percent of the
    requests, during a canary rollout), weighted backendRefs to both."""
    route = nim.spec.expose.http_route
    if route is None:
        return None
    return _gateway_route(nim, "HTTPRoute", route, nim.spec.expose.http_port, candidate)


def render_grpc_route(nim: NimService, candidate: tuple[str, int] | None = None) -> dict[str, Any] | None:
    """The GRPCRoute to the NimService's Service's gRPC port, weighted like the HTTPRoute during a canary."""
    route = nim.spec.expose.grpc_route
    if route is None:
        return None
    return _gateway_route(nim, "GRPCRoute", route, nim.spec.expose.grpc_port, candidate)


def _gateway_route(
    nim: NimService, kind: str, route: HttpRouteSpec, port: int, candidate: tuple[str, int] | None
) -> dict[str, Any]:
    parent: dict[str, Any] = {"name": route.gateway_ref.name}
    if route.gateway_ref.namespace:
        parent["namespace"] = route.gateway_ref.namespace
    if route.gateway_ref.section_name:
        parent["sectionName"] = route.gateway_ref.section_name
    return {
        "apiVersion": GATEWAY_API_VERSION,
        "kind": kind,
        "metadata": object_meta(nim, server_name(nim), COMPONENT_SERVER),
        "spec": {
            "parentRefs": [parent],
            "hostnames": [route.host],
            "rules": [{"backendRefs": _backends(nim, port, candidate)}],
        },
    }


def _backends(nim: NimService, port: int, candidate: tuple[str, int] | None) -> list[dict[str, Any]]:
    serving = {"name": server_name(nim), "port": port}
    if candidate is None:
        return [serving]
    service, weight = candidate
    return [serving | {"weight": 100 - weight}, {"name": service, "port": port, "weight": weight}]


def route_host(nim: NimService) -> str | None:
    """The host name clients outside the cluster use; its scheme and port are those of the ingress controller
    or the Gateway listener, which the operator does not read."""
    expose = nim.spec.expose
    route = expose.ingress or expose.http_route
    return route.host if route is not None else None
