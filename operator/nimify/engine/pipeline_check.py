"""A pipeline checked end to end before it serves: the ensemble served by a real Triton against the members'
ONNX models chained in ONNX Runtime, on the same inputs.

It runs in the operator's check Job (render/pipeline_check.py), one pod: `prepare` writes the model
repository Triton serves (each member's config as the Deployment will serve it, its version folder linked
from the engine claim, and the ensemble), the Triton of the serving image runs beside it (a native sidecar
whose startup probe waits for the ensemble), and `check` compares. Each member's reference is its source
model: the ONNX file a TensorRT conversion keeps beside the engine (`source/`), else the one the onnxruntime
backend serves. Inputs are generated for the pipeline's inputs, or searched as for a model's own check
(engine/parity_search.py) with the chain as the runtime to ask.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nimify.engine.parity import compare_outputs
from nimify.engine.parity_search import GIVE_PARITY_INPUTS, reference_set
from nimify.engine.pipeline_document import CHECK, CONFIG, MODEL_FILE, SOURCE_DIR, CheckDocument
from nimify.engine.pipeline_reference import Arrays, ChainedOnnxRuntime
from nimify.model.dtypes import by_name, numpy_dtype
from nimify.model.errors import ModelError
from nimify.model.signature import Signature


def prepare_repository(document: CheckDocument, engines: Path, repository: Path) -> None:
    """Triton's model repository for the check: each member's config and its engine's version folder
    (a link into the engine claim, read-only), and the ensemble with its empty version folder."""
    for member, (config, engine) in document.members.items():
        directory = repository / member
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG).write_text(config)
        for version in sorted(p for p in (engines / engine).iterdir() if p.is_dir() and p.name.isdigit()):
            link = directory / version.name
            if not link.exists():
                link.symlink_to(version, target_is_directory=True)
    ensemble = repository / document.name
    (ensemble / "1").mkdir(parents=True, exist_ok=True)
    (ensemble / CONFIG).write_text(document.ensemble_config)


def reference_model(engines: Path, engine: str) -> Path:
    """A member's ONNX model: the source a TensorRT engine was built from, else the served model.onnx."""
    source = engines / engine
    kept = source.parent.parent / SOURCE_DIR / "1" / MODEL_FILE  # engines/KEY/repository/model → KEY/source
    if kept.is_file():
        return kept
    for version in sorted(source.iterdir()):
        if (version / MODEL_FILE).is_file():
            return version / MODEL_FILE
    raise ModelError("PipelineReferenceMissing", f"no ONNX model for the reference in {engine}")


def infer_outputs(client: Any, name: str, signature: Signature, feeds: Arrays) -> Arrays:
    """Every output of model `name` for one request, asked of a Triton with its binary tensors."""
    import tritonclient.http as httpclient

    inputs = []
    for tensor in signature.inputs:
        array = np.ascontiguousarray(feeds[tensor.name])
        item = httpclient.InferInput(tensor.name, list(array.shape), by_name(tensor.dtype).kserve)
        item.set_data_from_numpy(array, binary_data=True)
        inputs.append(item)
    outputs = [httpclient.InferRequestedOutput(t.name, binary_data=True) for t in signature.outputs]
    result = client.infer(name, inputs, outputs=outputs)
    return {t.name: np.asarray(result.as_numpy(t.name)) for t in signature.outputs}


def _as_reference(served: Arrays, reference: Arrays) -> Arrays:
    """Served outputs in the reference's shapes: a batched ensemble answers a [batch] tensor as [batch, 1]."""
    shaped = {}
    for name, array in served.items():
        want = reference.get(name)
        fits = want is not None and array.shape != want.shape and array.size == want.size
        shaped[name] = array.reshape(want.shape) if fits and want is not None else array
    return shaped


#: How long the check waits for Triton to load the members and the ensemble.
LOAD_SECONDS = 900.0


def wait_for_ensemble(
    client: Any, name: str, timeout: float = LOAD_SECONDS, clock: Callable[[], float] = time.monotonic
) -> None:
    """Return once the ensemble is ready; a model Triton could not load fails at once, with Triton's reason
    (Triton keeps running with the models it loaded: the sidecar runs with --exit-on-error=false)."""
    deadline = clock() + timeout
    while True:
        failed: list[str] = []
        with contextlib.suppress(Exception):  # not listening yet
            if client.is_model_ready(name):
                return
            failed = [
                f"{entry['name']}: {entry.get('reason') or 'not loaded'}"
                for entry in client.get_model_repository_index()
                if entry.get("state") == "UNAVAILABLE"
            ]
        if failed:
            raise ModelError("PipelineLoadFailed", "Triton could not load " + "; ".join(failed)[:1500])
        if clock() > deadline:
            raise ModelError("PipelineLoadFailed", f"the ensemble {name} was not ready after {timeout:.0f}s")
        time.sleep(1.0)


def check_served_pipeline(
    document: CheckDocument, engines: Path, url: str, load_seconds: float = LOAD_SECONDS
) -> dict[str, Any]:
    """The end-to-end check's result: {"ok", "parity": ParityStatus fields} or {"ok": false, "error"}."""
    import tritonclient.http as httpclient

    parity = document.pipeline.parity
    chain = ChainedOnnxRuntime(
        document.pipeline,
        {member: reference_model(engines, engine) for member, (_, engine) in document.members.items()},
    )
    try:
        references = reference_set(
            chain,
            document.signature,
            parity.samples,
            max_batch_size=document.max_batch_size,
            generated=parity.generated or (),
            advice=GIVE_PARITY_INPUTS.replace("engine.parity", "pipeline.parity"),
        )
    except ModelError as error:
        return {"ok": False, "error": error.to_json()}
    client = httpclient.InferenceServerClient(url.removeprefix("http://"), network_timeout=300.0)
    try:
        wait_for_ensemble(client, document.name, load_seconds)
    except ModelError as error:
        client.close()
        return {"ok": False, "error": error.to_json()}
    try:
        served = []
        for feeds, want in zip(references.inputs, references.outputs, strict=True):
            cast = {t.name: feeds[t.name].astype(numpy_dtype(t.dtype)) for t in document.signature.inputs}
            served.append(_as_reference(infer_outputs(client, document.name, document.signature, cast), want))
    except Exception as error:  # tritonclient raises its own exception types, with the server's message
        return {"ok": False, "error": {"reason": "PipelineInferFailed", "message": str(error)[:1500]}}
    finally:
        client.close()
    report = compare_outputs(references.outputs, served, atol=parity.atol, rtol=parity.rtol)
    status = {"check": CHECK, "inputs": references.origin, **report.to_status()}
    if references.shapes:
        status["shapes"] = references.shapes
    if not report.passed:
        message = f"the served ensemble differs from the chained ONNX models beyond atol {parity.atol} / rtol"
        message += f" {parity.rtol}: " + "; ".join(report.failures[:3])
        return {"ok": False, "parity": status, "error": {"reason": "ParityFailed", "message": message}}
    return {"ok": True, "parity": status}
