"""Which engine a NimService needs and where it lives (cache key, claim, folder): decided from the spec alone,
before any build, by the operator and by the renderers of the Job and the Deployment."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from nimify.api import NimService
from nimify.api.releases import tensorrt_identity as image_tensorrt_identity
from nimify.api.spec import GPU_PRODUCT_LABEL, Backend
from nimify.engine.cache_key import engine_cache_key
from nimify.settings import OperatorSettings

ENGINE_MOUNT = "/engines"


@dataclass(frozen=True)
class EngineLocation:
    cache_key: str
    claim: str
    conversion_key: str = ""
    """What else decides a conversion's verdict besides the engine (the parity check, the deadline): part of
    the Job's name, so a failed conversion is retried once those settings change, while the engine's cache
    key stays the same."""
    model: str = ""
    """The model's identity (model_identity): recorded with the engine, so a rollout knows when only the
    engine changed."""
    model_image: str | None = None
    """A model image's uri (spec.model.uri oci://...): the engine comes from the image, pulled into each
    replica by an init container, and lives on no claim (`claim` is empty)."""

    @property
    def directory(self) -> str:
        """The engine's folder on the claim; the conversion Job writes its Triton repository inside."""
        return f"engines/{self.cache_key}"

    @property
    def repository(self) -> str:
        return f"{self.directory}/repository"


# The conversion writes the model under this fixed name; each Deployment mounts it under its own model name,
# so NimServices with different Triton model names can share one engine.
REPOSITORY_MODEL_DIR = "model"


def dedicated_claim_name(nim: NimService) -> str:
    """The claim the operator creates for one NimService's engines (spec.storage.size)."""
    return f"{nim.metadata.name}-engines"


def engine_claim(nim: NimService, settings: OperatorSettings) -> str:
    storage = nim.spec.storage
    if storage is None:
        return settings.engine_cache_claim
    if storage.existing_claim:
        return storage.existing_claim
    return dedicated_claim_name(nim)


def model_identity(nim: NimService) -> str:
    """The model's digest when pinned; an unpinned model is identified by its URI (pin sha256 to rebuild when
    the bytes behind a URI change)."""
    model = nim.spec.the_model
    if model.sha256:
        return model.sha256
    return hashlib.sha256(f"uri:{model.uri}".encode()).hexdigest()


def tensorrt_identity(nim: NimService) -> str | None:
    """The TensorRT build the image ships (api/releases.py: the release, or a TensorRT-LLM image's)."""
    if nim.spec.engine.backend != Backend.TENSORRT:
        return None
    return image_tensorrt_identity(nim.spec.triton.image)


def requested_gpu_product(nim: NimService) -> str | None:
    """The GPU product the user asked for: resources.gpuProduct, or the product label in the node selector."""
    if nim.spec.resources.gpu_product:
        return nim.spec.resources.gpu_product
    selector = nim.spec.placement.node_selector if nim.spec.placement else None
    return (selector or {}).get(GPU_PRODUCT_LABEL)


# Spec fields that change whether a conversion succeeds but not the engine it builds.
CONVERSION_FIELDS = ("parity", "buildTimeoutSeconds")
# Also one, but only where a spec sets it: a conversion killed for its memory runs again once the user gives
# it more, and the Job names of specs without it stay what they were.
CONVERSION_FIELDS_WHEN_SET = ("buildResources",)


def conversion_key(nim: NimService) -> str:
    engine = nim.spec.engine.model_dump(mode="json", by_alias=True, exclude_none=True)
    document = {name: engine.get(name) for name in CONVERSION_FIELDS}
    document |= {name: engine[name] for name in CONVERSION_FIELDS_WHEN_SET if name in engine}
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def engine_location(nim: NimService, settings: OperatorSettings) -> EngineLocation:
    model = nim.spec.the_model
    if model.is_image:
        key = "image-" + hashlib.sha256(f"uri:{model.uri}".encode()).hexdigest()[:32]
        return EngineLocation(cache_key=key, claim="", model_image=model.uri)
    gpu_product = requested_gpu_product(nim) if nim.spec.engine.backend == Backend.TENSORRT else None
    key = engine_cache_key(model_identity(nim), nim.spec.engine, tensorrt_identity(nim), gpu_product)
    return EngineLocation(
        cache_key=key,
        claim=engine_claim(nim, settings),
        conversion_key=conversion_key(nim),
        model=model_identity(nim),
    )
