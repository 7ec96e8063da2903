"""Ingress and Gateway API HTTPRoute from spec.expose."""

from __future__ import annotations

from nimify.render.routes import render_grpc_route, render_http_route, render_ingress, route_host
from tests.render.conftest import NAME, NAMESPACE, UID, nimservice


def test_no_route_unless_asked_for() -> None:
    nim = nimservice()
    assert render_ingress(nim) is None and render_http_route(nim) is None and route_host(nim) is None


def test_ingress_routes_the_host_to_the_http_port() -> None:
    nim = nimservice({"expose": {"httpPort": 9000, "ingress": {"host": "mlp.example.com"}}})
    ingress = render_ingress(nim)
    assert ingress is not None
    assert ingress["metadata"]["name"] == NAME and ingress["metadata"]["namespace"] == NAMESPACE
    assert ingress["metadata"]["ownerReferences"][0]["uid"] == UID
    assert ingress["spec"] == {
        "rules": [
            {
                "host": "mlp.example.com",
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": NAME, "port": {"number": 9000}}},
                        }
                    ]
                },
            }
        ]
    }
    assert route_host(nim) == "mlp.example.com"


def test_ingress_class_and_tls() -> None:
    spec = {"host": "*.models.example.com", "className": "nginx", "tlsSecret": "wildcard-tls"}
    ingress = render_ingress(nimservice({"expose": {"ingress": spec}}))
    assert ingress is not None
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["*.models.example.com"], "secretName": "wildcard-tls"}]


def test_http_route_attaches_to_the_gateway_and_backs_onto_the_service() -> None:
    route = {
        "host": "mlp.example.com",
        "gatewayRef": {"name": "public", "namespace": "gateways", "sectionName": "https"},
    }
    nim = nimservice({"expose": {"httpRoute": route}})
    rendered = render_http_route(nim)
    assert rendered is not None
    assert rendered["apiVersion"] == "gateway.networking.k8s.io/v1" and rendered["kind"] == "HTTPRoute"
    assert rendered["spec"] == {
        "parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}],
        "hostnames": ["mlp.example.com"],
        "rules": [{"backendRefs": [{"name": NAME, "port": 8000}]}],
    }
    assert render_ingress(nim) is None
    assert route_host(nim) == "mlp.example.com"


def test_http_route_in_the_gateway_s_own_namespace_by_default() -> None:
    rendered = render_http_route(
        nimservice({"expose": {"httpRoute": {"host": "a.example.com", "gatewayRef": {"name": "gw"}}}})
    )
    assert rendered is not None and rendered["spec"]["parentRefs"] == [{"name": "gw"}]


def test_grpc_route_backs_onto_the_grpc_port_and_splits_like_the_http_route() -> None:
    gateway = {"name": "public", "namespace": "gateways"}
    nim = nimservice(
        {"expose": {"grpcPort": 9001, "grpcRoute": {"host": "grpc.example.com", "gatewayRef": gateway}}}
    )
    rendered = render_grpc_route(nim)
    assert rendered is not None and rendered["kind"] == "GRPCRoute"
    assert rendered["spec"] == {
        "parentRefs": [{"name": "public", "namespace": "gateways"}],
        "hostnames": ["grpc.example.com"],
        "rules": [{"backendRefs": [{"name": NAME, "port": 9001}]}],
    }
    split = render_grpc_route(nim, (f"{NAME}-canary", 30))
    assert split is not None and split["spec"]["rules"][0]["backendRefs"] == [
        {"name": NAME, "port": 9001, "weight": 70},
        {"name": f"{NAME}-canary", "port": 9001, "weight": 30},
    ]
    assert render_http_route(nim) is None and render_grpc_route(nimservice()) is None
