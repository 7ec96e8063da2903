"""spec.resources: GPUs, GPU product, CPU and memory per replica."""

from __future__ import annotations

from pydantic import Field

from nimify.api.base import ApiModel
from nimify.api.spec.fields import LABEL_VALUE, Quantity, positive_quantity_rule
from nimify.api.validation import Rule


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
        # Each replica's memory request and limit: a zero limit runs nothing.
        positive_quantity_rule(
            "memory", "memory", "memory must be greater than zero: it is each replica's limit"
        ),
    )
