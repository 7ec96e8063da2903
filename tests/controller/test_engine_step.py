"""engine_outcome: where the engine for the current spec stands, read from observed objects only."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nimify.api import EngineRecord, NimService, NimServiceStatus
from nimify.controller.engine_step import EngineOutcome, engine_outcome, is_engine_ready, termination_result
from nimify.controller.observed import Observed, ReadyEngine
from nimify.engine.location import EngineLocation, engine_location
from nimify.engine.parity import ParityReport
from nimify.engine.result import ConversionResult
from nimify.model.errors import ModelError
from nimify.model.signature import Signature, TensorInfo
from nimify.render.identity import build_job_name
from nimify.settings import OperatorSettings
from tests.render.conftest import NAMESPACE, nimservice, unit_of

SETTINGS = OperatorSettings(engine_cache_claim="nimify-engines")
NIM = nimservice()
LOCATION = engine_location(NIM, SETTINGS)
JOB_NAME = build_job_name(LOCATION.claim, LOCATION.cache_key, LOCATION.conversion_key)
LOCATION_TEXT = f"{LOCATION.claim}/{LOCATION.repository}"


def outcome_of(nim: NimService, location: EngineLocation, observed: Observed) -> EngineOutcome:
    return engine_outcome(nim, unit_of(nim, location), observed)


def dumped(outcome: EngineOutcome) -> dict[str, Any]:
    """The outcome's engine as the status records it."""
    assert outcome.record is not None
    return outcome.record.model_dump(mode="json", by_alias=True, exclude_none=True)


SIGNATURE = {
    "inputs": [{"name": "images", "dtype": "FLOAT", "shape": [-1, 3, 224, 224]}],
    "outputs": [{"name": "logits", "dtype": "FLOAT", "shape": [-1, 1000]}],
}
PARITY = {"maxAbsError": 0.0004, "maxRelError": 0.0009, "samples": 8, "passed": True}
OK_RESULT: dict[str, Any] = {
    "ok": True,
    "cacheKey": LOCATION.cache_key,
    "signature": SIGNATURE,
    "engine": {
        "cacheKey": LOCATION.cache_key,
        "tensorrtVersion": "10.13.0.35",
        "gpuProduct": "NVIDIA-H100-80GB-HBM3",
        "buildSeconds": 95.2,
        "cacheHit": False,
        "maxBatchSize": 8,
    },
    "parity": PARITY,
    "backend": "tensorrt",
    "model": "model",
    "maxBatchSize": 8,
}
T = "2025-01-01T00:00:00Z"


def job(*conditions: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": JOB_NAME, "namespace": NAMESPACE},
        "status": {"conditions": [{"status": "True", **c} for c in conditions]},
    }


COMPLETE = job({"type": "SuccessCriteriaMet"}, {"type": "Complete"})
RUNNING = job()
DEADLINE = job(
    {"type": "FailureTarget", "reason": "DeadlineExceeded"},
    {"type": "Failed", "reason": "DeadlineExceeded", "message": "Job was active longer than specified"},
)
BACKOFF = job(
    {"type": "Failed", "reason": "BackoffLimitExceeded", "message": "Job has reached the backoff limit"}
)


def pod(message: str | None, created: str = T) -> dict[str, Any]:
    """A conversion pod whose container terminated with `message` (the operator reads nothing else)."""
    terminated: dict[str, Any] = {"exitCode": 0}
    if message is not None:
        terminated["message"] = message
    return {
        "metadata": {"name": f"{JOB_NAME}-abcde", "namespace": NAMESPACE, "creationTimestamp": created},
        "status": {"containerStatuses": [{"name": "convert", "state": {"terminated": terminated}}]},
    }


def error_result(reason: str, message: str) -> str:
    return json.dumps(
        {"ok": False, "error": {"reason": reason, "message": message}, "cacheKey": LOCATION.cache_key}
    )


def ready(record: dict[str, Any], served_by: str = "peer") -> ReadyEngine:
    """A peer's engine as the ready-engine index holds it."""
    return ReadyEngine(EngineRecord.model_validate(record), served_by)


def observed(
    job_body: dict[str, Any] | None = None,
    pods: list[dict[str, Any]] | None = None,
    peer: dict[str, Any] | None = None,
) -> Observed:
    return Observed(
        children={"Job": {(NAMESPACE, JOB_NAME): [job_body]} if job_body else {}},
        build_pods={(NAMESPACE, JOB_NAME): pods} if pods else {},
        ready_engines={(NAMESPACE, LOCATION.claim, LOCATION.cache_key): [ready(peer)]} if peer else {},
    )


def served_status(location_text: str = LOCATION_TEXT, reason: str = "EngineBuilt") -> dict[str, Any]:
    return {
        "engine": {
            "cacheKey": LOCATION.cache_key,
            "location": location_text,
            "maxBatchSize": 8,
            "cacheHit": False,
        },
        "signature": SIGNATURE,
        "parity": PARITY,
        "conditions": [
            {
                "type": "EngineReady",
                "status": "True",
                "reason": reason,
                "message": "",
                "lastTransitionTime": T,
            }
        ],
    }


# --- the engine is there already --------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["EngineBuilt", "EngineCacheHit"])
def test_reuses_its_own_served_engine(reason: str) -> None:
    nim = nimservice(status=served_status(reason=reason))
    outcome = outcome_of(nim, LOCATION, observed())
    assert outcome.state.ready and not outcome.state.failed
    assert outcome.state.reason == reason
    assert not outcome.create_job and not outcome.finished_build
    assert outcome.record is not None
    assert dumped(outcome)["engine"]["location"] == LOCATION_TEXT
    assert dumped(outcome)["signature"] == SIGNATURE
    assert dumped(outcome)["parity"] == PARITY


def test_served_engine_reason_is_normalised() -> None:
    # A status left over from a build (EngineReady False, BuildingEngine) does not leak into a ready state.
    status = served_status()
    status["conditions"][0] |= {"status": "False", "reason": "BuildingEngine"}
    outcome = outcome_of(nimservice(status=status), LOCATION, observed())
    assert outcome.state.ready and outcome.state.reason == "EngineBuilt"


def test_served_engine_elsewhere_is_not_reused() -> None:
    stale = nimservice(status=served_status(location_text="nimify-engines/engines/old/repository"))
    outcome = outcome_of(stale, LOCATION, observed())
    assert not outcome.state.ready and outcome.create_job


def test_served_engine_without_signature_is_not_reused() -> None:
    status = served_status()
    del status["signature"]
    assert outcome_of(nimservice(status=status), LOCATION, observed()).create_job


def test_reuses_a_peers_ready_engine_without_a_job() -> None:
    peer: dict[str, Any] = {
        "engine": {
            "cacheKey": LOCATION.cache_key,
            "location": LOCATION_TEXT,
            "cacheHit": False,
            "maxBatchSize": 8,
        },
        "signature": SIGNATURE,
    }
    index = observed(peer=peer)
    outcome = outcome_of(NIM, LOCATION, index)
    assert outcome.state.ready and outcome.state.reason == "EngineCacheHit"
    assert not outcome.create_job and not outcome.finished_build
    assert outcome.record is not None
    assert dumped(outcome)["engine"]["cacheHit"] is True
    assert dumped(outcome)["signature"] == SIGNATURE
    # The peer's record (a view of kopf's index) is left untouched.
    (held,) = index.ready_engines[(NAMESPACE, LOCATION.claim, LOCATION.cache_key)]
    assert held.record.engine.cache_hit is False


def test_peer_on_another_claim_or_key_is_not_reused() -> None:
    peer = {"engine": {"cacheKey": "0" * 64, "location": "x"}, "signature": SIGNATURE}
    other = Observed(
        ready_engines={
            (NAMESPACE, "other-claim", LOCATION.cache_key): [ready(peer)],
            (NAMESPACE, LOCATION.claim, "0" * 64): [ready(peer)],
            ("other-namespace", LOCATION.claim, LOCATION.cache_key): [ready(peer)],
        }
    )
    assert outcome_of(NIM, LOCATION, other).create_job


# --- the conversion Job -------------------------------------------------------------------------------------


def test_creates_the_job_when_there_is_none() -> None:
    outcome = outcome_of(NIM, LOCATION, observed())
    assert outcome.create_job
    assert not outcome.state.ready and not outcome.state.failed
    assert outcome.state.reason == "BuildingEngine"
    assert JOB_NAME in outcome.state.message
    assert outcome.record is None


def test_running_job_is_building() -> None:
    outcome = outcome_of(NIM, LOCATION, observed(RUNNING))
    assert not outcome.create_job and not outcome.finished_build
    assert (outcome.state.ready, outcome.state.failed, outcome.state.reason) == (
        False,
        False,
        "BuildingEngine",
    )


def test_complete_job_with_ok_result_is_ready() -> None:
    outcome = outcome_of(NIM, LOCATION, observed(COMPLETE, [pod(json.dumps(OK_RESULT))]))
    assert outcome.state.ready and not outcome.state.failed
    assert outcome.state.reason == "EngineBuilt"
    assert outcome.finished_build and not outcome.create_job
    assert dumped(outcome) == {
        "engine": {
            "cacheKey": LOCATION.cache_key,
            "model": LOCATION.model,  # what a rollout compares: only the engine changed, or the model
            "tensorrtVersion": "10.13.0.35",
            "gpuProduct": "NVIDIA-H100-80GB-HBM3",
            "buildSeconds": 95.2,
            "cacheHit": False,
            "maxBatchSize": 8,
            "location": LOCATION_TEXT,
        },
        "signature": SIGNATURE,
        "parity": PARITY,
    }


def test_a_succeeded_pod_is_the_engine_before_the_job_controller_says_so() -> None:
    succeeded = pod(json.dumps(OK_RESULT))
    succeeded["status"]["phase"] = "Succeeded"
    outcome = outcome_of(NIM, LOCATION, observed(RUNNING, [succeeded]))
    assert outcome.state.ready and outcome.finished_build
    assert outcome.state.reason == "EngineBuilt"
    running = pod(json.dumps(OK_RESULT))
    running["status"]["phase"] = "Running"  # a result line in the message is not the end of the pod
    assert not outcome_of(NIM, LOCATION, observed(RUNNING, [running])).state.ready


def test_result_is_read_from_the_last_line() -> None:
    message = "converting...\n" + json.dumps(OK_RESULT) + "\n"
    outcome = outcome_of(NIM, LOCATION, observed(COMPLETE, [pod(message)]))
    assert outcome.state.ready


def test_newest_pod_wins() -> None:
    pods = [pod(json.dumps(OK_RESULT), "2025-01-01T00:05:00Z"), pod("garbage", "2025-01-01T00:00:00Z")]
    assert outcome_of(NIM, LOCATION, observed(COMPLETE, pods)).state.ready


def test_onnxruntime_result_without_parity() -> None:
    result = {k: v for k, v in OK_RESULT.items() if k != "parity"} | {"maxBatchSize": 0, "parity": None}
    outcome = outcome_of(NIM, LOCATION, observed(COMPLETE, [pod(json.dumps(result))]))
    assert outcome.state.ready and outcome.record is not None
    assert "parity" not in dumped(outcome)
    assert dumped(outcome)["engine"]["maxBatchSize"] == 0


@pytest.mark.parametrize(
    "pods",
    [
        pytest.param(None, id="pod-not-seen-yet"),
        pytest.param([pod(None)], id="no-termination-message-yet"),
        pytest.param([{"metadata": {"name": "p"}, "status": {}}], id="no-container-status"),
    ],
)
def test_complete_job_without_result_yet_is_still_building(pods: list[dict[str, Any]] | None) -> None:
    outcome = outcome_of(NIM, LOCATION, observed(COMPLETE, pods))
    assert not outcome.state.ready and not outcome.state.failed
    assert outcome.state.reason == "BuildingEngine"
    assert not outcome.create_job and not outcome.finished_build


def test_complete_job_without_usable_result_fails() -> None:
    result = {"ok": True, "cacheKey": LOCATION.cache_key}
    outcome = outcome_of(NIM, LOCATION, observed(COMPLETE, [pod(json.dumps(result))]))
    assert outcome.state.failed and not outcome.state.ready
    assert outcome.state.reason == "EngineBuildFailed"
    assert outcome.finished_build


def test_a_completed_pod_without_a_result_stalls_with_its_own_reason() -> None:
    silent = pod(None)
    silent["status"]["phase"] = "Succeeded"
    outcome = outcome_of(NIM, LOCATION, observed(COMPLETE, [silent]))
    assert (outcome.state.ready, outcome.state.failed) == (False, True)
    assert outcome.state.reason == "EngineResultMissing"
    assert JOB_NAME in outcome.state.message and "delete the Job" in outcome.state.message
    assert outcome.finished_build and not outcome.create_job


def test_a_complete_job_waits_for_its_pods_end_before_calling_the_result_missing() -> None:
    # The pod's watch event can trail the Job's: no pod yet, or one not yet terminated, is no verdict.
    assert outcome_of(NIM, LOCATION, observed(COMPLETE)).state.reason == "BuildingEngine"
    starting = pod(None)
    starting["status"] = {
        "phase": "Running",
        "containerStatuses": [{"name": "convert", "state": {"running": {}}}],
    }
    assert outcome_of(NIM, LOCATION, observed(COMPLETE, [starting])).state.reason == "BuildingEngine"


def test_deadline_exceeded_is_a_timeout() -> None:
    outcome = outcome_of(NIM, LOCATION, observed(DEADLINE))
    assert (outcome.state.ready, outcome.state.failed) == (False, True)
    assert outcome.state.reason == "EngineBuildTimedOut"
    assert "buildTimeoutSeconds" in outcome.state.message
    assert outcome.finished_build


def test_deadline_wins_over_a_partial_result() -> None:
    outcome = outcome_of(NIM, LOCATION, observed(DEADLINE, [pod(error_result("Interrupted", "killed"))]))
    assert outcome.state.reason == "EngineBuildTimedOut"


@pytest.mark.parametrize(
    ("error_reason", "condition_reason"),
    [
        ("DigestMismatch", "ChecksumMismatch"),
        ("ChecksumMismatch", "ChecksumMismatch"),
        ("ModelNotFound", "ModelNotFound"),
        ("FetchFailed", "ModelFetchFailed"),
        ("FetchUnauthorized", "ModelFetchFailed"),
        ("ParityFailed", "ParityFailed"),
        ("ParityInputsRequired", "ParityInputsRequired"),
        ("OnnxRuntimeLoadFailed", "OnnxRuntimeLoadFailed"),
        ("", "EngineBuildFailed"),
    ],
)
def test_failed_job_reports_the_result_reason(error_reason: str, condition_reason: str) -> None:
    message = "s3://models-prod/vision/resnet50.onnx: digest differs from spec.model.sha256"
    outcome = outcome_of(NIM, LOCATION, observed(BACKOFF, [pod(error_result(error_reason, message))]))
    assert (outcome.state.ready, outcome.state.failed) == (False, True)
    assert outcome.state.reason == condition_reason
    assert message in outcome.state.message
    assert outcome.finished_build and not outcome.create_job


def test_failed_job_without_result_uses_the_job_condition() -> None:
    outcome = outcome_of(NIM, LOCATION, observed(BACKOFF))
    assert outcome.state.failed and outcome.state.reason == "EngineBuildFailed"
    assert "backoff limit" in outcome.state.message


def test_a_conversion_killed_for_its_memory_is_oom_killed_and_names_the_field_to_raise() -> None:
    killed = pod("[convert] building the engine\n")  # FallbackToLogsOnError: the log's tail
    terminated = killed["status"]["containerStatuses"][0]["state"]["terminated"]
    terminated |= {"reason": "OOMKilled", "exitCode": 137}
    outcome = outcome_of(NIM, LOCATION, observed(BACKOFF, [killed]))
    assert (outcome.state.ready, outcome.state.failed) == (False, True)
    assert outcome.state.reason == "OOMKilled"
    assert JOB_NAME in outcome.state.message
    assert "spec.engine.buildResources.memoryLimit" in outcome.state.message
    assert outcome.finished_build and not outcome.create_job


def test_more_memory_for_the_conversion_is_a_new_job() -> None:
    # The failed Job keeps its name; the spec with more memory names another, which the operator creates.
    more = nimservice({"engine": {"buildResources": {"memory": "32Gi", "memoryLimit": "32Gi"}}})
    location = engine_location(more, SETTINGS)
    assert location.cache_key == LOCATION.cache_key
    outcome = outcome_of(more, location, observed(BACKOFF, [pod(None)]))
    assert outcome.create_job and not outcome.state.failed


@pytest.mark.parametrize(
    "garbage",
    [
        "Traceback (most recent call last):\n  File ...\nRuntimeError: CUDA out of memory",
        "{not json",
        "   \n ",
    ],
)
def test_garbage_termination_message_fails_readably(garbage: str) -> None:
    outcome = outcome_of(NIM, LOCATION, observed(BACKOFF, [pod(garbage)]))
    assert outcome.state.failed and not outcome.state.ready
    assert outcome.state.reason == "EngineBuildFailed"
    assert JOB_NAME in outcome.state.message
    # The tail of what the pod said reaches the condition message, where `kubectl get` shows it.
    assert garbage.strip()[-20:] in outcome.state.message


def test_long_garbage_is_cut_to_its_tail() -> None:
    garbage = "x" * 5000 + "\nRuntimeError: the end"
    result = termination_result(pod(garbage))
    assert result is not None and result["ok"] is False
    assert len(result["error"]["message"]) <= 1000
    assert result["error"]["message"].endswith("RuntimeError: the end")


def test_termination_result() -> None:
    assert termination_result(None) is None
    assert termination_result(pod(None)) is None
    assert termination_result(pod(json.dumps(OK_RESULT))) == OK_RESULT


def test_is_engine_ready() -> None:
    ready = served_status()
    assert is_engine_ready(ready)
    assert not is_engine_ready({})
    assert not is_engine_ready({"conditions": [{"type": "EngineReady", "status": "False"}]})
    assert not is_engine_ready({"conditions": [{"type": "Ready", "status": "True"}]})


def test_location_is_what_the_job_was_told() -> None:
    # Guard for the fixtures above: a second NimService asking for the same engine gets the same location.
    other: NimService = nimservice(name="other", uid="2")
    assert engine_location(other, SETTINGS) == LOCATION
    assert isinstance(LOCATION, EngineLocation)


# --- the contract with `nimify convert`: its real termination message -------------------------------------


def conversion(**fields: Any) -> ConversionResult:
    return ConversionResult(
        cache_key=LOCATION.cache_key,
        signature=Signature(
            (TensorInfo("images", "FLOAT", ("batch", 3, 224, 224)),),
            (TensorInfo("logits", "FLOAT", ("batch", 1000)),),
        ),
        tensorrt_version="10.13.0.35",
        gpu_product="NVIDIA-L4",
        build_seconds=12.5,
        cache_hit=False,
        parity=ParityReport(8, 1e-3, 1e-3, 0.0001, 0.0002, True),
        backend="tensorrt",
        model_name="model",
        max_batch_size=8,
        **fields,
    )


def test_real_ok_result_makes_the_engine_ready() -> None:
    message = conversion().termination_message()
    outcome = outcome_of(NIM, LOCATION, observed(COMPLETE, [pod(message)]))
    assert outcome.state.ready and outcome.record is not None
    record = dumped(outcome)
    assert record["signature"]["inputs"][0] == {
        "name": "images",
        "dtype": "FLOAT",
        "shape": [-1, 3, 224, 224],
    }
    assert record["engine"]["gpuProduct"] == "NVIDIA-L4"
    assert record["engine"]["maxBatchSize"] == 8
    assert record["parity"]["passed"] is True
    # What the reconcile writes into status.engine/signature/parity must be a valid status.
    status = NimServiceStatus.model_validate(record)
    assert status.engine is not None and status.engine.location == LOCATION_TEXT


@pytest.mark.parametrize(
    ("error", "condition_reason"),
    [
        (ModelError("DigestMismatch", "sha256 differs"), "ChecksumMismatch"),
        (ModelError("ModelNotFound", "s3://models-prod/vision/resnet50.onnx: not found"), "ModelNotFound"),
        (ModelError("ParityFailed", "logits: max abs error 0.5"), "ParityFailed"),
        (
            ModelError("ParityInputsRequired", "could not generate valid inputs: give parity inputs"),
            "ParityInputsRequired",
        ),
    ],
)
def test_real_error_result_fails_with_its_reason(error: ModelError, condition_reason: str) -> None:
    message = conversion(error=error).termination_message()
    outcome = outcome_of(NIM, LOCATION, observed(BACKOFF, [pod(message)]))
    assert outcome.state.failed and outcome.state.reason == condition_reason
    assert error.message in outcome.state.message


def test_successful_build_with_a_large_signature_is_not_a_failure() -> None:
    past = tuple(
        TensorInfo(f"past_key_values.{i}.key", "FLOAT16", ("batch", 16, "past", 64)) for i in range(40)
    )
    present = tuple(TensorInfo(f"present.{i}.key", "FLOAT16", ("batch", 16, "total", 64)) for i in range(40))
    result = conversion()
    result.signature = Signature((TensorInfo("input_ids", "INT64", ("batch", "seq")), *past), present)
    if len(result.json_line()) <= 4096:
        pytest.fail("precondition: this result must be too large for a plain termination message")
    message = result.termination_message()
    assert len(message.encode()) <= 4096
    outcome = outcome_of(NIM, LOCATION, observed(COMPLETE, [pod(message)]))
    assert outcome.state.ready and not outcome.state.failed, outcome.state
    assert outcome.record is not None
    assert len(dumped(outcome)["signature"]["inputs"]) == 41
