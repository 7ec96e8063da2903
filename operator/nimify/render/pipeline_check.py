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
from nimify.render.placement import pod_placement
from nimify.render.sidecar_job import (
    job_container,
    sidecar_job,
    sidecar_pod,
    sidecar_triton_args,
    triton_sidecar,
)
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
    prepare = job_container(
        "prepare",
        nimify_image,
        settings,
        command=command,
        args=["--prepare"],
        env=env,
        volumeMounts=[engines, models, tmp],
    )
    # Started before `check` (once it listens), stopped once `check` ends.
    triton = triton_sidecar(
        spec,
        settings,
        sidecar_triton_args(spec, _CHECK_ARGS),
        [{**engines}, {**models, "readOnly": True}, {"name": "shm", "mountPath": "/dev/shm"}, tmp],
    )
    check = job_container(
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
    pod_spec = sidecar_pod(
        nim,
        settings,
        initContainers=[prepare, triton],
        containers=[check],
        volumes=[
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
    )
    name = check_job_name(unit, digest)
    return sidecar_job(nim, name, unit.location.cache_key, pod_spec, CHECK_DEADLINE_SECONDS, settings)
