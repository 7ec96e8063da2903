"""The Triton Deployment that serves the engine."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nimify.api import NimService, NimServiceSpec
from nimify.engine.address_policy import DENIED_RANGES_ENV
from nimify.engine.location import ENGINE_MOUNT, REPOSITORY_MODEL_DIR, requested_gpu_product
from nimify.render.identity import (
    CONFIG_HASH_ANNOTATION,
    ENGINE_KEY_ANNOTATION,
    owner_reference,
)
from nimify.render.placement import pod_placement
from nimify.render.pod_identity import pull_secret_names, server_pod_identity
from nimify.render.pod_security import container_security_context, pod_security_context
from nimify.render.triton_config import CONFIG_KEY, member_config_key
from nimify.render.units import ServingUnit, unit_labels, unit_selector
from nimify.settings import OperatorSettings

MODEL_REPOSITORY = "/models"
ENSEMBLE_VERSION = "ensemble-version"  # an ensemble's version folder holds nothing, but Triton wants one
SHM_SIZE = "1Gi"  # the python backend and large tensors need more than the runtime's 64 MiB default
#: A terminating replica keeps serving this long before Triton gets SIGTERM: Services (kube-proxy, load
#: balancers, gateways) stop sending it new requests meanwhile, so a rollout drops none.
PRE_STOP_SECONDS = 10
#: Triton's own drain (--exit-timeout-secs, 30 by default) after the preStop delay, plus a margin.
TERMINATION_GRACE_SECONDS = PRE_STOP_SECONDS + 35
#: The init container that pulls a model image's engine into the replica (spec.model.uri oci://).
MODEL_IMAGE_CONTAINER = "model-image"
#: Where that container finds the pull secrets' Docker configs (`<index>/config.json`).
REGISTRY_AUTH_DIR = "/var/run/nimify/registry-auth"
INSECURE_REGISTRIES_ENV = "NIMIFY_INSECURE_REGISTRIES"


@dataclass(frozen=True)
class ServedEngine:
    """What a unit's ready engine adds to its Deployment: its Triton config, the GPU it was built on."""

    config_hash: str
    gpu_product: str | None = None
    model_image: str | None = None
    """The model image to pull the engine from, pinned to its digest (oci://...@sha256:...)."""


def triton_args(spec: NimServiceSpec) -> list[str]:
    expose, triton = spec.expose, spec.triton
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
        # p99 latencies per model (nv_inference_request_summary_us): a canary's analysis compares them.
        "--metrics-config=summary_latencies=true",
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


def triton_resources(spec: NimServiceSpec) -> dict[str, Any]:
    """The Triton container's requests and limits: GPUs as limits, memory as both."""
    limits: dict[str, Any] = {}
    requests: dict[str, Any] = {}
    if spec.resources.gpus:
        limits["nvidia.com/gpu"] = spec.resources.gpus
    if spec.resources.cpu is not None:
        requests["cpu"] = str(spec.resources.cpu)
    if spec.resources.memory is not None:
        requests["memory"] = limits["memory"] = str(spec.resources.memory)
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


def _model_mounts(model: ServingUnit, config_key: str) -> list[dict[str, Any]]:
    """A unit's engine under its model's name, read-only, with its config (`config_key` of the ConfigMap)."""
    model_dir = f"{MODEL_REPOSITORY}/{model.model_name}"
    return [
        {
            "name": "engines",
            "mountPath": model_dir,
            "readOnly": True,
            "subPath": f"{model.location.repository}/{REPOSITORY_MODEL_DIR}",
        },
        {
            "name": "triton-config",
            "mountPath": f"{model_dir}/{CONFIG_KEY}",
            "subPath": config_key,
            "readOnly": True,
        },
    ]


def model_mounts(unit: ServingUnit) -> list[dict[str, Any]]:
    """The model repository Triton serves: the unit's engine; for a pipeline every member's engine, and the
    ensemble (its config, and the empty version folder Triton wants for it)."""
    if not unit.members:
        return _model_mounts(unit, CONFIG_KEY)
    mounts = [mount for member in unit.members for mount in _model_mounts(member, member_config_key(member))]
    ensemble_dir = f"{MODEL_REPOSITORY}/{unit.model_name}"
    return [
        *mounts,
        {
            "name": "triton-config",
            "mountPath": f"{ensemble_dir}/{CONFIG_KEY}",
            "subPath": CONFIG_KEY,
            "readOnly": True,
        },
        {"name": ENSEMBLE_VERSION, "mountPath": f"{ensemble_dir}/1", "readOnly": True},
    ]


def triton_container(unit: ServingUnit, settings: OperatorSettings) -> dict[str, Any]:
    """Triton serving the unit's engine (mounted under the model's name) with its config beside it."""
    spec = unit.spec
    expose = spec.expose
    ready_path = f"/v2/models/{unit.model_name}/ready"
    container: dict[str, Any] = {
        "name": "triton",
        "image": spec.triton.image,
        "command": ["tritonserver"],
        "args": triton_args(spec),
        "ports": [
            {"name": "http", "containerPort": expose.http_port},
            {"name": "grpc", "containerPort": expose.grpc_port},
            {"name": "metrics", "containerPort": expose.metrics_port},
        ],
        # Engines can take minutes to load: the startup probe allows for it (15 minutes), liveness only starts
        # afterwards. It asks often: a replica that loads in seconds is Ready in seconds (rollouts, scaling).
        "startupProbe": _probe(ready_path, expose.http_port, period=2, failures=450),
        "readinessProbe": _probe(ready_path, expose.http_port, period=5, failures=3),
        "livenessProbe": _probe("/v2/health/live", expose.http_port, period=10, failures=3),
        "resources": triton_resources(spec),
        "volumeMounts": [
            *model_mounts(unit),
            {"name": "shm", "mountPath": "/dev/shm"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": container_security_context(),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
    }
    if settings.image_pull_policy:
        container["imagePullPolicy"] = settings.image_pull_policy
    return container


def model_image_container(
    unit: ServingUnit, image: str, settings: OperatorSettings
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The init container that pulls a model image's engine (its digests checked) where Triton's mount of
    the engine volume expects it, and the volumes of the pull secrets it reads: the kubelet pulls images,
    not artifacts into a volume, and image volumes need Kubernetes 1.33+ with containerd 2.1+ or CRI-O."""
    secrets = pull_secret_names(unit.nimservice, settings)
    auth_volumes = [
        {
            "name": f"registry-auth-{index}",
            # Optional: a missing secret is the registry's refusal, reported by the container, not a pod
            # that never starts.
            "secret": {
                "secretName": name,
                "optional": True,
                "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
            },
        }
        for index, name in enumerate(secrets)
    ]
    container: dict[str, Any] = {
        "name": MODEL_IMAGE_CONTAINER,
        "image": settings.onnxruntime_builder_image,
        "command": ["nimify", "pull-model"],
        "args": [image, f"--to={ENGINE_MOUNT}/{unit.location.repository}/{REPOSITORY_MODEL_DIR}"],
        "env": [
            {"name": INSECURE_REGISTRIES_ENV, "value": json.dumps(settings.insecure_registries)},
            {"name": DENIED_RANGES_ENV, "value": json.dumps(settings.model_uri_denied_ranges)},
        ],
        "volumeMounts": [
            {"name": "engines", "mountPath": ENGINE_MOUNT},
            {"name": "tmp", "mountPath": "/tmp"},
            *(
                {"name": volume["name"], "mountPath": f"{REGISTRY_AUTH_DIR}/{index}", "readOnly": True}
                for index, volume in enumerate(auth_volumes)
            ),
        ],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security_context(),
    }
    if settings.image_pull_policy:
        container["imagePullPolicy"] = settings.image_pull_policy
    return container, auth_volumes


def server_pod_spec(unit: ServingUnit, engine: ServedEngine, settings: OperatorSettings) -> dict[str, Any]:
    """The Triton pod: its identity, volumes (the engine claim read-only, the config) and placement; a model
    image's engine is pulled into an emptyDir by an init container instead."""
    engines: dict[str, Any] = {
        "name": "engines",
        "persistentVolumeClaim": {"claimName": unit.location.claim, "readOnly": True},
    }
    init: list[dict[str, Any]] = []
    auth_volumes: list[dict[str, Any]] = []
    if engine.model_image is not None:
        engines = {"name": "engines", "emptyDir": {}}
        container, auth_volumes = model_image_container(unit, engine.model_image, settings)
        init.append(container)
    pod_spec: dict[str, Any] = {
        **server_pod_identity(unit.nimservice, settings),
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": pod_security_context(),
        **({"initContainers": init} if init else {}),
        "containers": [triton_container(unit, settings)],
        "volumes": [
            engines,
            *auth_volumes,
            {"name": "triton-config", "configMap": {"name": unit.config_map_name}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}},
            {"name": "tmp", "emptyDir": {}},
            *([{"name": ENSEMBLE_VERSION, "emptyDir": {"sizeLimit": "1Mi"}}] if unit.members else []),
        ],
    }
    # On the product asked for, else the one the engine was built on (render/placement.py).
    return pod_spec | pod_placement(
        unit.spec,
        gpu_product=requested_gpu_product(unit.nimservice) or engine.gpu_product,
        tolerate_gpus=bool(unit.spec.resources.gpus),
        node_affinity_only=False,
    )


def render_deployment(
    nim: NimService, unit: ServingUnit, engine: ServedEngine, settings: OperatorSettings
) -> dict[str, Any]:
    """The Triton Deployment of `unit`, serving its ready `engine`."""
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": unit_selector(unit)},
        # Never below the serving capacity while a new engine rolls out: new pods must be Ready first.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {
            "metadata": {
                "labels": unit_labels(nim, unit),
                "annotations": {
                    ENGINE_KEY_ANNOTATION: unit.location.cache_key,
                    CONFIG_HASH_ANNOTATION: engine.config_hash,
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(unit.spec.expose.metrics_port),
                    "prometheus.io/path": "/metrics",
                },
            },
            "spec": server_pod_spec(unit, engine, settings),
        },
    }
    if unit.spec.replicas is not None:
        # Left out (autoscaling, or no count asked for), nimify does not own the count: the HPA does, or the
        # Deployment keeps what it has (1 when created; the HPA's last count once autoscaling is turned off).
        deployment_spec["replicas"] = unit.spec.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": unit.name,
            "namespace": nim.metadata.namespace,
            "labels": unit_labels(nim, unit),
            "ownerReferences": [owner_reference(nim)],
        },
        "spec": deployment_spec,
    }
