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


class RolloutSpec(ApiModel):
    """How a change of engine (model, engine settings, Triton release, GPU product) reaches the traffic.
    Other changes (replicas, resources, routes) apply at once."""

    strategy: RolloutStrategy = Field(default=RolloutStrategy.REPLACE, strict=False)
    """Replace (at once, the default) or Canary (steps)."""

    steps: list[CanaryStep] | None = Field(default=None, min_length=1, max_length=MAX_STEPS)
    """The canary's steps, their weights increasing (required for Canary)."""

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
    )

    @property
    def canary(self) -> bool:
        return self.strategy == RolloutStrategy.CANARY and bool(self.steps)


def _increasing(weights: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(weights))
