"""The Gateway API for the tests that route through a real implementation: its standard CRDs installed on
the session's cluster, and Traefik (devcluster/gateway.py) started against it, then stopped (that cluster
lives on). Binary from hack/ensure-gateway.sh (cached; a cold machine builds it here, minutes) or
NIMIFY_GATEWAY_BIN_PATH; the CRDs from hack/ensure-gateway-api.sh or NIMIFY_GATEWAY_API_DIR."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from nimify_devcluster.cluster import LocalCluster
from nimify_devcluster.gateway import LocalGateway, install_gateway_api, start_gateway, stop_gateway
from tests.fetched import fetched_dir
from tests.kube import ExistingCluster


@contextlib.contextmanager
def gateway_on(cluster: ExistingCluster) -> Iterator[LocalGateway]:
    """Traefik on the session's local cluster, with its GatewayClass and Gateway, removed afterwards."""
    if cluster.directory is None:
        raise RuntimeError("the gateway joins a local cluster this session started")
    install_gateway_api(cluster, fetched_dir("NIMIFY_GATEWAY_API_DIR", "ensure-gateway-api.sh"))
    local = LocalCluster.load(cluster.directory)
    gateway = start_gateway(local, str(fetched_dir("NIMIFY_GATEWAY_BIN_PATH", "ensure-gateway.sh")))
    try:
        yield gateway
    finally:
        stop_gateway(local, gateway)
