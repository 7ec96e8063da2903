"""A pipeline through the desired set and the Reconciler: one conversion per member, the end-to-end check Job
once every member's engine is ready, then one Triton with every member and the ensemble; a member that
changes rebuilds alone while the chain that serves keeps serving; a graph that does not connect stalls with
the field named."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from nimify.api import NimService
from nimify.api.conditions import ConditionReason
from nimify.controller.actions import Apply, Create
from nimify.controller.desired import DesiredSet, desired_set
from nimify.controller.observed import Observed
from nimify.controller.reconcile import Reconciler
from nimify.render.deployment import ENSEMBLE_VERSION
from nimify.render.units import pipeline_members
from nimify.settings import OperatorSettings
from tests.controller.memory_cluster import MemoryCluster
from tests.controller.test_reconciler import T, _merge_patch_into
from tests.render.conftest import NAME, NAMESPACE, UID

SETTINGS = OperatorSettings(engine_cache_claim="nimify-engines", onnxruntime_builder_image="nimify:test")
BASE = {"resources": {"gpus": 0}, "engine": {"backend": "onnxruntime", "maxBatchSize": 4}}


def _tensor(name: str, dtype: str, shape: list[int]) -> dict[str, Any]:
    return {"name": name, "dtype": dtype, "shape": shape}


#: The chain of tests/pipelines.py (StandardScaler → PCA → LogisticRegression) as its conversions report it.
SIGNATURES = {
    "scaler": ([_tensor("X", "FLOAT", [-1, 4])], [_tensor("variable", "FLOAT", [-1, 4])]),
    "pca": ([_tensor("X", "FLOAT", [-1, 4])], [_tensor("variable", "FLOAT", [-1, 2])]),
    "classifier": (
        [_tensor("X", "FLOAT", [-1, 2])],
        [_tensor("label", "INT64", [-1]), _tensor("probabilities", "FLOAT", [-1, 3])],
    ),
}
CHAIN: dict[str, Any] = {
    "members": [
        {"name": name, "model": {"uri": f"s3://models/{name}.onnx", "sha256": f"{i}" * 64}}
        for i, name in enumerate(SIGNATURES)
    ],
    "steps": [
        {"member": "scaler", "inputs": [{"name": "X", "from": "input.features"}]},
        {"member": "pca", "inputs": [{"name": "X", "from": "scaler.variable"}]},
        {"member": "classifier", "inputs": [{"name": "X", "from": "pca.variable"}]},
    ],
    "outputs": [
        {"name": "label", "from": "classifier.label"},
        {"name": "probabilities", "from": "classifier.probabilities"},
    ],
}


def _body(chain: dict[str, Any] = CHAIN, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "nimify.dev/v1alpha1",
        "kind": "NimService",
        "metadata": {
            "name": NAME,
            "namespace": NAMESPACE,
            "uid": UID,
            "generation": 1,
            "resourceVersion": "1",
        },
        "spec": {**BASE, "pipeline": chain},
        "status": status or {},
    }


def _nim(chain: dict[str, Any] = CHAIN, status: dict[str, Any] | None = None) -> NimService:
    return NimService.model_validate(_body(chain, status))


def _members_ready(
    nim: NimService, signatures: dict[str, Any] = SIGNATURES, batch: int = 4
) -> dict[str, Any]:
    """A status in which every member's engine is built (as a reconcile records each member unit)."""
    units = []
    for unit in pipeline_members(nim, SETTINGS):
        inputs, outputs = signatures[unit.model_name]
        location = unit.location
        units.append(
            {
                "name": unit.name,
                "role": "PipelineMember",
                "trafficPercent": 0,
                "engine": {
                    "cacheKey": location.cache_key,
                    "location": f"{location.claim}/{location.repository}",
                    "maxBatchSize": batch,
                },
                "signature": {"inputs": inputs, "outputs": outputs},
            }
        )
    return {"units": units}


def _creates(desired: DesiredSet) -> list[dict[str, Any]]:
    return [a.desired for a in desired.actions if isinstance(a, Create)]


def _applied(desired: DesiredSet, kind: str) -> list[dict[str, Any]]:
    return [a.desired for a in desired.actions if isinstance(a, Apply) and a.desired["kind"] == kind]


def _observed(
    jobs: tuple[dict[str, Any], ...] = (), results: dict[str, dict[str, Any]] | None = None
) -> Observed:
    """Jobs as the watch shows them, and for each name in `results` its pod with that termination message."""
    pods = {}
    for name, result in (results or {}).items():
        terminated = {"exitCode": 0 if result.get("ok") else 1, "message": json.dumps(result)}
        pods[(NAMESPACE, name)] = [
            {
                "metadata": {
                    "name": f"{name}-x",
                    "namespace": NAMESPACE,
                    "creationTimestamp": "2025-01-01T00:00:00Z",
                },
                "status": {
                    "phase": "Succeeded" if result.get("ok") else "Failed",
                    "containerStatuses": [{"name": "check", "state": {"terminated": terminated}}],
                },
            }
        ]
    children = {"Job": {(NAMESPACE, j["metadata"]["name"]): [j] for j in jobs}}
    return Observed(children=children, build_pods=pods)


PASSED = {
    "ok": True,
    "parity": {
        "check": "ensemble",
        "inputs": "generated",
        "maxAbsError": 1e-7,
        "maxRelError": 1e-6,
        "samples": 8,
        "passed": True,
    },
}


def test_a_new_pipeline_builds_each_member_once_and_serves_nothing_yet() -> None:
    desired = desired_set(_nim(), Observed(), SETTINGS)
    jobs = _creates(desired)
    assert len(jobs) == 3
    specs = [json.loads(j["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"]) for j in jobs]
    assert [s["model"]["name"] for s in specs] == ["scaler", "pca", "classifier"]
    assert all("pipeline" not in s for s in specs)  # each member is built as a model of its own
    assert not _applied(desired, "Deployment")
    assert desired.engine.reason == ConditionReason.BUILDING_ENGINE.value
    assert "0 of 3 member engines ready" in desired.engine.message


def test_two_members_with_one_engine_share_one_conversion() -> None:
    twin = copy.deepcopy(CHAIN)
    twin["members"][1]["model"] = dict(twin["members"][0]["model"])
    assert len(_creates(desired_set(_nim(twin), Observed(), SETTINGS))) == 2


def test_ready_members_get_the_end_to_end_check_before_any_deployment() -> None:
    nim = _nim()
    nim = _nim(status=_members_ready(nim))
    desired = desired_set(nim, Observed(), SETTINGS)
    [job] = _creates(desired)
    assert job["metadata"]["name"].startswith("nimify-pipeline-")
    pod = job["spec"]["template"]["spec"]
    prepare, triton = pod["initContainers"]
    assert triton["restartPolicy"] == "Always"  # a native sidecar: it stops when the check ends
    assert triton["startupProbe"]["httpGet"]["path"] == "/v2/health/live"  # the check waits for the ensemble
    assert "--model-repository=/models" in triton["args"]
    assert "--exit-on-error=false" in triton["args"]  # a model that fails to load is reported, not retried
    assert prepare["args"] == ["--prepare"]
    [check] = pod["containers"]
    document = json.loads(check["env"][0]["value"])
    assert set(document["members"]) == {"scaler", "pca", "classifier"}
    assert 'platform: "ensemble"' in document["ensembleConfig"]
    assert document["maxBatchSize"] == 4
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert all(c["securityContext"]["readOnlyRootFilesystem"] for c in [prepare, triton, check])
    assert not _applied(desired, "Deployment")
    assert desired.engine.reason == ConditionReason.CHECKING_PIPELINE.value


def _check_job(nim: NimService) -> dict[str, Any]:
    [job] = _creates(desired_set(nim, Observed(), SETTINGS))
    return job


def test_a_passed_check_serves_every_member_and_the_ensemble_in_one_triton() -> None:
    nim = _nim(status=_members_ready(_nim()))
    job = _check_job(nim)
    desired = desired_set(nim, _observed((job,), {job["metadata"]["name"]: PASSED}), SETTINGS)
    assert desired.engine.ready
    [config] = _applied(desired, "ConfigMap")
    assert set(config["data"]) == {"config.pbtxt", "scaler.pbtxt", "pca.pbtxt", "classifier.pbtxt"}
    assert 'name: "scaler"' in config["data"]["scaler.pbtxt"]
    [deployment] = _applied(desired, "Deployment")
    assert deployment["metadata"]["name"] == NAME
    triton = deployment["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["mountPath"]: m for m in triton["volumeMounts"]}
    for member in pipeline_members(nim, SETTINGS):
        assert mounts[f"/models/{member.model_name}"]["subPath"] == f"{member.location.repository}/model"
        assert mounts[f"/models/{member.model_name}/config.pbtxt"]["subPath"] == f"{member.model_name}.pbtxt"
    assert mounts[f"/models/{NAME}/config.pbtxt"]["subPath"] == "config.pbtxt"
    assert mounts[f"/models/{NAME}/1"]["name"] == ENSEMBLE_VERSION
    assert triton["readinessProbe"]["httpGet"]["path"] == f"/v2/models/{NAME}/ready"
    record = desired.serving.record if desired.serving else None
    assert record is not None and record.parity is not None and record.parity.check == "ensemble"
    assert [t.name for t in record.signature.inputs] == ["features"]
    assert [t.name for t in record.signature.outputs] == ["label", "probabilities"]


def test_a_failed_check_stalls_and_deploys_nothing() -> None:
    nim = _nim(status=_members_ready(_nim()))
    job = _check_job(nim)
    failed = {"ok": False, "error": {"reason": "ParityFailed", "message": "sample 0: 'label' differs"}}
    desired = desired_set(nim, _observed((job,), {job["metadata"]["name"]: failed}), SETTINGS)
    assert desired.engine.failed and desired.engine.reason == ConditionReason.PIPELINE_CHECK_FAILED.value
    assert "'label' differs" in desired.engine.message
    assert not _applied(desired, "Deployment") and not _creates(desired)


@pytest.mark.parametrize(
    ("change", "reason", "field"),
    [
        (
            lambda s: s["classifier"][0].__setitem__(0, _tensor("X", "INT64", [-1, 2])),
            ConditionReason.PIPELINE_TENSOR_MISMATCH,
            "spec.pipeline.steps[2].inputs[0].from",
        ),
        (
            lambda s: s["pca"][0].__setitem__(0, _tensor("X", "FLOAT", [-1, 4, 1])),
            ConditionReason.PIPELINE_TENSOR_MISMATCH,
            "spec.pipeline.steps[1].inputs[0].from",
        ),
        (
            lambda s: s["classifier"][0].__setitem__(0, _tensor("X", "FLOAT", [-1, 3])),
            ConditionReason.PIPELINE_TENSOR_MISMATCH,
            "spec.pipeline.steps[2].inputs[0].from",
        ),
        (
            lambda s: s["pca"][1].__setitem__(0, _tensor("components", "FLOAT", [-1, 2])),
            ConditionReason.PIPELINE_TENSOR_UNKNOWN,
            "spec.pipeline.steps[2].inputs[0].from",
        ),
        (
            lambda s: s["scaler"][0].__setitem__(0, _tensor("features", "FLOAT", [-1, 4])),
            ConditionReason.PIPELINE_INPUT_UNFED,
            "spec.pipeline.steps[0].inputs",
        ),
        (
            lambda s: s["classifier"][1].__setitem__(0, _tensor("labels", "INT64", [-1])),
            ConditionReason.PIPELINE_TENSOR_UNKNOWN,
            "spec.pipeline.outputs[0].from",
        ),
    ],
    ids=["dtype", "rank", "fixed-size", "unknown-output", "unfed-input", "unknown-pipeline-output"],
)
def test_a_graph_the_signatures_do_not_connect_stalls_naming_the_field(
    change: Any, reason: ConditionReason, field: str
) -> None:
    signatures = copy.deepcopy(SIGNATURES)
    change(signatures)
    nim = _nim(status=_members_ready(_nim(), signatures))
    desired = desired_set(nim, Observed(), SETTINGS)
    assert desired.engine.failed and desired.engine.reason == reason.value, desired.engine
    assert desired.engine.message.startswith(f"{field}:"), desired.engine.message
    assert not _creates(desired) and not _applied(desired, "Deployment")


def test_members_that_batch_and_one_that_does_not_stall_naming_the_member() -> None:
    status = _members_ready(_nim())
    status["units"][1]["engine"]["maxBatchSize"] = 0
    desired = desired_set(_nim(status=status), Observed(), SETTINGS)
    assert desired.engine.reason == ConditionReason.PIPELINE_BATCHING_MISMATCH.value
    assert desired.engine.message.startswith("spec.pipeline.members[1].engine.maxBatchSize: member pca")


def test_a_cycle_is_an_invalid_spec_before_anything_runs() -> None:
    cyclic = copy.deepcopy(CHAIN)
    cyclic["steps"][0]["inputs"] = [{"name": "X", "from": "pca.variable"}]
    desired = desired_set(_nim(cyclic), Observed(), SETTINGS)
    assert desired.invalid_spec is not None
    assert "spec.pipeline.steps[0].inputs[0].from: pca.variable comes from step pca" in desired.invalid_spec
    assert not desired.actions


class _Cluster:
    """The Reconciler against the in-memory cluster, with check pods' results played in."""

    def __init__(self) -> None:
        self.cluster = MemoryCluster(NAMESPACE)
        self.body = _body()
        self.reconciler = Reconciler(self.cluster, SETTINGS, clock=lambda: T)
        self.results: dict[str, dict[str, Any]] = {}

    async def reconcile(self) -> None:
        observed = self.cluster.observed()
        pods = _observed(results=self.results).build_pods
        observed = Observed(
            children=observed.children, build_pods=pods, unit_children_by_kind=observed.unit_children_by_kind
        )
        await self.reconciler.reconcile(copy.deepcopy(self.body), observed)
        for patch in self.cluster.status_patches:
            self.body["status"] = _merge_patch_into(self.body.get("status") or {}, patch)
        self.cluster.status_patches.clear()

    def jobs(self) -> list[str]:
        return sorted(name for (kind, _, name) in self.cluster.objects if kind == "Job")


async def test_a_member_change_rebuilds_that_member_alone_while_the_old_chain_serves() -> None:
    world = _Cluster()
    world.body["status"] = _members_ready(_nim())
    await world.reconcile()
    [check] = [j for j in world.jobs() if j.startswith("nimify-pipeline-")]
    world.results[check] = PASSED
    await world.reconcile()
    deployment = copy.deepcopy(world.cluster.live("Deployment", NAME))
    status = world.body["status"]
    assert status["signature"]["outputs"][0]["name"] == "label"
    assert status["parity"]["check"] == "ensemble"
    assert {u["role"] for u in status["units"]} == {"Serving", "PipelineMember"}
    jobs_before = set(world.jobs())

    world.body["spec"]["pipeline"]["members"][1]["model"] = {
        "uri": "s3://models/pca-v2.onnx",
        "sha256": "f" * 64,
    }
    world.body["metadata"]["generation"] = 2
    world.cluster.forget_calls()
    await world.reconcile()
    new_jobs = set(world.jobs()) - jobs_before
    assert len(new_jobs) == 1, new_jobs  # the changed member's conversion only
    [job] = [world.cluster.live("Job", name) for name in new_jobs]
    assert "pca-v2.onnx" in job["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"]
    assert world.cluster.live("Deployment", NAME) == deployment  # the old chain keeps serving
    assert not [c for c in world.cluster.writes() if c.kind in ("Deployment", "ConfigMap")]
    ready = next(c for c in world.body["status"]["conditions"] if c["type"] == "EngineReady")
    assert ready["reason"] == ConditionReason.BUILDING_ENGINE.value
    assert "2 of 3 member engines ready; pca" in ready["message"]


def test_a_member_with_a_new_engine_and_the_same_config_is_checked_again() -> None:
    """A retrained member keeps its signature, so every config reads the same: the check must still run."""
    retrained = copy.deepcopy(CHAIN)
    retrained["members"][0]["model"] = {"uri": "s3://models/scaler-v2.onnx", "sha256": "e" * 64}
    before = _check_job(_nim(status=_members_ready(_nim())))
    after = _check_job(_nim(retrained, status=_members_ready(_nim(retrained))))
    assert before["metadata"]["name"] != after["metadata"]["name"]
    # ...and a status recording the old chain's check does not stand for the new chain's.
    nim = _nim(status=_members_ready(_nim()))
    job = _check_job(nim)
    checked = desired_set(nim, _observed((job,), {job["metadata"]["name"]: PASSED}), SETTINGS)
    assert checked.serving is not None and checked.serving.record is not None
    status = _members_ready(_nim(retrained)) | {
        "engine": checked.serving.record.engine.model_dump(mode="json", by_alias=True, exclude_none=True),
        "signature": checked.serving.record.signature.model_dump(mode="json", by_alias=True),
        "parity": PASSED["parity"],
    }
    again = desired_set(_nim(retrained, status=status), Observed(), SETTINGS)
    assert [j["metadata"]["name"] for j in _creates(again)] == [after["metadata"]["name"]]


@pytest.mark.parametrize(
    ("condition", "pod", "reason"),
    [
        (None, None, ConditionReason.CHECKING_PIPELINE),  # created, not running yet
        ("Complete", None, ConditionReason.CHECKING_PIPELINE),  # its pod's end not seen yet: wait for it
        (
            "Complete",
            {"phase": "Succeeded", "terminated": {"exitCode": 0}},
            ConditionReason.PIPELINE_CHECK_FAILED,
        ),
        ("Failed", None, ConditionReason.PIPELINE_CHECK_FAILED),
    ],
    ids=["created", "complete-pod-unseen", "complete-without-result", "failed-without-result"],
)
def test_a_check_without_a_result_waits_until_its_pod_says_there_is_none(
    condition: str | None, pod: dict[str, Any] | None, reason: ConditionReason
) -> None:
    nim = _nim(status=_members_ready(_nim()))
    job = copy.deepcopy(_check_job(nim))
    name = job["metadata"]["name"]
    if condition:
        job["status"] = {
            "conditions": [{"type": condition, "status": "True", "message": "BackoffLimitExceeded"}]
        }
    pods = {}
    if pod is not None:
        status = {
            "phase": pod["phase"],
            "containerStatuses": [{"name": "check", "state": {"terminated": pod["terminated"]}}],
        }
        pods[(NAMESPACE, name)] = [{"metadata": {"name": f"{name}-x"}, "status": status}]
    observed = Observed(children={"Job": {(NAMESPACE, name): [job]}}, build_pods=pods)
    desired = desired_set(nim, observed, SETTINGS)
    assert desired.engine.reason == reason.value, desired.engine
    assert desired.engine.failed == (reason is ConditionReason.PIPELINE_CHECK_FAILED)
    assert not _creates(desired) and not _applied(desired, "Deployment")
