"""What is wrong with a Triton pod, read from its status as the scheduler and the kubelet report it. Pure.

The operator never reads logs or nodes: the pod's own conditions and container states say enough to name the
trouble (no GPU free, a crash loop, a killed-for-memory container, an image that cannot be pulled), and the
message is the one Kubernetes wrote.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from nimify.api.conditions import ConditionReason
from nimify.render.deployment import MODEL_IMAGE_CONTAINER

GPU_RESOURCE = "nvidia.com/gpu"
IMAGE_PULL_WAITING = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull")


@dataclass(frozen=True)
class PodTrouble:
    reason: str  # a ConditionReason value
    message: str
    pod: str

    def describe(self) -> str:
        return f"pod {self.pod}: {self.message}"


def _unschedulable(pod: dict[str, Any]) -> PodTrouble | None:
    for condition in pod.get("status", {}).get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            message = condition.get("message") or "no node fits the pod"
            reason = (
                ConditionReason.INSUFFICIENT_GPUS
                if f"Insufficient {GPU_RESOURCE}" in message
                else ConditionReason.UNSCHEDULABLE
            )
            return PodTrouble(reason.value, message, pod["metadata"].get("name", ""))
    return None


def _container_trouble(name: str, container: dict[str, Any]) -> PodTrouble | None:
    state = container.get("state") or {}
    waiting = state.get("waiting") or {}
    last = (container.get("lastState") or {}).get("terminated") or {}
    terminated = state.get("terminated") or {}
    label = f"container {container.get('name', '?')}"
    if waiting.get("reason") in IMAGE_PULL_WAITING:
        message = waiting.get("message") or f"cannot pull {container.get('image', 'the image')}"
        return PodTrouble(ConditionReason.IMAGE_PULL_BACK_OFF.value, f"{label}: {message}", name)
    if terminated.get("reason") == "OOMKilled" or (
        waiting.get("reason") == "CrashLoopBackOff" and last.get("reason") == "OOMKilled"
    ):
        restarts = container.get("restartCount", 0)
        return PodTrouble(
            ConditionReason.OOM_KILLED.value,
            f"{label} was killed for using more memory than its limit (restarts: {restarts});"
            " raise spec.resources.memory",
            name,
        )
    if waiting.get("reason") == "CrashLoopBackOff":
        exit_code = last.get("exitCode")
        detail = f", last exit code {exit_code}" if exit_code is not None else ""
        tail = (last.get("message") or "").strip()[-500:]
        message = f"{label} keeps crashing (restarts: {container.get('restartCount', 0)}{detail})"
        return PodTrouble(
            ConditionReason.CRASH_LOOP_BACK_OFF.value, f"{message}: {tail}" if tail else message, name
        )
    return None


def _evicted(pod: dict[str, Any]) -> PodTrouble | None:
    """Evicted from its node: by a NoExecute taint (kube-controller-manager's taint manager marks the pod
    DisruptionTarget before deleting it; a lost node's pods stay, terminating, until it returns) or by the
    kubelet under resource pressure (phase Failed, reason Evicted)."""
    status = pod.get("status", {})
    name, node = pod.get("metadata", {}).get("name", ""), pod.get("spec", {}).get("nodeName", "?")
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "DisruptionTarget"
            and condition.get("status") == "True"
            and condition.get("reason") == "DeletionByTaintManager"
        ):
            return PodTrouble(
                ConditionReason.EVICTED.value,
                f"evicted from node {node} by a NoExecute taint (a node that is NotReady or unreachable"
                f" has one): {condition.get('message') or 'deleted by the taint manager'}",
                name,
            )
    if status.get("phase") == "Failed" and status.get("reason") == "Evicted":
        message = status.get("message") or "the node was low on a resource"
        return PodTrouble(ConditionReason.EVICTED.value, f"evicted from node {node}: {message}", name)
    return None


def _model_image_trouble(name: str, container: dict[str, Any]) -> PodTrouble | None:
    """The model-image init container failed: its termination message (or log's tail) says why."""
    if container.get("name") != MODEL_IMAGE_CONTAINER:
        return None
    state = container.get("state") or {}
    terminated = state.get("terminated") or (container.get("lastState") or {}).get("terminated") or {}
    failed = (state.get("waiting") or {}).get("reason") == "CrashLoopBackOff" or (
        terminated and terminated.get("exitCode") not in (None, 0)
    )
    if not failed or terminated.get("reason") == "OOMKilled":
        return None
    why = (terminated.get("message") or "").strip()[-500:] or f"exit code {terminated.get('exitCode')}"
    return PodTrouble(
        ConditionReason.MODEL_IMAGE_PULL_FAILED.value,
        f"init container {MODEL_IMAGE_CONTAINER} could not pull the model image"
        f" (restarts: {container.get('restartCount', 0)}): {why}",
        name,
    )


def pod_trouble(pod: dict[str, Any]) -> PodTrouble | None:
    """The first thing keeping this pod from serving that someone must act on, or None."""
    if (trouble := _evicted(pod)) is not None:
        return trouble  # why its replacement (if any) has to start over, perhaps unschedulable
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return None  # going away: its replacement is what matters
    if (trouble := _unschedulable(pod)) is not None:
        return trouble
    status = pod.get("status", {})
    name = pod.get("metadata", {}).get("name", "")
    for container in (*(status.get("initContainerStatuses") or ()), *(status.get("containerStatuses") or ())):
        trouble = _model_image_trouble(name, container) or _container_trouble(name, container)
        if trouble is not None:
            return trouble
    return None


#: Troubles of a rollout's candidate pods that roll it back: the candidate itself fails (a crash, an OOM
#: kill, an image or model image it cannot pull). Room it cannot find (unschedulable) is the cluster's, and
#: the rollout waits instead.
ROLLBACK_TROUBLES = frozenset(
    {
        ConditionReason.CRASH_LOOP_BACK_OFF.value,
        ConditionReason.OOM_KILLED.value,
        ConditionReason.IMAGE_PULL_BACK_OFF.value,
        ConditionReason.MODEL_IMAGE_PULL_FAILED.value,
    }
)


def deployment_pod(deployment: str, pod: str) -> bool:
    """Whether `pod` is one of Deployment `deployment`'s (named DEPLOYMENT-<template hash>-<suffix>; neither
    part has a dash, so the pods of `a-canary` are not `a`'s)."""
    rest = pod.removeprefix(f"{deployment}-")
    return rest != pod and rest.count("-") == 1


def worst_trouble(troubles: Iterable[PodTrouble]) -> PodTrouble | None:
    """One trouble to report for a NimService: an eviction first (the cause of what its replacement goes
    through), then by pod name: the same one every time, not a flicker."""
    return min(
        troubles,
        key=lambda trouble: (trouble.reason != ConditionReason.EVICTED.value, trouble.pod),
        default=None,
    )
