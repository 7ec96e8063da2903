"""Tuned serving through the Reconciler (spec.triton.tuning): the default config serves while a tuning Job
measures, the chosen config serves once it reports, a tuning that misses its objective or fails leaves the
default serving, another NimService's tuning is reused with no Job, and a new objective re-tunes without a
new engine."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nimify.api.conditions import ConditionReason
from nimify.controller.observed import RecordedTuning
from nimify.render.triton_config import DEFAULT_CONFIG_KEY
from nimify.render.tuning_job import DOCUMENT_ENV
from nimify.triton.tuning import Candidate, Measurement, TuningResult
from tests.controller.test_reconciler import Harness
from tests.render.conftest import NAME, NAMESPACE

TUNING = {"triton": {"tuning": {"p99LatencyBudgetMilliseconds": 50, "timeBudgetSeconds": 120}}}
DEFAULT = Candidate(1, (), 0)
CHOSEN = Candidate(2, (4,), 100)


def result(met: bool = True, chosen: Candidate | None = CHOSEN) -> dict[str, Any]:
    rows = [
        Measurement(DEFAULT, 4, 400, 0, 100.0, 20.0, 40.0, 10.0),
        Measurement(CHOSEN, 4, 900, 0, 300.0, 10.0, 45.0 if met else 70.0, 150.0),
    ]
    tuned = TuningResult(
        rows, DEFAULT, chosen, met, partial=False, trials=1, seconds=12.3, capacity=300.0 if met else None
    )
    return {"ok": True, "tuning": tuned.to_json()}


def jobs(h: Harness) -> list[dict[str, Any]]:
    return [body for (kind, _, _), body in h.cluster.objects.items() if kind == "Job"]


def finish(h: Harness, job: dict[str, Any], message: dict[str, Any]) -> Any:
    """The tuning Job's pod ended with `message` in its termination message, as the watch shows it."""
    name = job["metadata"]["name"]
    pod = {
        "metadata": {
            "name": f"{name}-x",
            "namespace": NAMESPACE,
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "status": {
            "phase": "Succeeded" if message.get("ok") else "Failed",
            "containerStatuses": [
                {"name": "tune", "state": {"terminated": {"exitCode": 0, "message": json.dumps(message)}}}
            ],
        },
    }
    observed = h.cluster.observed()
    observed.build_pods = {(NAMESPACE, name): [pod]}
    return observed


async def reconcile_with(h: Harness, observed: Any) -> None:
    h.cluster.forget_calls()
    await h.reconciler.reconcile(dict(h.body), observed)
    from tests.controller.test_reconciler import _merge_patch_into

    for patch in h.cluster.status_patches:
        h.body["status"] = _merge_patch_into(h.body.get("status") or {}, patch)
    h.body["metadata"]["resourceVersion"] = str(int(h.body["metadata"]["resourceVersion"]) + 1)


def instances(h: Harness) -> str:
    config = h.cluster.live("ConfigMap", f"{NAME}-triton-config")["data"]["config.pbtxt"]
    return next(line for line in config.splitlines() if "count:" in line).strip()


async def test_the_default_serves_while_a_tuning_job_measures() -> None:
    h = Harness(TUNING)
    await h.converge()
    [job] = jobs(h)
    assert job["metadata"]["name"].startswith("nimify-tune-")
    pod = job["spec"]["template"]["spec"]
    [triton] = pod["initContainers"]
    assert triton["restartPolicy"] == "Always"
    assert "--model-control-mode=explicit" in triton["args"] and f"--load-model={NAME}" in triton["args"]
    config_mount = {"name": "triton-config", "mountPath": f"/models/{NAME}/config.pbtxt"}
    assert config_mount | {"subPath": DEFAULT_CONFIG_KEY, "readOnly": True} in triton["volumeMounts"]
    [tune] = pod["containers"]
    document = json.loads(tune["env"][0]["value"])
    assert tune["env"][0]["name"] == DOCUMENT_ENV
    assert document["objective"] == {"kind": "maxThroughput", "p99BudgetMs": 50.0}
    assert document["default"] == DEFAULT.to_json() and document["budgetSeconds"] == 120
    assert document["cacheFile"].endswith(f"/tuning/{document['key']}.json")
    assert job["spec"]["activeDeadlineSeconds"] == 120 + 900
    assert pod["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-L4"  # where a replica runs
    config_map = h.cluster.live("ConfigMap", f"{NAME}-triton-config")["data"]
    assert config_map[DEFAULT_CONFIG_KEY] == config_map["config.pbtxt"]
    tuned = h.condition("Tuned")
    assert (tuned["status"], tuned["reason"]) == ("False", ConditionReason.TUNING.value)
    assert h.condition("Ready")["status"] == "True"  # the default serves meanwhile
    assert instances(h) == "count: 1"


async def test_the_chosen_config_serves_once_the_job_reports() -> None:
    h = Harness(TUNING)
    await h.converge()
    [job] = jobs(h)
    await reconcile_with(h, finish(h, job, result()))
    tuned = h.condition("Tuned")
    assert (tuned["status"], tuned["reason"]) == ("True", ConditionReason.TUNING_APPLIED.value)
    assert "300 infer/s per replica" in tuned["message"]
    status = h.body["status"]["tuning"]
    assert status["met"] is True and status["capacityPerReplica"] == 300.0
    assert status["chosen"] == {"instances": 2, "preferredBatchSizes": [4], "maxQueueDelayMicroseconds": 100}
    assert status["objective"] == "maximum throughput within p99 50 ms"
    assert [row["config"]["instances"] for row in status["measurements"]] == [1, 2]  # the default first
    assert instances(h) == "count: 2"
    config = h.cluster.live("ConfigMap", f"{NAME}-triton-config")["data"]
    assert "preferred_batch_size: [ 4 ]" in config["config.pbtxt"]
    assert "count: 1" in config[DEFAULT_CONFIG_KEY]  # what a re-tune starts from


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (result(met=False), ConditionReason.TUNING_OBJECTIVE_MISSED),
        ({"ok": False, "error": {"reason": "TuningFailed", "message": "Triton never became ready"}},
         ConditionReason.TUNING_FAILED),
    ],
)  # fmt: skip
async def test_a_missed_objective_or_a_failed_job_leaves_the_default_serving(
    message: dict[str, Any], reason: ConditionReason
) -> None:
    h = Harness(TUNING)
    await h.converge()
    [job] = jobs(h)
    await reconcile_with(h, finish(h, job, message))
    tuned = h.condition("Tuned")
    assert (tuned["status"], tuned["reason"]) == ("False", reason.value)
    assert instances(h) == "count: 1"
    assert h.condition("Ready")["status"] == "True"
    if reason is ConditionReason.TUNING_OBJECTIVE_MISSED:
        assert h.body["status"]["tuning"]["closest"]["instances"] == 2
        assert "closest: 2 instance(s)" in tuned["message"]
    else:
        assert "Triton never became ready" in tuned["message"]


async def test_another_nimservice_s_tuning_is_reused_without_a_job() -> None:
    first = Harness(TUNING)
    await first.converge()
    [job] = jobs(first)
    await reconcile_with(first, finish(first, job, result()))
    recorded = first.body["status"]["tuning"]

    second = Harness(TUNING)
    second.body["metadata"]["name"] = "peer"
    from nimify.api import TuningStatus

    observed = second.cluster.observed()
    observed.tunings = {
        (NAMESPACE, recorded["key"]): [RecordedTuning(TuningStatus.model_validate(recorded), NAME)]
    }
    await reconcile_with(second, observed)
    assert jobs(second) == []
    tuned = second.condition("Tuned")
    assert (tuned["status"], tuned["reason"]) == ("True", ConditionReason.TUNING_REUSED.value)
    config = second.cluster.live("ConfigMap", "peer-triton-config")["data"]["config.pbtxt"]
    assert "count: 2" in config


async def test_a_new_objective_retunes_without_rebuilding_the_engine() -> None:
    h = Harness(TUNING)
    await h.converge()
    [job] = jobs(h)
    await reconcile_with(h, finish(h, job, result()))
    h.set_spec({"triton": {"tuning": {"p99LatencyBudgetMilliseconds": 20, "timeBudgetSeconds": 120}}})
    h.cluster.forget_calls()
    await h.reconcile()
    created = [call for call in h.cluster.writes() if call.verb == "create"]
    assert [call.kind for call in created] == ["Job"]
    assert created[0].name != job["metadata"]["name"] and created[0].name.startswith("nimify-tune-")
    assert h.condition("EngineReady")["status"] == "True"  # the same engine, no conversion


async def test_turning_tuning_off_serves_the_default_and_forgets_the_table() -> None:
    h = Harness(TUNING)
    await h.converge()
    [job] = jobs(h)
    await reconcile_with(h, finish(h, job, result()))
    assert instances(h) == "count: 2"
    h.set_spec({"triton": {"tuning": None}})
    h.cluster.forget_calls()
    await h.reconcile()
    assert "tuning" not in h.body["status"]
    assert "Tuned" not in {c["type"] for c in h.body["status"]["conditions"]}
    assert instances(h) == "count: 1"
    # Applied without the default's key (server-side apply drops the fields its manager no longer sends).
    applied = [c.detail for c in h.cluster.calls if c.verb == "apply" and c.kind == "ConfigMap"]
    assert applied and DEFAULT_CONFIG_KEY not in applied[-1]["data"]


async def test_a_job_killed_at_its_deadline_is_a_failed_tuning() -> None:
    h = Harness(TUNING)
    await h.converge()
    [job] = jobs(h)
    job["status"] = {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}
    await reconcile_with(h, h.cluster.observed())
    tuned = h.condition("Tuned")
    assert (tuned["status"], tuned["reason"]) == ("False", ConditionReason.TUNING_FAILED.value)
    assert "ended without a result" in tuned["message"]
    assert instances(h) == "count: 1"


def test_the_job_document_is_read_where_it_is_written() -> None:
    from nimify.cli.tune import DOCUMENT_ENV as READ

    assert READ == DOCUMENT_ENV
