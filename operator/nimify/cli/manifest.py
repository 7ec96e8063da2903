"""The NimService `nimify create` writes: built from a model report and command-line choices, checked by the
API models (so a manifest it prints is one the apiserver admits)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from nimify.api import EngineSpec, NimService
from nimify.api.validation import field_errors
from nimify.engine.parity_search import GIVE_PARITY_INPUTS, reference_set
from nimify.engine.profiles import checked_profiles, derive_profiles
from nimify.engine.reference import OnnxRuntimeModel, check_generated
from nimify.model.batching import assume_batching
from nimify.model.errors import ModelError
from nimify.model.inspection import ModelReport
from nimify.triton.model_config import resolve_max_batch_size


@dataclass(frozen=True)
class ManifestOptions:
    name: str
    uri: str
    namespace: str | None = None
    backend: str = "tensorrt"
    precision: str | None = None
    max_batch_size: int | None = None
    profiles: list[dict[str, Any]] = field(default_factory=list)
    gpus: int | None = None
    gpu_product: str | None = None
    replicas: int | None = None
    triton_image: str | None = None
    instances: int | None = None
    preferred_batch_sizes: list[int] | None = None
    max_queue_delay_us: int | None = None
    warmup_batch_sizes: list[int] | None = None
    response_cache: bool = False
    parity_samples: int | None = None
    parity_inputs: str | None = None
    parity_inputs_sha256: str | None = None
    parity_generated: list[dict[str, Any]] = field(default_factory=list)


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if value is not None and value != {}}


def build_nimservice(report: ModelReport, options: ManifestOptions) -> tuple[NimService, list[str]]:
    """The NimService, and notes worth telling the user (the batching decision, CPU placement)."""
    notes: list[str] = []
    parity_inputs = (
        _drop_none({"uri": options.parity_inputs, "sha256": options.parity_inputs_sha256})
        if options.parity_inputs
        else None
    )
    parity = _drop_none(
        {
            "samples": options.parity_samples,
            "inputs": parity_inputs,
            "generated": options.parity_generated or None,
        }
    )
    engine = _drop_none(
        {
            "backend": options.backend,
            "precision": options.precision,
            "maxBatchSize": options.max_batch_size,
            "profiles": options.profiles or None,
            "parity": parity or None,
        }
    )
    dynamic_batching = _drop_none(
        {
            "preferredBatchSizes": options.preferred_batch_sizes,
            "maxQueueDelayMicroseconds": options.max_queue_delay_us,
        }
    )
    triton = _drop_none(
        {
            "image": options.triton_image,
            "instancesPerGpu": options.instances,
            "dynamicBatching": dynamic_batching or None,
            "warmup": {"batchSizes": options.warmup_batch_sizes} if options.warmup_batch_sizes else None,
            "responseCache": {"enabled": True} if options.response_cache else None,
        }
    )
    resources = _drop_none({"gpus": options.gpus, "gpuProduct": options.gpu_product})
    spec = _drop_none(
        {
            "model": {"uri": options.uri, "sha256": report.sha256, "format": report.format},
            "engine": engine or None,
            "triton": triton or None,
            "resources": resources or None,
            "replicas": options.replicas,
        }
    )
    metadata = _drop_none({"name": options.name, "namespace": options.namespace})
    try:
        service = NimService.model_validate({"metadata": metadata, "spec": spec})
    except ValidationError as error:
        raise ModelError("InvalidManifest", "; ".join(map(str, field_errors(error)))) from None
    # What the conversion Job will decide, decided now so a model that cannot be served fails here.
    engine_spec: EngineSpec = service.spec.engine
    max_batch_size = resolve_max_batch_size(engine_spec, report.batching)
    batching = assume_batching(report.batching, max_batch_size)
    notes.append(f"triton batching: {'on' if batching.batched else 'off'} ({batching.reason})")
    if engine_spec.backend == "tensorrt" and report.format == "onnx":
        derive_profiles(report.signature, max_batch_size, engine_spec.profiles)
    elif report.format == "onnx":
        checked_profiles(report.signature, max_batch_size, engine_spec.profiles)
    if report.format == "onnx":
        check_generated(report.signature, engine_spec.parity.generated or ())
        notes.extend(_parity_inputs(report, engine_spec, max_batch_size))
    if service.spec.resources.gpus == 0:
        notes.append("resources.gpus is 0: onnxruntime runs on CPU")
    return service, notes


def _parity_inputs(report: ModelReport, engine: EngineSpec, max_batch_size: int) -> list[str]:
    """The conversion Job's parity inputs, found here as the Job finds them (generated, else searched), so a
    manifest whose check cannot run in the cluster is refused now with what it lacks (ParityInputsRequired);
    a file (engine.parity.inputs) is the cluster's to fetch."""
    parity = engine.parity
    if parity.samples == 0 or parity.inputs is not None:
        return []
    found = reference_set(
        OnnxRuntimeModel(report.path),
        report.signature,
        parity.samples,
        max_batch_size=max_batch_size,
        profiles=engine.profiles or (),
        generated=parity.generated or (),
        advice=GIVE_PARITY_INPUTS,
    )
    if found.origin != "searched":
        return []
    return [
        f"parity inputs: searched, ONNX Runtime runs the model at {'; '.join(found.shapes)} (so will the Job)"
    ]


def manifest_document(service: NimService) -> dict[str, Any]:
    """The manifest with only what was chosen: API defaults stay implicit, as a person would write it."""
    return {
        "apiVersion": service.api_version,
        "kind": service.kind,
        "metadata": service.metadata.model_dump(mode="json", by_alias=True, exclude_none=True),
        "spec": service.spec.model_dump(mode="json", by_alias=True, exclude_unset=True),
    }
