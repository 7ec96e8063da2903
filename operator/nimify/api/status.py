"""What the operator reports on a NimService: conditions, replicas, the model signature, engine and parity."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from nimify.api.base import StatusModel
from nimify.api.validation import list_map

CONDITION_TYPE = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class ConditionStatus(StrEnum):
    """Whether a condition holds."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(StatusModel):
    """One aspect of the NimService's state (the shape of metav1.Condition)."""

    type: str = Field(pattern=CONDITION_TYPE, max_length=316)
    """Ready, Reconciling, Stalled, EngineReady or Available."""

    status: ConditionStatus
    """True, False or Unknown."""

    reason: str = Field(pattern=CONDITION_REASON, min_length=1, max_length=1024)
    """CamelCase cause of the status, e.g. EngineBuildFailed."""

    message: str = Field(default="", max_length=32768)
    """Human-readable details."""

    last_transition_time: datetime
    """When status last changed (not when the condition was last written)."""

    observed_generation: int | None = Field(default=None, ge=0)
    """metadata.generation the condition was computed from."""


class TensorSpec(StatusModel):
    """One input or output tensor of the served model."""

    name: str = Field(max_length=256)
    """Tensor name."""

    dtype: str = Field(pattern=r"^[A-Z0-9_]+$", max_length=32)
    """Element type by its ONNX name in upper case: FLOAT, FLOAT16, BFLOAT16, INT64, INT32, BOOL, STRING..."""

    shape: list[int] = Field(max_length=16)
    """Dimensions; -1 marks a dynamic one."""


class ModelSignature(StatusModel):
    """The served model's inputs and outputs."""

    inputs: list[TensorSpec] = Field(default_factory=list, max_length=256)
    """Input tensors."""

    outputs: list[TensorSpec] = Field(default_factory=list, max_length=256)
    """Output tensors."""


class EngineStatus(StatusModel):
    """The TensorRT engine being served."""

    cache_key: str | None = Field(default=None, max_length=256)
    """Key of the engine in the cache: model digest, build options, TensorRT version and GPU product."""

    tensorrt_version: str | None = Field(default=None, max_length=64)
    """TensorRT version that built the engine."""

    gpu_product: str | None = Field(default=None, max_length=63)
    """GPU product the engine was built on (nvidia.com/gpu.product)."""

    build_seconds: float | None = Field(default=None, ge=0)
    """How long the build took."""

    cache_hit: bool | None = None
    """Whether the engine came from the cache instead of a build."""

    max_batch_size: int | None = Field(default=None, ge=0)
    """Triton max_batch_size the engine was built for (0: no batching)."""

    location: str | None = Field(default=None, max_length=512)
    """Where the engine's model repository lives: CLAIM/PATH on the engine volume."""


class ParityStatus(StatusModel):
    """What the conversion Job compared before serving, on which inputs, and how closely it matched."""

    check: str | None = Field(default=None, max_length=64)
    """What ran: tensorrtEngine (the TensorRT engine against ONNX Runtime), servedConfig (the model fed as
    its config.pbtxt makes Triton feed it, requests batched together, against each request run alone) or
    pythonBackend (the generated model.py of Triton's python backend against ONNX Runtime)."""

    inputs: str | None = Field(default=None, max_length=64)
    """Where the inputs came from: generated, or file (engine.parity.inputs)."""

    max_abs_error: float | None = Field(default=None, ge=0)
    """Largest absolute difference over all outputs."""

    max_rel_error: float | None = Field(default=None, ge=0)
    """Largest relative difference over all outputs."""

    samples: int | None = Field(default=None, ge=0)
    """Input batches compared."""

    passed: bool | None = None
    """Whether every element was within atol or within rtol * |reference| (Polygraphy's rule)."""


class Endpoints(StatusModel):
    """Where clients reach the model."""

    http: str | None = Field(default=None, max_length=2048)
    """HTTP/REST base URL (KServe v2), e.g. http://NAME.NAMESPACE.svc:8000."""

    grpc: str | None = Field(default=None, max_length=2048)
    """gRPC address, e.g. NAME.NAMESPACE.svc:8001."""

    metrics: str | None = Field(default=None, max_length=2048)
    """Prometheus metrics URL."""

    external: str | None = Field(default=None, max_length=253)
    """Host name of the Ingress or HTTPRoute, once applied; its scheme and port are those of the ingress
    controller or Gateway listener."""


class NimServiceStatus(StatusModel):
    """The observed state of a NimService."""

    observed_generation: int | None = Field(default=None, ge=0)
    """metadata.generation the operator last acted on."""

    conditions: list[Condition] = Field(
        default_factory=list, max_length=16, json_schema_extra=list_map("type")
    )
    """Current conditions, one per type."""

    replicas: int | None = Field(default=None, ge=0)
    """Replicas that exist (scale subresource statusReplicasPath)."""

    ready_replicas: int | None = Field(default=None, ge=0)
    """Replicas whose Triton reports the model ready."""

    selector: str | None = Field(default=None, max_length=1024)
    """Label selector of the replicas' pods, as a string (scale subresource labelSelectorPath)."""

    signature: ModelSignature | None = None
    """Inputs and outputs of the served model."""

    engine: EngineStatus | None = None
    """The TensorRT engine being served (tensorrt backend)."""

    parity: ParityStatus | None = None
    """The conversion Job's check of what it serves (every backend; see parity.check)."""

    endpoints: Endpoints | None = None
    """Where clients reach the model."""

    def condition(self, condition_type: str) -> Condition | None:
        """The condition of that type, if reported."""
        return next((condition for condition in self.conditions if condition.type == condition_type), None)
