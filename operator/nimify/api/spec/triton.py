"""spec.triton: the Triton image and server settings (dynamic batching, instances, cache, warm-up, flags)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, field_validator

from nimify.api.base import ApiModel
from nimify.api.spec.fields import DNS1123_SUBDOMAIN, BatchSize, unique
from nimify.api.validation import LIST_SET, Rule, ValidationReason, cel_string, matches

DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.10-py3"

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
        return unique(sizes)


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
        return unique(sizes) or sizes


class TuningObjective(StrEnum):
    """What a tuning maximises."""

    MAX_THROUGHPUT = "maxThroughput"
    """The most inferences per second whose p99 latency stays within p99LatencyBudgetMilliseconds."""
    MIN_LATENCY = "minLatency"
    """The lowest p99 latency at which a replica still serves requestRate inferences per second."""


class TuningSpec(ApiModel):
    """Tuned serving: the Triton config chosen from a bounded sweep measured on the target hardware, once per
    engine and GPU product (docs/tuning.md). The sweep runs in a Job beside the built engine, with the serving
    image's Triton; the default config (instancesPerGpu, dynamicBatching) serves meanwhile, and keeps serving
    when no config meets the objective."""

    objective: TuningObjective = Field(default=TuningObjective.MAX_THROUGHPUT, strict=False)
    """maxThroughput (within p99LatencyBudgetMilliseconds) or minLatency (at requestRate)."""

    p99_latency_budget_milliseconds: float | None = Field(default=None, gt=0, le=600_000)
    """The p99 latency a maxThroughput config must keep (required for maxThroughput)."""

    request_rate: float | None = Field(default=None, gt=0, le=10_000_000)
    """Inferences per second a minLatency config must serve per replica (required for minLatency)."""

    max_instances: int = Field(default=4, ge=1, le=16)
    """The most model instances per GPU (or on the CPU) the sweep tries, from 1."""

    preferred_batch_sizes: list[Annotated[list[BatchSize], Field(min_length=1, max_length=8)]] | None = Field(
        default=None, min_length=1, max_length=8
    )
    """Candidate preferredBatchSizes (each list a candidate; each size at most engine.maxBatchSize). Left
    out: no preference, then each power of two up to engine.maxBatchSize."""

    max_queue_delays_microseconds: list[Annotated[int, Field(ge=0, le=10_000_000)]] | None = Field(
        default=None, min_length=1, max_length=8
    )
    """Candidate maximum queue delays. Left out: 0, 100, 500 and 2000 microseconds."""

    concurrency: list[Annotated[int, Field(ge=1, le=1024)]] | None = Field(
        default=None, min_length=1, max_length=6
    )
    """Concurrent requests each candidate is measured at. Left out: 1, 4 and 16."""

    time_budget_seconds: int = Field(default=600, ge=10, le=14_400)
    """The sweep's time; what was measured by then decides (the status says when it stopped short)."""

    trial_seconds: float = Field(default=5.0, ge=0.5, le=120)
    """How long each candidate is measured at each concurrency."""

    cel_rules = (
        Rule(
            cel="self.objective != 'maxThroughput' || has(self.p99LatencyBudgetMilliseconds)",
            message="maxThroughput needs p99LatencyBudgetMilliseconds",
            holds=lambda tuning: (
                tuning.objective != TuningObjective.MAX_THROUGHPUT
                or tuning.p99_latency_budget_milliseconds is not None
            ),
            field_path=".p99LatencyBudgetMilliseconds",
            reason=ValidationReason.REQUIRED,
        ),
        Rule(
            cel="self.objective != 'minLatency' || has(self.requestRate)",
            message="minLatency needs requestRate",
            holds=lambda tuning: (
                tuning.objective != TuningObjective.MIN_LATENCY or tuning.request_rate is not None
            ),
            field_path=".requestRate",
            reason=ValidationReason.REQUIRED,
        ),
    )


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

    tuning: TuningSpec | None = None
    """Choose instancesPerGpu and the dynamic batcher's preferred sizes and queue delay from a measured sweep
    on the target hardware (docs/tuning.md); off when left out."""

    warmup: WarmupSpec | None = None
    """Warm-up requests before the model reports ready; none when left out."""

    service_account_name: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN, max_length=253)
    """ServiceAccount (same namespace) of the Triton pods, kept apart from the conversion Job's so that the
    serving pods hold no bucket access. The operator's default (NIMIFY_SERVER_SERVICE_ACCOUNT) when left
    out, else the namespace's default. The pods get no Kubernetes API token either way."""

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
