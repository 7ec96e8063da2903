"""spec.placement: node selection, tolerations, affinity and scheduling classes of the replicas."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field

from nimify.api.base import ApiModel
from nimify.api.spec.fields import (
    DNS1123_SUBDOMAIN,
    LABEL_KEY,
    LABEL_VALUE,
    MAX_INTEGER,
    NodeLabelValue,
    label_keys_rule,
)
from nimify.api.validation import Rule, ValidationReason


class TolerationOperator(StrEnum):
    """How a toleration matches a taint's value."""

    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(StrEnum):
    """Which taint effect a toleration tolerates."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(ApiModel):
    """A core/v1 Toleration: lets replicas run on nodes with a matching taint."""

    key: str | None = Field(default=None, pattern=f"^$|{LABEL_KEY}", max_length=316)
    """Taint key to match (a label key); empty with operator Exists matches every taint."""

    operator: TolerationOperator = Field(default=TolerationOperator.EQUAL, strict=False)
    """Exists matches any value; Equal matches value."""

    value: str | None = Field(default=None, pattern=LABEL_VALUE, max_length=63)
    """Taint value to match (operator Equal; a label value)."""

    effect: TaintEffect | None = Field(default=None, strict=False)
    """Taint effect to match; every effect when left out."""

    toleration_seconds: int | None = Field(default=None, ge=0, le=MAX_INTEGER)
    """How long a replica stays on a node after a NoExecute taint appears; forever when left out."""

    cel_rules = (
        Rule(
            cel="self.operator != 'Exists' || !has(self.value)",
            message="a toleration with operator Exists has no value",
            holds=lambda toleration: (
                toleration.operator != TolerationOperator.EXISTS or toleration.value is None
            ),
            field_path=".value",
            reason=ValidationReason.FORBIDDEN,
        ),
        Rule(
            # An empty key is no key: the apiserver refuses it with Equal when the operator creates the pod.
            cel="has(self.key) && self.key != '' || self.operator == 'Exists'",
            message="a toleration without a key must use operator Exists",
            holds=lambda toleration: bool(toleration.key) or toleration.operator == TolerationOperator.EXISTS,
            field_path=".operator",
        ),
        Rule(
            cel="!has(self.tolerationSeconds) || has(self.effect) && self.effect == 'NoExecute'",
            message="tolerationSeconds applies to effect NoExecute only",
            holds=lambda toleration: (
                toleration.toleration_seconds is None or toleration.effect == TaintEffect.NO_EXECUTE
            ),
            field_path=".tolerationSeconds",
        ),
    )


class PlacementSpec(ApiModel):
    """Where replicas may run, beyond the GPU product."""

    node_selector: dict[str, NodeLabelValue] | None = Field(default=None, max_length=32)
    """Node labels replicas require. nvidia.com/gpu.product, if given, must equal resources.gpuProduct."""

    tolerations: list[Toleration] | None = Field(default=None, max_length=32)
    """Taints replicas tolerate (typed subset of core/v1 Toleration)."""

    affinity: dict[str, Any] | None = None
    """A core/v1 Affinity (nodeAffinity, podAffinity, podAntiAffinity) copied into the pod as given. Kept as
    free-form data because the full type is large; the apiserver checks it when the operator applies the
    Deployment, and the NimService reports a failure there."""

    priority_class_name: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN, max_length=253)
    """PriorityClass of the replicas."""

    runtime_class_name: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN, max_length=253)
    """RuntimeClass of the replicas (e.g. nvidia where the GPU runtime is not the default)."""

    cel_rules = (label_keys_rule("node_selector", "nodeSelector"),)
