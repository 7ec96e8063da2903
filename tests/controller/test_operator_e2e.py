"""The operator end to end on a real control plane: Jobs, Deployments, Services, HPAs, status, events.

Conversion pods are run for real on this machine (`BuildPodKubelet`); Triton pods are run by kwok.
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest

from nimify.render.identity import CONFIG_HASH_ANNOTATION, ENGINE_KEY_ANNOTATION
from nimify_devcluster.cluster import get_json
from tests.controller.conftest import (
    E2E,
    L4,
    OperatorProcess,
    StoredModel,
    apply,
    condition,
    jobs,
    nimservice,
    template_annotations,
    wait_ready,
)
from tests.kube import ExistingCluster, eventually

pytestmark = pytest.mark.cluster


def test_apply_builds_engine_on_the_right_gpu_and_becomes_ready(e2e: E2E) -> None:
    cluster, ns, models = e2e.cluster, e2e.namespace, e2e.models
    autoscaling = {
        "minReplicas": 1,
        "maxReplicas": 3,
        "targetCpuUtilization": 80,
        "targetQueueTimeMicroseconds": 20000,
    }
    resources = {"gpus": 1, "gpuProduct": L4, "cpu": "2", "memory": "4Gi"}
    apply(cluster, ns, nimservice("mlp", models["mlp"], autoscaling=autoscaling, resources=resources))

    job = eventually(lambda: next(iter(jobs(cluster, ns)), None))
    assert job["spec"]["template"]["spec"]["nodeSelector"]["nvidia.com/gpu.product"] == L4
    pod = eventually(
        lambda: get_json(
            cluster, "pods", "-n", ns, "-l", f"batch.kubernetes.io/job-name={job['metadata']['name']}"
        )["items"]
    )[0]
    node = eventually(
        lambda: get_json(cluster, "pod", pod["metadata"]["name"], "-n", ns)["spec"].get("nodeName")
    )
    assert get_json(cluster, "node", node)["metadata"]["labels"]["nvidia.com/gpu.product"] == L4

    wait_ready(cluster, ns, "mlp")
    nim = get_json(cluster, "nimservice/mlp", "-n", ns)
    status = nim["status"]
    assert not nim["metadata"].get("finalizers"), "deleting a NimService must not depend on the operator"
    annotations = nim["metadata"].get("annotations") or {}
    assert not [key for key in annotations if key.startswith("nimify.dev/")], "no kopf bookkeeping there"
    assert status["observedGeneration"] == nim["metadata"]["generation"]
    assert all(c["observedGeneration"] == nim["metadata"]["generation"] for c in status["conditions"])
    assert status["signature"]["inputs"] == [{"name": "input", "dtype": "FLOAT", "shape": [-1, 16]}]
    assert status["parity"]["passed"] is True
    assert status["engine"]["cacheHit"] is False
    assert status["endpoints"]["http"] == f"http://mlp.{ns}.svc:8000"
    assert status["readyReplicas"] == status["replicas"] == 1

    deployment = get_json(cluster, "deployment/mlp", "-n", ns)
    pod_spec = deployment["spec"]["template"]["spec"]
    assert pod_spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod_spec["nodeSelector"]["nvidia.com/gpu.product"] == L4
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert deployment["metadata"]["ownerReferences"][0]["kind"] == "NimService"
    assert deployment["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "nimify-operator"
    # The HPA owns replicas: the operator's field manager does not claim spec.replicas.
    managed = get_json(cluster, "deployment/mlp", "-n", ns, "--show-managed-fields")["metadata"][
        "managedFields"
    ]
    managers = {m["manager"]: json.dumps(m.get("fieldsV1", {})) for m in managed}
    assert '"f:replicas"' not in managers["nimify-operator"]

    service = get_json(cluster, "service/mlp", "-n", ns)
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "http": 8000,
        "grpc": 8001,
        "metrics": 8002,
    }
    hpa = get_json(cluster, "hpa/mlp", "-n", ns)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "mlp"}
    assert {m["type"] for m in hpa["spec"]["metrics"]} == {"Resource", "Pods"}

    def able_to_scale() -> bool:
        conditions = get_json(cluster, "hpa/mlp", "-n", ns).get("status", {}).get("conditions", [])
        return any(c["type"] == "AbleToScale" and c["status"] == "True" for c in conditions)

    eventually(able_to_scale, timeout=90)  # the HPA controller resolved scaleTargetRef through /scale

    events = get_json(cluster, "events", "-n", ns, "--field-selector=involvedObject.kind=NimService")["items"]
    # One event per meaningful transition: the engine is ready, the NimService serves; and, this cluster
    # serving no metrics API, the autoscaler's missing metric (a Warning: Ready, but it cannot scale).
    assert sorted(e["reason"] for e in events) == ["EngineBuilt", "MetricUnavailable", "Serving"]
    printed = cluster.kubectl("get", "nimservices", "-n", ns).stdout
    assert "True" in printed and "Serving" in printed

    metrics = e2e.operator.metrics()
    assert 'nimify_engine_builds_total{outcome="started"}' in metrics
    assert 'nimify_engine_builds_total{outcome="succeeded"}' in metrics
    assert 'nimify_nimservices{ready="True"}' in metrics
    assert "nimify_reconcile_duration_seconds_count" in metrics


def test_second_nimservice_with_the_same_engine_reuses_it_without_a_job(e2e: E2E) -> None:
    cluster, ns, models = e2e.cluster, e2e.namespace, e2e.models
    apply(cluster, ns, nimservice("first", models["mlp"]))
    wait_ready(cluster, ns, "first")
    apply(
        cluster,
        ns,
        nimservice(
            "second",
            models["mlp"],
            model={"uri": models["mlp"].uri, "sha256": models["mlp"].sha256, "name": "classifier"},
        ),
    )
    wait_ready(cluster, ns, "second")
    assert len(jobs(cluster, ns)) == 1
    engine = condition(cluster, ns, "second", "EngineReady")
    assert engine is not None and engine["reason"] == "EngineCacheHit"
    assert get_json(cluster, "nimservice/second", "-n", ns)["status"]["engine"]["cacheHit"] is True
    first_key = template_annotations(cluster, ns, "first")
    second_key = template_annotations(cluster, ns, "second")
    assert first_key[ENGINE_KEY_ANNOTATION] == second_key[ENGINE_KEY_ANNOTATION]


def test_failing_job_is_reported_and_fixing_the_spec_recovers(e2e: E2E) -> None:
    cluster, ns, models = e2e.cluster, e2e.namespace, e2e.models
    wrong = StoredModel(models["mlp"].uri, "0" * 64)
    apply(cluster, ns, nimservice("broken", wrong))

    def engine_failed() -> dict[str, Any] | None:
        found = condition(cluster, ns, "broken", "EngineReady")
        return found if found and found["status"] == "False" and found["reason"] != "BuildingEngine" else None

    engine = eventually(engine_failed, timeout=120)
    assert engine["reason"] == "ChecksumMismatch", engine
    assert "sha256" in engine["message"].lower() or "digest" in engine["message"].lower(), engine["message"]
    ready = condition(cluster, ns, "broken", "Ready")
    assert ready is not None and ready["status"] == "False"
    stalled = condition(cluster, ns, "broken", "Stalled")
    assert stalled is not None and stalled["status"] == "True"
    warnings = get_json(
        cluster, "events", "-n", ns, "--field-selector=type=Warning,involvedObject.name=broken"
    )
    assert any(e["reason"] == "ChecksumMismatch" for e in warnings["items"])

    apply(cluster, ns, nimservice("broken", models["mlp"]))
    wait_ready(cluster, ns, "broken")


def test_editing_triton_settings_rolls_the_deployment_without_a_rebuild(e2e: E2E) -> None:
    cluster, ns, models = e2e.cluster, e2e.namespace, e2e.models
    apply(cluster, ns, nimservice("svc", models["mlp"]))
    wait_ready(cluster, ns, "svc")
    before = template_annotations(cluster, ns, "svc")

    apply(
        cluster,
        ns,
        nimservice(
            "svc",
            models["mlp"],
            triton={"dynamicBatching": {"maxQueueDelayMicroseconds": 500, "preferredBatchSizes": [4, 8]}},
        ),
    )

    def rolled() -> dict[str, str] | None:
        annotations = template_annotations(cluster, ns, "svc")
        return annotations if annotations[CONFIG_HASH_ANNOTATION] != before[CONFIG_HASH_ANNOTATION] else None

    after = eventually(rolled)
    assert after[ENGINE_KEY_ANNOTATION] == before[ENGINE_KEY_ANNOTATION]
    config = get_json(cluster, "configmap/svc-triton-config", "-n", ns)["data"]["config.pbtxt"]
    assert "max_queue_delay_microseconds: 500" in config
    assert len(jobs(cluster, ns)) == 1
    wait_ready(cluster, ns, "svc")


def test_model_change_builds_a_new_engine_while_the_old_one_keeps_serving(e2e: E2E) -> None:
    cluster, ns, models = e2e.cluster, e2e.namespace, e2e.models
    apply(cluster, ns, nimservice("swap", models["mlp"], replicas=2))
    wait_ready(cluster, ns, "swap")
    old_key = template_annotations(cluster, ns, "swap")[ENGINE_KEY_ANNOTATION]

    e2e.builds.hold.set()
    try:
        apply(cluster, ns, nimservice("swap", models["cnn"], replicas=2))
        eventually(lambda: len(jobs(cluster, ns)) == 2)
        ready = eventually(
            lambda: (c := condition(cluster, ns, "swap", "Ready")) and c["reason"] == "BuildingEngine"
        )
        assert ready
        time.sleep(3)  # give a wrong operator every chance to touch the serving Deployment
        deployment = get_json(cluster, "deployment/swap", "-n", ns)
        assert deployment["spec"]["template"]["metadata"]["annotations"][ENGINE_KEY_ANNOTATION] == old_key
        assert deployment["status"]["availableReplicas"] == 2
        available = condition(cluster, ns, "swap", "Available")
        assert available is not None and available["status"] == "True"
    finally:
        e2e.builds.hold.clear()
    wait_ready(cluster, ns, "swap")
    new_key = template_annotations(cluster, ns, "swap")[ENGINE_KEY_ANNOTATION]
    assert new_key != old_key
    assert get_json(cluster, "nimservice/swap", "-n", ns)["status"]["signature"]["inputs"][0]["shape"][
        1:
    ] == [3, -1, -1]


def test_deleting_the_nimservice_removes_every_child(e2e: E2E) -> None:
    cluster, ns, models = e2e.cluster, e2e.namespace, e2e.models
    apply(cluster, ns, nimservice("gone", models["mlp"], replicas=2, storage={"size": "5Gi"}))
    wait_ready(cluster, ns, "gone")
    selector = "app.kubernetes.io/instance=gone"
    kinds = "deployments,replicasets,pods,services,configmaps,jobs,pvc,pdb,hpa"
    assert get_json(cluster, kinds, "-n", ns, "-l", selector)["items"]
    cluster.kubectl("delete", "nimservice/gone", "-n", ns, "--wait=true", "--timeout=60s")
    eventually(lambda: not get_json(cluster, kinds, "-n", ns, "-l", selector)["items"], timeout=90)


def test_a_conversion_pod_that_leaves_no_result_stalls_with_its_own_reason(e2e: E2E) -> None:
    """A Job that completes although its pod wrote no result (its command overridden, or run on a node that
    runs no containers) was BuildingEngine forever; the pod's status is reported here as that node would."""
    cluster, ns, models = e2e.cluster, e2e.namespace, e2e.models
    e2e.builds.hold.set()
    try:
        apply(cluster, ns, nimservice("silent", models["mlp"]))
        (job,) = eventually(lambda: jobs(cluster, ns), what="the conversion Job")
        name = job["metadata"]["name"]
        pod = eventually(
            lambda: next(iter(get_json(cluster, "pods", "-n", ns, "-l", f"job-name={name}")["items"]), None),
            what="the conversion pod",
        )
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        terminated = {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}
        status = {
            "phase": "Succeeded",
            "startTime": now,
            "containerStatuses": [
                {
                    "name": "convert",
                    "image": pod["spec"]["containers"][0]["image"],
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": terminated},
                }
            ],
        }
        cluster.kubectl(
            "patch", "pod", pod["metadata"]["name"], "-n", ns, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}),
        )  # fmt: skip
        stalled = eventually(
            lambda: (c := condition(cluster, ns, "silent", "Stalled")) and c["status"] == "True" and c,
            what="Stalled=True",
        )
    finally:
        e2e.builds.hold.clear()
    assert stalled["reason"] == "EngineResultMissing" and name in stalled["message"], stalled
    ready = condition(cluster, ns, "silent", "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "EngineResultMissing")
    warnings = get_json(
        cluster, "events", "-n", ns, "--field-selector=type=Warning,reason=EngineResultMissing"
    )
    assert [event["involvedObject"]["name"] for event in warnings["items"]] == ["silent"]


def test_kubectl_scale_changes_the_deployment_when_autoscaling_is_off(e2e: E2E) -> None:
    cluster, ns, models = e2e.cluster, e2e.namespace, e2e.models
    apply(cluster, ns, nimservice("scaled", models["mlp"]))
    wait_ready(cluster, ns, "scaled")
    cluster.kubectl("scale", "nimservice/scaled", "-n", ns, "--replicas=3")
    eventually(lambda: get_json(cluster, "deployment/scaled", "-n", ns)["spec"]["replicas"] == 3)
    eventually(lambda: get_json(cluster, "nimservice/scaled", "-n", ns)["status"].get("readyReplicas") == 3)
    assert get_json(cluster, "pdb/scaled", "-n", ns)["spec"]["maxUnavailable"] == 1


def test_turning_autoscaling_on_hands_replicas_to_the_hpa_without_a_scale_down(e2e: E2E) -> None:
    cluster, ns, models = e2e.cluster, e2e.namespace, e2e.models
    resources = {"gpus": 1, "gpuProduct": L4, "cpu": "1"}
    apply(cluster, ns, nimservice("grow", models["mlp"], replicas=3, resources=resources))
    wait_ready(cluster, ns, "grow")
    autoscaling = {"minReplicas": 1, "maxReplicas": 4, "targetCpuUtilization": 80}
    apply(cluster, ns, nimservice("grow", models["mlp"], autoscaling=autoscaling, resources=resources))
    eventually(lambda: get_json(cluster, "hpa", "-n", ns)["items"])
    time.sleep(3)
    deployment = get_json(cluster, "deployment/grow", "-n", ns, "--show-managed-fields")
    assert deployment["spec"]["replicas"] == 3, (
        "the replicas that serve must survive the hand-over to the HPA"
    )
    ours = next(m for m in deployment["metadata"]["managedFields"] if m["manager"] == "nimify-operator")
    assert '"f:replicas"' not in json.dumps(ours.get("fieldsV1", {}))


def test_operator_killed_after_creating_a_job_converges_without_a_duplicate(e2e: E2E) -> None:
    cluster, ns, models = e2e.cluster, e2e.namespace, e2e.models
    e2e.builds.hold.set()
    try:
        apply(cluster, ns, nimservice("restart", models["cnn"]))
        eventually(lambda: len(jobs(cluster, ns)) == 1)
        e2e.operator.stop(signal.SIGKILL)
        e2e.operator.start()
        time.sleep(5)  # resume handlers and child watches have run by now
        assert len(jobs(cluster, ns)) == 1
    finally:
        e2e.builds.hold.clear()
    wait_ready(cluster, ns, "restart")
    assert len(jobs(cluster, ns)) == 1


def test_spec_the_apiserver_accepts_but_cannot_work_is_stalled_with_the_field_named(e2e: E2E) -> None:
    cluster, ns, models = e2e.cluster, e2e.namespace, e2e.models
    impossible = nimservice(
        "bf16-on-t4",
        models["mlp"],
        engine={"precision": "bf16"},
        resources={"gpus": 1, "gpuProduct": "Tesla-T4"},
    )
    apply(cluster, ns, impossible)
    stalled = eventually(
        lambda: (c := condition(cluster, ns, "bf16-on-t4", "Stalled")) and c["status"] == "True" and c
    )
    assert stalled["reason"] == "InvalidSpec"
    assert "spec.engine.precision" in stalled["message"] and "7.5" in stalled["message"]
    ready = condition(cluster, ns, "bf16-on-t4", "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    events = get_json(cluster, "events", "-n", ns, "--field-selector=type=Warning,reason=InvalidSpec")[
        "items"
    ]
    assert events and all("spec.engine.precision" in event["message"] for event in events)
    assert jobs(cluster, ns) == []


def test_paused_nimservice_keeps_what_runs_and_resumes(e2e: E2E) -> None:
    cluster, ns, models = e2e.cluster, e2e.namespace, e2e.models
    apply(cluster, ns, nimservice("held", models["mlp"]))
    wait_ready(cluster, ns, "held")
    before = template_annotations(cluster, ns, "held")
    batching = {"dynamicBatching": {"maxQueueDelayMicroseconds": 900}}
    apply(cluster, ns, nimservice("held", models["mlp"], paused=True, triton=batching))
    eventually(lambda: (c := condition(cluster, ns, "held", "Reconciling")) and c["reason"] == "Paused")
    time.sleep(3)
    annotations = template_annotations(cluster, ns, "held")
    assert annotations[CONFIG_HASH_ANNOTATION] == before[CONFIG_HASH_ANNOTATION], "paused: children untouched"

    apply(cluster, ns, nimservice("held", models["mlp"], paused=False, triton=batching))
    eventually(
        lambda: (
            template_annotations(cluster, ns, "held")[CONFIG_HASH_ANNOTATION]
            != before[CONFIG_HASH_ANNOTATION]
        )
    )
    wait_ready(cluster, ns, "held")


READ_VERBS = ("get", "list", "watch")  # the audit log has the operator's reads too


def _operator_audit_writes(cluster: ExistingCluster, since: float) -> list[dict[str, Any]]:
    assert cluster.audit_log is not None
    writes = []
    for line in cluster.audit_log.read_text().splitlines():
        event = json.loads(line)
        if event.get("user", {}).get("username") != "nimify-operator" or event["verb"] in READ_VERBS:
            continue
        stamp = time.mktime(time.strptime(event["stageTimestamp"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
        if stamp >= since:
            writes.append(
                {
                    "verb": event["verb"],
                    "uri": event["requestURI"],
                    "code": event.get("responseStatus", {}).get("code"),
                }
            )
    return writes


def test_steady_state_sends_no_writes(e2e: E2E) -> None:
    cluster, ns, models = e2e.cluster, e2e.namespace, e2e.models
    services = [nimservice(f"steady-{i:02d}", models["mlp"], resources={"gpus": 0}) for i in range(20)]
    apply(cluster, ns, *services)
    for service in services:
        wait_ready(cluster, ns, service["metadata"]["name"], timeout=180)
    # Earlier tests' namespaces are still being deleted, which is work, not steady state: wait them out.
    eventually(
        lambda: (
            [
                n["metadata"]["name"]
                for n in get_json(cluster, "namespaces")["items"]
                if n["metadata"]["name"].startswith("e2e-")
            ]
            == [ns]
        ),
        timeout=180,
    )
    # The last status patches and events land (the status batching window is 30 s): wait until the operator
    # has written nothing for 15 s, however long a loaded machine takes to get there.
    wait_quiet(e2e.operator, quiet_seconds=15, timeout=180)
    counted_before, started = e2e.operator.writes(), time.time()
    time.sleep(40)  # four resync periods of NIMIFY_RESYNC_SECONDS=10, past the 30 s status batching window
    counted = e2e.operator.writes() - counted_before
    audited = _operator_audit_writes(cluster, started + 1) if cluster.audit_log is not None else []
    assert (counted, audited) == (0, []), (
        f"the operator wrote in steady state: {counted} counted, {audited[:10]}"
    )
    assert len(jobs(cluster, ns)) == 1


def wait_quiet(operator: OperatorProcess, quiet_seconds: float, timeout: float) -> None:
    """Until the operator's write counter has not moved for `quiet_seconds` (at most `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    last, since = operator.writes(), time.monotonic()
    while time.monotonic() - since < quiet_seconds:
        assert time.monotonic() < deadline, (
            f"the operator kept writing for {timeout:g}s (no {quiet_seconds:g}s without a write); "
            f"writes counted: {last:g}"
        )
        time.sleep(1)
        if (now := operator.writes()) != last:
            last, since = now, time.monotonic()
