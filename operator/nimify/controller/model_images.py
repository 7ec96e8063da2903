"""Model images (spec.model.uri oci://): which need resolving, whether an image fits the spec, and the
resolver, the one part that talks to a registry.

A unit serving a model image is resolved (its manifest's digest and labels read) once per generation: its
status records the image pinned to the digest it resolved, and while the NimService's generation stays the
one that status was written for, the record is the answer (a tag that moves later is picked up with the next
change of the spec, never under a running generation). A uri pinned to a digest is content-addressed: its
record holds for every generation.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from nimify.api import NimService
from nimify.api.conditions import ConditionReason
from nimify.api.releases import ImageTensorRT, resolve_tensorrt
from nimify.api.spec import Backend
from nimify.engine import model_image as image
from nimify.engine.address_policy import AddressPolicy, parse_networks
from nimify.engine.location import requested_gpu_product
from nimify.model.errors import ModelError
from nimify.render.pod_identity import pull_secret_names
from nimify.render.units import ServingUnit
from nimify.settings import OperatorSettings

logger = logging.getLogger(__name__)

Resolution = image.ResolvedImage | ModelError
SecretReader = Callable[[str, str], Awaitable[dict[str, Any] | None]]
"""(namespace, name) -> the Secret's `data` (base64 values), or None when there is none."""

_REASONS = {
    "ModelImageNotFound": ConditionReason.MODEL_IMAGE_NOT_FOUND,
    "ModelImageUnauthorized": ConditionReason.MODEL_IMAGE_UNAUTHORIZED,
    "ModelImageUnreachable": ConditionReason.MODEL_IMAGE_UNREACHABLE,
    "ModelImageInvalid": ConditionReason.MODEL_IMAGE_INVALID,
    "ModelImageDigestMismatch": ConditionReason.CHECKSUM_MISMATCH,
    "FetchAddressDenied": ConditionReason.MODEL_FETCH_FAILED,
    "FetchFailed": ConditionReason.MODEL_IMAGE_UNREACHABLE,
}


def failure_reason(error: ModelError) -> str:
    return _REASONS.get(error.reason, ConditionReason.MODEL_IMAGE_INVALID).value


def recorded_image(nim: NimService, unit: ServingUnit, served_location: str | None) -> bool:
    """Whether the engine status records for `unit` is its model image's, resolved for this generation (or
    pinned by digest), so no registry need be asked."""
    if served_location is None or not served_location.startswith(image.SCHEME):
        return False
    try:
        wanted = image.ImageReference.parse(unit.spec.the_model.uri)
        served = image.ImageReference.parse(served_location)
    except ModelError:
        return False
    if (wanted.registry, wanted.repository) != (served.registry, served.repository):
        return False
    if wanted.digest is not None:
        return served.digest == wanted.digest
    observed = nim.status.observed_generation if nim.status is not None else None
    return served.tag == wanted.tag and observed is not None and observed == nim.metadata.generation


def image_refusal(unit: ServingUnit, labels: Mapping[str, str]) -> tuple[ConditionReason, str] | None:
    """Why `labels` (a model image's) do not fit the unit's spec, naming the label and the field; None when
    they fit."""
    spec = unit.spec
    if labels.get(image.FORMAT) != image.FORMAT_VERSION or not labels.get(image.CACHE_KEY):
        found = labels.get(image.FORMAT)
        what = f"layout {found!r}, this operator reads {image.FORMAT_VERSION!r}" if found else "no such label"
        return (
            ConditionReason.MODEL_IMAGE_UNLABELLED,
            f"label {image.FORMAT}: {what}; build model images with nimify build",
        )
    backend = labels.get(image.BACKEND, "")
    if backend != spec.engine.backend.value:
        return (
            ConditionReason.MODEL_IMAGE_MISMATCH,
            f"label {image.BACKEND} is {backend!r}, spec.engine.backend is {spec.engine.backend.value!r}",
        )
    batch = int(labels.get(image.MAX_BATCH_SIZE) or 0)
    if spec.engine.max_batch_size is not None and spec.engine.max_batch_size != batch:
        return (
            ConditionReason.MODEL_IMAGE_MISMATCH,
            f"label {image.MAX_BATCH_SIZE} is {batch}, spec.engine.maxBatchSize is"
            f" {spec.engine.max_batch_size}",
        )
    if spec.engine.backend != Backend.TENSORRT:
        return None
    built_with = labels.get(image.TENSORRT_VERSION, "")
    serving = resolve_tensorrt(spec.triton.image)
    if isinstance(serving, ImageTensorRT):
        major = built_with.split(".")[0]
        fits = built_with == serving.version if serving.version else major == str(serving.major)
        if not fits:
            ships = serving.version or f"TensorRT {serving.major}"
            return (
                ConditionReason.MODEL_IMAGE_MISMATCH,
                f"label {image.TENSORRT_VERSION} is {built_with!r}, but spec.triton.image"
                f" ({spec.triton.image}) ships {ships}: a TensorRT engine runs only on the TensorRT that"
                " built it",
            )
    built_on = labels.get(image.GPU_PRODUCT, "")
    wanted = requested_gpu_product(unit.nimservice)
    if wanted and built_on != wanted:
        return (
            ConditionReason.MODEL_IMAGE_MISMATCH,
            f"label {image.GPU_PRODUCT} is {built_on!r}, but spec.resources.gpuProduct (or the placement's"
            f" product label) asks for {wanted!r}: a TensorRT engine runs on the GPU product it was built"
            " for",
        )
    return None


def docker_configs(secrets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Docker config documents of pull secrets' data (kubernetes.io/dockerconfigjson, or the older
    .dockercfg, whose document is what `auths` holds)."""
    documents = []
    for data in secrets:
        for key, wrap in ((".dockerconfigjson", False), (".dockercfg", True)):
            if key not in data:
                continue
            try:
                document = json.loads(base64.b64decode(data[key]))
            except ValueError:
                continue
            if isinstance(document, dict):
                documents.append({"auths": document} if wrap else document)
    return documents


class ImageResolver:
    """Resolves units' model images against their registries, with the pull secrets the pods get."""

    def __init__(self, settings: OperatorSettings, read_secret: SecretReader | None = None) -> None:
        self.settings = settings
        self.read_secret = read_secret
        self.policy = AddressPolicy(parse_networks(settings.model_uri_denied_ranges))

    async def resolve(self, nim: NimService, units: tuple[ServingUnit, ...]) -> dict[str, Resolution]:
        """Each model-image uri of `units` that needs resolving, resolved (or why it could not be)."""
        uris = sorted({u.spec.the_model.uri for u in units if u.location.model_image and not u.members})
        found: dict[str, Resolution] = {}
        for uri in uris:
            try:
                reference = image.ImageReference.parse(uri)
                credentials = image.credentials_for(reference.registry, await self._configs(nim))
                client = image.RegistryClient(
                    reference.registry,
                    credentials=credentials,
                    plain_http=reference.registry in self.settings.insecure_registries,
                    policy=self.policy,
                )
                found[uri] = await asyncio.to_thread(client.resolve, reference)
            except ModelError as error:
                found[uri] = error
        return found

    async def _configs(self, nim: NimService) -> list[dict[str, Any]]:
        if self.read_secret is None:
            return []
        secrets = []
        for name in pull_secret_names(nim, self.settings):
            data = await self.read_secret(nim.metadata.namespace or "", str(name))
            if data is not None:
                secrets.append(data)
        return docker_configs(secrets)
