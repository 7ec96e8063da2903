"""Pod Security Standards "restricted" settings shared by every pod the operator creates."""

from __future__ import annotations

from typing import Any

RUN_AS = 1000


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def gpu_toleration() -> dict[str, Any]:
    """Tolerates the taint that managed GPU node pools carry (nvidia.com/gpu:NoSchedule)."""
    return {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
