"""What a user writes in a NimService: the spec models, their defaults and their admission rules.

One module per spec section (`model`, `pipeline`, `engine`, `triton`, `resources`, `placement`,
`autoscaling`, `expose`, `storage`), shared patterns and field types in `fields`, and the whole spec with its
cross-section rules in `nimservice_spec`. Everything is re-exported here, so `nimify.api.spec` stays
the one place to import from.
"""

from nimify.api.spec.autoscaling import (
    Autoscaler,
    AutoscalingSpec,
    ScalingBehavior,
    ScalingPolicy,
    ScalingPolicyType,
    ScalingRules,
    SelectPolicy,
)
from nimify.api.spec.engine import (
    BUILDER_FLAG_PRECISIONS,
    ONNXRUNTIME_PRECISIONS,
    Backend,
    BuildResourcesSpec,
    EngineSpec,
    GeneratedInput,
    ParityInputs,
    ParitySpec,
    Precision,
    ShapeProfile,
)
from nimify.api.spec.expose import (
    ExposeSpec,
    GatewayRef,
    HttpRouteSpec,
    IngressSpec,
    NetworkPeer,
    NetworkPolicySpec,
    ServiceType,
)
from nimify.api.spec.fields import (
    DNS1123_LABEL,
    DNS1123_SUBDOMAIN,
    GPU_PRODUCT_LABEL,
    HOSTNAME,
    LABEL_VALUE,
    QUANTITY,
    BatchSize,
    Dimension,
    NodeLabelValue,
    Quantity,
    quantity_value,
)
from nimify.api.spec.model import (
    DOT_DOT_SEGMENT,
    MODEL_URI,
    ONNX_SUFFIX,
    PLAN_SUFFIX,
    ModelFormat,
    ModelSpec,
)
from nimify.api.spec.nimservice_spec import NimServiceSpec
from nimify.api.spec.pipeline import PIPELINE_INPUT, PipelineMember, PipelineSpec, PipelineStep
from nimify.api.spec.placement import PlacementSpec, TaintEffect, Toleration, TolerationOperator
from nimify.api.spec.resources import ResourcesSpec
from nimify.api.spec.storage import StorageSpec
from nimify.api.spec.triton import (
    DEFAULT_TRITON_IMAGE,
    IMAGE,
    OWNED_TRITON_ARG,
    OWNED_TRITON_FLAGS,
    TRITON_ARG,
    DynamicBatchingSpec,
    ResponseCacheSpec,
    TritonSpec,
    WarmupSpec,
)

__all__ = [
    "BUILDER_FLAG_PRECISIONS",
    "DEFAULT_TRITON_IMAGE",
    "DNS1123_LABEL",
    "DNS1123_SUBDOMAIN",
    "DOT_DOT_SEGMENT",
    "GPU_PRODUCT_LABEL",
    "HOSTNAME",
    "IMAGE",
    "LABEL_VALUE",
    "MODEL_URI",
    "ONNXRUNTIME_PRECISIONS",
    "ONNX_SUFFIX",
    "OWNED_TRITON_ARG",
    "OWNED_TRITON_FLAGS",
    "PIPELINE_INPUT",
    "PLAN_SUFFIX",
    "QUANTITY",
    "TRITON_ARG",
    "Autoscaler",
    "AutoscalingSpec",
    "Backend",
    "BatchSize",
    "BuildResourcesSpec",
    "Dimension",
    "DynamicBatchingSpec",
    "EngineSpec",
    "ExposeSpec",
    "GatewayRef",
    "GeneratedInput",
    "HttpRouteSpec",
    "IngressSpec",
    "ModelFormat",
    "ModelSpec",
    "NetworkPeer",
    "NetworkPolicySpec",
    "NimServiceSpec",
    "NodeLabelValue",
    "ParityInputs",
    "ParitySpec",
    "PipelineMember",
    "PipelineSpec",
    "PipelineStep",
    "PlacementSpec",
    "Precision",
    "Quantity",
    "ResourcesSpec",
    "ResponseCacheSpec",
    "ScalingBehavior",
    "ScalingPolicy",
    "ScalingPolicyType",
    "ScalingRules",
    "SelectPolicy",
    "ServiceType",
    "ShapeProfile",
    "StorageSpec",
    "TaintEffect",
    "Toleration",
    "TolerationOperator",
    "TritonSpec",
    "WarmupSpec",
    "quantity_value",
]
