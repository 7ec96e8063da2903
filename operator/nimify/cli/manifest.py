"""The NimService `nimify create` writes: built from a model report (or a pipeline and its members' reports)
and command-line choices, checked by the API models (so a manifest it prints is one the apiserver admits)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from nimify.api import EngineSpec, NimService
from nimify.api.semantics import semantic_errors
from nimify.api.validation import field_errors
from nimify.engine.parity_search import GIVE_PARITY_INPUTS, reference_set
from nimify.engine.profiles import checked_profiles, derive_profiles
from nimify.engine.reference import OnnxRuntimeModel, check_generated
from nimify.model.batching import assume_batching
from nimify.model.errors import ModelError
from nimify.model.inspection import ModelReport
from nimify.triton.ensemble import FIELD, Member, plan_ensemble
from nimify.triton.model_config import resolve_max_batch_size


@dataclass(frozen=True)
class ManifestOptions:
    name: str
    uri: str | None = None
    """The model's uri (a pipeline's members have theirs)."""
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


def _engine_document(options: ManifestOptions) -> dict[str, Any]:
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
    return _drop_none(
        {
            "backend": options.backend,
            "precision": options.precision,
            "maxBatchSize": options.max_batch_size,
            "profiles": options.profiles or None,
            "parity": parity or None,
        }
    )


def _serving_document(options: ManifestOptions) -> dict[str, Any]:
    """spec's fields besides the model (or pipeline): engine defaults, Triton, resources, replicas."""
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
    return _drop_none(
        {
            "engine": _engine_document(options) or None,
            "triton": triton or None,
            "resources": resources or None,
            "replicas": options.replicas,
        }
    )


def _validated(options: ManifestOptions, spec: dict[str, Any]) -> NimService:
    metadata = _drop_none({"name": options.name, "namespace": options.namespace})
    try:
        return NimService.model_validate({"metadata": metadata, "spec": spec})
    except ValidationError as error:
        raise ModelError("InvalidManifest", "; ".join(map(str, field_errors(error)))) from None


def build_nimservice(report: ModelReport, options: ManifestOptions) -> tuple[NimService, list[str]]:
    """The NimService, and notes worth telling the user (the batching decision, CPU placement)."""
    model = {"uri": options.uri, "sha256": report.sha256, "format": report.format}
    service = _validated(options, {"model": model, **_serving_document(options)})
    _, notes = _model_checks(report, service.spec.engine)
    if service.spec.resources.gpus == 0:
        notes.append("resources.gpus is 0: onnxruntime runs on CPU")
    return service, notes


def _model_checks(report: ModelReport, engine: EngineSpec) -> tuple[int, list[str]]:
    """What the conversion Job will decide, decided now so a model that cannot be served fails here: its
    max_batch_size (the parity check run as the Job runs it), and notes worth telling the user."""
    max_batch_size = resolve_max_batch_size(engine, report.batching)
    batching = assume_batching(report.batching, max_batch_size)
    notes = [f"triton batching: {'on' if batching.batched else 'off'} ({batching.reason})"]
    if engine.backend == "tensorrt" and report.format == "onnx":
        derive_profiles(report.signature, max_batch_size, engine.profiles)
    elif report.format == "onnx":
        checked_profiles(report.signature, max_batch_size, engine.profiles)
    if report.format == "onnx":
        check_generated(report.signature, engine.parity.generated or ())
        notes.extend(_parity_inputs(report, engine, max_batch_size))
    return max_batch_size, notes


def build_pipeline_nimservice(
    pipeline: Mapping[str, Any], reports: Mapping[str, ModelReport], options: ManifestOptions
) -> tuple[NimService, list[str]]:
    """The NimService serving `pipeline` (spec.pipeline as written, each member's model pinned to its
    report's digest and format), and notes. Each member is checked as build_nimservice checks a model, with
    the engine settings it is built with, and the graph against the members' signatures and batching, as
    the operator will once their conversions ran; each refusal names the field."""
    members = []
    for index, member in enumerate(pipeline["members"]):
        report = reports[member["name"]]
        given = member["model"].get("sha256")
        if given and given != report.sha256:
            raise ModelError(
                "Sha256Mismatch",
                f"{FIELD}.members[{index}].model.sha256 is {given}, but {report.path} has {report.sha256}:"
                " the local copy is not the model the cluster fetches",
            )
        members.append(
            {**member, "model": {**member["model"], "sha256": report.sha256, "format": report.format}}
        )
    service = _validated(
        options, {"pipeline": {**pipeline, "members": members}, **_serving_document(options)}
    )
    errors = semantic_errors(service.spec)
    if errors:
        raise ModelError("InvalidManifest", "; ".join(map(str, errors)))
    spec = service.spec
    assert spec.pipeline is not None
    name = service.triton_model_name
    notes: list[str] = []
    planned: dict[str, Member] = {}
    for index, member in enumerate(spec.pipeline.members):
        report = reports[member.name]
        try:
            max_batch_size, found = _model_checks(report, spec.member_spec(member).engine)
        except ModelError as error:
            raise ModelError(
                error.reason, f"{FIELD}.members[{index}] ({member.name}): {error.message}"
            ) from None
        notes.extend(f"{member.name}: {note}" for note in found)
        planned[member.name] = Member(report.signature, max_batch_size)
    ensemble = plan_ensemble(name, spec.pipeline, planned)
    batching = f"up to {ensemble.max_batch_size} per request" if ensemble.max_batch_size else "off"
    notes.append(f"pipeline {name}: {len(planned)} members, batching {batching}")
    if spec.resources.gpus == 0:
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
