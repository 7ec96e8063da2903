"""spec.pipeline: several models served as one Triton ensemble, and the graph of tensors between them.

A pipeline names its members (each a model with its own engine settings, served by Triton under the
member's name), the steps that run them in order (where each member input comes from: a pipeline input or an
earlier step's output) and which step outputs leave the pipeline. Tensors are written `STEP.TENSOR` (the
step's member, a dot, the tensor's name: tensor names may hold dots, member names may not) or
`input.NAME` for a pipeline input, so a reader sees the whole graph in the spec.

What the spec alone shows is refused at admission (below); what needs the members' real signatures (an
unknown tensor, a dtype or rank that does not connect, batching that cannot hold) is the operator's
(`triton/ensemble.py`), reported as Stalled with the field path; so is a step listed before the step it
takes from (`order_errors`: a CEL rule for it costs more than the apiserver allows).
"""

from __future__ import annotations

from pydantic import Field, field_validator

from nimify.api.base import ApiModel
from nimify.api.spec.engine import EngineSpec, ParitySpec
from nimify.api.spec.fields import DNS1123_LABEL
from nimify.api.spec.model import ModelSpec
from nimify.api.validation import Rule, ValidationReason, list_map

#: The prefix of a pipeline input in a tensor reference; no member may take this name.
PIPELINE_INPUT = "input"
#: STEP.TENSOR or input.NAME: a member name (no dots) or `input`, a dot, a tensor name.
TENSOR_REF = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\.[^\s]+$"
MAX_MEMBERS = 8
MAX_TENSORS = 16
MAX_TENSOR_NAME = 128
MAX_REF = MAX_TENSOR_NAME + 41
TensorRef = str


def ref_step(ref: TensorRef) -> str:
    """The step (member) a reference names, or `input`."""
    return ref.split(".", 1)[0]


def ref_tensor(ref: TensorRef) -> str:
    return ref.split(".", 1)[1]


class PipelineMember(ApiModel):
    """One model of the pipeline: fetched, built and checked like a NimService's, served under its name."""

    name: str = Field(pattern=DNS1123_LABEL, max_length=40)
    """The member's name: its model's name inside Triton (reachable on its own as /v2/models/NAME) and its
    steps' name in tensor references. Not `input`."""

    model: ModelSpec
    """The member's model (model.name is the member's name and is not set here)."""

    engine: EngineSpec | None = None
    """The member's engine settings; left out, spec.engine's."""

    cel_rules = (
        Rule(
            cel=f"self.name != '{PIPELINE_INPUT}'",
            message=f"'{PIPELINE_INPUT}' names the pipeline's inputs in tensor references: choose another"
            " name",
            holds=lambda member: member.name != PIPELINE_INPUT,
            field_path=".name",
        ),
        Rule(
            cel="!has(self.model.name)",
            message="a member's model is served under the member's name: remove model.name",
            holds=lambda member: member.model.name is None,
            field_path=".model.name",
            reason=ValidationReason.FORBIDDEN,
        ),
    )


class TensorSource(ApiModel):
    """A named tensor and where it comes from."""

    name: str = Field(min_length=1, max_length=MAX_TENSOR_NAME)
    """The tensor's name: a member input's name in its model (in steps), a pipeline output's (in outputs)."""

    source: str = Field(alias="from", pattern=TENSOR_REF, max_length=MAX_REF)
    """input.NAME (a pipeline input, created by naming it here) or STEP.OUTPUT (an output of a step, by the
    step's member and the output's name in its model)."""


def _named_once(tensors: list[TensorSource], message: str) -> list[TensorSource]:
    if len({t.name for t in tensors}) != len(tensors):
        raise ValueError(message)
    return tensors


class PipelineStep(ApiModel):
    """A member run in the pipeline, and where each of its inputs comes from."""

    member: str = Field(pattern=DNS1123_LABEL, max_length=40)
    """The member this step runs (each member runs in one step)."""

    inputs: list[TensorSource] = Field(
        min_length=1, max_length=MAX_TENSORS, json_schema_extra=list_map("name")
    )
    """Every input of the member and its source: input.NAME or STEP.OUTPUT of an earlier step."""

    @field_validator("inputs")
    @classmethod
    def _inputs_once(cls, inputs: list[TensorSource]) -> list[TensorSource]:
        return _named_once(inputs, "each input is fed once")


def _order(pipeline: PipelineSpec) -> list[str]:
    return [step.member for step in pipeline.steps]


def _sources_are_steps(pipeline: PipelineSpec) -> bool:
    order = _order(pipeline)
    return all(
        ref_step(t.source) == PIPELINE_INPUT
        or (ref_step(t.source) in order and ref_step(t.source) != step.member)
        for step in pipeline.steps
        for t in step.inputs
    )


def order_errors(pipeline: PipelineSpec) -> list[tuple[str, str]]:
    """(field path under the pipeline, message) for each source that names a step listed after its own (or a
    chain of steps that loops). Checked by the operator before anything runs and by the CLI: as a CEL rule
    (list positions inside two nested loops) its cost estimate exceeds the apiserver's budget."""
    order = _order(pipeline)
    errors = []
    for index, step in enumerate(pipeline.steps):
        for number, tensor in enumerate(step.inputs):
            name = ref_step(tensor.source)
            if name in order and order.index(name) > index:
                errors.append(
                    (
                        f"steps[{index}].inputs[{number}].from",
                        f"{tensor.source} comes from step {name}, listed after {step.member}: list the steps"
                        " so that each takes its inputs from earlier ones (steps that feed each other in a"
                        " cycle cannot be)",
                    )
                )
    return errors


class PipelineSpec(ApiModel):
    """Several models served as one Triton ensemble: each built and checked as a model of its own, then the
    whole chain checked end to end against ONNX Runtime."""

    members: list[PipelineMember] = Field(
        min_length=1, max_length=MAX_MEMBERS, json_schema_extra=list_map("name")
    )
    """The models of the pipeline."""

    steps: list[PipelineStep] = Field(
        min_length=1, max_length=MAX_MEMBERS, json_schema_extra=list_map("member")
    )
    """The steps in the order they can run: each takes its inputs from pipeline inputs and earlier steps, so
    the graph has no cycle. Steps whose inputs do not depend on each other run side by side (fan-out), and a
    step may take outputs of several (fan-in)."""

    outputs: list[TensorSource] = Field(
        min_length=1, max_length=MAX_TENSORS, json_schema_extra=list_map("name")
    )
    """What the pipeline answers: each output's name and the step output it is (STEP.OUTPUT)."""

    parity: ParitySpec = Field(default_factory=ParitySpec)
    """The end-to-end check, besides each member's own: the ensemble served by a real Triton (the serving
    image, with the configs it will serve) against the members' ONNX models chained in ONNX Runtime, on
    generated inputs of the pipeline (`generated` names pipeline inputs: give a shape where a member fixes
    one the pipeline's inputs do not show). samples 0 skips it. Inputs from a file are not taken here."""

    cel_rules = (
        Rule(
            cel="!has(self.parity) || !has(self.parity.inputs)",
            message="the end-to-end check generates its inputs (parity.generated gives shapes and values):"
            " inputs from a file are for a member's own check (members[].engine.parity.inputs)",
            holds=lambda p: p.parity.inputs is None,
            field_path=".parity.inputs",
            reason=ValidationReason.FORBIDDEN,
        ),
        Rule(
            cel="self.steps.all(s, self.members.exists(m, m.name == s.member))",
            message="every step runs a member listed in members",
            holds=lambda p: {s.member for s in p.steps} <= {m.name for m in p.members},
            field_path=".steps",
        ),
        Rule(
            cel="self.members.all(m, self.steps.exists(s, s.member == m.name))",
            message="every member runs in a step (a member no step runs would be built for nothing)",
            holds=lambda p: {m.name for m in p.members} <= {s.member for s in p.steps},
            field_path=".members",
        ),
        Rule(
            cel=f"self.steps.all(s, s.inputs.all(i, i.from.startsWith('{PIPELINE_INPUT}.')"
            " || self.steps.exists(e, e.member != s.member && i.from.startsWith(e.member + '.'))))",
            message="a step takes inputs from pipeline inputs (input.NAME) and from other steps"
            " (STEP.OUTPUT): a source that names no step, or the step itself, is refused",
            holds=_sources_are_steps,
            field_path=".steps",
        ),
        Rule(
            cel="self.outputs.all(o, self.steps.exists(s, o.from.startsWith(s.member + '.')))",
            message="each pipeline output is STEP.OUTPUT, an output of one of the steps",
            holds=lambda p: all(ref_step(o.source) in _order(p) for o in p.outputs),
            field_path=".outputs",
        ),
        Rule(
            cel="self.steps.all(s, self.outputs.exists(o, o.from.startsWith(s.member + '.'))"
            " || self.steps.exists(t, t.inputs.exists(i, i.from.startsWith(s.member + '.'))))",
            message="every step's outputs are read, by a later step or as a pipeline output: a step whose"
            " answers go nowhere would run for nothing",
            holds=lambda p: all(
                any(ref_step(o.source) == s.member for o in p.outputs)
                or any(ref_step(i.source) == s.member for t in p.steps for i in t.inputs)
                for s in p.steps
            ),
            field_path=".steps",
        ),
        Rule(
            cel="self.outputs.all(o, self.outputs.exists_one(x, x.from == o.from))",
            message="two pipeline outputs take the same step output: Triton passes a tensor out once",
            holds=lambda p: len({o.source for o in p.outputs}) == len(p.outputs),
            field_path=".outputs",
        ),
        Rule(
            cel="self.outputs.all(o, self.steps.all(s, s.inputs.all(i,"
            f" i.from != '{PIPELINE_INPUT}.' + o.name)))",
            message="a pipeline output and a pipeline input share a name: each tensor of the ensemble has one"
            " name",
            holds=lambda p: (
                not {f"{PIPELINE_INPUT}.{o.name}" for o in p.outputs}
                & {i.source for s in p.steps for i in s.inputs}
            ),
            field_path=".outputs",
        ),
    )

    @field_validator("outputs")
    @classmethod
    def _outputs_once(cls, outputs: list[TensorSource]) -> list[TensorSource]:
        return _named_once(outputs, "each output name may be used once")

    @field_validator("members")
    @classmethod
    def _members_once(cls, members: list[PipelineMember]) -> list[PipelineMember]:
        if len({m.name for m in members}) != len(members):
            raise ValueError("each member name may be used once")
        return members

    @field_validator("steps")
    @classmethod
    def _steps_once(cls, steps: list[PipelineStep]) -> list[PipelineStep]:
        if len({s.member for s in steps}) != len(steps):
            raise ValueError("each member runs in one step")
        return steps

    def member(self, name: str) -> PipelineMember:
        return next(m for m in self.members if m.name == name)

    def member_index(self, name: str) -> int:
        return next(i for i, m in enumerate(self.members) if m.name == name)

    @property
    def input_names(self) -> list[str]:
        """The pipeline's inputs, in the order the steps first name them."""
        names: list[str] = []
        for step in self.steps:
            for tensor in step.inputs:
                if ref_step(tensor.source) == PIPELINE_INPUT and ref_tensor(tensor.source) not in names:
                    names.append(ref_tensor(tensor.source))
        return names
