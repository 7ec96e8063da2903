"""spec.expose: the Service ports and type, an optional Ingress or Gateway API HTTPRoute, and an optional
NetworkPolicy for the Triton pods."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from nimify.api.base import ApiModel
from nimify.api.spec.fields import DNS1123_LABEL, DNS1123_SUBDOMAIN, HOSTNAME, LABEL_VALUE, label_keys_rule
from nimify.api.validation import Rule, ValidationReason, cel_string, matches

LabelSelector = dict[str, Annotated[str, Field(pattern=LABEL_VALUE, max_length=63)]]


class ServiceType(StrEnum):
    """How the Service reaches clients."""

    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


class GatewayRef(ApiModel):
    """The Gateway API Gateway an HTTPRoute attaches to."""

    name: str = Field(pattern=DNS1123_SUBDOMAIN, max_length=253)
    """Gateway name."""

    namespace: str | None = Field(default=None, pattern=DNS1123_LABEL, max_length=63)
    """Gateway namespace; the NimService's namespace when left out."""

    section_name: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN, max_length=253)
    """Listener of the Gateway to attach to; all listeners when left out."""


#: Four dot-separated numbers: an IPv4 address, which Kubernetes refuses as an Ingress host ("must be a DNS
#: name, not an IP address") and the Gateway API's hostname excludes; the HOSTNAME pattern alone admits it.
_IPV4 = r"^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$"

HOST_RULE = Rule(
    cel=f"!self.host.matches({cel_string(_IPV4)})",
    message="host must be a DNS name, not an IP address",
    holds=lambda route: not matches(_IPV4, route.host),
    field_path=".host",
)


class IngressSpec(ApiModel):
    """A networking.k8s.io/v1 Ingress routing a host to the HTTP port."""

    host: str = Field(pattern=HOSTNAME, max_length=253)
    """Host name clients use (a leading *. is allowed)."""

    class_name: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN, max_length=253)
    """IngressClass; the cluster's default when left out."""

    tls_secret: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN, max_length=253)
    """Secret with the TLS certificate for host; plain HTTP when left out."""

    cel_rules = (HOST_RULE,)


class HttpRouteSpec(ApiModel):
    """A Gateway API HTTPRoute routing a host to the HTTP port."""

    host: str = Field(pattern=HOSTNAME, max_length=253)
    """Host name clients use (a leading *. is allowed)."""

    gateway_ref: GatewayRef
    """The Gateway to attach to."""

    cel_rules = (HOST_RULE,)


class NetworkPeer(ApiModel):
    """Pods allowed to reach Triton, chosen as a NetworkPolicy peer chooses them: by the labels of their
    namespace, of the pod, or both (both must match)."""

    namespace_selector: LabelSelector | None = Field(default=None, max_length=16)
    """Labels of the namespaces the clients run in (matchLabels); this NimService's namespace when left
    out. `{}` is every namespace."""

    pod_selector: LabelSelector | None = Field(default=None, max_length=16)
    """Labels of the client pods (matchLabels); every pod of those namespaces when left out."""

    cel_rules = (
        Rule(
            cel="has(self.namespaceSelector) || has(self.podSelector)",
            message="set namespaceSelector, podSelector or both",
            holds=lambda peer: peer.namespace_selector is not None or peer.pod_selector is not None,
        ),
        label_keys_rule("namespace_selector", "namespaceSelector"),
        label_keys_rule("pod_selector", "podSelector"),
    )


class NetworkPolicySpec(ApiModel):
    """A networking.k8s.io/v1 NetworkPolicy for the Triton pods: traffic in only on the HTTP, gRPC and
    metrics ports, from the clients listed. Takes effect where the cluster's network plugin enforces
    NetworkPolicies."""

    clients: list[NetworkPeer] | None = Field(default=None, max_length=16)
    """Who may send inference requests (HTTP and gRPC ports); anyone when left out, nobody when empty."""

    metrics_clients: list[NetworkPeer] | None = Field(default=None, max_length=16)
    """Who may scrape the metrics port (Prometheus, the autoscaler's adapter); anyone when left out, nobody
    when empty."""


class ExposeSpec(ApiModel):
    """How clients reach Triton: a Service with the HTTP, gRPC and metrics ports, optionally an Ingress or an
    HTTPRoute."""

    service_type: ServiceType = Field(default=ServiceType.CLUSTER_IP, strict=False)
    """Service type."""

    http_port: int = Field(default=8000, ge=1, le=65535)
    """Service port for HTTP/REST (KServe v2 protocol)."""

    grpc_port: int = Field(default=8001, ge=1, le=65535)
    """Service port for gRPC."""

    metrics_port: int = Field(default=8002, ge=1, le=65535)
    """Service port for Prometheus metrics."""

    ingress: IngressSpec | None = None
    """Ingress for the HTTP port; excludes httpRoute."""

    http_route: HttpRouteSpec | None = None
    """Gateway API HTTPRoute for the HTTP port; excludes ingress."""

    grpc_route: HttpRouteSpec | None = None
    """Gateway API GRPCRoute for the gRPC port (a host of its own: the Gateway API lets an implementation
    refuse a GRPCRoute whose host an HTTPRoute of the same listener has)."""

    network_policy: NetworkPolicySpec | None = None
    """A NetworkPolicy admitting traffic to the Triton pods on their ports only; none when left out."""

    cel_rules = (
        Rule(
            cel="self.httpPort != self.grpcPort && self.httpPort != self.metricsPort"
            " && self.grpcPort != self.metricsPort",
            message="httpPort, grpcPort and metricsPort must differ",
            holds=lambda expose: len({expose.http_port, expose.grpc_port, expose.metrics_port}) == 3,
        ),
        Rule(
            cel="!has(self.ingress) || !has(self.httpRoute)",
            message="set ingress or httpRoute, not both",
            holds=lambda expose: expose.ingress is None or expose.http_route is None,
            field_path=".httpRoute",
            reason=ValidationReason.FORBIDDEN,
        ),
        Rule(
            cel="!has(self.grpcRoute) || !has(self.httpRoute) || self.grpcRoute.host != self.httpRoute.host",
            message="grpcRoute needs a host other than httpRoute's (an implementation may refuse both on one"
            " host)",
            holds=lambda expose: (
                expose.grpc_route is None
                or expose.http_route is None
                or expose.grpc_route.host != expose.http_route.host
            ),
            field_path=".grpcRoute.host",
        ),
    )
