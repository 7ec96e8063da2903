"""Checks that need tables, not just the fields: the TensorRT in a Triton release and what a GPU can compute.

The operator runs them before it builds anything (and reports InvalidSpec); `nimify` runs them offline. The
apiserver enforces what it can of them at admission (TensorRT 11 precision), the rest lives only here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from nimify.api.nimservice import NimService
from nimify.api.releases import (
    FIRST_SUPPORTED_RELEASE,
    ImageTensorRT,
    release_label,
    resolve_tensorrt,
)
from nimify.api.spec import BUILDER_FLAG_PRECISIONS, Backend, ModelFormat, NimServiceSpec, Precision
from nimify.api.spec.pipeline import order_errors
from nimify.api.validation import FieldError, field_errors

ComputeCapability = tuple[int, int]

# nvidia.com/gpu.product values (as GPU feature discovery writes them) by architecture; first match wins.
GPU_COMPUTE_CAPABILITY: tuple[tuple[str, ComputeCapability], ...] = (
    (r"(^|-)V100(-|$)", (7, 0)),
    (r"(^|-)T4(-|$)|(^|-)RTX-[0-9]000$", (7, 5)),
    (r"(^|-)A(100|30)(-|$)", (8, 0)),
    (r"(^|-)A(10G?|16|2|40)(-|$)|(^|-)RTX-A[0-9]+(-|$)", (8, 6)),
    (r"(^|-)L(4|40S?|20)(-|$)|(^|-)RTX-[0-9]+-ADA(-|$)", (8, 9)),
    (r"(^|-)G?H(100|200|20)(-|$)", (9, 0)),
    (r"(^|-)G?B(100|200|300)(-|$)", (10, 0)),
)
# Lowest compute capability with fast kernels of each reduced precision.
PRECISION_COMPUTE_CAPABILITY: dict[Precision, ComputeCapability] = {
    Precision.BF16: (8, 0),
    Precision.FP8: (8, 9),
}


def compute_capability(gpu_product: str) -> ComputeCapability | None:
    """The compute capability of a GPU product label, or None for a product this table does not know."""
    for pattern, capability in GPU_COMPUTE_CAPABILITY:
        if re.search(pattern, gpu_product.upper()):
            return capability
    return None


def semantic_errors(spec: NimServiceSpec) -> list[FieldError]:
    """What makes a well-formed spec unworkable, each error naming its field (a pipeline member's engine
    settings under the member: spec.pipeline.members[i].engine)."""
    if spec.pipeline is None:
        return _engine_errors(spec, "spec.engine")
    errors = [FieldError(f"spec.pipeline.{path}", message) for path, message in order_errors(spec.pipeline)]
    for index, member in enumerate(spec.pipeline.members):
        if member.model.is_image:
            errors.append(
                FieldError(
                    f"spec.pipeline.members[{index}].model.uri",
                    "a pipeline member takes a model file; a model image (oci://) is served by a NimService"
                    " of its own",
                )
            )
        engine_path = f"spec.pipeline.members[{index}].engine" if member.engine else "spec.engine"
        errors += [e for e in _engine_errors(spec.member_spec(member), engine_path) if e not in errors]
    return errors


def _engine_errors(spec: NimServiceSpec, engine_path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    engine, image = spec.engine, spec.triton.image
    builds_engine = engine.backend == Backend.TENSORRT and spec.the_model.resolved_format == ModelFormat.ONNX
    if builds_engine:
        tensorrt = resolve_tensorrt(image)
        if not isinstance(tensorrt, ImageTensorRT):
            errors.append(FieldError("spec.triton.image", tensorrt.reason))
        elif tensorrt.major < 10:
            errors.append(
                FieldError(
                    "spec.triton.image",
                    f"{image} ships TensorRT {tensorrt.version or tensorrt.major}; nimify builds engines with"
                    f" TensorRT 10 or later (Triton {release_label(FIRST_SUPPORTED_RELEASE)} and later)",
                )
            )
        elif tensorrt.strongly_typed and engine.precision in BUILDER_FLAG_PRECISIONS:
            errors.append(
                FieldError(
                    f"{engine_path}.precision",
                    f"{engine.precision} is a TensorRT 10 builder flag, but {image} ships TensorRT"
                    f" {tensorrt.major}, which builds strongly typed networks only: put the precision"
                    " into the ONNX graph (ModelOpt AutoCast, Q/DQ nodes) and use precision auto",
                )
            )
    product = spec.resources.gpu_product
    needed = PRECISION_COMPUTE_CAPABILITY.get(engine.precision)
    capability = compute_capability(product) if product else None
    if builds_engine and needed and capability and capability < needed:
        errors.append(
            FieldError(
                f"{engine_path}.precision",
                f"{engine.precision} needs compute capability {needed[0]}.{needed[1]} or newer; {product} has"
                f" {capability[0]}.{capability[1]}",
            )
        )
    return errors


def nimservice_errors(document: Mapping[str, Any]) -> list[FieldError]:
    """Everything wrong with a NimService document: its shape and admission rules first, then semantics."""
    try:
        service = NimService.model_validate(document)
    except ValidationError as error:
        return field_errors(error)
    return semantic_errors(service.spec)
