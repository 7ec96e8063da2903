"""The optional NetworkPolicy of the Triton pods (spec.expose.networkPolicy): traffic in only on the HTTP,
gRPC and metrics ports, from the clients the spec lists.

Ingress only: a Triton pod reads its model repository from a volume and needs no egress of its own, but a
user's extra Triton arguments may add some (tracing, a cloud repository), and an egress policy would break
those silently. Ports are the container ports' names, so the policy follows the Deployment's ports.
"""

from __future__ import annotations

from typing import Any

from nimify.api import NimService
from nimify.api.spec import NetworkPeer
from nimify.render.identity import COMPONENT_SERVER, nimservice_pods_selector, object_meta, server_name

INFERENCE_PORTS = ("http", "grpc")
METRICS_PORT = "metrics"


def _peer(peer: NetworkPeer) -> dict[str, Any]:
    rendered: dict[str, Any] = {}
    if peer.namespace_selector is not None:
        rendered["namespaceSelector"] = {"matchLabels": dict(peer.namespace_selector)}
    if peer.pod_selector is not None:
        rendered["podSelector"] = {"matchLabels": dict(peer.pod_selector)}
    return rendered


def _rules(ports: tuple[str, ...], peers: list[NetworkPeer] | None) -> list[dict[str, Any]]:
    """The ingress rule opening `ports` to `peers`: to any source when None; no rule at all (the ports
    closed) when empty, because a rule whose `from` is empty matches every source, the opposite of an empty
    list of clients."""
    rule: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": port} for port in ports]}
    if peers is None:  # no `from`: any source, on these ports only
        return [rule]
    if not peers:
        return []
    return [rule | {"from": [_peer(peer) for peer in peers]}]


def render_network_policy(nim: NimService) -> dict[str, Any] | None:
    """The NetworkPolicy for the NimService's Triton pods, or None (absent) when the spec asks for none."""
    policy = nim.spec.expose.network_policy
    if policy is None:
        return None
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(nim, server_name(nim), COMPONENT_SERVER),
        "spec": {
            # Every unit's Triton pods: a rollout's candidate and a pipeline's units are behind it too.
            "podSelector": {"matchLabels": nimservice_pods_selector(nim)},
            "policyTypes": ["Ingress"],
            "ingress": [
                *_rules(INFERENCE_PORTS, policy.clients),
                *_rules((METRICS_PORT,), policy.metrics_clients),
            ],
        },
    }
