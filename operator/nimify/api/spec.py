"""What a user writes in a NimService: the spec models, their defaults and their admission rules."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, PlainValidator, WithJsonSchema, field_validator

from nimify.api.base import ApiModel
from nimify.api.releases import (
    FIRST_STRONGLY_TYPED_RELEASE,
    RELEASE_IN_IMAGE,
    is_strongly_typed,
    release_label,
)
from nimify.api.validation import (
    LIST_SET,
    Rule,
    TransitionRule,
    ValidationReason,
    cel_string,
    list_map,
    matches,
)

DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.10-py3"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
HOSTNAME = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE = r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$"
_DECIMAL = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
QUANTITY = rf"^{_DECIMAL}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?{_DECIMAL}))?$"

_PATH = r"(/[^/\s?#]+)+"
_MODEL_URI_FORMS = (
    r"https://[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*(:[0-9]{1,5})?"
    + _PATH
    + r"(\?[^\s#]*)?",
    r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]" + _PATH,
    r"gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]" + _PATH,
    r"pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*" + _PATH,
    r"hf://[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9._-]+)?" + _PATH,
)
MODEL_URI = "^(" + "|".join(_MODEL_URI_FORMS) + ")$"
DOT_DOT_SEGMENT = r"(^|/)(\.|%2[eE]){2}(/|[?#]|$)"
PLAN_SUFFIX = r"\.(plan|engine)([?#].*)?$"
ONNX_SUFFIX = r"\.onnx([?#].*)?$"
IMAGE = (
    r"^([A-Za-z0-9.-]+(:[0-9]+)?/)?[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*"
    r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(@sha256:[a-f0-9]{64})?$"
)
TRITON_ARG = r"^--[a-z0-9][a-z0-9-]*(=.*)?$"
OWNED_TRITON_FLAGS = (
    "model-repository",
    "model-store",
    "model-control-mode",
    "load-model",
    "model-config-name",
    "http-port",
    "grpc-port",
    "metrics-port",
    "allow-http",
    "allow-grpc",
    "allow-metrics",
    "cache-config",
)
OWNED_TRITON_ARG = r"^--(" + "|".join(OWNED_TRITON_FLAGS) + r")(=|$)"


def _check_quantity(value: Any) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and re.fullmatch(QUANTITY, value):
        return value
    raise ValueError(f"{value!r} is not a Kubernetes quantity such as 4, 500m or 16Gi")


Quantity = Annotated[
    int | str,
    PlainValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "minimum": 0,
            "pattern": QUANTITY,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
Dimension = Annotated[int, Field(ge=1, le=2**31 - 1)]
BatchSize = Annotated[int, Field(ge=1, le=4096)]
NodeLabelValue = Annotated[str, Field(max_length=63)]


class ModelFormat(StrEnum):
    """What the model file is."""

    ONNX = "onnx"
    TENSORRT_PLAN = "tensorrt-plan"


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


class ServiceType(StrEnum):
    """How the Service reaches clients."""

    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


class TolerationOperator(StrEnum):
    """How a toleration matches a taint's value."""

    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(StrEnum):
    """Which taint effect a toleration tolerates."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class ScalingPolicyType(StrEnum):
    """The unit of a scaling policy's value."""

    PODS = "Pods"
    PERCENT = "Percent"


class SelectPolicy(StrEnum):
    """Which of several policies wins."""

    MAX = "Max"
    MIN = "Min"
    DISABLED = "Disabled"


def _cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(cel_string(value) for value in values) + "]"


class ModelSpec(ApiModel):
    """The model to serve: where to fetch it and how to recognise it."""

    uri: str = Field(pattern=MODEL_URI, max_length=2048)
    """Where the model file lives: https://host/path, s3://bucket/key, gs://bucket/key, pvc://claim/path (a
    PersistentVolumeClaim in the same namespace) or hf://org/repo[@revision]/path (Hugging Face Hub). An ONNX
    model (.onnx) or a serialized TensorRT engine (.plan, .engine). Path segments `..` are refused."""

    sha256: str | None = Field(default=None, pattern=r"^[a-f0-9]{64}$", max_length=64)
    """Expected SHA-256 digest of the file (64 lower-case hex digits); a download that differs is refused."""

    format: ModelFormat | None = Field(default=None, strict=False)
    """onnx or tensorrt-plan. Inferred from the uri's suffix (.onnx; .plan or .engine) when left out."""

    credentials_secret: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN, max_length=253)
    """Secret in the same namespace whose keys become the fetcher's environment: AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY (s3), GOOGLE_APPLICATION_CREDENTIALS_JSON (gs), HF_TOKEN (hf), or AUTHORIZATION (an
    HTTP Authorization header value for https)."""

    name: str | None = Field(default=None, pattern=DNS1123_LABEL, max_length=63)
    """Model name inside Triton (the /v2/models/NAME endpoints). Defaults to the NimService's name."""

    cel_rules = (
        Rule(
            cel=f"!self.uri.matches({cel_string(DOT_DOT_SEGMENT)})",
            message="must not contain '..' path segments",
            holds=lambda model: not matches(DOT_DOT_SEGMENT, model.uri),
            field_path=".uri",
        ),
        Rule(
            cel=f"has(self.format) || self.uri.matches({cel_string(PLAN_SUFFIX)})"
            f" || self.uri.matches({cel_string(ONNX_SUFFIX)})",
            message="format is required when the uri does not end in .onnx, .plan or .engine",
            holds=lambda model: (
                model.format is not None or matches(PLAN_SUFFIX, model.uri) or matches(ONNX_SUFFIX, model.uri)
            ),
            field_path=".format",
            reason=ValidationReason.REQUIRED,
        ),
    )

    @property
    def resolved_format(self) -> ModelFormat:
        """The format as given, or as the uri's suffix says."""
        if self.format is not None:
            return self.format
        return ModelFormat.TENSORRT_PLAN if matches(PLAN_SUFFIX, self.uri) else ModelFormat.ONNX


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
    """How closely the TensorRT engine must match ONNX Runtime on the same inputs before it is served. Each
    output element must satisfy |engine - reference| <= atol + rtol * |reference|."""

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
            cel=f"self.backend != 'onnxruntime' || self.precision in {_cel_list(ONNXRUNTIME_PRECISIONS)}",
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


def _unique(values: list[int] | None) -> list[int] | None:
    if values is not None and len(set(values)) != len(values):
        raise ValueError("batch sizes must be unique")
    return values


class DynamicBatchingSpec(ApiModel):
    """Triton's dynamic batcher: it groups requests that arrive close together into one batch."""

    enabled: bool = True
    """Batch requests dynamically (only where the model batches: maxBatchSize >= 1)."""

    preferred_batch_sizes: list[BatchSize] | None = Field(
        default=None, max_length=8, json_schema_extra=LIST_SET
    )
    """Batch sizes the batcher tries to form; each at most engine.maxBatchSize."""

    max_queue_delay_microseconds: int | None = Field(default=None, ge=0, le=10_000_000)
    """How long a request may wait for others to join its batch; 0 (Triton's default) sends at once."""

    priority_levels: int | None = Field(default=None, ge=1, le=16)
    """Number of request priority levels (1 is the highest)."""

    default_priority_level: int | None = Field(default=None, ge=1, le=16)
    """Priority of requests that give none; needs priorityLevels."""

    max_queue_size: int | None = Field(default=None, ge=0, le=1_000_000)
    """Requests queued beyond this are refused at once; 0 means no limit."""

    cel_rules = (
        Rule(
            cel="!has(self.defaultPriorityLevel) || has(self.priorityLevels)"
            " && self.defaultPriorityLevel <= self.priorityLevels",
            message="defaultPriorityLevel needs priorityLevels and must not exceed it",
            holds=lambda batching: (
                batching.default_priority_level is None
                or (
                    batching.priority_levels is not None
                    and batching.default_priority_level <= batching.priority_levels
                )
            ),
            field_path=".defaultPriorityLevel",
        ),
    )

    @field_validator("preferred_batch_sizes")
    @classmethod
    def _unique_sizes(cls, sizes: list[int] | None) -> list[int] | None:
        return _unique(sizes)


class ResponseCacheSpec(ApiModel):
    """Triton's response cache: identical requests are answered from memory."""

    enabled: bool = True
    """Cache responses of this model."""

    size_bytes: int = Field(default=268_435_456, ge=1_048_576, le=68_719_476_736)
    """Cache size in bytes (Triton's --cache-config local,size=N)."""


class WarmupSpec(ApiModel):
    """Requests Triton sends to the model before it reports ready, so the first clients do not pay for lazy
    initialization."""

    enabled: bool = True
    """Warm the model up with zero-filled inputs."""

    batch_sizes: list[BatchSize] = Field(default=[1], min_length=1, max_length=8, json_schema_extra=LIST_SET)
    """Batch sizes to warm up with; each at most engine.maxBatchSize."""

    @field_validator("batch_sizes")
    @classmethod
    def _unique_sizes(cls, sizes: list[int]) -> list[int]:
        return _unique(sizes) or sizes


class TritonSpec(ApiModel):
    """The Triton Inference Server that serves the model."""

    image: str = Field(default=DEFAULT_TRITON_IMAGE, pattern=IMAGE, max_length=512)
    """Triton image, with a tag (not latest) and optionally a digest. The tag's YY.MM release decides the
    TensorRT version (26.06 and later ship TensorRT 11) and the TensorRT image that builds the engine."""

    dynamic_batching: DynamicBatchingSpec = Field(default_factory=DynamicBatchingSpec)
    """Dynamic batcher settings."""

    instances_per_gpu: int = Field(default=1, ge=1, le=16)
    """Model instances on each GPU; each holds its own copy of the engine in GPU memory."""

    response_cache: ResponseCacheSpec | None = None
    """Response cache; off when left out."""

    warmup: WarmupSpec | None = None
    """Warm-up requests before the model reports ready; none when left out."""

    extra_args: list[Annotated[str, Field(pattern=TRITON_ARG, max_length=256)]] | None = Field(
        default=None, max_length=32
    )
    """Extra tritonserver arguments, each --flag or --flag=value. The operator's own flags (model
    repository, model control, ports, protocols, cache) are refused: set the NimService fields instead."""

    cel_rules = (
        Rule(
            cel="!self.image.endsWith(':latest') && !self.image.contains(':latest@')",
            message="the tag must name a release (e.g. 25.10-py3), not latest: the engine is built for one"
            " TensorRT version",
            holds=lambda triton: not triton.image.endswith(":latest") and ":latest@" not in triton.image,
            field_path=".image",
        ),
        Rule(
            cel="!has(self.extraArgs)"
            f" || !self.extraArgs.exists(a, a.matches({cel_string(OWNED_TRITON_ARG)}))",
            message="the operator sets the model repository, model control, ports, protocols and cache flags"
            " itself",
            message_expression=f"self.extraArgs.filter(a, a.matches({cel_string(OWNED_TRITON_ARG)}))[0]"
            " + ' is set by the operator: use the NimService fields instead'",
            holds=lambda triton: (
                not triton.extra_args or not any(matches(OWNED_TRITON_ARG, arg) for arg in triton.extra_args)
            ),
            field_path=".extraArgs",
            reason=ValidationReason.FORBIDDEN,
        ),
    )


class ResourcesSpec(ApiModel):
    """What each replica gets."""

    gpus: int = Field(default=1, ge=0, le=16)
    """GPUs per replica (nvidia.com/gpu). 0 runs onnxruntime on CPU; the tensorrt backend needs at least 1."""

    gpu_product: str | None = Field(default=None, pattern=LABEL_VALUE, max_length=63)
    """GPU product to run on, as in the node label nvidia.com/gpu.product (e.g. NVIDIA-H100-80GB-HBM3,
    NVIDIA-L4). The engine is built on that product. Left out, any GPU node will do and the engine is built
    on the product the conversion Job lands on."""

    cpu: Quantity | None = None
    """CPU request per replica (e.g. 4 or 500m); the limit is left open."""

    memory: Quantity | None = None
    """Memory request and limit per replica (e.g. 16Gi)."""

    cel_rules = (
        Rule(
            cel="!has(self.gpuProduct) || self.gpus >= 1",
            message="gpuProduct needs gpus of at least 1",
            holds=lambda resources: resources.gpu_product is None or resources.gpus >= 1,
            field_path=".gpuProduct",
        ),
    )


class Toleration(ApiModel):
    """A core/v1 Toleration: lets replicas run on nodes with a matching taint."""

    key: str | None = Field(default=None, max_length=316)
    """Taint key to match; empty with operator Exists matches every taint."""

    operator: TolerationOperator = Field(default=TolerationOperator.EQUAL, strict=False)
    """Exists matches any value; Equal matches value."""

    value: str | None = Field(default=None, max_length=63)
    """Taint value to match (operator Equal)."""

    effect: TaintEffect | None = Field(default=None, strict=False)
    """Taint effect to match; every effect when left out."""

    toleration_seconds: int | None = Field(default=None, ge=0)
    """How long a replica stays on a node after a NoExecute taint appears; forever when left out."""

    cel_rules = (
        Rule(
            cel="self.operator != 'Exists' || !has(self.value)",
            message="a toleration with operator Exists has no value",
            holds=lambda toleration: (
                toleration.operator != TolerationOperator.EXISTS or toleration.value is None
            ),
            field_path=".value",
            reason=ValidationReason.FORBIDDEN,
        ),
        Rule(
            cel="has(self.key) || self.operator == 'Exists'",
            message="a toleration without a key must use operator Exists",
            holds=lambda toleration: (
                toleration.key is not None or toleration.operator == TolerationOperator.EXISTS
            ),
            field_path=".operator",
        ),
        Rule(
            cel="!has(self.tolerationSeconds) || has(self.effect) && self.effect == 'NoExecute'",
            message="tolerationSeconds applies to effect NoExecute only",
            holds=lambda toleration: (
                toleration.toleration_seconds is None or toleration.effect == TaintEffect.NO_EXECUTE
            ),
            field_path=".tolerationSeconds",
        ),
    )


class PlacementSpec(ApiModel):
    """Where replicas may run, beyond the GPU product."""

    node_selector: dict[str, NodeLabelValue] | None = Field(default=None, max_length=32)
    """Node labels replicas require. nvidia.com/gpu.product, if given, must equal resources.gpuProduct."""

    tolerations: list[Toleration] | None = Field(default=None, max_length=32)
    """Taints replicas tolerate (typed subset of core/v1 Toleration)."""

    affinity: dict[str, Any] | None = None
    """A core/v1 Affinity (nodeAffinity, podAffinity, podAntiAffinity) copied into the pod as given. Kept as
    free-form data because the full type is large; the apiserver checks it when the operator applies the
    Deployment, and the NimService reports a failure there."""

    priority_class_name: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN, max_length=253)
    """PriorityClass of the replicas."""

    runtime_class_name: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN, max_length=253)
    """RuntimeClass of the replicas (e.g. nvidia where the GPU runtime is not the default)."""


class ScalingPolicy(ApiModel):
    """One limit on how fast the replica count may change."""

    type: ScalingPolicyType = Field(strict=False)
    """Pods: value is a number of replicas. Percent: value is a percentage of the current replicas."""

    value: int = Field(ge=1, le=10_000)
    """Largest change allowed within periodSeconds."""

    period_seconds: int = Field(ge=1, le=1800)
    """The window the value applies to."""


class ScalingRules(ApiModel):
    """How the autoscaler changes the replica count in one direction (autoscaling/v2 HPAScalingRules)."""

    stabilization_window_seconds: int | None = Field(default=None, ge=0, le=3600)
    """Past recommendations considered before changing; damps flapping."""

    select_policy: SelectPolicy | None = Field(default=None, strict=False)
    """Which policy applies when several do: Max (default) allows the largest change."""

    policies: list[ScalingPolicy] | None = Field(default=None, max_length=8)
    """Limits on the rate of change."""


class ScalingBehavior(ApiModel):
    """Scale-up and scale-down rates (autoscaling/v2 HorizontalPodAutoscalerBehavior)."""

    scale_up: ScalingRules | None = None
    """How replicas are added."""

    scale_down: ScalingRules | None = None
    """How replicas are removed."""


class AutoscalingSpec(ApiModel):
    """A HorizontalPodAutoscaler owns the replica count. The queue-time target uses Triton's
    nv_inference_queue_duration_us through a Pods metric (prometheus-adapter); GPU utilization uses
    nv_gpu_utilization the same way."""

    min_replicas: int = Field(default=1, ge=1, le=1000)
    """Fewest replicas."""

    max_replicas: int = Field(ge=1, le=1000)
    """Most replicas."""

    target_cpu_utilization: int | None = Field(default=None, ge=1, le=1000)
    """Average CPU use to aim for, in percent of resources.cpu."""

    target_gpu_utilization: int | None = Field(default=None, ge=1, le=100)
    """Average GPU utilization to aim for, in percent."""

    target_queue_time_microseconds: int | None = Field(default=None, ge=1, le=60_000_000)
    """Average time a request waits in Triton's queue to aim for, in microseconds."""

    behavior: ScalingBehavior | None = None
    """Scaling rates; the HorizontalPodAutoscaler's defaults when left out."""

    cel_rules = (
        Rule(
            cel="self.maxReplicas >= self.minReplicas",
            message="maxReplicas must be at least minReplicas",
            holds=lambda scaling: scaling.max_replicas >= scaling.min_replicas,
            field_path=".maxReplicas",
        ),
        Rule(
            cel="has(self.targetCpuUtilization) || has(self.targetGpuUtilization)"
            " || has(self.targetQueueTimeMicroseconds)",
            message="set at least one target: targetCpuUtilization, targetGpuUtilization or"
            " targetQueueTimeMicroseconds",
            holds=lambda scaling: any(
                target is not None
                for target in (
                    scaling.target_cpu_utilization,
                    scaling.target_gpu_utilization,
                    scaling.target_queue_time_microseconds,
                )
            ),
            reason=ValidationReason.REQUIRED,
        ),
    )


class GatewayRef(ApiModel):
    """The Gateway API Gateway an HTTPRoute attaches to."""

    name: str = Field(pattern=DNS1123_SUBDOMAIN, max_length=253)
    """Gateway name."""

    namespace: str | None = Field(default=None, pattern=DNS1123_LABEL, max_length=63)
    """Gateway namespace; the NimService's namespace when left out."""

    section_name: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN, max_length=253)
    """Listener of the Gateway to attach to; all listeners when left out."""


class IngressSpec(ApiModel):
    """A networking.k8s.io/v1 Ingress routing a host to the HTTP port."""

    host: str = Field(pattern=HOSTNAME, max_length=253)
    """Host name clients use (a leading *. is allowed)."""

    class_name: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN, max_length=253)
    """IngressClass; the cluster's default when left out."""

    tls_secret: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN, max_length=253)
    """Secret with the TLS certificate for host; plain HTTP when left out."""


class HttpRouteSpec(ApiModel):
    """A Gateway API HTTPRoute routing a host to the HTTP port."""

    host: str = Field(pattern=HOSTNAME, max_length=253)
    """Host name clients use (a leading *. is allowed)."""

    gateway_ref: GatewayRef
    """The Gateway to attach to."""


class ExposeSpec(ApiModel):
    """How clients reach Triton: a Service with the HTTP, gRPC and metrics ports, optionally an Ingress or an
    HTTPRoute."""

    service_type: ServiceType = Field(default=ServiceType.CLUSTER_IP, strict=False)
    """Service type."""

    http_port: int = Field(default=8000, ge=1, le=65535)
    """Service port for HTTP/REST (KServe v2 protocol)."""

    grpc_port: int = Field(default=8001, ge=1, le=65535)
    """Service port for gRPC."""

    metrics_port: int = Field(default=8002, ge=1, le=65535)
    """Service port for Prometheus metrics."""

    ingress: IngressSpec | None = None
    """Ingress for the HTTP port; excludes httpRoute."""

    http_route: HttpRouteSpec | None = None
    """Gateway API HTTPRoute for the HTTP port; excludes ingress."""

    cel_rules = (
        Rule(
            cel="self.httpPort != self.grpcPort && self.httpPort != self.metricsPort"
            " && self.grpcPort != self.metricsPort",
            message="httpPort, grpcPort and metricsPort must differ",
            holds=lambda expose: len({expose.http_port, expose.grpc_port, expose.metrics_port}) == 3,
        ),
        Rule(
            cel="!has(self.ingress) || !has(self.httpRoute)",
            message="set ingress or httpRoute, not both",
            holds=lambda expose: expose.ingress is None or expose.http_route is None,
            field_path=".httpRoute",
            reason=ValidationReason.FORBIDDEN,
        ),
    )


def _unchanged(field: str) -> str:
    return (
        f"has(self.{field}) == has(oldSelf.{field})"
        f" && (!has(self.{field}) || self.{field} == oldSelf.{field})"
    )


class StorageSpec(ApiModel):
    """A PersistentVolumeClaim for the model repository and engine cache, so restarts and new replicas skip
    the download and build. Left out, each replica uses an emptyDir."""

    size: Quantity | None = None
    """Size of a PVC the operator creates (e.g. 20Gi); excludes existingClaim."""

    storage_class_name: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN, max_length=253)
    """StorageClass of the PVC the operator creates; the cluster's default when left out. Immutable."""

    existing_claim: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN, max_length=253)
    """A PVC you made, in the same namespace (ReadWriteMany when replicas > 1); excludes size. Immutable."""

    cel_rules = (
        Rule(
            cel="has(self.size) != has(self.existingClaim)",
            message="set size (a PVC the operator creates) or existingClaim (a PVC you made), exactly one",
            holds=lambda storage: (storage.size is None) != (storage.existing_claim is None),
        ),
        Rule(
            cel="!has(self.storageClassName) || has(self.size)",
            message="storageClassName applies to a PVC the operator creates (size), not to an existingClaim",
            holds=lambda storage: storage.storage_class_name is None or storage.size is not None,
            field_path=".storageClassName",
            reason=ValidationReason.FORBIDDEN,
        ),
        TransitionRule(
            cel=_unchanged("existingClaim"),
            message="existingClaim is immutable: create a new NimService to move to another claim",
            holds=lambda new, old: new.existing_claim == old.existing_claim,
            field_path=".existingClaim",
        ),
        TransitionRule(
            cel=_unchanged("storageClassName"),
            message="storageClassName is immutable: a PVC cannot change its StorageClass",
            holds=lambda new, old: new.storage_class_name == old.storage_class_name,
            field_path=".storageClassName",
        ),
    )


_IS_PLAN = (
    f"(has(self.model.format) ? self.model.format == 'tensorrt-plan'"
    f" : self.model.uri.matches({cel_string(PLAN_SUFFIX)}))"
)
_STRONGLY_TYPED = (
    f"self.triton.image.find({cel_string(RELEASE_IN_IMAGE)})"
    f" >= ':{release_label(FIRST_STRONGLY_TYPED_RELEASE)}'"
)


_STRONGLY_TYPED_FROM = release_label(FIRST_STRONGLY_TYPED_RELEASE)
_STRONG_TYPING_ADVICE = (
    "which builds strongly typed networks only: put the precision into the ONNX graph (ModelOpt AutoCast,"
    " Q/DQ nodes) and use precision auto"
)


def _batch_sizes_fit(sizes: str, parent: str) -> str:
    return (
        f"!has(self.engine.maxBatchSize) || self.engine.maxBatchSize == 0 || !has({parent})"
        f" || !has({parent}.{sizes}) || {parent}.{sizes}.all(b, b <= self.engine.maxBatchSize)"
    )


def _is_plan(spec: NimServiceSpec) -> bool:
    return spec.model.resolved_format == ModelFormat.TENSORRT_PLAN


def _fits(sizes: list[int] | None, spec: NimServiceSpec) -> bool:
    limit = spec.engine.max_batch_size
    return not limit or sizes is None or all(size <= limit for size in sizes)


class NimServiceSpec(ApiModel):
    """The desired state of a NimService: a model served by Triton on GPUs."""

    model: ModelSpec
    """The model to serve."""

    engine: EngineSpec = Field(default_factory=EngineSpec)
    """Backend, precision and TensorRT build options."""

    triton: TritonSpec = Field(default_factory=TritonSpec)
    """Triton image and server settings."""

    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    """GPUs, GPU product, CPU and memory per replica."""

    placement: PlacementSpec | None = None
    """Node selection, tolerations, affinity and scheduling classes."""

    replicas: int | None = Field(default=None, ge=0, le=1000)
    """Fixed number of replicas (1 when neither replicas nor autoscaling is set); excludes autoscaling.
    kubectl scale sets it."""

    autoscaling: AutoscalingSpec | None = None
    """Let a HorizontalPodAutoscaler set the replica count; excludes replicas."""

    expose: ExposeSpec = Field(default_factory=ExposeSpec)
    """Service ports, Service type and optional Ingress or HTTPRoute."""

    storage: StorageSpec | None = None
    """Persistent volume for the model repository and engine cache."""

    paused: bool = False
    """Stop changing the children (Job, Deployment, Service, autoscaler) and keep what runs, e.g. during an
    investigation. Status keeps being reported."""

    cel_rules = (
        Rule(
            cel="!has(self.replicas) || !has(self.autoscaling)",
            message="set replicas or autoscaling, not both: remove replicas so the autoscaler owns the count",
            holds=lambda spec: spec.replicas is None or spec.autoscaling is None,
            field_path=".replicas",
            reason=ValidationReason.FORBIDDEN,
        ),
        Rule(
            cel=f"self.engine.backend != 'onnxruntime' || !{_IS_PLAN}",
            message="onnxruntime cannot run a TensorRT plan: use backend tensorrt or an ONNX model",
            holds=lambda spec: spec.engine.backend != Backend.ONNXRUNTIME or not _is_plan(spec),
            field_path=".engine.backend",
        ),
        Rule(
            cel=f"!{_IS_PLAN} || self.engine.precision == 'auto'",
            message="a prebuilt TensorRT plan keeps the precision it was built with: use precision auto",
            holds=lambda spec: not _is_plan(spec) or spec.engine.precision == Precision.AUTO,
            field_path=".engine.precision",
        ),
        Rule(
            cel=f"!{_IS_PLAN} || !has(self.engine.profiles)",
            message="a prebuilt TensorRT plan has its profiles already: remove engine.profiles",
            holds=lambda spec: not _is_plan(spec) or spec.engine.profiles is None,
            field_path=".engine.profiles",
            reason=ValidationReason.FORBIDDEN,
        ),
        Rule(
            cel=f"self.engine.backend != 'tensorrt' || {_IS_PLAN}"
            f" || !(self.engine.precision in {_cel_list(BUILDER_FLAG_PRECISIONS)})"
            f" || !({_STRONGLY_TYPED})",
            message=f"fp16, bf16, int8 and fp8 are TensorRT 10 builder flags; Triton {_STRONGLY_TYPED_FROM}"
            f" and later ship TensorRT 11, {_STRONG_TYPING_ADVICE}",
            message_expression="self.engine.precision + ' is a TensorRT 10 builder flag, but '"
            f" + self.triton.image + ' ships TensorRT 11, {_STRONG_TYPING_ADVICE}'",
            holds=lambda spec: (
                spec.engine.backend != Backend.TENSORRT
                or _is_plan(spec)
                or spec.engine.precision not in BUILDER_FLAG_PRECISIONS
                or not is_strongly_typed(spec.triton.image)
            ),
            field_path=".engine.precision",
        ),
        Rule(
            cel=_batch_sizes_fit("preferredBatchSizes", "self.triton.dynamicBatching"),
            message="preferred batch sizes must not exceed engine.maxBatchSize",
            holds=lambda spec: _fits(spec.triton.dynamic_batching.preferred_batch_sizes, spec),
            field_path=".triton.dynamicBatching.preferredBatchSizes",
        ),
        Rule(
            cel=_batch_sizes_fit("batchSizes", "self.triton.warmup"),
            message="warm-up batch sizes must not exceed engine.maxBatchSize",
            holds=lambda spec: spec.triton.warmup is None or _fits(spec.triton.warmup.batch_sizes, spec),
            field_path=".triton.warmup.batchSizes",
        ),
        Rule(
            cel="self.engine.backend != 'tensorrt' || self.resources.gpus >= 1",
            message="the tensorrt backend needs at least one GPU per replica",
            holds=lambda spec: spec.engine.backend != Backend.TENSORRT or spec.resources.gpus >= 1,
            field_path=".resources.gpus",
        ),
        Rule(
            cel="!has(self.resources.gpuProduct) || !has(self.placement)"
            " || !has(self.placement.nodeSelector)"
            f" || !('{GPU_PRODUCT_LABEL}' in self.placement.nodeSelector)"
            f" || self.placement.nodeSelector['{GPU_PRODUCT_LABEL}'] == self.resources.gpuProduct",
            message=f"nodeSelector {GPU_PRODUCT_LABEL} disagrees with resources.gpuProduct: set the product"
            " once, in resources.gpuProduct",
            holds=lambda spec: (
                spec.resources.gpu_product is None
                or spec.placement is None
                or spec.placement.node_selector is None
                or spec.placement.node_selector.get(GPU_PRODUCT_LABEL, spec.resources.gpu_product)
                == spec.resources.gpu_product
            ),
            field_path=".placement.nodeSelector",
        ),
        Rule(
            cel="!has(self.autoscaling) || !has(self.autoscaling.targetCpuUtilization)"
            " || has(self.resources.cpu)",
            message="targetCpuUtilization is a percentage of the CPU request: set resources.cpu",
            holds=lambda spec: (
                spec.autoscaling is None
                or spec.autoscaling.target_cpu_utilization is None
                or spec.resources.cpu is not None
            ),
            field_path=".autoscaling.targetCpuUtilization",
        ),
        Rule(
            cel="!has(self.autoscaling) || !has(self.autoscaling.targetGpuUtilization)"
            " || self.resources.gpus >= 1",
            message="targetGpuUtilization needs replicas with GPUs (resources.gpus >= 1)",
            holds=lambda spec: (
                spec.autoscaling is None
                or spec.autoscaling.target_gpu_utilization is None
                or spec.resources.gpus >= 1
            ),
            field_path=".autoscaling.targetGpuUtilization",
        ),
    )

    @property
    def desired_replicas(self) -> int:
        """The replica count to start from: the fixed count, the autoscaler's minimum, or 1."""
        if self.replicas is not None:
            return self.replicas
        if self.autoscaling is not None:
            return self.autoscaling.min_replicas
        return 1
