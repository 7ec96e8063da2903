"""What the operator writes for a NimService: its own desired set (controller/desired.py), before any engine
exists and once the sample model's engine is served, as the chaos tests send it to the apiserver (dry run).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from nimify.api import NimService, NimServiceStatus
from nimify.controller.actions import Apply, Create
from nimify.controller.desired import desired_set
from nimify.controller.observed import Observed
from nimify.engine.location import engine_location
from nimify.engine.result import ConversionResult
from nimify.model.batching import BatchingDecision
from nimify.model.samples import write_sample
from nimify.model.validation import validate_model
from nimify.render.network_policy import render_network_policy
from nimify.settings import OperatorSettings
from nimify.triton.model_config import resolve_max_batch_size


@dataclass(frozen=True)
class BuiltModel:
    """What a conversion Job reports for the sample MLP: its signature record and batching decision."""

    signature: dict[str, Any]
    batching: BatchingDecision


@cache
def sample_model() -> BuiltModel:
    with TemporaryDirectory() as tmp:
        report = validate_model(write_sample("mlp", Path(tmp)), backend="onnxruntime")
    # Exactly the record a conversion Job leaves in its termination message.
    status = ConversionResult(signature=report.signature).signature_status()
    assert status is not None
    return BuiltModel(status.model_dump(mode="json", by_alias=True, exclude_none=True), report.batching)


def _served(nim: NimService, settings: OperatorSettings, model: BuiltModel) -> NimService:
    """`nim` as it is once its conversion Job reported `model`: the engine recorded in its status."""
    location = engine_location(nim, settings)
    record = {
        "engine": {
            "cacheKey": location.cache_key,
            "location": f"{location.claim}/{location.repository}",
            "maxBatchSize": resolve_max_batch_size(nim.spec.engine, model.batching),
        },
        "signature": model.signature,
    }
    return nim.model_copy(update={"status": NimServiceStatus.model_validate(record)})


def desired_children(
    nim: NimService, settings: OperatorSettings, model: BuiltModel | None = None
) -> list[dict[str, Any]]:
    """The children the operator writes for `nim` with nothing there yet: before an engine exists, or with
    the engine built from `model` ready. A spec whose config cannot be rendered for `model` raises the
    ModelError `nimify convert` would have reported in the Job, before any engine existed."""
    if model is not None:
        nim = _served(nim, settings, model)
    desired = desired_set(nim, Observed(), settings)
    children = [action.desired for action in desired.actions if isinstance(action, Apply | Create)]
    if model is not None and (policy := render_network_policy(nim)) is not None:
        children.append(policy)  # rendered for the spec although the controller does not create it yet
    return children
