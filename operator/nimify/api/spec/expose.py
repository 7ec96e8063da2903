"""spec.expose: the Service ports and type, and an optional Ingress or Gateway API HTTPRoute."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from nimify.api.base import ApiModel
from nimify.api.spec.fields import DNS1123_LABEL, DNS1123_SUBDOMAIN, HOSTNAME
from nimify.api.validation import Rule, ValidationReason


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


class IngressSpec(ApiModel):
    """A networking.k8s.io/v1 Ingress routing a host to the HTTP port."""

    host: str = Field(pattern=HOSTNAME, max_length=253)
    """Host name clients use (a leading *. is allowed)."""

    class_name: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN, max_length=253)
    """IngressClass; the cluster's default when left out."""

    tls_secret: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN, max_length=253)
    """Secret with the TLS certificate for host; plain HTTP when left out."""


class HttpRouteSpec(ApiModel):
    """A Gateway API HTTPRoute routing a host to the HTTP port."""

    host: str = Field(pattern=HOSTNAME, max_length=253)
    """Host name clients use (a leading *. is allowed)."""

    gateway_ref: GatewayRef
    """The Gateway to attach to."""


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
    )
