"""The conversion Job: runs `nimify convert` on the target GPU product and leaves its result in the
termination message."""

from __future__ import annotations

import json
from typing import Any

from nimify.api import NimService
from nimify.api.releases import builder_label
from nimify.api.spec import Backend, BuildResourcesSpec, quantity_value
from nimify.engine.address_policy import DENIED_RANGES_ENV
from nimify.engine.location import ENGINE_MOUNT, REPOSITORY_MODEL_DIR, requested_gpu_product
from nimify.render.identity import COMPONENT_BUILD, ENGINE_KEY_ANNOTATION, build_job_name, labels, object_meta
from nimify.render.placement import pod_placement
from nimify.render.pod_identity import build_pod_identity
from nimify.render.pod_security import container_security_context, pod_security_context
from nimify.render.units import ServingUnit
from nimify.settings import OperatorSettings

PVC_ROOT = "/mnt/pvc"
TERMINATION_LOG = "/dev/termination-log"


def builder_image(nim: NimService, settings: OperatorSettings) -> str:
    if nim.spec.engine.backend == Backend.ONNXRUNTIME:
        return settings.onnxruntime_builder_image
    return settings.builder_image.format(release=builder_label(nim.spec.triton.image))


def build_resources(nim: NimService, settings: OperatorSettings) -> dict[str, dict[str, Any]]:
    """Requests and memory limit of the conversion: the spec's, else the operator's defaults. Where one of
    the pair is a default, it gives way to the other: a default limit below the requested memory is raised
    to it (a larger request alone is enough), and a default request above the given limit is lowered to
    it (Kubernetes' own default for a request left out is the limit; the apiserver refuses a request above
    it)."""
    spec = nim.spec.engine.build_resources or BuildResourcesSpec()
    memory, limit = spec.memory, spec.memory_limit
    if memory is None:
        memory = settings.build_memory
        if limit is not None and quantity_value(limit) < quantity_value(memory):
            memory = limit
    if limit is None:
        default = settings.build_memory_limit
        limit = default if quantity_value(default) >= quantity_value(memory) else memory
    cpu = spec.cpu if spec.cpu is not None else settings.build_cpu
    return {"requests": {"cpu": str(cpu), "memory": str(memory)}, "limits": {"memory": str(limit)}}


def model_claim(nim: NimService) -> str | None:
    """The claim a pvc:// model lives on (mounted read-only into the Job)."""
    uri = nim.spec.the_model.uri
    return uri.removeprefix("pvc://").split("/", 1)[0] if uri.startswith("pvc://") else None


def _storage(unit: ServingUnit) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volume mounts, volumes): the engine claim, scratch space, and a pvc:// model's claim read-only."""
    mounts: list[dict[str, Any]] = [
        {"name": "engines", "mountPath": ENGINE_MOUNT},
        {"name": "work", "mountPath": "/work"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "engines", "persistentVolumeClaim": {"claimName": unit.location.claim}},
        {"name": "work", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    if claim := model_claim(unit.nimservice):
        mounts.append({"name": "model-source", "mountPath": f"{PVC_ROOT}/{claim}", "readOnly": True})
        volumes.append(
            {"name": "model-source", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
    return mounts, volumes


def convert_container(
    unit: ServingUnit, settings: OperatorSettings, mounts: list[dict[str, Any]]
) -> dict[str, Any]:
    """`nimify convert` for the unit's engine; its result goes to the termination message."""
    spec, location = unit.spec, unit.location
    resources = build_resources(unit.nimservice, settings)
    if spec.engine.backend == Backend.TENSORRT:
        resources["limits"]["nvidia.com/gpu"] = 1
    container: dict[str, Any] = {
        "name": "convert",
        "image": builder_image(unit.nimservice, settings),
        "command": ["nimify", "convert"],
        "args": [
            f"--repository={ENGINE_MOUNT}/{location.repository}",
            f"--name={REPOSITORY_MODEL_DIR}",
            f"--cache-key={location.cache_key}",
            "--work-dir=/work",
            f"--pvc-root={PVC_ROOT}",
            f"--termination-log={TERMINATION_LOG}",
        ],
        # The whole spec travels as one variable: the Job runs exactly the conversion this spec asks for.
        "env": [
            {
                "name": "NIMIFY_SPEC",
                "value": json.dumps(
                    spec.model_dump(mode="json", by_alias=True, exclude_none=True),
                    sort_keys=True,
                    separators=(",", ":"),
                ),
            },
            {"name": DENIED_RANGES_ENV, "value": json.dumps(settings.model_uri_denied_ranges)},
        ],
        "resources": resources,
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if settings.image_pull_policy:
        container["imagePullPolicy"] = settings.image_pull_policy
    if spec.the_model.credentials_secret:
        # Keys become environment variables; their values never appear in the Job spec or the logs.
        container["envFrom"] = [{"secretRef": {"name": spec.the_model.credentials_secret}}]
    return container


def render_build_job(nim: NimService, unit: ServingUnit, settings: OperatorSettings) -> dict[str, Any]:
    """The Job that builds `unit`'s engine (named from the engine: units and NimServices that need the same
    engine share it)."""
    spec, location = unit.spec, unit.location
    pod_labels = labels(nim, COMPONENT_BUILD) | settings.build_pod_labels
    mounts, volumes = _storage(unit)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        **build_pod_identity(unit.nimservice, settings),
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [convert_container(unit, settings, mounts)],
        "volumes": volumes,
        # The build lands where the replicas may run, on the GPU product asked for (render/placement.py).
        **pod_placement(
            spec,
            gpu_product=requested_gpu_product(unit.nimservice),
            tolerate_gpus=True,
            node_affinity_only=True,
        ),
    }
    name = build_job_name(location.claim, location.cache_key, location.conversion_key)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": object_meta(
            nim, name, COMPONENT_BUILD, annotations={ENGINE_KEY_ANNOTATION: location.cache_key}
        ),
        "spec": {
            "backoffLimit": settings.build_backoff_limit,
            "activeDeadlineSeconds": spec.engine.build_timeout_seconds,
            "ttlSecondsAfterFinished": settings.build_ttl_seconds,
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {ENGINE_KEY_ANNOTATION: location.cache_key},
                },
                "spec": pod_spec,
            },
        },
    }
