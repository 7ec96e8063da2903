"""A PodDisruptionBudget, once there is more than one replica to keep serving through node drains."""

from __future__ import annotations

from typing import Any

from nimify.api import NimService
from nimify.render.identity import COMPONENT_SERVER, object_meta, server_name, server_selector


def wants_disruption_budget(nim: NimService) -> bool:
    if nim.spec.autoscaling is not None:
        return nim.spec.autoscaling.max_replicas > 1
    return (nim.spec.replicas if nim.spec.replicas is not None else 1) > 1


def render_disruption_budget(nim: NimService) -> dict[str, Any] | None:
    if not wants_disruption_budget(nim):
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(nim, server_name(nim), COMPONENT_SERVER),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": server_selector(nim)}},
    }
