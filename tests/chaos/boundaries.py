"""Boundary specs: every field of a spec with every section set, moved one at a time to each edge the CRD's
schema admits (its minimum and maximum, zero for a quantity, an empty list or map, each enum value).

Hypothesis (tests/chaos/specs.py) draws what the schema allows at random, so an edge it happens not to draw in
a thousand cases (an empty `scaleDown.policies`, a `memoryLimit` of 0) goes unnoticed until the 5,000-case
run. These cases walk every field deterministically, so the CI-scale run of tests/chaos/test_hostile_specs.py
checks each edge: refused at admission (and by the API models), or admitted with every child the operator
renders accepted by the apiserver.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from tests.chaos.specs import crd_spec_schema

Path = tuple[str | int, ...]

#: Every section set, each list with one item and each map with one entry: an HPA, an Ingress, a claim the
#: operator creates.
FULL: dict[str, Any] = {
    "model": {
        "uri": "s3://models/resnet/model.onnx",
        "sha256": "0" * 64,
        "credentialsSecret": "s3-credentials",
        "serviceAccountName": "model-reader",
        "name": "resnet",
    },
    "engine": {
        "backend": "tensorrt",
        "precision": "fp16",
        "maxBatchSize": 8,
        "profiles": [{"input": "x", "min": [1, 3], "opt": [4, 3], "max": [8, 3]}],
        "parity": {
            "atol": 0.001,
            "rtol": 0.001,
            "samples": 8,
            "generated": [{"input": "x", "shape": [1, 3]}],
        },
        "buildTimeoutSeconds": 1800,
        "workspace": "4Gi",
        "buildResources": {"cpu": 2, "memory": "8Gi", "memoryLimit": "16Gi"},
    },
    "triton": {
        "dynamicBatching": {
            "enabled": True,
            "preferredBatchSizes": [4],
            "maxQueueDelayMicroseconds": 100,
            "priorityLevels": 2,
            "defaultPriorityLevel": 1,
            "maxQueueSize": 100,
        },
        "instancesPerGpu": 1,
        "responseCache": {"enabled": True, "sizeBytes": 16_777_216},
        "warmup": {"enabled": True, "batchSizes": [1]},
        "serviceAccountName": "triton",
        "extraArgs": ["--log-verbose=1"],
    },
    "resources": {"gpus": 1, "gpuProduct": "NVIDIA-L4", "cpu": "4", "memory": "16Gi"},
    "placement": {
        "nodeSelector": {"pool": "inference"},
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
        ],
        "priorityClassName": "inference",
        "runtimeClassName": "nvidia",
    },
    "autoscaling": {
        "autoscaler": "HorizontalPodAutoscaler",
        "minReplicas": 1,
        "maxReplicas": 4,
        "targetCpuUtilization": 70,
        "targetQueueTimeMicroseconds": 500,
        "behavior": {
            "scaleUp": {
                "stabilizationWindowSeconds": 0,
                "selectPolicy": "Max",
                "policies": [{"type": "Pods", "value": 2, "periodSeconds": 15}],
            },
            "scaleDown": {
                "stabilizationWindowSeconds": 300,
                "selectPolicy": "Min",
                "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}],
            },
        },
    },
    "expose": {
        "serviceType": "ClusterIP",
        "httpPort": 8000,
        "grpcPort": 8001,
        "metricsPort": 8002,
        "ingress": {"host": "resnet.example.com", "className": "nginx", "tlsSecret": "resnet-tls"},
        "networkPolicy": {
            "clients": [{"namespaceSelector": {"team": "vision"}, "podSelector": {"app": "client"}}],
            "metricsClients": [{"namespaceSelector": {"kubernetes.io/metadata.name": "monitoring"}}],
        },
    },
    "storage": {"size": "10Gi", "storageClassName": "fast"},
    "imagePullSecrets": ["registry"],
}

#: What FULL cannot hold at once (replicas exclude autoscaling, httpRoute excludes ingress, existingClaim
#: excludes size): a second base, whose own fields are walked too.
OTHER: dict[str, Any] = {
    key: value for key, value in copy.deepcopy(FULL).items() if key not in ("autoscaling", "storage")
} | {
    "replicas": 3,
    "paused": False,
    "storage": {"existingClaim": "models"},
    "expose": {key: value for key, value in FULL["expose"].items() if key not in ("ingress", "networkPolicy")}
    | {
        "httpRoute": {"host": "resnet.example.com", "gatewayRef": {"name": "public", "namespace": "gateways"}}
    },
}


def edge_values(schema: dict[str, Any]) -> list[Any]:
    """The edges of what `schema` admits, for one field."""
    if "enum" in schema:
        return list(schema["enum"])
    if schema.get("x-kubernetes-int-or-string"):  # a quantity
        return [0, "0", "0Gi", "1m", schema.get("maximum", 2**53)]
    kind = schema.get("type")
    if kind in ("integer", "number"):
        return [schema[bound] for bound in ("minimum", "maximum") if bound in schema]
    if kind == "array":
        return [[]]
    if kind == "object" and "additionalProperties" in schema:
        return [{}]
    if kind == "boolean":
        return [True, False]
    return []


def _fields(value: Any, schema: dict[str, Any], path: Path = ()) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every field set in `value` with its schema, outermost first."""
    if path:
        yield path, schema
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            yield from _fields(item, schema["properties"][key], (*path, key))
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            yield from _fields(item, schema["items"], (*path, index))


def _replaced(spec: dict[str, Any], path: Path, new: Any) -> dict[str, Any]:
    result = copy.deepcopy(spec)
    target: Any = result
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return result


def boundary_specs() -> list[dict[str, Any]]:
    """FULL and OTHER, then each with one field at one of its edges (OTHER's only where FULL has no such
    field)."""
    schema = crd_spec_schema()
    cases = [copy.deepcopy(FULL), copy.deepcopy(OTHER)]
    walked: set[Path] = set()
    for base in (FULL, OTHER):
        for path, field_schema in _fields(base, schema):
            if path in walked:
                continue
            walked.add(path)
            cases += [_replaced(base, path, value) for value in edge_values(field_schema)]
    return cases
