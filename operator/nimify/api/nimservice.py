"""The NimService resource as a whole: its names in the API and the top-level object."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from nimify.api.base import ApiModel
from nimify.api.spec import NimServiceSpec
from nimify.api.spec.rollout import MAX_NAME_WITH_CANARY
from nimify.api.status import NimServiceStatus
from nimify.api.validation import Rule, cel_string, matches

GROUP = "nimify.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "NimService"
PLURAL = "nimservices"
SINGULAR = "nimservice"
SHORT_NAMES = ("nimsvc",)
CATEGORIES = ("nimify",)
CRD_NAME = f"{PLURAL}.{GROUP}"

# The Service the operator creates carries the NimService's name, and Service names are DNS-1035 labels.
DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


class ObjectMeta(ApiModel):
    """The metadata fields nimify reads; everything else the apiserver sends is kept as is."""

    model_config = ConfigDict(extra="allow", strict=False)

    name: str | None = None
    """Object name."""

    namespace: str | None = None
    """Object namespace."""

    uid: str | None = None
    """Object UID."""

    generation: int | None = None
    """Spec generation."""

    resource_version: str | None = None
    """Resource version for optimistic concurrency."""

    labels: dict[str, str] | None = None
    """Labels."""

    annotations: dict[str, str] | None = None
    """Annotations."""


class NimService(ApiModel):
    """A model served by NVIDIA Triton Inference Server on GPUs, with its TensorRT engine built and checked by
    the operator."""

    model_config = ConfigDict(extra="ignore", strict=False)

    api_version: Literal["nimify.dev/v1alpha1"] = "nimify.dev/v1alpha1"
    """APIVersion defines the versioned schema of this representation of an object."""

    kind: Literal["NimService"] = "NimService"
    """Kind is a string value representing the REST resource this object represents."""

    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata. The name must be a DNS-1035 label (it names the Service)."""

    spec: NimServiceSpec
    """What to serve and how."""

    status: NimServiceStatus | None = None
    """What the operator observed."""

    cel_rules = (
        Rule(
            cel=f"self.metadata.name.matches({cel_string(DNS1035_LABEL)}) && size(self.metadata.name) <= 63",
            message="metadata.name must be a DNS-1035 label (lower-case letters, digits and '-', starting"
            " with a letter, at most 63 characters) because it names the Service",
            holds=lambda service: (
                service.metadata.name is None
                or (matches(DNS1035_LABEL, service.metadata.name) and len(service.metadata.name) <= 63)
            ),
            field_path=".metadata.name",
        ),
        Rule(
            cel="!has(self.spec.pipeline) || self.spec.pipeline.members.all(m, m.name != self.metadata.name"
            " && size(self.metadata.name) + size(m.name) < 63)",
            message="a pipeline member may not take the NimService's name (the pipeline is served under it),"
            " and the NimService's name, a '-' and the member's name must fit 63 characters (they name the"
            " member's Triton config)",
            holds=lambda service: (
                service.spec.pipeline is None
                or service.metadata.name is None
                or all(
                    m.name != service.metadata.name and len(service.metadata.name) + len(m.name) < 63
                    for m in service.spec.pipeline.members
                )
            ),
            field_path=".spec.pipeline.members",
        ),
        Rule(
            cel="!has(self.spec.rollout) || self.spec.rollout.strategy != 'Canary'"
            f" || size(self.metadata.name) <= {MAX_NAME_WITH_CANARY}",
            message=f"with a Canary rollout metadata.name may have at most {MAX_NAME_WITH_CANARY} characters:"
            " the candidate's Deployment and Service are NAME-canary",
            holds=lambda service: (
                service.spec.rollout is None
                or not service.spec.rollout.canary
                or len(service.metadata.name or "") <= MAX_NAME_WITH_CANARY
            ),
            field_path=".metadata.name",
        ),
    )

    @property
    def triton_model_name(self) -> str:
        """The model's name inside Triton: spec.model.name, else (a pipeline too) the NimService's name."""
        return (self.spec.model.name if self.spec.model else None) or self.metadata.name or ""

    def to_dict(self) -> dict[str, Any]:
        """The object as the apiserver would hold it: camelCase keys, JSON types, unset fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
