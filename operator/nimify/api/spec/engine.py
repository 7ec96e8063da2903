"""spec.engine: the backend, precision, shape profiles, batching limit and parity check of the conversion."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, field_validator

from nimify.api.base import ApiModel
from nimify.api.spec.fields import Dimension, Quantity, cel_list, positive_quantity_rule, quantity_value
from nimify.api.spec.model import DOT_DOT_SEGMENT, uri_rules
from nimify.api.validation import Rule, cel_string, list_map, matches


class Backend(StrEnum):
    """The Triton backend that runs the model."""

    TENSORRT = "tensorrt"
    ONNXRUNTIME = "onnxruntime"


class Precision(StrEnum):
    """The arithmetic precision TensorRT may use."""

    AUTO = "auto"
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"
    FP8 = "fp8"


# TensorRT 10 builder flags (weak typing); TensorRT 11 removed them.
BUILDER_FLAG_PRECISIONS = (Precision.FP16, Precision.BF16, Precision.INT8, Precision.FP8)
ONNXRUNTIME_PRECISIONS = (Precision.AUTO, Precision.FP32)


_DIMENSION_INDICES = "[0, 1, 2, 3, 4, 5, 6, 7]"  # CEL has no range(); ranks are capped at 8


class ShapeProfile(ApiModel):
    """The shapes one dynamic input is optimized for: TensorRT accepts any shape from min to max and is
    fastest at opt. Shapes include the batch dimension."""

    input: str = Field(min_length=1, max_length=256)
    """Input tensor name, as in the model's signature."""

    min: list[Dimension] = Field(min_length=1, max_length=8)
    """Smallest shape accepted, one entry per dimension."""

    opt: list[Dimension] = Field(min_length=1, max_length=8)
    """Shape TensorRT tunes its kernels for."""

    max: list[Dimension] = Field(min_length=1, max_length=8)
    """Largest shape accepted; dimension 0 bounds the batch size."""

    cel_rules = (
        Rule(
            cel="size(self.min) == size(self.opt) && size(self.opt) == size(self.max)",
            message="min, opt and max must have the same rank (one entry per dimension)",
            holds=lambda profile: len(profile.min) == len(profile.opt) == len(profile.max),
        ),
        Rule(
            cel="size(self.min) != size(self.opt) || size(self.opt) != size(self.max)"
            f" || {_DIMENSION_INDICES}.all(i, i >= size(self.min)"
            " || (self.min[i] <= self.opt[i] && self.opt[i] <= self.max[i]))",
            message="every dimension must satisfy min <= opt <= max",
            holds=lambda profile: (
                not (len(profile.min) == len(profile.opt) == len(profile.max))
                or all(
                    low <= best <= high
                    for low, best, high in zip(profile.min, profile.opt, profile.max, strict=True)
                )
            ),
        ),
    )


class ParityInputs(ApiModel):
    """Representative inputs for the parity check, in a NumPy .npz file fetched like the model. Arrays named
    after the model's inputs form one sample; arrays named `N/INPUT` (N = 0, 1, ...) form sample N. Each array
    has the input's full shape (batch dimension included) and a dtype that casts safely to the input's."""

    uri: str = Field(max_length=2048)
    """Where the .npz lives, in the forms model.uri takes (https, s3, gs, pvc, hf); credentials are the
    model's (model.credentialsSecret)."""

    sha256: str | None = Field(default=None, pattern=r"^[a-f0-9]{64}$", max_length=64)
    """Expected SHA-256 digest of the file; a download that differs is refused."""

    cel_rules = (
        *uri_rules(),
        Rule(
            cel=f"!self.uri.matches({cel_string(DOT_DOT_SEGMENT)})",
            message="must not contain '..' path segments",
            holds=lambda inputs: not matches(DOT_DOT_SEGMENT, inputs.uri),
            field_path=".uri",
        ),
    )


class GeneratedInput(ApiModel):
    """How the parity check makes up one input when no .npz gives it: at this shape, and/or filled with this
    value (a sample rate, a length, a flag)."""

    input: str = Field(min_length=1, max_length=256)
    """Input tensor name, as in the model's signature."""

    shape: list[Dimension] | None = Field(default=None, max_length=8)
    """The full shape, batch dimension included; [] for a scalar. Left out: from engine.profiles, or the
    model's own and the defaults."""

    value: float | None = Field(default=None, allow_inf_nan=False)
    """Every element gets this value (cast to the input's type: 16000 for an INT64 sample rate, 0 or 1 for a
    BOOL). Left out: random data (small non-negative integers, normal floats)."""

    cel_rules = (
        Rule(
            cel="has(self.shape) || has(self.value)",
            message="give a shape, a value, or both",
            holds=lambda generated: generated.shape is not None or generated.value is not None,
        ),
    )


class ParitySpec(ApiModel):
    """The check the conversion Job runs before anything is served, on representative inputs. tensorrt: the
    engine against ONNX Runtime on the same inputs. onnxruntime: the generated config.pbtxt is loaded against
    the model as Triton's ONNX Runtime backend loads it, and the inputs run through it as Triton delivers
    them (requests batched together where maxBatchSize > 0), against each request run alone. An output
    element fails only when it is beyond both tolerances: |candidate - reference| > atol AND
    |candidate - reference| > rtol * |reference| (Polygraphy's rule, so `polygraphy run --atol A --rtol R`
    reproduces a failure)."""

    atol: float = Field(default=1e-3, ge=0, le=1000)
    """Absolute tolerance."""

    rtol: float = Field(default=1e-3, ge=0, le=1000)
    """Relative tolerance."""

    samples: int = Field(default=8, ge=0, le=1024)
    """Number of generated input batches compared (their shapes walk each profile's min, opt and max); 0
    skips the check. With inputs, the file's samples are compared instead."""

    inputs: ParityInputs | None = None
    """Representative inputs from a file, instead of generated ones. Give them when random data is not valid
    for the model (audio shorter than a window, token ids beyond the vocabulary, lengths)."""

    generated: list[GeneratedInput] | None = Field(
        default=None, max_length=64, json_schema_extra=list_map("input")
    )
    """Shapes and fixed values for generated inputs, per input (ignored for inputs the file gives)."""

    @field_validator("generated")
    @classmethod
    def _one_entry_per_input(cls, generated: list[GeneratedInput] | None) -> list[GeneratedInput] | None:
        if generated is not None:
            names = [entry.input for entry in generated]
            if duplicates := sorted({name for name in names if names.count(name) > 1}):
                raise ValueError(f"duplicate input {', '.join(duplicates)}: one entry per input")
        return generated


class BuildResourcesSpec(ApiModel):
    """CPU and memory of the conversion Job's pod. What is left out comes from the operator's defaults
    (NIMIFY_BUILD_CPU, NIMIFY_BUILD_MEMORY, NIMIFY_BUILD_MEMORY_LIMIT: 1 CPU, 4Gi, 16Gi). Large models need
    more: the conversion holds the model in ONNX Runtime and, for parity, the engine next to it."""

    cpu: Quantity | None = None
    """CPU request (e.g. 4 or 500m); the limit is left open."""

    memory: Quantity | None = None
    """Memory request (e.g. 8Gi): what the scheduler reserves."""

    memory_limit: Quantity | None = None
    """Memory limit (e.g. 64Gi), above zero and at least memory: the conversion is OOM-killed beyond it and
    the NimService reports EngineBuildFailed. Left out, the operator's default, or memory where that is
    larger. With memory left out, the default request is lowered to this limit where it is larger."""

    cel_rules = (
        Rule(
            cel="!has(self.memory) || !has(self.memoryLimit)"
            " || quantity(string(self.memoryLimit)).compareTo(quantity(string(self.memory))) >= 0",
            message="memoryLimit must be at least memory",
            holds=lambda resources: (
                resources.memory is None
                or resources.memory_limit is None
                or quantity_value(resources.memory_limit) >= quantity_value(resources.memory)
            ),
            field_path=".memoryLimit",
        ),
        # The Job's pod gets it as its memory limit: zero runs nothing (and is below any default request).
        positive_quantity_rule("memory_limit", "memoryLimit", "memoryLimit must be greater than zero"),
    )


class EngineSpec(ApiModel):
    """How the model becomes what Triton runs. Left out, the model is built into a TensorRT engine at full
    precision for the GPU it will run on."""

    backend: Backend = Field(default=Backend.TENSORRT, strict=False)
    """tensorrt: a conversion Job builds a TensorRT engine on the target GPU product, checks it against ONNX
    Runtime and Triton's TensorRT backend serves it. onnxruntime: Triton's ONNX Runtime backend serves the
    ONNX model as is (on GPU, or on CPU when resources.gpus is 0)."""

    precision: Precision = Field(default=Precision.AUTO, strict=False)
    """auto: the types the ONNX graph declares (a strongly typed network), on any TensorRT. fp32: full
    precision, no reduced-precision kernels. fp16, bf16, int8, fp8: TensorRT 10 builder flags that let
    TensorRT choose lower-precision kernels (int8 and fp8 need Q/DQ nodes in the graph). TensorRT 11 (Triton
    26.06 and later) removed those flags: reduced precision must be in the ONNX graph itself (ModelOpt
    AutoCast for fp16/bf16, Q/DQ nodes for int8/fp8) with precision auto. onnxruntime accepts auto and fp32
    only; a prebuilt tensorrt-plan only auto."""

    profiles: list[ShapeProfile] | None = Field(
        default=None, max_length=16, json_schema_extra=list_map("input")
    )
    """Shape range per dynamic input. tensorrt: the engine's optimization profile; inputs left out get 1 to
    maxBatchSize for batch-like dimensions and need a profile for any other dynamic one. onnxruntime: the
    shapes the parity check and warm-up use (ONNX Runtime itself takes any shape)."""

    max_batch_size: int | None = Field(default=None, ge=0, le=4096)
    """Triton's max_batch_size; 0 turns batching off. Left out, nimify batches (up to 8) when dimension 0 of
    every input and output is dynamic, and does not otherwise."""

    parity: ParitySpec = Field(default_factory=ParitySpec)
    """The check the conversion Job runs before serving: what is compared, on which inputs, how closely."""

    build_timeout_seconds: int = Field(default=1800, ge=60, le=86400)
    """How long the conversion Job may run before it is stopped and the NimService reports the failure."""

    workspace: Quantity | None = None
    """GPU memory TensorRT may use as scratch space while building (e.g. 4Gi), a whole number of bytes; all
    of it when left out."""

    build_resources: BuildResourcesSpec | None = None
    """CPU and memory of the conversion Job; the operator's defaults when left out. Not part of the engine
    cache key (the same engine comes out), but of the Job's name: a conversion killed for its memory
    (OOMKilled) runs again with more."""

    cel_rules = (
        Rule(
            cel="!has(self.workspace) || type(self.workspace) == int || quantity(self.workspace).isInteger()",
            message="workspace must be a whole number of bytes (e.g. 4Gi or 512Mi, not 1m)",
            holds=lambda engine: (
                engine.workspace is None
                or quantity_value(engine.workspace) == quantity_value(engine.workspace).to_integral_value()
            ),
            field_path=".workspace",
        ),
        Rule(
            cel=f"self.backend != 'onnxruntime' || self.precision in {cel_list(ONNXRUNTIME_PRECISIONS)}",
            message="onnxruntime accepts precision auto or fp32 only: lower precision must be in the graph",
            holds=lambda engine: (
                engine.backend != Backend.ONNXRUNTIME or engine.precision in ONNXRUNTIME_PRECISIONS
            ),
            field_path=".precision",
        ),
        Rule(
            cel="!has(self.maxBatchSize) || self.maxBatchSize == 0 || !has(self.profiles)"
            " || self.profiles.all(p, p.max[0] >= self.maxBatchSize)",
            message="each profile's max[0] (the batch dimension) must be at least maxBatchSize, or Triton"
            " refuses to load the engine",
            holds=lambda engine: (
                not engine.max_batch_size
                or engine.profiles is None
                or all(profile.max[0] >= engine.max_batch_size for profile in engine.profiles)
            ),
            field_path=".profiles",
        ),
    )

    @field_validator("profiles")
    @classmethod
    def _one_profile_per_input(cls, profiles: list[ShapeProfile] | None) -> list[ShapeProfile] | None:
        if profiles is not None:
            names = [profile.input for profile in profiles]
            if duplicates := sorted({name for name in names if names.count(name) > 1}):
                raise ValueError(f"duplicate input {', '.join(duplicates)}: one profile per input")
        return profiles
