"""A pipeline's check Job: the ensemble served by the serving image's Triton, with the configs it will serve,
against the members' ONNX models chained in ONNX Runtime (engine/pipeline_check.py). Pure.

One pod: `prepare` (the conversion image) writes the model repository into an emptyDir, linking each
member's version folder from the engine claim; Triton runs as a native sidecar (an init container that
keeps running) whose startup probe waits for the ensemble; then `check` compares and leaves its result in
its termination message, like a conversion. The pod ends when `check` does, Triton with it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from nimify.api import NimService
from nimify.engine.location import ENGINE_MOUNT, requested_gpu_product
from nimify.engine.pipeline_document import CheckDocument
from nimify.render.build_job import TERMINATION_LOG, build_resources
from nimify.render.deployment import triton_args, triton_resources
from nimify.render.identity import COMPONENT_BUILD, ENGINE_KEY_ANNOTATION, labels, object_meta
from nimify.render.placement import pod_placement
from nimify.render.pod_identity import server_pod_identity
from nimify.render.pod_security import container_security_context, pod_security_context
from nimify.render.units import ServingUnit
from nimify.settings import OperatorSettings

CHECK_REPOSITORY = "/models"
DOCUMENT_ENV = "NIMIFY_PIPELINE_CHECK"  # cli/check_pipeline.py reads it
#: How long the check may take, Triton's start included (the members' engines load first).
CHECK_DEADLINE_SECONDS = 1800


def check_job_name(unit: ServingUnit, digest: str) -> str:
    """Named from what it checks (the pipeline's configs and engines, and the check's settings)."""
    return f"nimify-pipeline-{hashlib.sha256(f'{unit.location.claim}/{digest}'.encode()).hexdigest()[:20]}"


def check_digest(unit: ServingUnit, config_hash: str) -> str:
    """What a check's verdict depends on: the members' engines (the unit's key names them), the configs
    they are served with, the Triton image and the check's settings."""
    pipeline = unit.spec.pipeline
    assert pipeline is not None
    parity = pipeline.parity.model_dump_json(by_alias=True, exclude_none=True)
    identity = f"{unit.location.cache_key}/{config_hash}/{unit.spec.triton.image}/{parity}"
    return hashlib.sha256(identity.encode()).hexdigest()[:20]


#: Triton's arguments in the check where they differ from the Deployment's: the check's repository, and a
#: server that keeps running when a model fails to load, so the check can read why and say so at once (with
#: --exit-on-error the sidecar would restart until the Job's deadline).
_CHECK_ARGS = {"--model-repository": CHECK_REPOSITORY, "--exit-on-error": "false"}


def _check_arg(arg: str) -> str:
    flag = arg.split("=", 1)[0]
    return f"{flag}={_CHECK_ARGS[flag]}" if flag in _CHECK_ARGS else arg


def _container(name: str, image: str, settings: OperatorSettings, **fields: Any) -> dict[str, Any]:
    container = {"name": name, "image": image, "securityContext": container_security_context(), **fields}
    if settings.image_pull_policy:
        container["imagePullPolicy"] = settings.image_pull_policy
    return container


def render_check_job(
    nim: NimService,
    unit: ServingUnit,
    document: CheckDocument,
    digest: str,
    settings: OperatorSettings,
    gpu_product: str | None = None,
) -> dict[str, Any]:
    """The Job that checks `unit`'s pipeline end to end before its Deployment serves it, on the GPU product
    asked for, else the one the members were built on (`gpu_product`)."""
    spec = unit.spec
    http_port = spec.expose.http_port
    env = [{"name": DOCUMENT_ENV, "value": document.to_json()}]
    engines = {"name": "engines", "mountPath": ENGINE_MOUNT, "readOnly": True}
    models = {"name": "models", "mountPath": CHECK_REPOSITORY}
    tmp = {"name": "tmp", "mountPath": "/tmp"}
    command = ["nimify", "check-pipeline", f"--engines={ENGINE_MOUNT}", f"--repository={CHECK_REPOSITORY}"]
    # The nimify image (ONNX Runtime, no TensorRT): the reference runs on the CPU, a TensorRT member's too.
    nimify_image = settings.onnxruntime_builder_image
    prepare = _container(
        "prepare",
        nimify_image,
        settings,
        command=command,
        args=["--prepare"],
        env=env,
        volumeMounts=[engines, models, tmp],
    )
    triton = _container(
        "triton",
        spec.triton.image,
        settings,
        command=["tritonserver"],
        args=[_check_arg(arg) for arg in triton_args(spec)],
        # A native sidecar: started before `check` (once it listens), stopped once `check` ends.
        restartPolicy="Always",
        startupProbe={
            "httpGet": {"path": "/v2/health/live", "port": http_port},
            "periodSeconds": 2,
            "failureThreshold": 450,
            "timeoutSeconds": 5,
        },
        resources=triton_resources(spec),
        volumeMounts=[
            {**engines},
            {**models, "readOnly": True},
            {"name": "shm", "mountPath": "/dev/shm"},
            tmp,
        ],
    )
    check = _container(
        "check",
        nimify_image,
        settings,
        command=command,
        args=[f"--url=http://127.0.0.1:{http_port}", f"--termination-log={TERMINATION_LOG}"],
        env=env,
        resources=build_resources(unit.members[0].nimservice, settings),
        volumeMounts=[engines, tmp],
        terminationMessagePath=TERMINATION_LOG,
        terminationMessagePolicy="FallbackToLogsOnError",
    )
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        **server_pod_identity(nim, settings),
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "initContainers": [prepare, triton],
        "containers": [check],
        "volumes": [
            {
                "name": "engines",
                "persistentVolumeClaim": {"claimName": unit.location.claim, "readOnly": True},
            },
            {"name": "models", "emptyDir": {"sizeLimit": "16Mi"}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
            {"name": "tmp", "emptyDir": {}},
        ],
        **pod_placement(
            spec,
            gpu_product=requested_gpu_product(nim) or gpu_product,
            tolerate_gpus=bool(spec.resources.gpus),
            node_affinity_only=True,
        ),
    }
    annotations = {ENGINE_KEY_ANNOTATION: unit.location.cache_key}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": object_meta(nim, check_job_name(unit, digest), COMPONENT_BUILD, annotations=annotations),
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": CHECK_DEADLINE_SECONDS,
            "ttlSecondsAfterFinished": settings.build_ttl_seconds,
            "template": {
                "metadata": {
                    "labels": labels(nim, COMPONENT_BUILD) | settings.build_pod_labels,
                    "annotations": annotations,
                },
                "spec": pod_spec,
            },
        },
    }
