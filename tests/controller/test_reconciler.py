"""The Reconciler against an in-memory cluster: the desired set, the one writer pass, deletion of what is no
longer wanted, drift, refusals and the status they leave. No control plane, so every case runs in
milliseconds; the e2e tests check the same behaviour against a real apiserver."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from nimify.controller import metrics
from nimify.controller.desired import unused_shared_claim
from nimify.controller.reconcile import STATUS_BATCH_SECONDS, Reconciler, merge_patch, retry_delay
from nimify.controller.writes import RECENT_SECONDS, RecentWrites
from nimify.engine.location import engine_location
from nimify.render.identity import build_job_name
from nimify.settings import OperatorSettings
from tests.controller.memory_cluster import MemoryCluster
from tests.render.conftest import MODEL_SHA256, MODEL_URI, NAME, NAMESPACE, UID, merged, nimservice

SETTINGS = OperatorSettings(engine_cache_claim="nimify-engines", resync_seconds=60)
T = datetime(2025, 1, 1, tzinfo=UTC)
SIGNATURE = {
    "inputs": [{"name": "images", "dtype": "FLOAT", "shape": [-1, 3, 224, 224]}],
    "outputs": [{"name": "logits", "dtype": "FLOAT", "shape": [-1, 1000]}],
}
ONNXRUNTIME = {"engine": {"backend": "onnxruntime"}, "resources": {"gpus": 1, "gpuProduct": "NVIDIA-L4"}}
AUTOSCALING = {"minReplicas": 1, "maxReplicas": 4, "targetGpuUtilization": 70}
TRITON = ("spec", "template", "spec", "containers", {"name": "triton"})


def served_status(spec: dict[str, Any]) -> dict[str, Any]:
    """The status of a NimService whose engine for `spec` is built (so the reconcile deploys it)."""
    location = engine_location(nimservice(spec), SETTINGS)
    return {
        "engine": {
            "cacheKey": location.cache_key,
            "location": f"{location.claim}/{location.repository}",
            "maxBatchSize": 8,
            "cacheHit": False,
        },
        "signature": SIGNATURE,
        "conditions": [
            {
                "type": "EngineReady",
                "status": "True",
                "reason": "EngineBuilt",
                "message": "",
                "lastTransitionTime": "2025-01-01T00:00:00Z",
            }
        ],
    }


class Harness:
    """One NimService, the in-memory cluster, and a Reconciler; the watch is played by copying bodies."""

    def __init__(self, spec: dict[str, Any] | None = None, *, built: bool = True) -> None:
        self.cluster = MemoryCluster(NAMESPACE)
        self.spec = merged(ONNXRUNTIME, spec or {})
        self.body: dict[str, Any] = {
            "apiVersion": "nimify.dev/v1alpha1",
            "kind": "NimService",
            "metadata": {
                "name": NAME,
                "namespace": NAMESPACE,
                "uid": UID,
                "generation": 1,
                "resourceVersion": "1",
            },
            "spec": merged({"model": {"uri": MODEL_URI, "sha256": MODEL_SHA256}}, self.spec),
            "status": served_status(self.spec) if built else {},
        }
        self.reconciler = Reconciler(self.cluster, SETTINGS, clock=lambda: T)

    async def reconcile(self) -> float | None:
        delay = await self.reconciler.reconcile(copy.deepcopy(self.body), self.cluster.observed())
        for patch in self.cluster.status_patches:
            self.body["status"] = _merge_patch_into(self.body.get("status") or {}, patch)
            self.body["metadata"]["resourceVersion"] = str(int(self.body["metadata"]["resourceVersion"]) + 1)
        self.cluster.status_patches.clear()
        return delay

    async def converge(self) -> None:
        """Reconcile and let the Deployment controller roll out, until a reconcile writes nothing."""
        for _ in range(5):
            self.cluster.forget_calls()
            await self.reconcile()
            if self.cluster.get("Deployment", NAME) is not None:
                self.cluster.roll_out(NAME)
            if not self.cluster.writes():
                return
        raise AssertionError(f"still writing: {self.cluster.writes()}")

    def set_spec(self, changes: dict[str, Any]) -> None:
        self.spec = merged(self.spec, changes)
        self.body["spec"] = merged({"model": {"uri": MODEL_URI, "sha256": MODEL_SHA256}}, self.spec)
        self.body["metadata"]["generation"] += 1

    def condition(self, kind: str) -> dict[str, Any]:
        return next(c for c in self.body["status"]["conditions"] if c["type"] == kind)

    def verbs(self) -> list[tuple[str, str]]:
        return [(call.verb, call.kind) for call in self.cluster.writes()]


def _merge_patch_into(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge_patch_into(result[key], value)
        else:
            result[key] = value
    return result


# --- the desired set and zero writes ------------------------------------------------------------------------


async def test_a_built_engine_is_deployed_and_then_nothing_is_written() -> None:
    h = Harness({"replicas": 2})
    await h.reconcile()
    assert set(h.verbs()) >= {
        ("apply", "ConfigMap"),
        ("apply", "Deployment"),
        ("apply", "Service"),
        ("apply", "PodDisruptionBudget"),
        ("status", "NimService"),
    }
    assert h.cluster.get("HorizontalPodAutoscaler", NAME) is None
    h.cluster.roll_out(NAME)
    await h.converge()
    assert h.condition("Ready")["status"] == "True"
    h.cluster.forget_calls()
    for _ in range(3):
        await h.reconcile()
    assert h.cluster.calls == [], "a NimService whose children match its spec costs no request"


async def test_a_missing_engine_creates_the_job_and_keeps_serving_children_for_later() -> None:
    h = Harness(built=False)
    await h.reconcile()
    assert ("create", "Job") in h.verbs()
    assert ("apply", "Service") in h.verbs()
    assert not {kind for verb, kind in h.verbs() if kind in ("Deployment", "ConfigMap")}
    assert h.condition("Ready")["reason"] == "BuildingEngine"


async def test_a_job_someone_else_just_created_is_no_failure() -> None:
    h = Harness(built=False)
    location = engine_location(nimservice(h.spec), SETTINGS)
    job = build_job_name(location.claim, location.cache_key, location.conversion_key)
    await h.cluster.create({"kind": "Job", "metadata": {"name": job, "namespace": NAMESPACE}})
    started = metrics.ENGINE_BUILDS.labels(outcome="started")._value.get()
    observed = h.cluster.observed()
    observed.children = {**observed.children, "Job": {}}  # the other NimService's Job is not in our watch yet
    h.cluster.forget_calls()
    await h.reconciler.reconcile(copy.deepcopy(h.body), observed)
    assert ("create", "Job") in h.verbs()
    assert metrics.ENGINE_BUILDS.labels(outcome="started")._value.get() == started
    ready = next(c for c in h.cluster.status_patches[-1]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "BuildingEngine", "an existing Job means the engine is being built"


# --- children no longer wanted ------------------------------------------------------------------------------


async def test_autoscaling_on_hands_replicas_over_and_off_deletes_the_hpa() -> None:
    h = Harness({"replicas": 3})
    await h.converge()
    h.set_spec({"replicas": None, "autoscaling": AUTOSCALING})
    h.cluster.forget_calls()
    await h.reconcile()
    assert h.verbs().index(("handover", "Deployment")) < h.verbs().index(("apply", "Deployment"))
    assert h.cluster.live("Deployment", NAME)["spec"]["replicas"] == 3, "no scale-down in the hand-over"
    assert h.cluster.get("HorizontalPodAutoscaler", NAME) is not None
    await h.converge()
    h.cluster.edit("Deployment", NAME, ("spec", "replicas"), 4, manager="kube-controller-manager")
    h.cluster.roll_out(NAME)
    h.cluster.forget_calls()
    await h.reconcile()
    assert h.cluster.writes() == [c for c in h.cluster.writes() if c.kind == "NimService"], (
        "the HPA's replica count is not nimify's to revert"
    )

    h.set_spec({"autoscaling": None, "replicas": 2})
    h.cluster.forget_calls()
    await h.reconcile()
    assert h.verbs()[0] == ("delete", "HorizontalPodAutoscaler"), "what is unwanted goes first"
    assert h.cluster.get("HorizontalPodAutoscaler", NAME) is None
    assert h.cluster.live("Deployment", NAME)["spec"]["replicas"] == 2


async def test_autoscaling_off_without_replicas_keeps_the_count_the_hpa_left() -> None:
    h = Harness({"autoscaling": AUTOSCALING})
    await h.converge()
    h.cluster.edit("Deployment", NAME, ("spec", "replicas"), 3, manager="kube-controller-manager")
    h.set_spec({"autoscaling": None})
    await h.converge()
    assert h.cluster.get("HorizontalPodAutoscaler", NAME) is None
    assert h.cluster.live("Deployment", NAME)["spec"]["replicas"] == 3
    assert "replicas" not in h.cluster.live("Deployment", NAME)["metadata"]["managedFields"][-1][
        "fieldsV1"
    ].get("f:spec", {})


async def test_fewer_replicas_delete_the_disruption_budget() -> None:
    h = Harness({"replicas": 3})
    await h.converge()
    assert h.cluster.get("PodDisruptionBudget", NAME) is not None
    h.set_spec({"replicas": 1})
    await h.converge()
    assert h.cluster.get("PodDisruptionBudget", NAME) is None
    assert h.cluster.live("Deployment", NAME)["spec"]["replicas"] == 1


async def test_dropping_replicas_from_the_spec_keeps_the_running_count() -> None:
    h = Harness({"replicas": 3})
    await h.converge()
    h.set_spec({"replicas": None})
    h.cluster.forget_calls()
    await h.reconcile()
    assert ("handover", "Deployment") in h.verbs()
    assert h.cluster.live("Deployment", NAME)["spec"]["replicas"] == 3


async def test_routes_come_and_go_with_the_spec_and_show_in_endpoints() -> None:
    h = Harness()
    await h.converge()
    h.set_spec({"expose": {"ingress": {"host": "mlp.example.com", "tlsSecret": "mlp-tls"}}})
    await h.converge()
    ingress = h.cluster.get("Ingress", NAME)
    assert ingress is not None and ingress["spec"]["tls"][0]["secretName"] == "mlp-tls"
    assert h.body["status"]["endpoints"]["external"] == "mlp.example.com"

    route = {"host": "mlp.example.com", "gatewayRef": {"name": "public", "namespace": "gateways"}}
    h.set_spec({"expose": {"ingress": None, "httpRoute": route}})
    await h.converge()
    assert h.cluster.get("Ingress", NAME) is None
    assert h.cluster.live("HTTPRoute", NAME)["spec"]["parentRefs"] == [
        {"name": "public", "namespace": "gateways"}
    ]

    h.set_spec({"expose": {"httpRoute": None}})
    await h.converge()
    assert h.cluster.get("HTTPRoute", NAME) is None
    assert "external" not in h.body["status"]["endpoints"], "the status patch removes what is gone"


async def test_an_object_this_nimservice_does_not_control_is_never_deleted() -> None:
    h = Harness()
    await h.converge()
    h.cluster.put(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": NAME, "labels": {"app.kubernetes.io/managed-by": "nimify-operator"}},
            "spec": {},
        }
    )
    h.cluster.forget_calls()
    await h.reconcile()
    assert h.cluster.get("Ingress", NAME) is not None
    assert h.cluster.writes() == []


async def test_a_dedicated_claim_goes_once_the_deployment_stops_mounting_it() -> None:
    h = Harness({"storage": {"size": "5Gi"}})
    await h.converge()
    assert h.cluster.get("PersistentVolumeClaim", f"{NAME}-engines") is not None
    # The spec moves to the shared cache: a new engine builds there while the old one keeps serving.
    h.set_spec({"storage": None})
    h.body["status"] = {"conditions": h.body["status"]["conditions"]}
    await h.reconcile()
    assert h.cluster.get("PersistentVolumeClaim", f"{NAME}-engines") is not None, "still mounted"
    h.body["status"] = served_status(h.spec) | {"conditions": h.body["status"]["conditions"]}
    await h.reconcile()  # the new engine is ready: the Deployment moves to the shared claim
    await h.reconcile()
    assert h.cluster.get("PersistentVolumeClaim", f"{NAME}-engines") is None


# --- paused -------------------------------------------------------------------------------------------------


async def test_paused_writes_nothing_but_status() -> None:
    h = Harness({"replicas": 2})
    await h.converge()
    h.set_spec({"paused": True, "replicas": 1, "expose": {"ingress": {"host": "a.example.com"}}})
    h.cluster.forget_calls()
    await h.reconcile()
    assert {kind for _, kind in h.verbs()} == {"NimService"}
    assert h.condition("Reconciling")["reason"] == "Paused"
    assert h.cluster.get("PodDisruptionBudget", NAME) is not None


# --- drift --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        pytest.param("Deployment", (*TRITON, "image"), "evil/image:1", id="set-image"),
        pytest.param("Deployment", ("metadata", "labels", "app.kubernetes.io/instance"), "other", id="label"),
        pytest.param("Deployment", (*TRITON, "readinessProbe", "periodSeconds"), 60, id="probe"),
        pytest.param("Deployment", (*TRITON, "livenessProbe"), None, id="probe-removed"),
        pytest.param("Service", ("spec", "type"), "NodePort", id="service-type"),
        pytest.param("ConfigMap", ("data", "config.pbtxt"), "garbage", id="config"),
    ],
)
async def test_edits_of_what_nimify_sets_are_reverted(kind: str, path: tuple[Any, ...], value: Any) -> None:
    h = Harness({"replicas": 2})
    await h.converge()
    name = f"{NAME}-triton-config" if kind == "ConfigMap" else NAME
    desired = copy.deepcopy(h.cluster.live(kind, name))
    h.cluster.edit(kind, name, path, value)
    corrections = metrics.DRIFT_CORRECTIONS.labels(kind=kind)._value.get()
    h.cluster.forget_calls()
    await h.reconcile()
    assert [verb for verb in h.verbs() if verb[1] != "NimService"] == [("apply", kind)]
    live = h.cluster.live(kind, name)
    content = "data" if kind == "ConfigMap" else "spec"
    assert live[content] == desired[content]
    assert live["metadata"]["labels"] == desired["metadata"]["labels"]
    assert metrics.DRIFT_CORRECTIONS.labels(kind=kind)._value.get() == corrections + 1
    h.cluster.roll_out(NAME)  # an edited template rolls; so does the reverted one
    await h.reconcile()
    h.cluster.forget_calls()
    await h.reconcile()
    assert h.cluster.calls == []


async def test_a_renumbered_service_port_is_removed_before_the_apply() -> None:
    h = Harness()
    await h.converge()
    h.cluster.edit("Service", NAME, ("spec", "ports", {"port": 8000, "protocol": "TCP"}, "port"), 9000)
    h.cluster.forget_calls()
    await h.reconcile()
    assert h.verbs() == [("remove", "Service"), ("apply", "Service")]
    assert h.cluster.writes()[0].detail == ["/spec/ports/0"]
    assert [p["port"] for p in h.cluster.live("Service", NAME)["spec"]["ports"]] == [8000, 8001, 8002]


async def test_fields_nimify_does_not_set_are_left_alone() -> None:
    h = Harness({"replicas": 2})
    await h.converge()
    h.cluster.edit("Deployment", NAME, ("metadata", "annotations", "example.com/owner"), "team-a")
    h.cluster.edit("Service", NAME, ("spec", "clusterIP"), "10.96.0.10", manager="kube-apiserver")
    h.cluster.forget_calls()
    await h.reconcile()
    assert h.cluster.calls == []


# --- refusals -----------------------------------------------------------------------------------------------


async def test_a_refused_child_is_reported_retried_with_backoff_and_recovers() -> None:
    h = Harness({"replicas": 2})
    await h.converge()
    h.cluster.refuse("Deployment", 'ValidatingAdmissionPolicy "no-evil" denied request: images must be ours')
    h.set_spec(
        {
            "triton": {"image": "nvcr.io/nvidia/tritonserver:25.11-py3"},
            "expose": {"ingress": {"host": "mlp.example.com"}},
        }
    )
    h.cluster.forget_calls()
    first = await h.reconcile()
    ready = h.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ChildRejected")
    assert "Deployment resnet50 was refused" in ready["message"] and "images must be ours" in ready["message"]
    assert h.condition("Stalled")["status"] == "True"
    assert ("Warning", "ChildRejected") in [(kind, reason) for kind, reason, _ in h.cluster.events]
    assert ("apply", "Ingress") in h.verbs(), "a refusal does not stop the other children"
    second = await h.reconcile()
    assert (first, second) == (5.0, 10.0)
    assert len([e for e in h.cluster.events if e[1] == "ChildRejected"]) == 1, "one event, not one per retry"

    h.cluster.refusals.clear()
    assert await h.reconcile() is None
    h.cluster.roll_out(NAME)
    await h.reconcile()
    assert h.condition("Ready")["status"] == "True"
    assert h.condition("Stalled")["status"] == "False"
    assert ("Normal", "Serving") in [(kind, reason) for kind, reason, _ in h.cluster.events]


async def test_a_refused_job_fails_the_engine() -> None:
    h = Harness(built=False)
    h.cluster.refuse("Job", 'jobs "x" is forbidden: exceeded quota: compute, requested: limits.memory=16Gi')
    await h.reconcile()
    engine = h.condition("EngineReady")
    assert (engine["status"], engine["reason"]) == ("False", "ChildRejected")
    assert "exceeded quota" in engine["message"]


async def test_a_route_without_the_gateway_api_says_so() -> None:
    h = Harness({"expose": {"httpRoute": {"host": "a.example.com", "gatewayRef": {"name": "gw"}}}})
    h.cluster.refuse("HTTPRoute", "404 page not found", code=404, bare=True)
    await h.reconcile()
    ready = h.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "GatewayApiMissing")
    assert "gateway.networking.k8s.io/v1 httproutes" in ready["message"]
    assert "external" not in h.body["status"].get("endpoints", {})


async def test_a_nimservice_the_apiserver_says_is_gone_is_left_alone() -> None:
    # kopf misses the DELETED events of a namespace it stopped watching: its index keeps the NimService.
    h = Harness()
    h.cluster.refuse("NimService", 'nimservices.nimify.dev "resnet50" not found', code=404)
    assert await h.reconcile() is None
    h.cluster.forget_calls()
    await h.reconcile()
    assert h.cluster.calls == [], "no more writes for a NimService that no longer exists"


async def test_an_event_that_cannot_be_posted_does_not_fail_the_reconcile() -> None:
    h = Harness({"replicas": 2})
    h.cluster.refuse(
        "Event", "unable to create new content in namespace ml because it is being terminated", 403
    )
    await h.reconcile()
    assert h.condition("Ready")["reason"] == "Deploying"


async def test_an_error_that_is_no_refusal_fails_the_reconcile() -> None:
    from lightkube import ApiError

    h = Harness()
    h.cluster.refuse("Service", "etcdserver: request timed out", code=500)
    with pytest.raises(ApiError):
        await h.reconcile()


# --- what the Deployment and its pods say -------------------------------------------------------------------


def _trouble_observed(h: Harness, trouble: Any) -> Any:
    observed = h.cluster.observed()
    observed.server_pods = {(NAMESPACE, NAME): [trouble]}
    return observed


async def test_triton_pods_in_trouble_name_the_trouble() -> None:
    from nimify.controller.pods import PodTrouble

    h = Harness({"replicas": 2})
    await h.converge()
    h.cluster.roll_out(NAME, ready=1)
    trouble = PodTrouble("CrashLoopBackOff", "container triton keeps crashing (restarts: 4)", f"{NAME}-abc")
    await h.reconciler.reconcile(copy.deepcopy(h.body), _trouble_observed(h, trouble))
    patch = h.cluster.status_patches[-1]
    ready = next(c for c in patch["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "CrashLoopBackOff")
    assert ready["message"] == f"pod {NAME}-abc: container triton keeps crashing (restarts: 4)"
    assert ("Warning", "CrashLoopBackOff") in [(kind, reason) for kind, reason, _ in h.cluster.events]


async def test_a_deployment_past_its_progress_deadline_is_deployment_failed() -> None:
    h = Harness({"replicas": 2})
    await h.converge()
    h.cluster.roll_out(NAME, ready=0)
    h.cluster.live("Deployment", NAME)["status"]["conditions"] = [
        {
            "type": "Progressing",
            "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": 'ReplicaSet "resnet50-abc" has timed out progressing.',
        }
    ]
    await h.reconcile()
    ready = h.condition("Ready")
    assert (ready["reason"], ready["message"]) == (
        "DeploymentFailed",
        'ReplicaSet "resnet50-abc" has timed out progressing.',
    )


# --- small pure pieces --------------------------------------------------------------------------------------


def test_retry_delay_doubles_up_to_the_resync() -> None:
    assert [retry_delay(n, 60) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]


def test_merge_patch_removes_what_is_gone_and_replaces_lists() -> None:
    old = {"endpoints": {"http": "a", "external": "h"}, "conditions": [1, 2], "same": 1}
    new = {"endpoints": {"http": "a"}, "conditions": [1], "same": 1, "new": True}
    assert merge_patch(old, new) == {"endpoints": {"external": None}, "conditions": [1], "new": True}


@pytest.mark.parametrize(
    ("condition", "stalled"),
    [
        pytest.param(
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "m"},
            True,
            id="deadline",
        ),
        pytest.param(
            {
                "type": "ReplicaFailure",
                "status": "True",
                "reason": "FailedCreate",
                "message": "exceeded quota",
            },
            False,
            id="replica-failure",
        ),
    ],
)
def test_deployment_problem(condition: dict[str, str], stalled: bool) -> None:
    from nimify.controller.status import deployment_problem

    problem = deployment_problem({"status": {"conditions": [condition]}})
    assert problem is not None and (problem.reason, problem.message, problem.stalled) == (
        "DeploymentFailed",
        condition["message"],
        stalled,
    )
    healthy = {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
    assert deployment_problem({"status": {"conditions": [healthy]}}) is None
    assert deployment_problem(None) is None


# --- few writes: what a thousand NimServices cost -----------------------------------------------------------


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def second_nimservice(h: Harness, name: str, uid: str) -> dict[str, Any]:
    body = copy.deepcopy(h.body)
    body["metadata"] |= {"name": name, "uid": uid}
    body["status"] = {}
    return body


async def test_the_shared_claim_and_the_job_are_written_once_for_nimservices_the_watch_lags_behind() -> None:
    h = Harness(built=False)
    stale = h.cluster.observed()  # what the watch shows while a burst of NimServices reconciles: nothing
    await h.reconciler.reconcile(copy.deepcopy(h.body), stale)
    await h.reconciler.reconcile(second_nimservice(h, "other", "uid-other"), stale)
    writes = [(call.verb, call.kind) for call in h.cluster.writes() if call.kind != "NimService"]
    assert writes.count(("apply", "PersistentVolumeClaim")) == 1
    assert writes.count(("create", "Job")) == 1
    claim = h.cluster.live("PersistentVolumeClaim", SETTINGS.engine_cache_claim)
    assert "ownerReferences" not in claim["metadata"], "no list of owners growing with its users"

    h.cluster.forget_calls()
    await h.reconciler.reconcile(second_nimservice(h, "third", "uid-third"), h.cluster.observed())
    assert not [call for call in h.cluster.writes() if call.kind in ("PersistentVolumeClaim", "Job")]


async def test_a_write_the_watch_never_showed_is_sent_again_later() -> None:
    clock = Clock()
    h = Harness(built=False)
    h.reconciler.recent = RecentWrites(clock=clock)
    stale = h.cluster.observed()
    await h.reconciler.reconcile(copy.deepcopy(h.body), stale)
    clock.now += RECENT_SECONDS + 1
    h.cluster.forget_calls()
    await h.reconciler.reconcile(copy.deepcopy(h.body), stale)
    assert ("apply", "PersistentVolumeClaim") in h.verbs()


async def test_a_child_someone_changed_is_reverted_even_right_after_nimify_wrote_it() -> None:
    h = Harness()
    await h.converge()
    h.cluster.edit("Service", NAME, ("spec", "type"), "NodePort")
    h.cluster.forget_calls()
    await h.reconcile()
    assert ("apply", "Service") in h.verbs(), "a recent write never hides drift"


def test_the_shared_claim_goes_when_no_nimservice_uses_it() -> None:
    cluster = MemoryCluster(NAMESPACE)
    shared: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": SETTINGS.engine_cache_claim, "labels": {}},
        "spec": {},
    }
    cluster.put(shared)
    observed = cluster.observed()
    assert unused_shared_claim(NAMESPACE, observed, 1, SETTINGS) is None
    assert unused_shared_claim(NAMESPACE, observed, 0, SETTINGS) == SETTINGS.engine_cache_claim
    assert unused_shared_claim("elsewhere", observed, 0, SETTINGS) is None
    owned = copy.deepcopy(shared)
    owned["metadata"]["ownerReferences"] = [
        {"kind": "NimService", "name": "x", "uid": "1", "controller": True}
    ]
    cluster.put(owned)
    assert unused_shared_claim(NAMESPACE, cluster.observed(), 0, SETTINGS) is None, "someone's own claim"


async def test_the_happy_path_posts_two_events() -> None:
    h = Harness(built=False)
    await h.reconcile()  # the Job starts: progress the status shows, no event
    # The Job's result, as the reconcile that read it leaves it: engine and signature, EngineReady not yet.
    building = [c for c in h.body["status"]["conditions"] if c["type"] != "EngineReady"]
    h.body["status"] = served_status(h.spec) | {"conditions": building}
    for _ in range(3):
        await h.reconcile()
        h.cluster.roll_out(NAME)
    assert h.condition("Ready")["status"] == "True"
    assert [(kind, reason) for kind, reason, _ in h.cluster.events] == [
        ("Normal", "EngineBuilt"),
        ("Normal", "Serving"),
    ]


async def test_the_status_reports_a_deployment_it_just_applied_so_the_watch_changes_nothing() -> None:
    h = Harness()
    await h.reconcile()
    assert h.body["status"]["replicas"] == 0 and "http" in h.body["status"]["endpoints"]
    h.cluster.forget_calls()
    await h.reconcile()  # the watch shows the new Deployment, no status yet
    assert h.cluster.status_patches == []


async def test_replica_counts_alone_wait_to_be_written_with_the_next_change() -> None:
    clock = Clock()
    h = Harness({"replicas": 3})
    h.reconciler.monotonic = clock
    await h.reconcile()
    h.cluster.roll_out(NAME, ready=0)  # the pods exist, none ready yet: only counts change
    h.cluster.forget_calls()
    wait = await h.reconcile()
    assert h.cluster.status_patches == [] and wait == STATUS_BATCH_SECONDS
    clock.now += 4
    assert await h.reconcile() == STATUS_BATCH_SECONDS - 4
    h.cluster.roll_out(NAME)  # Ready: written at once, counts included
    assert await h.reconcile() is None
    assert h.condition("Ready")["status"] == "True" and h.body["status"]["readyReplicas"] == 3

    h.cluster.roll_out(NAME, ready=2)  # a replica lost: Ready flips, written at once
    await h.reconcile()
    assert h.condition("Ready")["status"] == "False"
    h.cluster.forget_calls()
    h.cluster.roll_out(NAME, ready=1)  # counts only again (one replica still serves)
    assert await h.reconcile() == STATUS_BATCH_SECONDS
    clock.now += STATUS_BATCH_SECONDS
    assert await h.reconcile() is None
    assert h.body["status"]["readyReplicas"] == 1, "counts that waited long enough are written"


def test_recent_writes_forget_what_expired() -> None:
    clock = Clock()
    recent = RecentWrites(clock=clock)
    for index in range(1000):
        recent.wrote(("Service", NAMESPACE, f"s{index}"), "h")
    clock.now += RECENT_SECONDS + 1
    for index in range(100):
        recent.wrote(("Deployment", NAMESPACE, f"d{index}"), "h")
    assert len(recent) < 200, "a thousand NimServices' writes do not stay in memory"
    assert recent.covers(("Deployment", NAMESPACE, "d1"), "h")
    assert not recent.covers(("Service", NAMESPACE, "s1"), "h")


async def test_a_replica_count_raised_is_not_ready_on_the_replicas_there_were() -> None:
    """The reconcile that applies the new count reads the Deployment as the watch showed it before (1 of 1
    ready): Ready for the new generation waits until the Deployment has the replicas it now asks for."""
    h = Harness({"replicas": 1})
    await h.converge()
    assert h.condition("Ready")["status"] == "True"
    h.set_spec({"replicas": 2})
    await h.reconcile()
    assert h.cluster.live("Deployment", NAME)["spec"]["replicas"] == 2
    ready = h.condition("Ready")
    assert (ready["status"], ready["observedGeneration"]) == ("False", 2), ready
    h.cluster.roll_out(NAME, ready=1)
    await h.reconcile()
    assert h.condition("Ready")["status"] == "False"
    h.cluster.roll_out(NAME)
    await h.reconcile()
    assert h.condition("Ready")["status"] == "True" and h.body["status"]["readyReplicas"] == 2
