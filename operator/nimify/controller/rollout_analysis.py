"""The judgement of a canary's candidate (spec.rollout.answers and .analysis). Pure.

Two judges, both recorded in status.rollout:
- the answer gate, once, before the candidate takes any traffic: the same inputs went to a pod of each unit
  (rollout_analyst.py) and their answers are compared (engine/answer_gate.py, which needs numpy: the
  operator imports it only when a gate runs). Equivalence (the answers agree within atol/rtol,
  Polygraphy's rule as for engine.parity) applies when only the engine changed (the model's digest is the
  one the serving engine was built from) or when the spec declares the update equivalent; otherwise an
  agreement gate, when set, asks that enough answers agree (the same top-1 class, or the same side of a
  threshold). A retrained model without an agreement gate passes no gate: it is judged on its figures.
- the analysis, while a step runs: the candidate's figures (from Triton's counters and latency summaries in
  Prometheus, over the step's window) against the limits, the ratios against the serving unit's figures over
  the same window. A broken limit rolls the candidate back at once; a step whose hold ended passes once the
  candidate answered the step's minRequests.
"""

from __future__ import annotations

from dataclasses import dataclass

from nimify.api import EngineRecord, ModelSignature, NimService, RolloutPhase, RolloutStatus
from nimify.api.spec.rollout import AgreementRule, AgreementSpec, AnalysisSpec, Equivalence
from nimify.api.status import GateForm, MetricVerdict, UnitFigures
from nimify.engine.location import model_identity

#: Latencies and queue times within this many milliseconds of the serving unit's pass whatever their ratio:
#: an idle queue at 2 µs is not twice as bad as one at 1 µs.
SLACK_MS = 1.0
#: How soon the reconcile comes back while the gate or an analysis is awaited.
POLL_SECONDS = 5.0
ERROR_RATIO = "errorRatio"
LATENCY_RATIO = "latencyRatio"
QUEUE_TIME_RATIO = "queueTimeRatio"
REQUESTS = "requests"


@dataclass(frozen=True)
class Figures:
    """What Prometheus showed of both units over a step's window (or why it showed nothing)."""

    candidate: str
    """The candidate's engine key the figures are for."""
    step: int
    window_seconds: int
    candidate_figures: UnitFigures | None = None
    serving_figures: UnitFigures | None = None
    error: str | None = None
    """Prometheus could not be asked, or answered nonsense: nothing is judged, the step holds."""


@dataclass(frozen=True)
class Verdict:
    """The analysis of one step: every limit judged, the first broken one, whether the step's requests
    came."""

    verdicts: tuple[MetricVerdict, ...]
    broken: MetricVerdict | None
    enough_requests: bool


def gate_form(nim: NimService, stable: EngineRecord | None) -> GateForm | None:
    """The answer gate the candidate must pass before it takes traffic, if any."""
    rollout = nim.spec.rollout
    if rollout is None or not rollout.canary or nim.spec.model is None:
        return None
    gate = rollout.gate
    same_model = stable is not None and stable.engine.model == model_identity(nim)
    if gate.equivalence is Equivalence.DECLARED or (gate.equivalence is Equivalence.AUTO and same_model):
        return GateForm.EQUIVALENCE
    if gate.agreement is not None:
        return GateForm.AGREEMENT
    return None


def gate_due(nim: NimService, status: RolloutStatus, stable: EngineRecord | None) -> GateForm | None:
    """The gate to run now: the rollout's candidate has not been judged by it yet."""
    if status.phase != RolloutPhase.PROGRESSING or status.gate is not None or status.candidate_weight:
        return None
    return gate_form(nim, stable)


def agreement_output(spec: AgreementSpec, signature: ModelSignature) -> str:
    return spec.output or signature.outputs[0].name


def agreement_problem(spec: AgreementSpec, signature: ModelSignature) -> str | None:
    """Why the agreement gate cannot judge this model's answers, naming the field; None when it can."""
    names = [output.name for output in signature.outputs]
    field = "spec.rollout.answers.agreement"
    if spec.output is not None and spec.output not in names:
        return f"{field}.output: the model has no output '{spec.output}' (outputs: {', '.join(names)})"
    output = next(o for o in signature.outputs if o.name == agreement_output(spec, signature))
    if output.dtype in ("STRING", "BYTES", "BOOL"):
        return f"{field}.output: output '{output.name}' is {output.dtype}: it has no class or score"
    # -1: a dynamic last dimension, classes may be there.
    if spec.rule is AgreementRule.TOP1 and (not output.shape or 0 <= output.shape[-1] < 2):
        return (
            f"{field}.rule: Top1 needs classes along the last dimension of output '{output.name}' "
            f"(shape {list(output.shape)}); use Threshold for a score"
        )
    return None


def figures_due(nim: NimService, status: RolloutStatus) -> bool:
    """Whether the candidate's step needs figures: it takes traffic, and limits or a request count judge
    it."""
    rollout = nim.spec.rollout
    if rollout is None or status.phase != RolloutPhase.PROGRESSING or status.step_started_at is None:
        return False
    steps = rollout.steps or []
    if not status.candidate_weight or status.step >= len(steps):
        return False
    return rollout.analysis is not None or steps[status.step].min_requests > 0


def _ratio_verdict(
    metric: str, candidate: float | None, serving: float | None, limit: float
) -> MetricVerdict | None:
    if candidate is None or serving is None:
        return None
    ratio = candidate / serving if serving > 0 else (1.0 if candidate <= 0 else float(candidate / 1e-3))
    passed = candidate <= limit * serving + SLACK_MS
    return MetricVerdict(metric=metric, value=round(ratio, 4), limit=limit, passed=passed)


def judge(analysis: AnalysisSpec | None, min_requests: int, figures: Figures) -> Verdict:
    """The step's verdicts from its figures."""
    candidate, serving = figures.candidate_figures, figures.serving_figures
    verdicts: list[MetricVerdict] = []
    requests = candidate.requests if candidate is not None else 0
    if min_requests:
        verdicts.append(
            MetricVerdict(
                metric=REQUESTS, value=requests, limit=min_requests, passed=requests >= min_requests
            )
        )
    if analysis is not None and candidate is not None and requests >= analysis.min_requests:
        if analysis.max_error_ratio is not None and candidate.error_ratio is not None:
            verdicts.append(
                MetricVerdict(
                    metric=ERROR_RATIO,
                    value=round(candidate.error_ratio, 6),
                    limit=analysis.max_error_ratio,
                    passed=candidate.error_ratio <= analysis.max_error_ratio,
                )
            )
        if serving is not None and serving.requests - serving.failures >= analysis.min_requests:
            latency = _latency_pair(candidate, serving)
            for metric, pair, limit in (
                (LATENCY_RATIO, latency, analysis.max_latency_ratio),
                (
                    QUEUE_TIME_RATIO,
                    (candidate.mean_queue_ms, serving.mean_queue_ms),
                    analysis.max_queue_time_ratio,
                ),
            ):
                if limit is not None and (verdict := _ratio_verdict(metric, *pair, limit)) is not None:
                    verdicts.append(verdict)
    broken = next((v for v in verdicts if not v.passed and v.metric != REQUESTS), None)
    return Verdict(tuple(verdicts), broken, requests >= min_requests)


def _latency_pair(candidate: UnitFigures, serving: UnitFigures) -> tuple[float | None, float | None]:
    """p99 where both units report it (Triton's summaries), else the means over the window."""
    if candidate.p99_latency_ms is not None and serving.p99_latency_ms is not None:
        return candidate.p99_latency_ms, serving.p99_latency_ms
    return candidate.mean_latency_ms, serving.mean_latency_ms


def describe(verdict: MetricVerdict, figures: Figures) -> str:
    """A broken limit in words, with the figures behind it (the RolledBack message)."""
    candidate, serving = figures.candidate_figures, figures.serving_figures
    assert candidate is not None
    if verdict.metric == ERROR_RATIO:
        return (
            f"error ratio {verdict.value:.3g} > {verdict.limit:g}: {candidate.failures} of "
            f"{candidate.requests} requests failed in {figures.window_seconds} s of step {figures.step + 1}"
        )
    what, c, s = (
        ("p99 latency", candidate.p99_latency_ms, serving.p99_latency_ms if serving else None)
        if verdict.metric == LATENCY_RATIO and candidate.p99_latency_ms is not None
        else ("mean latency", candidate.mean_latency_ms, serving.mean_latency_ms if serving else None)
        if verdict.metric == LATENCY_RATIO
        else ("mean queue time", candidate.mean_queue_ms, serving.mean_queue_ms if serving else None)
    )
    return (
        f"{what} {c or 0:.3g} ms is {verdict.value:.3g}x the serving unit's {s or 0:.3g} ms (limit "
        f"{verdict.limit:g}x) over {candidate.requests} requests in step {figures.step + 1}"
    )
