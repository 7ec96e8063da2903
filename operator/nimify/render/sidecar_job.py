"""Jobs that run beside a Triton of their own: the serving image's tritonserver as a native sidecar (an init
container that keeps running), started before the Job's container and stopped when it ends, which leaves its
result in its termination message like a conversion. The pipeline check (pipeline_check.py) and the tuning
(tuning_job.py) are such Jobs; this module holds what they share. Pure."""

from __future__ import annotations

from typing import Any

from nimify.api import NimService, NimServiceSpec
from nimify.render.deployment import triton_args, triton_resources
from nimify.render.identity import COMPONENT_BUILD, ENGINE_KEY_ANNOTATION, labels, object_meta
from nimify.render.pod_identity import server_pod_identity
from nimify.render.pod_security import container_security_context, pod_security_context
from nimify.settings import OperatorSettings


def job_container(name: str, image: str, settings: OperatorSettings, **fields: Any) -> dict[str, Any]:
    container = {"name": name, "image": image, "securityContext": container_security_context(), **fields}
    if settings.image_pull_policy:
        container["imagePullPolicy"] = settings.image_pull_policy
    return container


def sidecar_triton_args(spec: NimServiceSpec, changes: dict[str, str], *extra: str) -> list[str]:
    """The Deployment's tritonserver arguments with `changes` (flag -> value) made, and `extra` after them."""

    def changed(arg: str) -> str:
        flag = arg.split("=", 1)[0]
        return f"{flag}={changes[flag]}" if flag in changes else arg

    return [*(changed(arg) for arg in triton_args(spec)), *extra]


def triton_sidecar(
    spec: NimServiceSpec, settings: OperatorSettings, args: list[str], volume_mounts: list[dict[str, Any]]
) -> dict[str, Any]:
    """The serving image's Triton as a native sidecar: the Job's container starts once it is live."""
    return job_container(
        "triton",
        spec.triton.image,
        settings,
        command=["tritonserver"],
        args=args,
        restartPolicy="Always",
        startupProbe={
            "httpGet": {"path": "/v2/health/live", "port": spec.expose.http_port},
            "periodSeconds": 2,
            "failureThreshold": 450,
            "timeoutSeconds": 5,
        },
        resources=triton_resources(spec),
        volumeMounts=volume_mounts,
    )


def sidecar_pod(nim: NimService, settings: OperatorSettings, **fields: Any) -> dict[str, Any]:
    """The pod of such a Job: never restarted, the serving pods' identity and security, `fields` added."""
    return {
        "restartPolicy": "Never",
        **server_pod_identity(nim, settings),
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        **fields,
    }


def sidecar_job(
    nim: NimService,
    name: str,
    engine_key: str,
    pod_spec: dict[str, Any],
    deadline_seconds: int,
    settings: OperatorSettings,
) -> dict[str, Any]:
    """The Job: one try, a deadline, the conversions' TTL and pod labels (so the operator watches its pod)."""
    annotations = {ENGINE_KEY_ANNOTATION: engine_key}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": object_meta(nim, name, COMPONENT_BUILD, annotations=annotations),
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline_seconds,
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
