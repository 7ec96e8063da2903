"""A canary's judgement: which answer gate applies, how answers compare (equivalence, agreement), the
analysis's limits on both units' figures, and the rollout machine acting on them (rollback before traffic,
rollback mid-step, a step that holds for its requests or for figures it cannot read). Pure; the real-node
test runs the gate against two Tritons and the analysis against a real Prometheus."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import numpy as np
import pytest

from nimify.api import EngineRecord, ModelSignature, RolloutPhase
from nimify.api.spec.rollout import AgreementRule, AgreementSpec, AnalysisSpec
from nimify.api.status import AnswerGateStatus, GateForm, UnitFigures
from nimify.controller.rollout import CandidateFacts, advance
from nimify.controller.rollout_analysis import (
    Figures,
    agreement_problem,
    figures_due,
    gate_form,
    judge,
)
from nimify.engine.answer_gate import agreement_verdict, equivalence_verdict
from tests.controller.test_reconciler import SIGNATURE, T
from tests.controller.test_rollout import READY, canary_nim, progressing
from tests.render.conftest import MODEL_SHA256

KEY = "k" * 64


def stable(model: str | None = MODEL_SHA256) -> EngineRecord:
    return EngineRecord.model_validate(
        {"engine": {"cacheKey": "s" * 64, "model": model}, "signature": SIGNATURE}
    )


def figures(
    candidate: dict[str, Any], serving: dict[str, Any] | None = None, step: int = 0, window: int = 30
) -> Figures:
    def unit(values: dict[str, Any]) -> UnitFigures:
        requests, failures = values.get("requests", 100), values.get("failures", 0)
        return UnitFigures.model_validate(
            {
                "requests": requests,
                "failures": failures,
                "errorRatio": failures / requests if requests else None,
            }
            | {k: v for k, v in values.items() if k not in ("requests", "failures")}
        )

    return Figures(KEY, step, window, unit(candidate), unit(serving) if serving is not None else None)


# --- which gate --------------------------------------------------------------------------------------------


def test_only_the_engine_changed_asks_for_equivalence() -> None:
    nim = canary_nim()
    assert gate_form(nim, stable()) is GateForm.EQUIVALENCE, "the model's digest is the serving engine's"
    assert gate_form(nim, stable("cd" * 32)) is None, "a retrained model without an agreement gate"
    assert gate_form(nim, stable(None)) is None, "an engine recorded before models were: not known the same"
    assert (
        gate_form(canary_nim(answers={"equivalence": "Declared"}), stable("cd" * 32)) is GateForm.EQUIVALENCE
    )
    assert gate_form(canary_nim(answers={"equivalence": "Off"}), stable()) is None
    agreement = {"agreement": {"rule": "Top1", "minFraction": 0.9}}
    assert gate_form(canary_nim(answers=agreement), stable("cd" * 32)) is GateForm.AGREEMENT
    assert gate_form(canary_nim(answers=agreement), stable()) is GateForm.EQUIVALENCE, "the stricter one"


def test_an_agreement_gate_needs_an_output_with_classes_or_a_score() -> None:
    signature = ModelSignature.model_validate(
        {
            "inputs": SIGNATURE["inputs"],
            "outputs": [
                {"name": "logits", "dtype": "FLOAT", "shape": [-1, 1000]},
                {"name": "score", "dtype": "FLOAT", "shape": [-1, 1]},
                {"name": "label", "dtype": "STRING", "shape": [-1]},
            ],
        }
    )
    top1 = AgreementSpec(rule=AgreementRule.TOP1, min_fraction=0.9)
    assert agreement_problem(top1, signature) is None
    assert agreement_problem(top1.model_copy(update={"output": "nope"}), signature) == (
        "spec.rollout.answers.agreement.output: the model has no output 'nope' "
        "(outputs: logits, score, label)"
    )
    assert agreement_problem(top1.model_copy(update={"output": "score"}), signature) == (
        "spec.rollout.answers.agreement.rule: Top1 needs classes along the last dimension of output 'score' "
        "(shape [-1, 1]); use Threshold for a score"
    )
    threshold = AgreementSpec(rule=AgreementRule.THRESHOLD, threshold=0.5, output="score", min_fraction=0.9)
    assert agreement_problem(threshold, signature) is None
    assert "is STRING: it has no class or score" in (
        agreement_problem(threshold.model_copy(update={"output": "label"}), signature) or ""
    )


# --- how answers compare -----------------------------------------------------------------------------------


def test_equivalence_is_the_parity_rule_and_names_the_worst_output() -> None:
    rng = np.random.default_rng(0)
    served = [{"logits": rng.normal(size=(2, 10)).astype(np.float32)} for _ in range(8)]
    same = equivalence_verdict(served, [{"logits": s["logits"] + 1e-5} for s in served], 1e-3, 1e-3)
    assert same.passed and same.form is GateForm.EQUIVALENCE and same.samples == 8
    off = equivalence_verdict(served, [{"logits": s["logits"] + 0.41} for s in served], 1e-3, 1e-3)
    assert not off.passed and off.figure == pytest.approx(0.41, abs=1e-5)
    assert off.message.startswith("max abs error 0.41 on 'logits' > atol 0.001 (rtol 0.001) on 8 inputs")


def test_agreement_counts_top1_rows_and_threshold_sides() -> None:
    eye = np.eye(10, dtype=np.float32)
    served = [{"logits": eye}]  # ten rows, classes 0..9
    four_of_ten = np.vstack([eye[:4], np.roll(eye[4:], 1, axis=1)])
    spec = AgreementSpec(rule=AgreementRule.TOP1, min_fraction=0.95)
    low = agreement_verdict(served, [{"logits": four_of_ten}], spec, "logits")
    assert (low.passed, low.figure) == (False, 0.4)
    assert low.message == "40.0% of 'logits' answers agree on the top-1 class (4 of 10 on 1 inputs; < 95.0%)"
    assert agreement_verdict(served, [{"logits": eye * 2}], spec, "logits").passed

    scores = {"score": np.array([[0.1], [0.6], [0.7], [0.2]], dtype=np.float32)}
    threshold = AgreementSpec(rule=AgreementRule.THRESHOLD, threshold=0.5, min_fraction=0.75)
    moved = {"score": np.array([[0.4], [0.9], [0.4], [0.0]], dtype=np.float32)}
    verdict = agreement_verdict([scores], [moved], threshold, "score")
    assert (verdict.passed, verdict.figure) == (True, 0.75)


# --- the analysis's limits ---------------------------------------------------------------------------------

LIMITS = AnalysisSpec(max_error_ratio=0.01, max_latency_ratio=1.5, max_queue_time_ratio=2.0, min_requests=20)


def test_each_limit_is_judged_against_the_serving_units_figures() -> None:
    good = judge(
        LIMITS,
        0,
        figures({"p99LatencyMs": 10.0, "meanQueueMs": 0.2}, {"p99LatencyMs": 9.0, "meanQueueMs": 0.1}),
    )
    assert good.broken is None and good.enough_requests
    assert [(v.metric, v.passed) for v in good.verdicts] == [
        ("errorRatio", True), ("latencyRatio", True), ("queueTimeRatio", True),
    ], "a queue of 0.2 ms against 0.1 ms is within the 1 ms slack"  # fmt: skip

    slow = judge(LIMITS, 0, figures({"p99LatencyMs": 40.0}, {"p99LatencyMs": 10.0}))
    assert slow.broken is not None and (slow.broken.metric, slow.broken.value) == ("latencyRatio", 4.0)
    erring = judge(LIMITS, 0, figures({"requests": 100, "failures": 30}, {}))
    assert erring.broken is not None and (erring.broken.metric, erring.broken.value) == ("errorRatio", 0.3)


def test_the_mean_stands_in_for_a_p99_a_unit_does_not_report() -> None:
    verdict = judge(
        LIMITS, 0, figures({"p99LatencyMs": 40.0, "meanLatencyMs": 30.0}, {"meanLatencyMs": 10.0})
    )
    assert verdict.broken is not None and verdict.broken.value == 3.0


def test_too_few_requests_judge_nothing_and_hold_a_step_that_needs_them() -> None:
    few = judge(LIMITS, 50, figures({"requests": 10, "failures": 10}, {}))
    assert few.broken is None and not few.enough_requests, "10 requests say nothing of an error ratio"
    assert [(v.metric, v.value, v.limit, v.passed) for v in few.verdicts] == [("requests", 10, 50, False)]
    assert judge(None, 50, figures({"requests": 60}, {})).enough_requests


# --- the machine -------------------------------------------------------------------------------------------

PASSED = AnswerGateStatus(form=GateForm.EQUIVALENCE, samples=16, figure=0.0, limit=1e-3, passed=True)
FAILED = AnswerGateStatus(
    form=GateForm.EQUIVALENCE, samples=16, figure=0.41, limit=1e-3, passed=False,
    message="max abs error 0.41 on 'logits' > atol 0.001 (rtol 0.001) on 16 inputs",
)  # fmt: skip


def test_the_gate_judges_before_any_traffic() -> None:
    nim = canary_nim()
    waiting, wake = advance(
        nim, progressing(), CandidateFacts(READY, True, gate_form=GateForm.EQUIVALENCE), T
    )
    assert waiting.candidate_weight == 0 and waiting.step_started_at is None and wake == 5.0
    assert waiting.message == "the answer gate (equivalence) compares both units' answers on the same inputs"

    facts = CandidateFacts(READY, True, gate_form=GateForm.EQUIVALENCE, gate=FAILED)
    rolled_back, _ = advance(nim, waiting, facts, T)
    assert rolled_back.phase == RolloutPhase.ROLLED_BACK and rolled_back.candidate_weight == 0
    assert rolled_back.step_started_at is None, "it never took a step's share"
    assert rolled_back.message == f"the answer gate (equivalence): {FAILED.message}"
    assert rolled_back.gate == FAILED

    passed, wake = advance(nim, waiting, replace(facts, gate=PASSED), T)
    assert (passed.gate, passed.candidate_weight, passed.step_started_at, wake) == (PASSED, 10, T, 60.0)
    again, _ = advance(nim, passed, CandidateFacts(READY, True, gate_form=GateForm.EQUIVALENCE), T)
    assert again.gate == PASSED and again.candidate_weight == 10, "judged once per candidate"


def test_a_model_the_agreement_gate_cannot_judge_is_rolled_back_naming_the_field() -> None:
    problem = "spec.rollout.answers.agreement.output: the model has no output 'nope' (outputs: logits)"
    facts = CandidateFacts(READY, True, gate_form=GateForm.AGREEMENT, gate_problem=problem)
    rolled_back, _ = advance(canary_nim(), progressing(), facts, T)
    assert rolled_back.phase == RolloutPhase.ROLLED_BACK
    assert rolled_back.message == f"the answer gate cannot judge: {problem}"


def analysed(**spec: Any) -> Any:
    steps = [{"weight": 10, "holdSeconds": 60, "minRequests": 100}, {"weight": 50, "holdSeconds": 60}]
    return canary_nim(steps=steps, analysis={"maxErrorRatio": 0.05, "intervalSeconds": 15} | spec)


def test_a_broken_limit_rolls_back_mid_step_with_its_figures() -> None:
    nim, running = analysed(), progressing(candidate_weight=10, step_started_at=T)
    assert figures_due(nim, running)
    seen = figures({"requests": 200, "failures": 60}, {"requests": 2000})
    facts = CandidateFacts(READY, True, figures=replace(seen, window_seconds=20))
    rolled_back, wake = advance(nim, running, facts, T + timedelta(seconds=20))
    assert rolled_back.phase == RolloutPhase.ROLLED_BACK and wake is None
    assert rolled_back.message == (
        "analysis: error ratio 0.3 > 0.05: 60 of 200 requests failed in 20 s of step 1"
    )
    assert rolled_back.analysis is not None and rolled_back.analysis.candidate.failures == 60


def test_a_good_step_is_read_every_interval_and_passes_once_its_requests_came() -> None:
    nim, running = analysed(), progressing(candidate_weight=10, step_started_at=T)
    few = CandidateFacts(READY, True, figures=figures({"requests": 40}, {"requests": 400}))
    during, wake = advance(nim, running, few, T + timedelta(seconds=20))
    assert during.phase == RolloutPhase.PROGRESSING and wake == 15.0, "the next reading, not the hold's end"
    assert during.analysis is not None and during.analysis.candidate.requests == 40

    held, wake = advance(nim, during, few, T + timedelta(seconds=61))
    assert (held.step, wake) == (0, 15.0)
    assert held.message == "step 1 of 2 (10%) holds: the candidate answered 40 of the 100 requests it needs"

    enough = CandidateFacts(READY, True, figures=figures({"requests": 120}, {"requests": 1200}))
    second, _ = advance(nim, held, enough, T + timedelta(seconds=75))
    assert (second.step, second.candidate_weight) == (1, 50)


def test_figures_that_cannot_be_read_hold_the_step() -> None:
    nim, running = analysed(), progressing(candidate_weight=10, step_started_at=T)
    unreadable = Figures(KEY, 0, 61, error="Prometheus: connection refused")
    held, _ = advance(
        nim, running, CandidateFacts(READY, True, figures=unreadable), T + timedelta(seconds=61)
    )
    assert held.step == 0 and held.phase == RolloutPhase.PROGRESSING
    assert held.message.endswith(
        "holds: the analysis cannot read the figures: Prometheus: connection refused"
    )
