"""`nimify rollout status|promote|abort`: what status shows, when promote and abort may ask (no cluster), and
the commands against a real apiserver (no operator: the annotation they write is what is checked)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from nimify.api import NimService, RolloutPhase
from nimify.cli.rollout import RolloutRefusedError, absence, annotation_value, rollout_report, step_text
from nimify.controller.rollout import ROLLOUT_ANNOTATION, Action
from tests.cli.conftest import Cli
from tests.kube import ExistingCluster, fresh_namespace

CANDIDATE = "c0ffee" * 10  # an engine cache key (64 hex characters)
STEPS = [{"weight": 10, "holdSeconds": 60}, {"weight": 25, "holdSeconds": 120}, {"weight": 50}]
CANARY = {"strategy": "Canary", "steps": STEPS}


def manifest(name: str = "demo", rollout: dict[str, Any] | None = CANARY) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"uri": "https://models.example.com/mlp.onnx", "sha256": "ab" * 32},
        "engine": {"backend": "onnxruntime"},
        "resources": {"gpus": 1, "gpuProduct": "NVIDIA-L4"},
        "expose": {"httpRoute": {"host": "demo.example.com", "gatewayRef": {"name": "public"}}},
    }
    if rollout is not None:
        spec["rollout"] = rollout
    return {
        "apiVersion": "nimify.dev/v1alpha1",
        "kind": "NimService",
        "metadata": {"name": name},
        "spec": spec,
    }


def rollout_status(phase: RolloutPhase, step: int = 1, weight: int = 25) -> dict[str, Any]:
    return {
        "rollout": {
            "phase": phase.value,
            "candidate": CANDIDATE,
            "generation": 2,
            "step": step,
            "stepStartedAt": "2025-01-01T12:00:00Z",
            "candidateWeight": weight,
            "traffic": "Gateway",
            "message": f"step {step + 1} of 3: {weight}% of the traffic for 120 s",
        },
        "units": [
            {"name": "demo", "role": "Serving", "trafficPercent": 100 - weight},
            {"name": "demo-canary", "role": "Candidate", "trafficPercent": weight},
        ],
        "conditions": [
            {
                "type": "RolledOut",
                "status": "False",
                "reason": "RolloutProgressing",
                "message": "step 2 of 3",
                "lastTransitionTime": "2025-01-01T12:00:00Z",
            }
        ],
    }


def nimservice(rollout: dict[str, Any] | None = CANARY, status: dict[str, Any] | None = None) -> NimService:
    body = manifest(rollout=rollout)
    body["metadata"]["namespace"] = "ml"
    if status is not None:
        body["status"] = status
    return NimService.model_validate(body)


# --- what status shows --------------------------------------------------------------------------------------


def test_status_shows_the_step_its_weight_and_hold_the_candidate_and_the_units() -> None:
    report = rollout_report(nimservice(status=rollout_status(RolloutPhase.PROGRESSING)))
    rows = dict(report.rows)
    assert report.note is None
    assert rows["phase"] == "Progressing"
    assert rows["step"] == "step 2 of 3: 25% for 120 s"
    assert rows["candidate weight"] == "25%"
    assert rows["candidate engine"] == CANDIDATE[:12]
    assert rows["traffic"] == "Gateway"
    assert rows["message"].startswith("step 2 of 3")
    assert rows["RolledOut"] == "False (RolloutProgressing): step 2 of 3"
    assert report.units == [("demo", "Serving", "75%"), ("demo-canary", "Candidate", "25%")]


def test_status_shows_the_gate_and_the_last_analysis() -> None:
    status = rollout_status(RolloutPhase.PROGRESSING)
    status["rollout"] |= {
        "gate": {"form": "Equivalence", "samples": 16, "figure": 0.0, "limit": 0.001, "passed": True,
                 "message": "max abs error 0 within atol 0.001 (rtol 0.001) on 16 inputs"},
        "analysis": {
            "step": 1, "windowSeconds": 40,
            "candidate": {"requests": 120, "failures": 1, "p99LatencyMs": 4.5},
            "serving": {"requests": 360, "failures": 0, "p99LatencyMs": 4.0},
            "verdicts": [
                {"metric": "requests", "value": 120, "limit": 100, "passed": True},
                {"metric": "errorRatio", "value": 0.0083, "limit": 0.01, "passed": True},
            ],
        },
    }  # fmt: skip
    rows = dict(rollout_report(nimservice(status=status)).rows)
    assert (
        rows["answer gate"]
        == "Equivalence passed: max abs error 0 within atol 0.001 (rtol 0.001) on 16 inputs"
    )
    assert rows["analysis"] == (
        "step 2, 40 s: candidate 120 requests (1 failed, p99 4.5 ms), serving 360 requests (0 failed, "
        "p99 4 ms); requests 120 of 100, errorRatio 0.0083 <= 0.01"
    )


def test_steps_count_from_one_and_end_when_all_passed() -> None:
    rollout = nimservice().spec.rollout
    assert rollout is not None and rollout.steps is not None
    steps = rollout.steps
    assert step_text(0, steps) == "step 1 of 3: 10% for 60 s"
    assert step_text(2, steps) == "step 3 of 3: 50% for 60 s"  # holdSeconds' default
    assert step_text(3, steps) == "all 3 steps passed"
    assert step_text(1, []) == "step 2"  # the spec lost its steps: no total to name


def test_a_paused_rollout_says_so() -> None:
    paused = nimservice({**CANARY, "paused": True}, rollout_status(RolloutPhase.PAUSED))
    assert dict(rollout_report(paused).rows)["paused"] == "yes (spec.rollout.paused)"


@pytest.mark.parametrize(
    ("rollout", "said"),
    [
        (None, "has no Canary rollout (spec.rollout is absent)"),
        ({"strategy": "Replace"}, "has no Canary rollout (spec.rollout.strategy is Replace)"),
        (CANARY, "has had no rollout yet"),
    ],
)
def test_no_canary_or_no_rollout_yet_is_said_plainly(rollout: dict[str, Any] | None, said: str) -> None:
    report = rollout_report(nimservice(rollout))
    assert report.note is not None and said in report.note
    assert report.rows == [] and report.units == []


def test_the_last_rollout_still_shows_once_the_spec_left_canary() -> None:
    ended = rollout_status(RolloutPhase.ROLLED_BACK, weight=0)
    report = rollout_report(nimservice({"strategy": "Replace"}, ended))
    assert report.note is not None and "no Canary rollout" in report.note
    assert dict(report.rows)["phase"] == "RolledBack"
    assert dict(report.rows)["step"] == "step 2"


# --- when promote and abort may ask -------------------------------------------------------------------------


@pytest.mark.parametrize("phase", [RolloutPhase.PROGRESSING, RolloutPhase.PAUSED])
@pytest.mark.parametrize("action", list(Action))
def test_an_undecided_candidate_may_be_promoted_or_aborted_by_its_key(
    phase: RolloutPhase, action: Action
) -> None:
    nim = nimservice(status=rollout_status(phase))
    assert annotation_value(nim, action) == f"{action.value}={CANDIDATE}"


@pytest.mark.parametrize(
    ("phase", "action", "reason", "said"),
    [
        (RolloutPhase.PROMOTING, Action.ABORT, "RolloutPromoting", "abort cannot undo"),
        (RolloutPhase.PROMOTING, Action.PROMOTE, "RolloutPromoting", "already Promoting"),
        (RolloutPhase.PROMOTED, Action.ABORT, "RolloutEnded", "is over, Promoted: nothing to abort"),
        (RolloutPhase.ROLLED_BACK, Action.PROMOTE, "RolloutEnded", "is over, RolledBack: nothing to promote"),
    ],
)
def test_a_decided_rollout_is_refused_naming_its_phase(
    phase: RolloutPhase, action: Action, reason: str, said: str
) -> None:
    with pytest.raises(RolloutRefusedError) as refused:
        annotation_value(nimservice(status=rollout_status(phase)), action)
    assert refused.value.reason == reason
    assert said in refused.value.message


@pytest.mark.parametrize("rollout", [None, {"strategy": "Replace"}, CANARY])
def test_nothing_to_ask_without_a_rollout(rollout: dict[str, Any] | None) -> None:
    nim = nimservice(rollout)
    with pytest.raises(RolloutRefusedError) as refused:
        annotation_value(nim, Action.PROMOTE)
    assert refused.value.reason == "NoRollout"
    assert refused.value.message == f"nothing to promote: {absence(nim)}"


# --- against a real apiserver -------------------------------------------------------------------------------


@pytest.mark.cluster
def test_the_commands_against_an_apiserver(cluster: ExistingCluster, nimservice_crd: str, cli: Cli) -> None:
    kubeconfig = ["--kubeconfig", str(cluster.kubeconfig)]
    wide = {"COLUMNS": "200"}
    with fresh_namespace(cluster, "rollout") as namespace:
        cluster.kubectl(
            "apply", "--server-side", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest())
        )

        def set_status(phase: RolloutPhase) -> None:
            patch = json.dumps({"status": rollout_status(phase)})
            cluster.kubectl(
                "patch",
                "nimservice/demo",
                "-n",
                namespace,
                "--subresource=status",
                "--type=merge",
                "-p",
                patch,
            )

        def annotation() -> str | None:
            found = json.loads(
                cluster.kubectl("get", "nimservice/demo", "-n", namespace, "-o", "json").stdout
            )
            return (found["metadata"].get("annotations") or {}).get(ROLLOUT_ANNOTATION)

        quiet = cli("rollout", "status", "demo", "-n", namespace, *kubeconfig, env=wide)
        assert quiet.exit_code == 0, quiet.output
        assert "has had no rollout yet" in quiet.output

        set_status(RolloutPhase.PROGRESSING)
        shown = cli("rollout", "status", "demo", "-n", namespace, *kubeconfig, env=wide)
        assert shown.exit_code == 0, shown.output
        assert "Progressing" in shown.output and "step 2 of 3: 25% for 120 s" in shown.output
        assert "demo-canary" in shown.output and CANDIDATE[:12] in shown.output

        promoted = cli("rollout", "promote", "demo", "-n", namespace, *kubeconfig, env=wide)
        assert promoted.exit_code == 0, promoted.output
        assert f"promote engine {CANDIDATE[:12]}" in promoted.output
        assert annotation() == f"promote={CANDIDATE}"

        set_status(RolloutPhase.PROMOTED)
        refused = cli("rollout", "abort", "demo", "-n", namespace, *kubeconfig, env=wide)
        assert refused.exit_code == 1, refused.output
        assert "RolloutEnded" in refused.output and "Promoted" in refused.output
        assert annotation() == f"promote={CANDIDATE}"  # untouched

        missing = cli("rollout", "status", "absent", "-n", namespace, *kubeconfig, env=wide)
        assert missing.exit_code == 1 and "NotFound" in missing.output
