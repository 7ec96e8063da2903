"""What the operator reports on a NimService: conditions, replicas, the model signature, engine and parity."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

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
    """Ready, Reconciling, Stalled, EngineReady, Available or ScalingActive."""

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

    model: str | None = Field(default=None, max_length=64)
    """The model's digest (spec.model.sha256; of its uri when unpinned): a rollout whose model keeps it
    changes only the engine, and its candidate must answer the same."""

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
    """Where the inputs came from: generated, searched (generated at sizes ONNX Runtime was asked to accept,
    see shapes), or file (engine.parity.inputs)."""

    shapes: list[Annotated[str, Field(max_length=1024)]] | None = Field(default=None, max_length=8)
    """The shapes of the searched inputs, per distinct sample (INPUT: [dims], ...)."""

    max_abs_error: float | None = Field(default=None, ge=0)
    """Largest absolute difference over all outputs."""

    max_rel_error: float | None = Field(default=None, ge=0)
    """Largest relative difference over all outputs."""

    samples: int | None = Field(default=None, ge=0)
    """Input batches compared."""

    passed: bool | None = None
    """Whether every element was within atol or within rtol * |reference| (Polygraphy's rule)."""


class EngineRecord(StatusModel):
    """One ready engine as status records it: what it is, what it takes and gives, how it was checked."""

    engine: EngineStatus
    """The engine: its cache key, where it lives, what built it."""

    signature: ModelSignature
    """Inputs and outputs of its model."""

    parity: ParityStatus | None = None
    """The conversion Job's check of it."""


class UnitRole(StrEnum):
    """What a serving unit is for."""

    SERVING = "Serving"
    """The engine that takes the NimService's traffic (its Deployment has the NimService's name)."""

    CANDIDATE = "Candidate"
    """A new engine beside the serving one, taking a share of the traffic while it is judged."""

    PIPELINE_MEMBER = "PipelineMember"
    """One model of a pipeline."""


class UnitStatus(StatusModel):
    """One serving unit: an engine in a Triton Deployment of its own."""

    name: str = Field(max_length=63)
    """The unit's name: its Deployment's (the NimService's own name for the serving unit)."""

    role: UnitRole
    """What the unit is for."""

    traffic_percent: int = Field(ge=0, le=100)
    """The share of the NimService's traffic the unit gets."""

    engine: EngineStatus | None = None
    """The engine the unit serves, once one is ready."""

    signature: ModelSignature | None = None
    """Inputs and outputs of the unit's model."""

    parity: ParityStatus | None = None
    """The conversion Job's check of the unit's engine."""

    def record(self) -> EngineRecord | None:
        """The unit's engine, when it has one."""
        if self.engine is None or self.signature is None:
            return None
        return EngineRecord(engine=self.engine, signature=self.signature, parity=self.parity)


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


class AutoscalerStatus(StatusModel):
    """The autoscaler that owns the replica count, as it last reported itself. Metric values are left out
    on purpose (they change every few seconds; `kubectl get hpa NAME` shows them)."""

    kind: str = Field(max_length=64)
    """HorizontalPodAutoscaler or ScaledObject (KEDA)."""

    name: str = Field(max_length=253)
    """Name of that object in the NimService's namespace."""

    hpa_name: str | None = Field(default=None, max_length=253)
    """The HorizontalPodAutoscaler that computes the replicas (KEDA's own for a ScaledObject)."""

    current_replicas: int | None = Field(default=None, ge=0)
    """Replicas the autoscaler last saw."""

    desired_replicas: int | None = Field(default=None, ge=0)
    """Replicas the autoscaler last asked for."""

    last_scale_time: datetime | None = None
    """When the autoscaler last changed the replica count."""


class TunedConfig(StatusModel):
    """A Triton config the tuning measured: what it sets of instancesPerGpu and dynamicBatching."""

    instances: int = Field(ge=1, le=64)
    """Model instances per GPU (or on the CPU)."""

    preferred_batch_sizes: list[int] | None = Field(default=None, max_length=16)
    """The dynamic batcher's preferred batch sizes (none: Triton forms the largest batch it can)."""

    max_queue_delay_microseconds: int = Field(ge=0)
    """How long a request may wait for others to join its batch."""


class TuningMeasurement(StatusModel):
    """One config at one concurrency, as the sweep measured it."""

    config: TunedConfig
    """The config measured."""

    concurrency: int = Field(ge=1)
    """Requests in flight at once (one row each)."""

    throughput: float = Field(ge=0)
    """Inferences per second."""

    p50_milliseconds: float = Field(ge=0)
    """Median latency."""

    p99_milliseconds: float = Field(ge=0)
    """99th percentile latency."""

    queue_microseconds: float = Field(ge=0)
    """Time a request spent in Triton's queue, on average (Triton's statistics)."""

    failed: int = Field(default=0, ge=0)
    """Requests that failed (a config with failures is never chosen)."""


class TuningStatus(StatusModel):
    """The tuning of the served engine (spec.triton.tuning): what was measured and what serves."""

    key: str = Field(max_length=64)
    """What was tuned: the engine, the GPU product, the Triton image, the objective and the search. The
    same key is never measured twice (another NimService's result, or the engine cache's, is reused)."""

    objective: str = Field(max_length=256)
    """The objective, as measured against (e.g. maxThroughput within p99 50 ms)."""

    chosen: TunedConfig | None = None
    """The config that met the objective best, which Triton serves; none when none met it."""

    closest: TunedConfig | None = None
    """When none met the objective: the config that came closest (the default config serves)."""

    met: bool = False
    """Whether a config met the objective."""

    partial: bool = False
    """Whether the time budget ended the sweep before the whole search space was measured."""

    capacity_per_replica: float | None = Field(default=None, ge=0)
    """Inferences per second one replica serves with the chosen config within the objective: the measured
    capacity autoscaling can be sized by (docs/tuning.md)."""

    trials: int = Field(default=0, ge=0)
    """Configs measured."""

    seconds: float = Field(default=0, ge=0)
    """How long the sweep took."""

    measurements: list[TuningMeasurement] | None = Field(default=None, max_length=64)
    """The measured table (the default config's rows first); the best rows when there were more."""


class RolloutPhase(StrEnum):
    """Where a canary rollout stands."""

    PROGRESSING = "Progressing"
    """The candidate is built, started, or takes its step's share of the traffic."""
    PAUSED = "Paused"
    """spec.rollout.paused holds the candidate at its step."""
    PROMOTING = "Promoting"
    """The steps are done: the serving Deployment rolls to the candidate's engine, the candidate still
    serving its share until it has."""
    PROMOTED = "Promoted"
    """The candidate's engine serves all the traffic from the serving Deployment; the candidate is gone."""
    ROLLED_BACK = "RolledBack"
    """The candidate failed (or was aborted) and is gone; the serving engine kept all the traffic. The spec's
    engine is not tried again until the spec changes."""


class TrafficSplit(StrEnum):
    """How a rollout's weights reach the requests."""

    GATEWAY = "Gateway"
    """Weighted backendRefs of the HTTPRoute: each request goes to a unit in proportion to its weight."""
    REPLICAS = "Replicas"
    """No Gateway (no spec.expose.httpRoute): the NimService's Service spreads the requests over both units'
    ready pods, and the candidate runs as many replicas as its weight asks beside the serving ones (coarse:
    the share is the replicas' share, docs/rollouts.md)."""


class GateForm(StrEnum):
    """Which answer gate judged a candidate."""

    EQUIVALENCE = "Equivalence"
    """The same answers within tolerances (only the engine changed, or the update is declared equivalent)."""
    AGREEMENT = "Agreement"
    """A share of agreeing answers at least the spec's (a changed model)."""


class AnswerGateStatus(StatusModel):
    """The answer gate's verdict on a candidate: the same inputs to a pod of each unit, answers compared."""

    form: GateForm
    """Equivalence or Agreement."""

    samples: int = Field(ge=0)
    """Inputs sent to both units."""

    figure: float
    """The largest absolute difference (Equivalence) or the share of agreeing answers (Agreement)."""

    limit: float
    """atol (Equivalence) or minFraction (Agreement)."""

    passed: bool
    """Whether the candidate passed."""

    message: str = Field(default="", max_length=1024)
    """What was compared and found."""


class UnitFigures(StatusModel):
    """One unit's figures over an analysis window, from Triton's counters and summaries in Prometheus."""

    requests: int = Field(ge=0)
    """Requests answered (successes and failures)."""

    failures: int = Field(ge=0)
    """Failed requests."""

    error_ratio: float | None = Field(default=None, ge=0, le=1)
    """failures / requests (none without requests)."""

    p99_latency_ms: float | None = Field(default=None, ge=0)
    """Triton's p99 request latency (its summary over its recent requests), the highest of the unit's pods."""

    mean_latency_ms: float | None = Field(default=None, ge=0)
    """Mean request latency over the window."""

    mean_queue_ms: float | None = Field(default=None, ge=0)
    """Mean time a request waited in Triton's queue over the window."""


class MetricVerdict(StatusModel):
    """One limit of spec.rollout.analysis (or a step's minRequests), judged."""

    metric: str = Field(max_length=64)
    """errorRatio, latencyRatio, queueTimeRatio or requests."""

    value: float
    """The candidate's figure (a ratio to the serving unit's for latencyRatio and queueTimeRatio)."""

    limit: float
    """The spec's limit."""

    passed: bool
    """Whether the candidate kept within it."""


class RolloutAnalysisStatus(StatusModel):
    """The last analysis of the candidate's step."""

    step: int = Field(ge=0)
    """The step it judged."""

    window_seconds: int = Field(ge=0)
    """The window: from the step's start to the analysis."""

    candidate: UnitFigures
    """The candidate's figures."""

    serving: UnitFigures | None = None
    """The serving unit's, over the same window."""

    verdicts: list[MetricVerdict] = Field(default_factory=list, max_length=8)
    """Each limit, judged (none while too few requests came)."""


class RolloutStatus(StatusModel):
    """The last canary rollout (spec.rollout.strategy Canary): kept in the cluster, so an operator restart
    resumes it where it stood."""

    phase: RolloutPhase
    """Progressing, Paused, Promoting, Promoted or RolledBack."""

    candidate: str = Field(max_length=64)
    """The candidate's engine (its cache key): what the rollout brings in."""

    generation: int = Field(ge=0)
    """The NimService's generation the rollout last acted for: it follows spec edits that keep the candidate;
    a rollback keeps the one it happened at (a later change of the spec tries the candidate again)."""

    step: int = Field(default=0, ge=0)
    """The current step (0 is the first); the number of steps once they are all done."""

    step_started_at: datetime | None = None
    """When the current step's candidate began taking its share (its hold counts from here); none while the
    candidate is not ready. After a rollback: when the step it failed in began."""

    candidate_weight: int = Field(default=0, ge=0, le=100)
    """Percent of the traffic the candidate gets now."""

    finished_at: datetime | None = None
    """When the rollout ended (promoted or rolled back). The candidate's Deployment and Service are kept,
    without traffic, for a short drain after it: a gateway still routing to it meanwhile is answered."""

    traffic: TrafficSplit | None = None
    """How the weights reach the requests: the Gateway's weighted routes, or the units' replica counts."""

    gate: AnswerGateStatus | None = None
    """The answer gate's verdict on the candidate, before it took traffic (none when no gate applies)."""

    analysis: RolloutAnalysisStatus | None = None
    """The last analysis of the candidate's figures against the serving unit's."""

    message: str = Field(default="", max_length=1024)
    """What the rollout does now, or why it was rolled back."""


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

    autoscaler: AutoscalerStatus | None = None
    """The autoscaler's view of the replicas (with spec.autoscaling)."""

    tuning: TuningStatus | None = None
    """The tuning of the served engine (spec.triton.tuning), once measured or reused."""

    rollout: RolloutStatus | None = None
    """The last canary rollout (spec.rollout), while one runs and after it ended."""

    units: list[UnitStatus] | None = Field(default=None, max_length=16, json_schema_extra=list_map("name"))
    """The serving units, each an engine in a Triton Deployment of its own; signature, engine and parity
    above are the serving unit's."""

    def record(self) -> EngineRecord | None:
        """The serving unit's engine as recorded above (statuses written before units have only these)."""
        if self.engine is None or self.signature is None:
            return None
        return EngineRecord(engine=self.engine, signature=self.signature, parity=self.parity)

    def unit(self, name: str) -> UnitStatus | None:
        """The unit of that name, if reported."""
        return next((unit for unit in self.units or () if unit.name == name), None)

    def condition(self, condition_type: str) -> Condition | None:
        """The condition of that type, if reported."""
        return next((condition for condition in self.conditions if condition.type == condition_type), None)
