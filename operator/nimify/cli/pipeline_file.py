"""The pipeline `nimify create|serve|openapi --pipeline FILE` read: FILE's spec.pipeline, and a local copy of
each member's model.

FILE holds the spec.pipeline document (serve and openapi also take a NimService manifest with one, for its
name and spec.engine). Each member's model.uri is where the cluster fetches it; the file nimify inspects here
is, in order: `--model-file MEMBER=PATH`; the uri itself when it is a path (relative to FILE's folder: a
pipeline kept beside its models serves as it is, but create refuses it, since the cluster cannot fetch it);
else the uri downloaded, as `nimify create URI` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError

from nimify.api import EngineSpec, NimService
from nimify.api.spec import PipelineSpec
from nimify.api.spec.pipeline import order_errors
from nimify.api.validation import field_errors
from nimify.engine.sources import parse_uri
from nimify.model.errors import ModelError
from nimify.triton.local_repository import model_name_for

FIELD = "spec.pipeline"
#: What a member's local path stands for while the spec is validated (the uri rules are the cluster's); the
#: suffix is kept, since it tells an ONNX file from a TensorRT plan.
_LOCAL_STAND_IN = "pvc://local/{name}{suffix}"

PipelineOption = Annotated[
    Path | None,
    typer.Option(
        "--pipeline",
        help="A pipeline instead of MODEL: a YAML file holding spec.pipeline (members, steps, outputs);"
        " serve and openapi take a NimService with one too.",
    ),
]
#: serve's and openapi's --max-batch-size (a pipeline's members without engine settings take it too).
MaxBatchSizeOption = Annotated[
    int | None,
    typer.Option(
        "--max-batch-size",
        min=0,
        help="Triton's max_batch_size (a pipeline file: for members without engine settings).",
    ),
]
ModelFileOption = Annotated[
    list[str] | None,
    typer.Option(
        "--model-file",
        help="MEMBER=PATH: the local copy of a pipeline member's model (default: its model.uri, a path"
        " relative to the pipeline file or a URI to download), repeatable.",
    ),
]


def check_sources(model: object, pipeline: Path | None, model_files: list[str] | None) -> None:
    """MODEL or --pipeline, one of them; --model-file only with --pipeline."""
    if (model is None) == (pipeline is None):
        raise typer.BadParameter("give MODEL or --pipeline FILE, one of them", param_hint="MODEL")
    if model_files and pipeline is None:
        raise typer.BadParameter("--model-file is a pipeline member's: use it with --pipeline")


def refuse_model_options(given: Mapping[str, object]) -> None:
    """Options that describe one model (given: truthy) have no meaning for a pipeline's several."""
    for option, value in given.items():
        if value:
            raise typer.BadParameter(
                f"{option} is one model's: give it in the member's engine in the pipeline file",
                param_hint=option,
            )


@dataclass(frozen=True)
class PipelineFile:
    path: Path
    document: dict[str, Any]
    """spec.pipeline as written."""
    pipeline: PipelineSpec
    """spec.pipeline, checked (members whose uri is a path are validated with a stand-in uri)."""
    local: dict[str, Path]
    """The members whose model.uri is a path: the file it names."""
    service: NimService | None = None
    """The NimService, when FILE is one."""

    @property
    def name(self) -> str:
        """The pipeline's Triton name: the NimService's, else the file's stem."""
        if self.service is not None and self.service.metadata.name:
            return self.service.metadata.name
        return model_name_for(self.path)

    def default_engine(self, given: EngineSpec) -> EngineSpec:
        """The engine settings of members that have none: a NimService's spec.engine, else `given`."""
        return self.service.spec.engine if self.service is not None else given

    def engine(self, member: str, default: EngineSpec) -> EngineSpec:
        return self.pipeline.member(member).engine or self.default_engine(default)


def _refused(errors: list[tuple[str, str]]) -> ModelError:
    return ModelError("InvalidPipeline", "; ".join(f"{at}: {why}" for at, why in errors))


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ModelError("InvalidPipeline", f"{path}: {type(error).__name__}: {error}") from None
    if not isinstance(data, dict):
        raise ModelError("InvalidPipeline", f"{path}: expected spec.pipeline (members, steps, outputs)")
    return data


def _checked(document: dict[str, Any], path: Path) -> tuple[PipelineSpec, dict[str, Path]]:
    local: dict[str, Path] = {}
    stand_in = dict(document)
    members = document.get("members")
    if isinstance(members, list):
        stand_in["members"] = []
        for member in members:
            uri = member.get("model", {}).get("uri") if isinstance(member, dict) else None
            if isinstance(uri, str) and parse_uri(uri).scheme == "local":
                name = str(member.get("name"))
                file = Path(uri).expanduser()
                local[name] = file if file.is_absolute() else path.parent / file
                uri = _LOCAL_STAND_IN.format(name=name, suffix=file.suffix)
                member = {**member, "model": {**member["model"], "uri": uri}}
            stand_in["members"].append(member)
    try:
        pipeline = PipelineSpec.model_validate(stand_in)
    except ValidationError as error:
        raise _refused([(e.path, e.message) for e in field_errors(error, (FIELD,))]) from None
    problems = order_errors(pipeline)
    if problems:
        raise _refused([(f"{FIELD}.{at}", why) for at, why in problems])
    return pipeline, local


def load_pipeline(path: Path, *, manifest: bool = True) -> PipelineFile:
    """FILE's pipeline, its shape and step order checked (each refusal names the field); a NimService with
    spec.pipeline too when `manifest`."""
    data = _read(path)
    if data.get("kind") != "NimService":
        pipeline, local = _checked(data, path)
        return PipelineFile(path, data, pipeline, local)
    if not manifest:
        raise ModelError(
            "InvalidPipeline",
            f"{path} is a NimService: give the spec.pipeline document (members, steps, outputs)",
        )
    spec = data.get("spec")
    document = spec.get("pipeline") if isinstance(spec, dict) else None
    if not isinstance(spec, dict) or not isinstance(document, dict):
        raise ModelError("InvalidPipeline", f"{path}: the NimService has no spec.pipeline")
    pipeline, local = _checked(document, path)
    try:
        service = NimService.model_validate(
            {
                **data,
                "spec": {
                    **spec,
                    "pipeline": pipeline.model_dump(mode="json", by_alias=True, exclude_unset=True),
                },
            }
        )
    except ValidationError as error:
        raise ModelError("InvalidManifest", "; ".join(map(str, field_errors(error)))) from None
    return PipelineFile(path, document, pipeline, local, service)


def check_pipeline_name(name: str, pipeline: PipelineSpec, where: str) -> None:
    """Triton serves each member under its name beside the pipeline under `name`: they must differ."""
    if any(member.name == name for member in pipeline.members):
        raise ModelError(
            "PipelineNameTaken",
            f"{where}: {name!r} is also a member's name, and Triton serves the pipeline under it beside each"
            " member under its own: choose another",
        )


def parse_model_files(texts: list[str] | None, pipeline: PipelineSpec) -> dict[str, Path]:
    """`--model-file scaler=scaler.onnx` → {member: path}, for members the pipeline has."""
    files: dict[str, Path] = {}
    names = [member.name for member in pipeline.members]
    for text in texts or []:
        name, sep, file = text.partition("=")
        if not sep or not name or not file:
            raise typer.BadParameter(f"{text!r}: expected MEMBER=PATH, e.g. scaler=models/scaler.onnx")
        if name not in names:
            raise typer.BadParameter(
                f"{text!r}: the pipeline has no member {name!r}; its members are {', '.join(names)}"
            )
        files[name] = Path(file).expanduser()
    return files


@contextlib.contextmanager
def member_models(
    loaded: PipelineFile, model_files: Mapping[str, Path], *, show_progress: bool = True
) -> Iterator[dict[str, Path]]:
    """Each member's model as a local file (see the module's docstring); downloads last until the end."""
    from nimify.cli.model import local_model

    with contextlib.ExitStack() as stack:
        files: dict[str, Path] = {}
        for member in loaded.pipeline.members:
            if member.name in model_files:
                files[member.name] = model_files[member.name]
            elif member.name in loaded.local:
                files[member.name] = loaded.local[member.name]
            else:
                files[member.name] = stack.enter_context(
                    local_model(member.model.uri, show_progress=show_progress)
                )
        yield files
