"""The Service in front of Triton: HTTP, gRPC and metrics ports."""

from __future__ import annotations

from typing import Any

from nimify.api import NimService
from nimify.render.identity import COMPONENT_SERVER, object_meta, server_name, server_selector


def render_service(nim: NimService) -> dict[str, Any]:
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
        "metadata": object_meta(nim, server_name(nim), COMPONENT_SERVER),
        "spec": {"type": expose.service_type.value, "selector": server_selector(nim), "ports": ports},
    }


def service_endpoints(nim: NimService) -> dict[str, str]:
    expose = nim.spec.expose
    host = f"{server_name(nim)}.{nim.metadata.namespace}.svc"
    return {
        "http": f"http://{host}:{expose.http_port}",
        "grpc": f"{host}:{expose.grpc_port}",
        "metrics": f"http://{host}:{expose.metrics_port}/metrics",
    }
