"""spec.rollout: how a new engine replaces the serving one — at once (Replace), or as a canary beside it that
takes a growing share of the traffic, step by step, before it is promoted (docs/rollouts.md)."""

from __future__ import annotations

import itertools
from enum import StrEnum

from pydantic import Field

from nimify.api.base import ApiModel
from nimify.api.validation import Rule, ValidationReason

#: The most steps a canary may have.
MAX_STEPS = 10
#: The candidate unit's suffix: its Deployment, Triton config and Service are `<name>-canary`.
CANDIDATE_SUFFIX = "canary"
#: How long a NimService's name may be with a canary rollout (`<name>-canary` is a label value).
MAX_NAME_WITH_CANARY = 63 - len(CANDIDATE_SUFFIX) - 1


class RolloutStrategy(StrEnum):
    """How a new engine takes over."""

    REPLACE = "Replace"
    """The serving Deployment rolls to the new engine as soon as it is built and checked (the default)."""
    CANARY = "Canary"
    """The new engine serves beside the old one as a candidate, with a growing share of the traffic
    (steps), and is promoted after the last step or rolled back when it fails."""


class CanaryStep(ApiModel):
    """One step of a canary: the candidate's share of the traffic and how long it holds."""

    weight: int = Field(ge=1, le=99)
    """Percent of the NimService's requests the candidate gets during this step."""

    hold_seconds: int = Field(default=60, ge=0, le=86_400)
    """How long the step lasts once the candidate takes its share; then the next step, or promotion after
    the last."""

    min_requests: int = Field(default=0, ge=0, le=10_000_000)
    """Requests the candidate must have answered during the step (Triton's counters, from Prometheus)
    before the step can pass: a step whose hold ended with fewer holds on until they came. 0: none."""


class Equivalence(StrEnum):
    """When the answer gate holds the candidate to the serving unit's answers (within tolerances)."""

    AUTO = "Auto"
    """When the model is the same (its digest unchanged: only the engine changes — precision, Triton
    release, GPU product, build options)."""
    DECLARED = "Declared"
    """Always: the update is declared equivalent (a re-export, a quantized copy of the same network)."""
    OFF = "Off"
    """Never (an agreement gate, when set, judges a changed model)."""


class AgreementRule(StrEnum):
    """How two answers of a classifier agree."""

    TOP1 = "Top1"
    """The same top-1 class: the index of the largest value along the output's last dimension."""
    THRESHOLD = "Threshold"
    """The same side of `threshold`, element by element (a detector's or a binary classifier's score)."""


class AgreementSpec(ApiModel):
    """The answer gate for a new model, meant to answer differently: it must agree with the serving unit on
    enough inputs."""

    rule: AgreementRule = Field(strict=False)
    """Top1 or Threshold."""

    output: str | None = Field(default=None, min_length=1, max_length=256)
    """The output compared (the model's first output when unset)."""

    threshold: float | None = None
    """The score that splits an output's elements (required for Threshold)."""

    min_fraction: float = Field(gt=0, le=1)
    """The share of inputs (Top1: of rows) whose answers must agree, e.g. 0.95."""

    cel_rules = (
        Rule(
            cel="self.rule != 'Threshold' || has(self.threshold)",
            message="a Threshold agreement needs threshold: the score that splits the output's elements",
            holds=lambda a: a.rule != AgreementRule.THRESHOLD or a.threshold is not None,
            field_path=".threshold",
            reason=ValidationReason.REQUIRED,
        ),
        Rule(
            cel="self.rule == 'Threshold' || !has(self.threshold)",
            message="threshold belongs to a Threshold agreement",
            holds=lambda a: a.rule == AgreementRule.THRESHOLD or a.threshold is None,
            field_path=".threshold",
            reason=ValidationReason.FORBIDDEN,
        ),
    )


class AnswerGateSpec(ApiModel):
    """The answer gate: before the candidate takes any traffic, the same inputs go to a pod of each unit
    and their answers are compared. A candidate that fails is rolled back without a client request."""

    samples: int = Field(default=16, ge=1, le=256)
    """Inputs sent to both units (generated from the model's signature and engine.parity.generated)."""

    equivalence: Equivalence = Field(default=Equivalence.AUTO, strict=False)
    """Auto (the default: when only the engine changes), Declared (always) or Off."""

    atol: float | None = Field(default=None, ge=0, le=1000)
    """Absolute tolerance of the equivalence (engine.parity.atol when unset)."""

    rtol: float | None = Field(default=None, ge=0, le=1000)
    """Relative tolerance of the equivalence (engine.parity.rtol when unset)."""

    agreement: AgreementSpec | None = None
    """The gate for a changed model (when equivalence does not apply); off unless set."""


class AnalysisSpec(ApiModel):
    """Limits on the candidate's figures while it takes traffic, against the serving unit's over the same
    window, from Prometheus (Triton's per-pod counters and latency summaries). Checked every
    intervalSeconds during a step and when its hold ends: a broken limit rolls the candidate back at once."""

    max_error_ratio: float | None = Field(default=None, ge=0, le=1)
    """Most failed requests per request the candidate may answer during a step, e.g. 0.01."""

    max_latency_ratio: float | None = Field(default=None, ge=1, le=1000)
    """Most the candidate's p99 request latency may be, as a multiple of the serving unit's, e.g. 1.5."""

    max_queue_time_ratio: float | None = Field(default=None, ge=1, le=1000)
    """Most the candidate's mean queue time may be, as a multiple of the serving unit's."""

    min_requests: int = Field(default=20, ge=1, le=1_000_000)
    """Requests each unit must have answered in the window before a limit is judged (fewer say little)."""

    interval_seconds: int = Field(default=15, ge=5, le=3600)
    """How often the figures are read during a step."""

    cel_rules = (
        Rule(
            cel="has(self.maxErrorRatio) || has(self.maxLatencyRatio) || has(self.maxQueueTimeRatio)",
            message="analysis needs a metric: maxErrorRatio, maxLatencyRatio or maxQueueTimeRatio",
            holds=lambda a: any(
                x is not None for x in (a.max_error_ratio, a.max_latency_ratio, a.max_queue_time_ratio)
            ),
            reason=ValidationReason.REQUIRED,
        ),
    )


class RolloutSpec(ApiModel):
    """How a change of engine (model, engine settings, Triton release, GPU product) reaches the traffic.
    Other changes (replicas, resources, routes) apply at once."""

    strategy: RolloutStrategy = Field(default=RolloutStrategy.REPLACE, strict=False)
    """Replace (at once, the default) or Canary (steps)."""

    steps: list[CanaryStep] | None = Field(default=None, min_length=1, max_length=MAX_STEPS)
    """The canary's steps, their weights increasing (required for Canary)."""

    analysis: AnalysisSpec | None = None
    """Limits on the candidate's error ratio, latency and queue time while it takes traffic."""

    answers: AnswerGateSpec | None = None
    """The answer gate before the candidate takes traffic (equivalence runs by default when only the engine
    changes: unset, it runs with these defaults)."""

    paused: bool = False
    """Hold a canary at its current step (its clock stops); promotion and rollback still follow `nimify
    rollout promote|abort`."""

    cel_rules = (
        Rule(
            cel="self.strategy != 'Canary' || has(self.steps)",
            message="a Canary rollout needs steps: the candidate's traffic weights and how long each holds",
            holds=lambda rollout: rollout.strategy != RolloutStrategy.CANARY or rollout.steps is not None,
            field_path=".steps",
            reason=ValidationReason.REQUIRED,
        ),
        Rule(
            cel="self.strategy == 'Canary' || !has(self.steps)",
            message="steps belong to a Canary rollout: set strategy Canary or remove them",
            holds=lambda rollout: rollout.strategy == RolloutStrategy.CANARY or rollout.steps is None,
            field_path=".steps",
            reason=ValidationReason.FORBIDDEN,
        ),
        Rule(
            # Strictly increasing: sorted, and no weight twice (its first and last index agree).
            cel="!has(self.steps) || (self.steps.map(s, s.weight).isSorted() && self.steps.all(s,"
            " self.steps.map(t, t.weight).indexOf(s.weight)"
            " == self.steps.map(t, t.weight).lastIndexOf(s.weight)))",
            message="the steps' weights must increase from one step to the next",
            holds=lambda rollout: rollout.steps is None or _increasing([s.weight for s in rollout.steps]),
            field_path=".steps",
        ),
        Rule(
            cel="self.strategy == 'Canary' || (!has(self.analysis) && !has(self.answers))",
            message="analysis and answers judge a Canary rollout: set strategy Canary or remove them",
            holds=lambda rollout: (
                rollout.strategy == RolloutStrategy.CANARY
                or (rollout.analysis is None and rollout.answers is None)
            ),
            reason=ValidationReason.FORBIDDEN,
        ),
    )

    @property
    def canary(self) -> bool:
        return self.strategy == RolloutStrategy.CANARY and bool(self.steps)

    @property
    def gate(self) -> AnswerGateSpec:
        """The answer gate in force (its defaults when unset)."""
        return self.answers or AnswerGateSpec()


def _increasing(weights: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(weights))
