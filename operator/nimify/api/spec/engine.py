"""spec.engine: the backend, precision, shape profiles, batching limit and parity check of the conversion."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, field_validator

from nimify.api.base import ApiModel
from nimify.api.spec.fields import Dimension, Quantity, cel_list
from nimify.api.validation import Rule, ValidationReason, list_map


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


class ParitySpec(ApiModel):
    """How closely the TensorRT engine must match ONNX Runtime on the same inputs before it is served. An
    output element fails only when it is beyond both tolerances: |engine - reference| > atol AND
    |engine - reference| > rtol * |reference| (Polygraphy's rule, so `polygraphy run --atol A --rtol R`
    reproduces a failure)."""

    atol: float = Field(default=1e-3, ge=0, le=1000)
    """Absolute tolerance."""

    rtol: float = Field(default=1e-3, ge=0, le=1000)
    """Relative tolerance."""

    samples: int = Field(default=8, ge=0, le=1024)
    """Number of random input batches compared; 0 skips the comparison."""


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
    """Optimization profile per dynamic input (TensorRT). Inputs left out get dynamic dimensions of 1 to
    maxBatchSize for the batch and the model's own size elsewhere."""

    max_batch_size: int | None = Field(default=None, ge=0, le=4096)
    """Triton's max_batch_size; 0 turns batching off. Left out, nimify batches (up to 8) when dimension 0 of
    every input and output is dynamic, and does not otherwise."""

    parity: ParitySpec = Field(default_factory=ParitySpec)
    """Engine-versus-ONNX Runtime check run by the conversion Job (tensorrt backend only)."""

    build_timeout_seconds: int = Field(default=1800, ge=60, le=86400)
    """How long the conversion Job may run before it is stopped and the NimService reports the failure."""

    workspace: Quantity | None = None
    """GPU memory TensorRT may use as scratch space while building (e.g. 4Gi); all of it when left out."""

    cel_rules = (
        Rule(
            cel=f"self.backend != 'onnxruntime' || self.precision in {cel_list(ONNXRUNTIME_PRECISIONS)}",
            message="onnxruntime accepts precision auto or fp32 only: lower precision must be in the graph",
            holds=lambda engine: (
                engine.backend != Backend.ONNXRUNTIME or engine.precision in ONNXRUNTIME_PRECISIONS
            ),
            field_path=".precision",
        ),
        Rule(
            cel="self.backend != 'onnxruntime' || !has(self.profiles)",
            message="shape profiles are TensorRT build options; onnxruntime does not use them",
            holds=lambda engine: engine.backend != Backend.ONNXRUNTIME or engine.profiles is None,
            field_path=".profiles",
            reason=ValidationReason.FORBIDDEN,
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
