"""The conversion pipeline behind `nimify convert`: fetch, validate, build, check parity, publish.

Every stage's outcome lands in one ConversionResult, failure included, so the conversion Job always reports
what it learnt (the signature survives a failed build). The repository is assembled in the work folder and
published only after the parity check passed: a wrong engine never reaches Triton.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nimify.api import Backend, EngineSpec, ShapeProfile, TritonSpec
from nimify.engine.cache_key import engine_cache_key
from nimify.engine.fetch import FetchedModel, FetchOptions, fetch_file, fetch_model
from nimify.engine.gpu_product import detect_gpu_product
from nimify.engine.parity import Arrays, ParityReport, compare_outputs
from nimify.engine.parity_inputs import load_parity_inputs
from nimify.engine.parity_search import GIVE_PARITY_INPUTS, reference_set
from nimify.engine.pipeline_document import SOURCE_DIR, SOURCE_NOTE
from nimify.engine.profiles import checked_profiles, derive_profiles
from nimify.engine.quantity import quantity_bytes
from nimify.engine.reference import OnnxRuntimeModel
from nimify.engine.result import ConversionResult
from nimify.engine.served_check import check_config_against_model, serve_requests
from nimify.engine.tensorrt_build import BuildSettings, build_engine, import_tensorrt, timing_cache_path
from nimify.model.batching import assume_batching
from nimify.model.errors import ModelError
from nimify.model.inspection import ModelReport
from nimify.model.onnx_file import read_onnx
from nimify.model.onnxruntime_session import open_session
from nimify.model.plan import import_tensorrt as import_tensorrt_if_present
from nimify.model.signature import Signature
from nimify.model.validation import validate_model
from nimify.triton.config_reader import read_model_config
from nimify.triton.model_config import (
    MODEL_FILENAMES,
    platform_for_backend,
    render_model_config,
    resolve_max_batch_size,
)
from nimify.triton.python_backend_shim import LoadedPythonModel
from nimify.triton.python_model import render_python_model
from nimify.triton.repository import assemble_model_directory, publish_model_directory, write_model_directory

Stage = Callable[[str], None]


@dataclass(frozen=True)
class ConvertRequest:
    uri: str
    name: str
    repository: Path
    work_dir: Path
    backend: str = (
        "onnxruntime"  # tensorrt, onnxruntime, or python (ONNX Runtime inside Triton's python backend)
    )
    model_format: str | None = None
    sha256: str | None = None
    # Representative parity inputs (an .npz): engine.parity.inputs, or a local path given to `nimify convert`.
    parity_inputs: str | None = None
    parity_inputs_sha256: str | None = None
    engine: EngineSpec = field(default_factory=EngineSpec)
    triton: TritonSpec = field(default_factory=TritonSpec)
    gpus: int = 1
    gpu_product: str | None = None
    cache_dir: Path | None = None
    fetch: FetchOptions = field(default_factory=FetchOptions)
    seed: int = 0
    signature_hint: Signature | None = None  # a prebuilt plan's signature where TensorRT cannot read it
    cache_key: str | None = None  # the key the caller (the operator) already files this engine under
    trt: Any = None  # the tensorrt module; imported when None
    cudart: Any = None  # cuda-python's runtime bindings; imported when None


@dataclass
class _Built:
    files: dict[str, Path | str]
    profiles: list[ShapeProfile] = field(default_factory=list)


def run_conversion(request: ConvertRequest, on_stage: Stage | None = None) -> ConversionResult:
    """Run the pipeline; never raises for a model problem: the result carries the error."""
    result = ConversionResult(backend=request.backend, model_name=request.name)
    try:
        _convert(request, result, on_stage or (lambda stage: None))
    except ModelError as error:
        result.error = error
    return result


@contextlib.contextmanager
def _timed(result: ConversionResult, stage: str, on_stage: Stage) -> Iterator[None]:
    on_stage(stage)
    started = time.monotonic()
    try:
        yield
    finally:
        result.seconds[stage] = time.monotonic() - started


def _convert(request: ConvertRequest, result: ConversionResult, on_stage: Stage) -> None:
    platform = platform_for_backend(request.backend)
    with _timed(result, "fetch", on_stage):
        fetched = fetch_model(
            request.uri, request.work_dir / "download", sha256=request.sha256, options=request.fetch
        )
    with _timed(result, "validate", on_stage):
        validation_backend = "tensorrt" if request.backend == "tensorrt" else "onnxruntime"
        report = validate_model(
            fetched.path,
            backend=validation_backend,
            model_format=request.model_format,
            signature_hint=request.signature_hint,
        )
        result.signature = report.signature
        max_batch_size = resolve_max_batch_size(request.engine, report.batching)
        result.batching = assume_batching(report.batching, max_batch_size)
        result.max_batch_size = max_batch_size

    trt = None
    if request.backend == "tensorrt":
        if request.trt is not None:
            trt = request.trt
        elif report.format == "tensorrt-plan":
            trt = import_tensorrt_if_present()  # a prebuilt plan is only published: TensorRT is optional
        else:
            trt = import_tensorrt()
        result.tensorrt_version = None if trt is None else str(trt.__version__)
        result.gpu_product = request.gpu_product or detect_gpu_product()
    # The backend actually built (a --backend override may differ from the spec's); python runs ONNX Runtime.
    built_backend = Backend.ONNXRUNTIME if request.backend == "python" else Backend(request.backend)
    result.cache_key = request.cache_key or engine_cache_key(
        report.sha256,
        request.engine.model_copy(update={"backend": built_backend}),
        result.tensorrt_version,
        result.gpu_product,
        variant="python-backend" if request.backend == "python" else None,
    )

    with _timed(result, "build", on_stage):
        if request.backend == "tensorrt":
            built = _build_tensorrt(request, report, fetched, max_batch_size, result, trt)
        else:
            built = _onnx_files(fetched, report, request.backend, max_batch_size)
            built.profiles = checked_profiles(report.signature, max_batch_size, request.engine.profiles)
            result.build_seconds, result.cache_hit = 0.0, False

    config = render_model_config(
        request.name,
        report.signature,
        platform,
        max_batch_size=max_batch_size,
        triton=request.triton,
        gpus=0 if request.backend == "python" else request.gpus,
        profiles=built.profiles,
    )
    assembled_root = request.work_dir / "assembled"
    shutil.rmtree(assembled_root, ignore_errors=True)
    assembled = assemble_model_directory(assembled_root / request.name, config, built.files)

    if report.format == "onnx" and request.engine.parity.samples > 0:
        with _timed(result, "parity", on_stage):
            parity = _check_parity(
                request, report, fetched, assembled, max_batch_size, built.profiles, trt, result
            )
            result.parity = parity
        if not parity.passed:
            raise ModelError(
                "ParityFailed",
                f"{_PARITY_FAILURES[request.backend](max_batch_size)} beyond atol {parity.atol} "
                f"/ rtol {parity.rtol}: " + "; ".join(parity.failures[:3]),
            )

    with _timed(result, "publish", on_stage):
        published = publish_model_directory(assembled, request.repository, request.name)
        result.repository = str(published)
        if request.backend == "tensorrt" and report.format == "onnx":
            # The ONNX model beside its engine: a pipeline's end-to-end check chains the members' sources in
            # ONNX Runtime (engine/pipeline_check.py). The engine alone cannot answer on a CPU.
            source = _onnx_files(fetched, report, "onnxruntime", max_batch_size).files
            write_model_directory(request.repository.parent, SOURCE_DIR, SOURCE_NOTE, source)


def _onnx_files(fetched: FetchedModel, report: ModelReport, backend: str, max_batch_size: int) -> _Built:
    root = fetched.path.parent.resolve()
    files: dict[str, Path | str] = {"model.onnx": fetched.path}
    for relative in report.external_data:
        # External data keeps its relative location: ONNX Runtime resolves it against model.onnx's folder.
        files[relative] = root / relative
    if backend == "python":
        files[MODEL_FILENAMES["python"]] = render_python_model(report.signature, batched=max_batch_size > 0)
    return _Built(files)


def _build_tensorrt(
    request: ConvertRequest,
    report: ModelReport,
    fetched: FetchedModel,
    max_batch_size: int,
    result: ConversionResult,
    trt: Any,
) -> _Built:
    if report.format == "tensorrt-plan":
        # A prebuilt plan is served as it is: nothing to build, and no ONNX model to compare it with.
        result.build_seconds, result.cache_hit = 0.0, False
        return _Built({"model.plan": fetched.path})
    profiles = derive_profiles(report.signature, max_batch_size, request.engine.profiles)
    assert result.cache_key is not None
    cached = request.cache_dir / result.cache_key / "model.plan" if request.cache_dir else None
    if cached is not None and cached.is_file():
        result.build_seconds, result.cache_hit = 0.0, True
        return _Built({"model.plan": cached}, profiles)
    plan_path = request.work_dir / "engine" / "model.plan"
    settings = BuildSettings(
        precision=request.engine.precision.value,
        profiles=profiles,
        workspace_bytes=quantity_bytes(request.engine.workspace, "engine.workspace")
        if request.engine.workspace
        else None,
        timing_cache=timing_cache_path(request.cache_dir, str(trt.__version__), result.gpu_product)
        if request.cache_dir
        else None,
    )
    build = build_engine(fetched.path, plan_path, settings, model=read_onnx(fetched.path), trt=trt)
    result.build_seconds, result.cache_hit = build.seconds, False
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(".partial")
        shutil.copyfile(plan_path, partial)
        partial.replace(cached)
    return _Built({"model.plan": plan_path}, profiles)


# What each backend's parity check compares (ParityStatus.check), and how its failure reads.
PARITY_CHECKS = {"tensorrt": "tensorrtEngine", "onnxruntime": "servedConfig", "python": "pythonBackend"}
_PARITY_FAILURES: dict[str, Callable[[int], str]] = {
    "tensorrt": lambda _: "TensorRT engine outputs differ from ONNX Runtime",
    "onnxruntime": lambda batch: (
        f"served as config.pbtxt batches requests (up to {batch} per batch), the outputs differ from each "
        "request run alone (the model mixes the batch: set engine.maxBatchSize 0)"
        if batch
        else "served as config.pbtxt declares it, the outputs differ from ONNX Runtime's"
    ),
    "python": lambda _: "the python backend's model.py outputs differ from ONNX Runtime",
}


def _given_inputs(request: ConvertRequest, signature: Signature) -> list[Arrays]:
    if request.parity_inputs is None:
        return []
    try:
        fetched = fetch_file(
            request.parity_inputs,
            request.work_dir / "parity",
            sha256=request.parity_inputs_sha256,
            options=request.fetch,
        )
    except ModelError as error:
        reason = "InvalidParityInputs" if error.reason == "ModelNotFound" else error.reason
        raise ModelError(reason, f"engine.parity.inputs: {error.message}") from None
    return load_parity_inputs(fetched.path, signature, f"engine.parity.inputs {fetched.source}")


def _check_parity(
    request: ConvertRequest,
    report: ModelReport,
    fetched: FetchedModel,
    assembled: Path,
    max_batch_size: int,
    profiles: list[ShapeProfile],
    trt: Any,
    result: ConversionResult,
) -> ParityReport:
    parity_spec = request.engine.parity
    given = _given_inputs(request, report.signature)
    result.parity_check = PARITY_CHECKS[request.backend]
    references = reference_set(
        OnnxRuntimeModel(fetched.path),
        report.signature,
        parity_spec.samples,
        max_batch_size=max_batch_size,
        profiles=profiles,
        generated=parity_spec.generated or (),
        given=given,
        seed=request.seed,
        advice=GIVE_PARITY_INPUTS,
    )
    result.parity_inputs, result.parity_shapes = references.origin, references.shapes
    inputs, reference = references.inputs, references.outputs
    candidate = _candidate_outputs(request, report.signature, assembled, inputs, max_batch_size, trt)
    return compare_outputs(reference, candidate, atol=parity_spec.atol, rtol=parity_spec.rtol)


def _candidate_outputs(
    request: ConvertRequest,
    signature: Signature,
    assembled: Path,
    inputs: list[Arrays],
    max_batch_size: int,
    trt: Any,
) -> list[Arrays]:
    version_dir = assembled / "1"
    if request.backend == "tensorrt":
        from nimify.engine.tensorrt_runner import TensorRTModel, import_cudart

        cudart = request.cudart if request.cudart is not None else import_cudart()
        engine = TensorRTModel((version_dir / "model.plan").read_bytes(), trt, cudart)
        try:
            return [engine.run(feeds) for feeds in inputs]
        finally:
            engine.close()
    if request.backend == "onnxruntime":
        config = read_model_config((assembled / "config.pbtxt").read_text())
        session = open_session(version_dir / "model.onnx")
        check_config_against_model(config, session)
        return serve_requests(config, session, inputs)
    python_model = LoadedPythonModel(assembled.parent, assembled.name)
    try:
        # Requests of one shape arrive together, as the dynamic batcher would hand them over, so the
        # generated model.py's batching path is what gets checked.
        outputs = (
            python_model.infer(*inputs)
            if max_batch_size
            else [python_model.infer(feeds)[0] for feeds in inputs]
        )
    finally:
        python_model.close()
    scalars = {t.name for t in signature.outputs if t.rank == 0}
    # Triton carries a scalar as [1]; compare it as the scalar the model produced.
    return [
        {name: a.reshape(()) if name in scalars and a.size == 1 else a for name, a in out.items()}
        for out in outputs
    ]
