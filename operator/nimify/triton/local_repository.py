"""The model repository `nimify serve` hands to the local tritonserver, which has only the python backend.

An ONNX file becomes a python-backend model running ONNX Runtime. A repository written by `nimify convert`
is served as it is when it already uses the python backend; an onnxruntime_onnx model is translated: its
config keeps every setting (batching, warm-up, cache) and only the platform becomes `backend: "python"` with a
generated model.py next to the same model.onnx. A TensorRT plan cannot run here (no GPU, no TensorRT backend).
A pipeline is its members, each written as an ONNX file is, and the ensemble over them.
"""

from __future__ import annotations

import dataclasses
import importlib
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nimify.api import EngineSpec, TritonSpec
from nimify.api.spec import PipelineSpec
from nimify.model.batching import assume_batching
from nimify.model.errors import ModelError
from nimify.model.inspection import ModelReport
from nimify.model.validation import validate_model
from nimify.triton.ensemble import Member, plan_ensemble, render_ensemble_config
from nimify.triton.model_config import render_model_config, resolve_max_batch_size
from nimify.triton.python_model import render_python_model
from nimify.triton.repository import write_model_directory


@dataclass(frozen=True)
class LocalRepository:
    path: Path
    models: tuple[str, ...]
    cache_wanted: bool  # some model enables the response cache, so the server needs --cache-config
    translated: tuple[str, ...] = ()


def model_name_for(path: Path) -> str:
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in path.stem.lower()).strip("-_")
    return name or "model"


def repository_from_onnx(
    model: Path,
    destination: Path,
    *,
    name: str | None = None,
    engine: EngineSpec | None = None,
    triton: TritonSpec | None = None,
) -> tuple[LocalRepository, ModelReport]:
    name = name or model_name_for(model)
    triton = triton or TritonSpec()
    report, _ = _write_onnx_model(
        model, destination, name, engine or EngineSpec(backend="onnxruntime"), triton
    )
    return LocalRepository(destination, (name,), _cache_wanted(triton)), report


def _cache_wanted(triton: TritonSpec) -> bool:
    return triton.response_cache is not None and triton.response_cache.enabled


def _write_onnx_model(
    model: Path, destination: Path, name: str, engine: EngineSpec, triton: TritonSpec
) -> tuple[ModelReport, int]:
    """The model's folder as a python-backend model running ONNX Runtime; its report (batching as served)
    and max_batch_size."""
    report = validate_model(model, backend="python")
    max_batch_size = resolve_max_batch_size(engine, report.batching)
    config = render_model_config(
        name, report.signature, "python", max_batch_size=max_batch_size, triton=triton, gpus=0
    )
    root = model.parent.resolve()
    files: dict[str, Path | str] = {"model.onnx": model}
    files.update({relative: root / relative for relative in report.external_data})
    files["model.py"] = render_python_model(report.signature, batched=max_batch_size > 0)
    write_model_directory(destination, name, config, files)
    served = dataclasses.replace(report, batching=assume_batching(report.batching, max_batch_size))
    return served, max_batch_size


def repository_from_pipeline(
    models: Mapping[str, Path],
    pipeline: PipelineSpec,
    destination: Path,
    *,
    name: str,
    engine: EngineSpec | None = None,
    triton: TritonSpec | None = None,
) -> tuple[LocalRepository, dict[str, ModelReport]]:
    """Each member (its ONNX file in `models`) served as `repository_from_onnx` serves one, with its own
    engine settings or `engine`, and the ensemble `name` (no member's) over them, checked against their
    signatures."""
    triton = triton or TritonSpec()
    engine = engine or EngineSpec(backend="onnxruntime")
    reports: dict[str, ModelReport] = {}
    members: dict[str, Member] = {}
    for member in pipeline.members:
        report, max_batch_size = _write_onnx_model(
            models[member.name], destination, member.name, member.engine or engine, triton
        )
        reports[member.name] = report
        members[member.name] = Member(report.signature, max_batch_size)
    ensemble = plan_ensemble(name, pipeline, members)
    write_model_directory(destination, name, render_ensemble_config(ensemble), {})
    return LocalRepository(destination, (name, *members), _cache_wanted(triton)), reports


def _model_dirs(path: Path) -> list[Path]:
    if (path / "config.pbtxt").is_file():
        return [path]
    found = sorted(
        child
        for child in path.iterdir()
        if (child / "config.pbtxt").is_file() and not child.name.startswith(".")
    )
    if not found:
        raise ModelError("NotAModelRepository", f"{path} holds no model folder with a config.pbtxt")
    return found


def _protobuf_text_format() -> Any:
    return importlib.import_module("google.protobuf.text_format")


def _parse_config(model_dir: Path) -> Any:
    from tritonclient.grpc import model_config_pb2

    text_format = _protobuf_text_format()

    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse((model_dir / "config.pbtxt").read_text(), config)
    except text_format.ParseError as error:
        raise ModelError("InvalidModelConfig", f"{model_dir.name}/config.pbtxt: {error}") from None
    return config


def repository_from_directory(source: Path, destination: Path) -> LocalRepository:
    from tritonclient.grpc import model_config_pb2

    text_format = _protobuf_text_format()

    models, translated, cache = [], [], False
    for model_dir in _model_dirs(source):
        config = _parse_config(model_dir)
        name = config.name or model_dir.name
        kind = config.backend or config.platform
        target = destination / model_dir.name
        if target.exists():
            shutil.rmtree(target)
        if kind in ("tensorrt_plan", "tensorrt"):
            raise ModelError(
                "TensorRTNeedsGpu",
                f"model '{name}' is a TensorRT plan; the local tritonserver runs the python backend "
                "on CPU only: "
                "serve plans with a GPU Triton (the NimService does)",
            )
        shutil.copytree(model_dir, target, ignore=shutil.ignore_patterns(".*"))
        if kind in ("onnxruntime_onnx", "onnxruntime"):
            _translate_to_python(target, config, model_config_pb2)
            (target / "config.pbtxt").write_text(text_format.MessageToString(config))
            translated.append(name)
        elif kind == "python":
            _validate_python_model(target)
        else:
            raise ModelError(
                "UnsupportedBackend", f"model '{name}' uses {kind!r}; the local tritonserver has only python"
            )
        cache = cache or config.response_cache.enable
        models.append(name)
    return LocalRepository(destination, tuple(models), cache, tuple(translated))


def _validate_python_model(model_dir: Path) -> None:
    """A python-backend model that runs an ONNX file (as `nimify convert --backend python` writes it) gets the
    checks `serve FILE` applies; other python models are the author's code, served as they are."""
    for onnx_path in sorted(model_dir.glob("[0-9]*/model.onnx")):
        validate_model(onnx_path, backend="python")


def _translate_to_python(model_dir: Path, config: Any, model_config_pb2: Any) -> None:
    config.platform = ""
    config.backend = "python"
    for group in config.instance_group:
        group.kind = model_config_pb2.ModelInstanceGroup.Kind.KIND_CPU
        del group.gpus[:]
    filename = config.default_model_filename or "model.onnx"
    config.default_model_filename = ""
    versions = [d for d in model_dir.iterdir() if d.is_dir() and d.name.isdigit()]
    if not versions:
        raise ModelError("NotAModelRepository", f"{model_dir.name} has no version folder")
    for version in versions:
        onnx_path = version / filename
        if not onnx_path.is_file():
            raise ModelError("ModelNotFound", f"{model_dir.name}/{version.name}/{filename} is missing")
        report = validate_model(onnx_path, backend="python")
        (version / "model.py").write_text(
            render_python_model(report.signature, batched=config.max_batch_size > 0, model_file=filename)
        )
