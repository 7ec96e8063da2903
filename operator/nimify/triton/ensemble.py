"""A pipeline as a Triton ensemble: its tensor graph checked against the members' real signatures, and the
ensemble's config.pbtxt. Pure.

The spec's admission rules (api/spec/pipeline.py) know the graph's shape; only the members' signatures (from
their conversions) say whether it connects: every member input fed and every named tensor there, the same
dtype and rank on both ends of a connection, fixed sizes that agree, and batching that holds across all the
members. Each refusal names the field at fault.

Ensemble tensors: a pipeline input keeps its name; a step output that leaves the pipeline takes the output's
name; any other step output is `STEP.OUTPUT`, its reference in the spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from nimify.api.spec import PIPELINE_INPUT, PipelineSpec
from nimify.api.spec.pipeline import ref_step, ref_tensor
from nimify.model.errors import ModelError
from nimify.model.signature import Dim, Signature, TensorInfo
from nimify.triton.model_config import tensor_message
from nimify.triton.pbtxt import Message, render

TENSOR_UNKNOWN = "PipelineTensorUnknown"
TENSOR_MISMATCH = "PipelineTensorMismatch"
INPUT_UNFED = "PipelineInputUnfed"
BATCHING_MISMATCH = "PipelineBatchingMismatch"
FIELD = "spec.pipeline"


@dataclass(frozen=True)
class Member:
    """A pipeline member as its conversion left it: the model's signature and Triton's max_batch_size."""

    signature: Signature
    max_batch_size: int


@dataclass(frozen=True)
class EnsembleStep:
    member: str
    input_map: tuple[tuple[str, str], ...]
    """(member input, ensemble tensor)."""
    output_map: tuple[tuple[str, str], ...]
    """(member output, ensemble tensor): only the outputs something reads."""


@dataclass(frozen=True)
class Ensemble:
    name: str
    max_batch_size: int
    signature: Signature
    """The pipeline's inputs and outputs, batch dimension included when it batches."""
    steps: tuple[EnsembleStep, ...]


def _error(reason: str, path: str, message: str) -> ModelError:
    return ModelError(reason, f"{FIELD}.{path}: {message}")


def _tensor(tensors: tuple[TensorInfo, ...], name: str) -> TensorInfo | None:
    return next((t for t in tensors if t.name == name), None)


def _describe(tensor: TensorInfo) -> str:
    return f"{tensor.dtype} {tensor.describe_dims()}"


def _joined(a: TensorInfo, b: TensorInfo, batched: bool) -> tuple[Dim, ...] | None:
    """The dims two tensors that meet agree on (fixed where either is fixed), or None when they cannot meet:
    another dtype, rank or fixed size (the batch dimension, when batching, is the ensemble's)."""
    if a.dtype != b.dtype or a.rank != b.rank:
        return None
    dims: list[Dim] = []
    for index, (x, y) in enumerate(zip(a.dims, b.dims, strict=True)):
        if batched and index == 0:
            dims.append(None)
        elif isinstance(x, int) and isinstance(y, int):
            if x != y:
                return None
            dims.append(x)
        else:
            dims.append(x if isinstance(x, int) else y)
    return tuple(dims)


def _batch_size(pipeline: PipelineSpec, members: Mapping[str, Member]) -> int:
    """The ensemble's max_batch_size: the smallest member's when every member batches, 0 when none does."""
    sizes = {name: members[name].max_batch_size for name in (m.name for m in pipeline.members)}
    batching = sorted(name for name, size in sizes.items() if size > 0)
    single = sorted(name for name, size in sizes.items() if size == 0)
    if batching and single:
        raise _error(
            BATCHING_MISMATCH,
            f"members[{pipeline.member_index(single[0])}].engine.maxBatchSize",
            f"member {single[0]} does not batch (max_batch_size 0: its model's first dimension is not a batch"
            f" dimension of every input and output, or maxBatchSize is 0) while {', '.join(batching)} do(es):"
            " an ensemble passes one batch through every member; set engine.maxBatchSize 0 on every member"
            " to serve the pipeline without batching",
        )
    return min(sizes[name] for name in batching) if batching else 0


def plan_ensemble(name: str, pipeline: PipelineSpec, members: Mapping[str, Member]) -> Ensemble:
    """The ensemble serving `pipeline` under `name`, or a ModelError naming the field that cannot connect."""
    max_batch_size = _batch_size(pipeline, members)
    batched = max_batch_size > 0
    leaving = {o.source: o.name for o in pipeline.outputs}
    inputs: dict[str, tuple[TensorInfo, str]] = {}  # pipeline input -> (its tensor so far, first user)
    used: dict[str, list[str]] = {}  # step -> outputs something reads
    for index, step in enumerate(pipeline.steps):
        member = members[step.member]
        named = {t.name for t in step.inputs}
        for unfed in (t.name for t in member.signature.inputs if t.name not in named):
            raise _error(
                INPUT_UNFED,
                f"steps[{index}].inputs",
                f"{step.member}'s input {unfed!r} has no source; its inputs are"
                f" {', '.join(t.name for t in member.signature.inputs)}",
            )
        for number, source in enumerate(step.inputs):
            path = f"steps[{index}].inputs[{number}]"
            target = _tensor(member.signature.inputs, source.name)
            if target is None:
                raise _error(
                    TENSOR_UNKNOWN,
                    f"{path}.name",
                    f"{step.member} has no input {source.name!r}; its inputs are"
                    f" {', '.join(t.name for t in member.signature.inputs)}",
                )
            origin = ref_step(source.source)
            if origin == PIPELINE_INPUT:
                tensor_name = ref_tensor(source.source)
                known, first = inputs.get(tensor_name, (target, step.member))
                dims = _joined(known, target, batched)
                if dims is None:
                    raise _error(
                        TENSOR_MISMATCH,
                        f"{path}.from",
                        f"pipeline input {tensor_name!r} feeds {first} as {_describe(known)} and"
                        f" {step.member}'s {source.name!r}, which is {_describe(target)}",
                    )
                inputs[tensor_name] = (TensorInfo(tensor_name, target.dtype, dims), first)
                continue
            produced = _tensor(members[origin].signature.outputs, ref_tensor(source.source))
            if produced is None:
                raise _error(TENSOR_UNKNOWN, f"{path}.from", _no_output(origin, source.source, members))
            if _joined(produced, target, batched) is None:
                raise _error(
                    TENSOR_MISMATCH,
                    f"{path}.from",
                    f"{source.source} is {_describe(produced)}, but {step.member}'s input {source.name!r} is"
                    f" {_describe(target)}",
                )
            used.setdefault(origin, []).append(produced.name)
    outputs = []
    for number, output in enumerate(pipeline.outputs):
        origin = ref_step(output.source)
        produced = _tensor(members[origin].signature.outputs, ref_tensor(output.source))
        if produced is None:
            raise _error(
                TENSOR_UNKNOWN, f"outputs[{number}].from", _no_output(origin, output.source, members)
            )
        used.setdefault(origin, []).append(produced.name)
        outputs.append(TensorInfo(output.name, produced.dtype, produced.dims))

    def ensemble_tensor(step: str, output: str) -> str:
        reference = f"{step}.{output}"
        return leaving.get(reference, reference)

    steps = tuple(
        EnsembleStep(
            step.member,
            tuple(
                (
                    t.name,
                    ref_tensor(t.source)
                    if ref_step(t.source) == PIPELINE_INPUT
                    else leaving.get(t.source, t.source),
                )
                for t in step.inputs
            ),
            tuple((o, ensemble_tensor(step.member, o)) for o in dict.fromkeys(used.get(step.member, []))),
        )
        for step in pipeline.steps
    )
    signature = Signature(tuple(inputs[n][0] for n in pipeline.input_names), tuple(outputs))
    return Ensemble(name, max_batch_size, signature, steps)


def _no_output(step: str, reference: str, members: Mapping[str, Member]) -> str:
    names = ", ".join(t.name for t in members[step].signature.outputs)
    return f"{reference}: {step} has no output {ref_tensor(reference)!r}; its outputs are {names}"


def render_ensemble_config(ensemble: Ensemble) -> str:
    """The ensemble's config.pbtxt: its inputs and outputs, and one scheduling step per member."""
    batched = ensemble.max_batch_size > 0
    config = Message().add("name", ensemble.name).add("platform", "ensemble")
    config.add("max_batch_size", ensemble.max_batch_size)
    for field, tensors in (("input", ensemble.signature.inputs), ("output", ensemble.signature.outputs)):
        config.add(field, [tensor_message(t, batched, reshape_scalars=False) for t in tensors])
    steps = [
        Message()
        .add("model_name", step.member)
        .add("model_version", -1)
        .add("input_map", [Message().add("key", k).add("value", v) for k, v in step.input_map])
        .add("output_map", [Message().add("key", k).add("value", v) for k, v in step.output_map])
        for step in ensemble.steps
    ]
    config.add("ensemble_scheduling", Message().add("step", steps))
    return render(config)
