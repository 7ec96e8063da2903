"""The whole NimService spec: its sections and the rules that relate one section to another."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from nimify.api.base import ApiModel
from nimify.api.releases import (
    FIRST_STRONGLY_TYPED_RELEASE,
    is_strongly_typed,
    release_label,
    strongly_typed_cel,
)
from nimify.api.spec.autoscaling import AutoscalingSpec
from nimify.api.spec.engine import BUILDER_FLAG_PRECISIONS, Backend, EngineSpec, Precision
from nimify.api.spec.expose import ExposeSpec
from nimify.api.spec.fields import DNS1123_SUBDOMAIN, GPU_PRODUCT_LABEL, cel_list
from nimify.api.spec.model import PLAN_SUFFIX, ModelFormat, ModelSpec
from nimify.api.spec.pipeline import PipelineMember, PipelineSpec
from nimify.api.spec.placement import PlacementSpec
from nimify.api.spec.resources import ResourcesSpec
from nimify.api.spec.rollout import RolloutSpec
from nimify.api.spec.storage import StorageSpec
from nimify.api.spec.triton import TritonSpec
from nimify.api.validation import LIST_SET, Rule, ValidationReason, cel_string

SecretName = Annotated[str, Field(pattern=DNS1123_SUBDOMAIN, max_length=253)]

_IS_PLAN = (
    f"(has(self.model) && (has(self.model.format) ? self.model.format == 'tensorrt-plan'"
    f" : self.model.uri.matches({cel_string(PLAN_SUFFIX)})))"
)
_STRONGLY_TYPED = strongly_typed_cel()


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
    return spec.model is not None and spec.model.resolved_format == ModelFormat.TENSORRT_PLAN


def _fits(sizes: list[int] | None, spec: NimServiceSpec) -> bool:
    limit = spec.engine.max_batch_size
    return not limit or sizes is None or all(size <= limit for size in sizes)


class NimServiceSpec(ApiModel):
    """The desired state of a NimService: a model served by Triton on GPUs."""

    model: ModelSpec | None = None
    """The model to serve; or, instead, a pipeline of several."""

    pipeline: PipelineSpec | None = None
    """Several models served as one Triton ensemble (docs/pipelines.md), instead of model. spec.engine is
    then the members' default engine settings; the rest of the spec (Triton, resources, replicas, expose)
    applies to the one Triton Deployment that serves them all."""

    engine: EngineSpec = Field(default_factory=EngineSpec)
    """Backend, precision and TensorRT build options."""

    triton: TritonSpec = Field(default_factory=TritonSpec)
    """Triton image and server settings."""

    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    """GPUs, GPU product, CPU and memory per replica."""

    placement: PlacementSpec | None = None
    """Node selection, tolerations, affinity and scheduling classes."""

    replicas: int | None = Field(default=None, ge=0, le=1000)
    """Fixed number of replicas; excludes autoscaling. kubectl scale sets it. Left out, the operator does not
    manage the count: the Deployment starts with 1 and keeps what it has (the autoscaler's last count when
    autoscaling is turned off)."""

    autoscaling: AutoscalingSpec | None = None
    """Let an autoscaler (a HorizontalPodAutoscaler or a KEDA ScaledObject) set the replica count; excludes
    replicas."""

    expose: ExposeSpec = Field(default_factory=ExposeSpec)
    """Service ports, Service type and optional Ingress or HTTPRoute."""

    storage: StorageSpec | None = None
    """Persistent volume for the model repository and engine cache."""

    image_pull_secrets: list[SecretName] | None = Field(
        default=None, max_length=16, json_schema_extra=LIST_SET
    )
    """Secrets (same namespace, type kubernetes.io/dockerconfigjson) for pulling the Triton and conversion
    images from a private registry or a mirror of nvcr.io. Added to the operator's own
    (NIMIFY_IMAGE_PULL_SECRETS) on both the Triton pods and the conversion Job."""

    rollout: RolloutSpec | None = None
    """How a new engine takes over from the serving one: at once (Replace, also when left out) or as a
    canary that takes a growing share of the traffic (docs/rollouts.md)."""

    paused: bool = False
    """Stop changing the children (Job, Deployment, Service, autoscaler) and keep what runs, e.g. during an
    investigation. Status keeps being reported."""

    cel_rules = (
        Rule(
            cel="has(self.model) != has(self.pipeline)",
            message="set model (one model) or pipeline (several), exactly one of them",
            holds=lambda spec: (spec.model is None) != (spec.pipeline is None),
            field_path=".model",
            reason=ValidationReason.REQUIRED,
        ),
        Rule(
            cel="!has(self.pipeline) || !has(self.engine.profiles)",
            message="shape profiles belong to one model: give them in each member's engine",
            holds=lambda spec: spec.pipeline is None or spec.engine.profiles is None,
            field_path=".engine.profiles",
            reason=ValidationReason.FORBIDDEN,
        ),
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
            f" || !(self.engine.precision in {cel_list(BUILDER_FLAG_PRECISIONS)})"
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
            cel="!has(self.triton.tuning) || !has(self.triton.tuning.preferredBatchSizes)"
            " || !has(self.engine.maxBatchSize) || self.engine.maxBatchSize == 0"
            " || self.triton.tuning.preferredBatchSizes.all(c, c.all(b, b <= self.engine.maxBatchSize))",
            message="the tuning's preferred batch sizes must not exceed engine.maxBatchSize",
            holds=lambda spec: (
                spec.triton.tuning is None
                or spec.triton.tuning.preferred_batch_sizes is None
                or all(_fits(sizes, spec) for sizes in spec.triton.tuning.preferred_batch_sizes)
            ),
            field_path=".triton.tuning.preferredBatchSizes",
        ),
        Rule(
            cel="!has(self.triton.tuning) || !has(self.model) || !self.model.uri.startsWith('oci://')",
            message="a model image is tuned where it is built (nimify tune), not by the operator: its engine"
            " is on no claim for a tuning Job to read",
            holds=lambda spec: spec.triton.tuning is None or spec.model is None or not spec.model.is_image,
            field_path=".triton.tuning",
            reason=ValidationReason.FORBIDDEN,
        ),
        Rule(
            cel="!has(self.pipeline) || !has(self.rollout) || self.rollout.strategy != 'Canary'",
            message="a pipeline rolls out by Replace: its ensemble and members change together (a canary of"
            " a pipeline is not supported yet)",
            holds=lambda spec: spec.pipeline is None or spec.rollout is None or not spec.rollout.canary,
            field_path=".rollout.strategy",
            reason=ValidationReason.FORBIDDEN,
        ),
        Rule(
            cel="!has(self.pipeline) || !has(self.triton.tuning)",
            message="a pipeline's ensemble is not tuned (yet): its members serve with their configs",
            holds=lambda spec: spec.pipeline is None or spec.triton.tuning is None,
            field_path=".triton.tuning",
            reason=ValidationReason.FORBIDDEN,
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

    @field_validator("image_pull_secrets")
    @classmethod
    def _secrets_once(cls, names: list[str] | None) -> list[str] | None:
        if names is not None and len(set(names)) != len(names):
            raise ValueError("each pull secret may be named once")
        return names

    def member_spec(self, member: PipelineMember) -> NimServiceSpec:
        """The spec a pipeline member is built and checked with: this one, with the member's model (named
        after the member) and engine settings."""
        return self.model_copy(
            update={
                "model": member.model.model_copy(update={"name": member.name}),
                "engine": member.engine or self.engine,
                "pipeline": None,
            }
        )

    @property
    def the_model(self) -> ModelSpec:
        """The model of a single-model spec (a pipeline's members have theirs: member_spec)."""
        if self.model is None:
            raise ValueError("a pipeline has no single model: use member_spec")
        return self.model

    @property
    def desired_replicas(self) -> int:
        """The replica count to start from: the fixed count, the autoscaler's minimum, or 1."""
        if self.replicas is not None:
            return self.replicas
        if self.autoscaling is not None:
            return self.autoscaling.min_replicas
        return 1
