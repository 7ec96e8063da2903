"""The gateway's objects and Traefik's configuration, without starting anything (tests/controller/
test_real_gateway.py sends traffic through a running one)."""

from __future__ import annotations

from pathlib import Path

from nimify_devcluster.gateway import CONTROLLER_NAME, GATEWAY_CLASS, gateway_objects, traefik_config


def test_the_gateway_listens_on_traefik_s_entry_point_for_routes_of_every_namespace() -> None:
    objects = {o["kind"]: o for o in gateway_objects(18080)}
    assert objects["GatewayClass"]["spec"]["controllerName"] == CONTROLLER_NAME
    (listener,) = objects["Gateway"]["spec"]["listeners"]
    assert objects["Gateway"]["spec"]["gatewayClassName"] == GATEWAY_CLASS
    assert (listener["protocol"], listener["port"]) == ("HTTP", 18080)
    assert listener["allowedRoutes"] == {"namespaces": {"from": "All"}}
    config = traefik_config("https://127.0.0.1:6443", Path("/x/token"), Path("/x/ca.crt"), 18080, 18081)
    # Traefik attaches a listener to the entry point with its port, on loopback only.
    assert config["entryPoints"]["web"]["address"] == "127.0.0.1:18080"
    provider = config["providers"]["kubernetesGateway"]
    assert provider["token"] == "/x/token"  # a path: the token itself is not in the configuration file
    assert provider["certAuthFilePath"] == "/x/ca.crt"


def test_traefik_may_read_but_not_change_the_cluster_beyond_route_status() -> None:
    (role,) = [o for o in gateway_objects(1) if o["kind"] == "ClusterRole"]
    writes = {
        resource
        for rule in role["rules"]
        if set(rule["verbs"]) - {"get", "list", "watch"}
        for resource in rule["resources"]
    }
    assert writes and all(resource.endswith("/status") for resource in writes)
