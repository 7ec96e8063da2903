"""What is wrong with a Triton pod, from the pod status the scheduler and kubelet write (shapes as they
write them)."""

from __future__ import annotations

from typing import Any

import pytest

from nimify.controller.pods import PodTrouble, pod_trouble, worst_trouble

UNSCHEDULABLE_GPUS = (
    "0/8 nodes are available: 2 Insufficient nvidia.com/gpu, 6 node(s) didn't match Pod's node"
    " affinity/selector. preemption: 0/8 nodes are available: 2 No preemption victims found for incoming pod,"
    " 6 Preemption is not helpful for scheduling."
)


def pod(
    *, conditions: list[dict[str, Any]] | None = None, container: dict[str, Any] | None = None, **meta: Any
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Pending" if container is None else "Running"}
    if conditions is not None:
        status["conditions"] = conditions
    if container is not None:
        status["containerStatuses"] = [
            {"name": "triton", "image": "nvcr.io/nvidia/tritonserver:25.10-py3"} | container
        ]
    return {"metadata": {"name": "mlp-7d9f-abcde", **meta}, "status": status}


def unschedulable(message: str) -> dict[str, Any]:
    return pod(
        conditions=[
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
        ]
    )


def test_no_gpu_free_is_insufficient_gpus_with_the_scheduler_s_message() -> None:
    assert pod_trouble(unschedulable(UNSCHEDULABLE_GPUS)) == PodTrouble(
        "InsufficientGpus", UNSCHEDULABLE_GPUS, "mlp-7d9f-abcde"
    )


def test_other_scheduling_failures_are_unschedulable() -> None:
    message = "0/8 nodes are available: 8 node(s) had untolerated taint {dedicated: infra}."
    trouble = pod_trouble(unschedulable(message))
    assert trouble is not None and (trouble.reason, trouble.message) == ("Unschedulable", message)


@pytest.mark.parametrize(
    ("container", "reason", "words"),
    [
        pytest.param(
            {
                "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s"}},
                "lastState": {
                    "terminated": {"exitCode": 1, "reason": "Error", "message": "failed to load all models"}
                },
            },
            "CrashLoopBackOff",
            "keeps crashing (restarts: 4, last exit code 1): failed to load all models",
            id="crash-loop",
        ),
        pytest.param(
            {
                "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
            },
            "OOMKilled",
            "more memory than its limit (restarts: 2); raise spec.resources.memory",
            id="oom-in-backoff",
        ),
        pytest.param(
            {"restartCount": 0, "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}},
            "OOMKilled",
            "more memory than its limit",
            id="oom-just-now",
        ),
        pytest.param(
            {"state": {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "x"'}}},
            "ImagePullBackOff",
            'container triton: Back-off pulling image "x"',
            id="image-pull-back-off",
        ),
        pytest.param(
            {"state": {"waiting": {"reason": "ErrImagePull"}}},
            "ImagePullBackOff",
            "cannot pull nvcr.io/nvidia/tritonserver:25.10-py3",
            id="err-image-pull",
        ),
    ],
)
def test_container_trouble(container: dict[str, Any], reason: str, words: str) -> None:
    trouble = pod_trouble(pod(container=container))
    assert trouble is not None and trouble.reason == reason
    assert words in trouble.message, trouble.message


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(pod(container={"ready": True, "state": {"running": {}}}), id="running"),
        pytest.param(pod(container={"state": {"waiting": {"reason": "ContainerCreating"}}}), id="starting"),
        pytest.param(pod(conditions=[{"type": "PodScheduled", "status": "True"}]), id="scheduled"),
        pytest.param(
            pod(
                container={"state": {"waiting": {"reason": "CrashLoopBackOff"}}},
                deletionTimestamp="2025-01-01T00:00:00Z",
            ),
            id="terminating",
        ),
        pytest.param({"metadata": {"name": "x"}}, id="no-status"),
    ],
)
def test_healthy_or_passing_states_are_no_trouble(body: dict[str, Any]) -> None:
    assert pod_trouble(body) is None


def test_one_trouble_per_nimservice_and_always_the_same_one() -> None:
    troubles = [PodTrouble("OOMKilled", "b", "mlp-b"), PodTrouble("CrashLoopBackOff", "a", "mlp-a")]
    assert worst_trouble(troubles) == worst_trouble(reversed(troubles)) == troubles[1]
    assert worst_trouble([]) is None


def test_a_replica_evicted_from_a_lost_node_names_the_node_even_while_it_terminates() -> None:
    body = pod(
        conditions=[
            {"type": "Ready", "status": "False"},
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "DeletionByTaintManager",
                "message": "Taint manager: deleting due to NoExecute taint",
            },
        ],
        container={"ready": True, "state": {"running": {}}},  # the kubelet that would say otherwise is gone
        deletionTimestamp="2025-01-01T00:00:00Z",
    )
    body["spec"] = {"nodeName": "gpu-node-3"}
    trouble = pod_trouble(body)
    assert trouble is not None and trouble.reason == "Evicted"
    assert "node gpu-node-3" in trouble.message and "NoExecute" in trouble.message
    replacement = PodTrouble("Unschedulable", "0/9 nodes are available: 1 untolerated taint(s)", "mlp-0")
    assert worst_trouble([replacement, trouble]) == trouble  # the cause, not what follows from it


def test_a_replica_the_kubelet_evicted_under_pressure_says_what_ran_short() -> None:
    body = {
        "metadata": {"name": "mlp-1"},
        "spec": {"nodeName": "n1"},
        "status": {
            "phase": "Failed",
            "reason": "Evicted",
            "message": "The node was low on resource: memory.",
        },
    }
    trouble = pod_trouble(body)
    assert (
        trouble is not None and trouble.reason == "Evicted" and "low on resource: memory" in trouble.message
    )


def _init_failed(state: dict[str, Any], last: dict[str, Any] | None = None) -> dict[str, Any]:
    status = {"name": "model-image", "image": "ghcr.io/nimify/nimify:0.1", "restartCount": 2, "state": state}
    if last is not None:
        status["lastState"] = {"terminated": last}
    return {
        "metadata": {"name": "mlp-7d9f-abcde"},
        "status": {"phase": "Pending", "initContainerStatuses": [status]},
    }


REFUSED = "ModelImageUnauthorized: oci://r.io/m@sha256:ab: the registry refused anonymous access (HTTP 401)"


@pytest.mark.parametrize(
    "body",
    [
        _init_failed({"waiting": {"reason": "CrashLoopBackOff"}}, {"exitCode": 1, "message": REFUSED}),
        _init_failed({"terminated": {"exitCode": 1, "reason": "Error", "message": REFUSED}}),
    ],
)
def test_a_failed_model_image_pull_says_why_from_the_init_container(body: dict[str, Any]) -> None:
    trouble = pod_trouble(body)
    assert trouble is not None
    assert trouble.reason == "ModelImagePullFailed"
    assert "could not pull the model image" in trouble.message and REFUSED in trouble.message


def test_a_model_image_pull_still_running_or_done_is_no_trouble() -> None:
    assert pod_trouble(_init_failed({"running": {"startedAt": "2026-01-01T00:00:00Z"}})) is None
    assert pod_trouble(_init_failed({"terminated": {"exitCode": 0, "reason": "Completed"}})) is None
