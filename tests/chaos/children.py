"""What the operator creates for a NimService, rendered by its own pure functions, as the chaos tests send
them to the apiserver (dry run) to see whether it takes them.

Kept in one place so that when the controller's desired set moves (controller/desired.py), only this file
follows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from nimify.api import NimService, NimServiceStatus
from nimify.engine.result import ConversionResult
from nimify.model.batching import BatchingDecision
from nimify.model.errors import ModelError
from nimify.model.samples import write_sample
from nimify.model.validation import validate_model
from nimify.render.autoscaler import render_autoscaler
from nimify.render.build_job import render_build_job
from nimify.render.deployment import ServedEngine, render_deployment
from nimify.render.disruption_budget import render_disruption_budget
from nimify.render.engine import engine_location
from nimify.render.engine_claim import render_engine_claim
from nimify.render.network_policy import render_network_policy
from nimify.render.service import render_service
from nimify.render.triton_config import config_hash, render_config_text, render_triton_config
from nimify.settings import OperatorSettings
from nimify.triton.model_config import resolve_max_batch_size


@dataclass(frozen=True)
class BuiltModel:
    """What a conversion Job reports for the sample MLP: the status record and the batching decision."""

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


def engine_children(nim: NimService, settings: OperatorSettings) -> list[dict[str, Any]]:
    """Before any engine exists: the engine claim, the conversion Job, the Service."""
    location = engine_location(nim, settings)
    claim = render_engine_claim(nim, location.claim, settings)
    rendered = (claim, render_build_job(nim, location, settings), render_service(nim))
    return [child for child in rendered if child is not None]


def serving_children(nim: NimService, settings: OperatorSettings, model: BuiltModel) -> list[dict[str, Any]]:
    """Once the Job reported `model`: the Triton config, Deployment, autoscaler, disruption budget and the
    NetworkPolicy (rendered here although the controller does not create it yet).

    A spec the conversion itself refuses for this model (its config would not render) raises ModelError, as
    `nimify convert` would in the Job, before any of these exist.
    """
    location = engine_location(nim, settings)
    signature = NimServiceStatus.model_validate({"signature": model.signature}).signature
    assert signature is not None
    text = render_config_text(nim, signature, resolve_max_batch_size(nim.spec.engine, model.batching))
    served = ServedEngine(location, config_hash(text), nim.spec.resources.gpu_product)
    rendered = (
        render_triton_config(nim, text),
        render_deployment(nim, served),
        render_autoscaler(nim),
        render_disruption_budget(nim),
        render_network_policy(nim),
    )
    return [child for child in rendered if child is not None]


__all__ = ["BuiltModel", "ModelError", "engine_children", "sample_model", "serving_children"]
