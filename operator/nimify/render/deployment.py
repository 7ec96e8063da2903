"""The Triton Deployment that serves the engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nimify.api import NimService
from nimify.api.spec import GPU_PRODUCT_LABEL
from nimify.engine.location import REPOSITORY_MODEL_DIR, EngineLocation, requested_gpu_product
from nimify.render.identity import (
    COMPONENT_SERVER,
    CONFIG_HASH_ANNOTATION,
    ENGINE_KEY_ANNOTATION,
    labels,
    object_meta,
    server_name,
    server_selector,
    triton_config_name,
)
from nimify.render.pod_identity import server_pod_identity
from nimify.render.pod_security import container_security_context, gpu_toleration, pod_security_context
from nimify.render.triton_config import CONFIG_KEY
from nimify.settings import OperatorSettings

MODEL_REPOSITORY = "/models"
SHM_SIZE = "1Gi"  # the python backend and large tensors need more than the runtime's 64 MiB default


@dataclass(frozen=True)
class ServedEngine:
    """The ready engine a Deployment serves: where it is, what config goes with it, what it was built on."""

    location: EngineLocation
    config_hash: str
    gpu_product: str | None = None


def triton_args(nim: NimService) -> list[str]:
    expose, triton = nim.spec.expose, nim.spec.triton
    args = [
        f"--model-repository={MODEL_REPOSITORY}",
        "--model-control-mode=none",
        "--strict-readiness=true",
        "--exit-on-error=true",
        f"--http-port={expose.http_port}",
        f"--grpc-port={expose.grpc_port}",
        f"--metrics-port={expose.metrics_port}",
        "--allow-metrics=true",
        "--allow-gpu-metrics=true",
    ]
    if triton.response_cache is not None and triton.response_cache.enabled:
        args.append(f"--cache-config=local,size={triton.response_cache.size_bytes}")
    return args + list(triton.extra_args or [])


def _probe(path: str, port: int, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 5,
    }


def render_deployment(nim: NimService, engine: ServedEngine, settings: OperatorSettings) -> dict[str, Any]:
    spec, expose = nim.spec, nim.spec.expose
    model = nim.triton_model_name
    model_dir = f"{MODEL_REPOSITORY}/{model}"
    ready_path = f"/v2/models/{model}/ready"
    gpus = spec.resources.gpus
    limits: dict[str, Any] = {}
    requests: dict[str, Any] = {}
    if gpus:
        limits["nvidia.com/gpu"] = gpus
    if spec.resources.cpu is not None:
        requests["cpu"] = str(spec.resources.cpu)
    if spec.resources.memory is not None:
        requests["memory"] = limits["memory"] = str(spec.resources.memory)
    container: dict[str, Any] = {
        "name": "triton",
        "image": spec.triton.image,
        "command": ["tritonserver"],
        "args": triton_args(nim),
        "ports": [
            {"name": "http", "containerPort": expose.http_port},
            {"name": "grpc", "containerPort": expose.grpc_port},
            {"name": "metrics", "containerPort": expose.metrics_port},
        ],
        # Engines can take minutes to load: the startup probe allows for it, liveness only starts afterwards.
        "startupProbe": _probe(ready_path, expose.http_port, period=10, failures=90),
        "readinessProbe": _probe(ready_path, expose.http_port, period=5, failures=3),
        "livenessProbe": _probe("/v2/health/live", expose.http_port, period=10, failures=3),
        "resources": {k: v for k, v in (("requests", requests), ("limits", limits)) if v},
        "volumeMounts": [
            {
                "name": "engines",
                "mountPath": model_dir,
                "readOnly": True,
                "subPath": f"{engine.location.repository}/{REPOSITORY_MODEL_DIR}",
            },
            {
                "name": "triton-config",
                "mountPath": f"{model_dir}/{CONFIG_KEY}",
                "subPath": CONFIG_KEY,
                "readOnly": True,
            },
            {"name": "shm", "mountPath": "/dev/shm"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": container_security_context(),
    }
    node_selector = dict(spec.placement.node_selector or {}) if spec.placement else {}
    if product := requested_gpu_product(nim) or engine.gpu_product:
        node_selector[GPU_PRODUCT_LABEL] = product
    tolerations = [gpu_toleration()] if gpus else []
    if spec.placement and spec.placement.tolerations:
        tolerations += [
            t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in spec.placement.tolerations
        ]
    pod_spec: dict[str, Any] = {
        **server_pod_identity(nim, settings),
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": [
            {
                "name": "engines",
                "persistentVolumeClaim": {"claimName": engine.location.claim, "readOnly": True},
            },
            {"name": "triton-config", "configMap": {"name": triton_config_name(nim)}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if spec.placement:
        if spec.placement.affinity:
            pod_spec["affinity"] = spec.placement.affinity
        if spec.placement.priority_class_name:
            pod_spec["priorityClassName"] = spec.placement.priority_class_name
        if spec.placement.runtime_class_name:
            pod_spec["runtimeClassName"] = spec.placement.runtime_class_name
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": server_selector(nim)},
        # Never below the serving capacity while a new engine rolls out: new pods must be Ready first.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {
            "metadata": {
                "labels": labels(nim, COMPONENT_SERVER),
                "annotations": {
                    ENGINE_KEY_ANNOTATION: engine.location.cache_key,
                    CONFIG_HASH_ANNOTATION: engine.config_hash,
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(expose.metrics_port),
                    "prometheus.io/path": "/metrics",
                },
            },
            "spec": pod_spec,
        },
    }
    if spec.replicas is not None:
        # Left out (autoscaling, or no count asked for), nimify does not own the count: the HPA does, or the
        # Deployment keeps what it has (1 when created; the HPA's last count once autoscaling is turned off).
        deployment_spec["replicas"] = spec.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(nim, server_name(nim), COMPONENT_SERVER),
        "spec": deployment_spec,
    }
