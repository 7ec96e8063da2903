"""Part 3 of the chaos suite: data-plane faults on the real node (real Triton pods, real conversion Jobs).

- A model update whose engine cannot be built (a truncated ONNX file) while requests flow through the
  Service: the old replicas keep serving, not one request fails, the status names the build failure.
- The node lost: its kubelet stopped while a NimService serves from it and while a conversion Job has its pod
  there. The node goes NotReady, its pods are evicted (their NimServices tolerate the taints for 10 s), the
  status and an Event say so (`Evicted`, naming the node), the Job gets a new pod; when the
  kubelet is back (started as the cluster started it) the node is Ready, the Job completes and both
  NimServices serve.

The process of a Triton replica killed and a replica OOMKilled are tests/controller/test_real_pods.py's
(`test_a_killed_tritonserver_shows_in_status_and_recovers`, `test_an_oom_killed_replica_...`).

Node loss is noticed by kube-controller-manager after its node-monitor grace period, 120 s in the local
cluster (kwok nodes on a loaded machine need it); for the length of that test it runs with 30 s (restarted
with the flag, restarted as before afterwards), so the test takes about three minutes, not six.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nimify.model.digest import file_sha256
from nimify_devcluster.cluster import LocalCluster, get_json, start_component, stop_component
from nimify_devcluster.real_node import RealNodeInfo
from tests.chaos.report import ChaosReport, Figure
from tests.controller.test_real_pods import (
    HostOperator,
    Model,
    RequestLoop,
    apply,
    condition,
    first_answer,
    real_nimservice,
    service_url,
    serving_pods,
    store_models,
    wait_ready,
)
from tests.kube import ExistingCluster, eventually, fresh_namespace

pytestmark = [pytest.mark.chaos, pytest.mark.cluster, pytest.mark.real_node, pytest.mark.timeout(600)]

NODE_MONITOR_GRACE = "--node-monitor-grace-period=30s"
#: Replicas and conversion pods leave a lost node after 10 s instead of the default 300 s.
LEAVE_LOST_NODES = [
    {
        "key": f"node.kubernetes.io/{taint}",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 10,
    }
    for taint in ("unreachable", "not-ready")
]


@pytest.fixture(scope="module")
def data_plane_operator(
    cluster: ExistingCluster,
    nimservice_crd: str,
    real_node: RealNodeInfo,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[HostOperator]:
    kubeconfig = cluster.operator_kubeconfig or cluster.kubeconfig
    operator = HostOperator(kubeconfig, real_node, tmp_path_factory.mktemp("operator") / "operator.log")
    operator.start()
    yield operator
    operator.stop()


@pytest.fixture
def real(
    cluster: ExistingCluster, data_plane_operator: HostOperator
) -> Iterator[tuple[str, dict[str, Model]]]:
    with fresh_namespace(cluster, "real-chaos") as namespace:
        yield namespace, store_models(cluster, namespace)


def _local(cluster: ExistingCluster) -> LocalCluster:
    assert cluster.directory is not None, "needs the cluster this session started (its real node)"
    return LocalCluster.load(cluster.directory)


def test_a_model_update_whose_engine_cannot_build_keeps_the_old_replicas_serving(
    cluster: ExistingCluster,
    real_node: RealNodeInfo,
    real: tuple[str, dict[str, Model]],
    chaos_report: ChaosReport,
) -> None:
    namespace, models = real
    apply(cluster, namespace, real_nimservice("mlp", models["v1"], real_node))
    wait_ready(cluster, namespace, "mlp")
    (old_pod,) = serving_pods(cluster, namespace, "mlp")
    url = service_url(cluster, namespace, "mlp")
    first_answer(url, "mlp")

    # Half of v2's bytes: the digest is right (the user's own file), ONNX Runtime cannot load it.
    broken = models["v2"].path.with_name("mlp-broken.onnx")
    data = models["v2"].path.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    update = Model("pvc://models/mlp-broken.onnx", file_sha256(broken), broken)

    loop = RequestLoop(url, "mlp")
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        apply(cluster, namespace, real_nimservice("mlp", update, real_node))

        def build_failed() -> dict[str, Any] | None:
            nim = get_json(cluster, "nimservice/mlp", "-n", namespace)
            engine = condition(nim, "EngineReady")
            generation = nim["metadata"]["generation"]
            failed = engine["status"] == "False" and engine["reason"] != "BuildingEngine"
            return nim if failed and engine.get("observedGeneration") == generation else None

        nim = eventually(build_failed, timeout=180, interval=1)
        time.sleep(3)  # requests after the failure, too
    finally:
        loop.stop.set()
        thread.join(timeout=15)
    seconds = time.monotonic() - loop.started
    engine = condition(nim, "EngineReady")
    print(
        f"\n{len(loop.answers)} requests in {seconds:.0f}s while the update failed to build, "
        f"{len(loop.failures)} failed; EngineReady: {engine['reason']}: {engine['message']}"
    )
    assert not loop.failures, "\n".join(loop.timeline)
    assert len(loop.answers) >= 10
    assert engine["reason"] == "ModelTruncated", engine  # the conversion Job's own, specific reason
    assert condition(nim, "Available")["status"] == "True"
    (pod,) = serving_pods(cluster, namespace, "mlp")
    assert pod["metadata"]["uid"] == old_pod["metadata"]["uid"], "the serving replica was replaced"
    warnings = get_json(cluster, "events", "-n", namespace, "--field-selector=type=Warning")["items"]
    assert any(event["reason"] == "ModelTruncated" for event in warnings)
    chaos_report.add(
        Figure(
            "model update whose engine fails to build (truncated ONNX), requests throughout",
            len(loop.answers),
            1,
            "old replica kept serving, 0 failed requests, ModelTruncated reported",
            seconds,
        )
    )


def _node_ready(cluster: ExistingCluster, node: str) -> str:
    conditions = get_json(cluster, f"node/{node}")["status"]["conditions"]
    return str(next(c["status"] for c in conditions if c["type"] == "Ready"))


def _build_pods(cluster: ExistingCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    """The conversion pods of NimService `name`."""
    selector = f"app.kubernetes.io/component=engine-build,app.kubernetes.io/instance={name}"
    return list(get_json(cluster, "pods", "-n", namespace, "-l", selector)["items"])


def test_a_lost_node_is_reported_its_job_retried_and_service_restored_when_it_returns(
    cluster: ExistingCluster,
    real_node: RealNodeInfo,
    real: tuple[str, dict[str, Model]],
    chaos_report: ChaosReport,
    tmp_path: Path,
) -> None:
    namespace, models = real
    local = _local(cluster)
    placement = {"runtimeClassName": real_node.runtime_class, "tolerations": LEAVE_LOST_NODES}
    stop_component(local, "kube-controller-manager")
    start_component(local, "kube-controller-manager", (NODE_MONITOR_GRACE,))
    kubelet_stopped = False
    try:
        apply(cluster, namespace, real_nimservice("serving", models["v1"], real_node, placement=placement))
        wait_ready(cluster, namespace, "serving")
        first_answer(service_url(cluster, namespace, "serving"), "serving")

        stop_component(local, "kubelet")
        kubelet_stopped, lost = True, time.monotonic()
        # The node still looks Ready for the grace period: the new Job's pod is bound there and never starts.
        apply(cluster, namespace, real_nimservice("building", models["v2"], real_node, placement=placement))
        (first_build,) = eventually(
            lambda: [p for p in _build_pods(cluster, namespace, "building") if p["spec"].get("nodeName")],
            timeout=60,
        )
        eventually(lambda: _node_ready(cluster, real_node.name) != "True", timeout=120, interval=1)
        not_ready = time.monotonic() - lost

        seen: list[dict[str, Any]] = []

        def reported() -> dict[str, Any] | None:
            ready = condition(get_json(cluster, "nimservice/serving", "-n", namespace), "Ready")
            seen.append(ready)
            named = ready["reason"] == "Evicted" and f"node {real_node.name}" in ready.get("message", "")
            return ready if ready["status"] == "False" and named else None

        try:
            serving = eventually(reported, timeout=120, interval=1)
        except AssertionError:
            raise AssertionError(f"the status never named the lost node; last: {seen[-1:]}") from None
        lost_uid = first_build["metadata"]["uid"]
        retried = eventually(
            lambda: [
                p for p in _build_pods(cluster, namespace, "building") if p["metadata"]["uid"] != lost_uid
            ],
            timeout=60,
        )
        building = condition(get_json(cluster, "nimservice/building", "-n", namespace), "Ready")
        print(
            f"\nnode NotReady {not_ready:.0f}s after its kubelet stopped\n"
            f"serving: Ready={serving['status']} {serving['reason']}: {serving['message']}\n"
            f"building: Ready={building['status']} {building['reason']}: {building['message']}\n"
            f"conversion pods: {first_build['metadata']['name']} (lost), "
            f"then {retried[0]['metadata']['name']}"
        )

        def evicted_event() -> bool:
            selector = "--field-selector=involvedObject.name=serving"
            events = get_json(cluster, "events", "-n", namespace, selector)
            return any(e["reason"] == "Evicted" and real_node.name in e["message"] for e in events["items"])

        eventually(evicted_event, timeout=30)  # posted by the reconcile that wrote the status

        start_component(local, "kubelet")
        kubelet_stopped = False
        back = time.monotonic()
        eventually(lambda: _node_ready(cluster, real_node.name) == "True", timeout=120, interval=1)
        wait_ready(cluster, namespace, "serving", timeout=240)
        wait_ready(cluster, namespace, "building", timeout=240)
        restored = time.monotonic() - back
        first_answer(service_url(cluster, namespace, "serving"), "serving", timeout=60)
        first_answer(service_url(cluster, namespace, "building"), "building", timeout=60)
        (job,) = get_json(cluster, "jobs", "-n", namespace, "-l", "app.kubernetes.io/instance=building")[
            "items"
        ]
        assert job["status"].get("succeeded") == 1
    finally:
        if kubelet_stopped:
            start_component(local, "kubelet")
        eventually(lambda: _node_ready(cluster, real_node.name) == "True", timeout=120, interval=1)
        stop_component(local, "kube-controller-manager")
        start_component(local, "kube-controller-manager")
    print(f"both NimServices Ready {restored:.0f}s after the kubelet came back")
    chaos_report.add(
        Figure(
            "node NotReady (kubelet stopped) while serving and while a conversion Job ran",
            1,
            2,
            "status and Events: Evicted from the node; the Job got a new pod; both Ready on return",
            restored,
        )
    )
