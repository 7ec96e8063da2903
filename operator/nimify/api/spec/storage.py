"""spec.storage: the claim that holds the model repository and the engine cache."""

from __future__ import annotations

from pydantic import Field

from nimify.api.base import ApiModel
from nimify.api.spec.fields import DNS1123_SUBDOMAIN, Quantity, positive_quantity_rule
from nimify.api.validation import Rule, TransitionRule, ValidationReason


def _unchanged(field: str) -> str:
    return (
        f"has(self.{field}) == has(oldSelf.{field})"
        f" && (!has(self.{field}) || self.{field} == oldSelf.{field})"
    )


class StorageSpec(ApiModel):
    """A PersistentVolumeClaim for the model repository and engine cache, so restarts and new replicas skip
    the download and build. Left out, engines go to the namespace's shared engine cache claim, which the
    operator creates and every NimService without storage uses."""

    size: Quantity | None = None
    """Size of a PVC the operator creates (e.g. 20Gi); excludes existingClaim."""

    storage_class_name: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN, max_length=253)
    """StorageClass of the PVC the operator creates; the cluster's default when left out. Immutable."""

    existing_claim: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN, max_length=253)
    """A PVC you made, in the same namespace (ReadWriteMany when replicas > 1); excludes size. Immutable."""

    cel_rules = (
        # A claim of zero bytes is refused by the apiserver when the operator creates it: refuse it here.
        positive_quantity_rule("size", "size", "size must be greater than zero"),
        Rule(
            cel="has(self.size) != has(self.existingClaim)",
            message="set size (a PVC the operator creates) or existingClaim (a PVC you made), exactly one",
            holds=lambda storage: (storage.size is None) != (storage.existing_claim is None),
        ),
        Rule(
            cel="!has(self.storageClassName) || has(self.size)",
            message="storageClassName applies to a PVC the operator creates (size), not to an existingClaim",
            holds=lambda storage: storage.storage_class_name is None or storage.size is not None,
            field_path=".storageClassName",
            reason=ValidationReason.FORBIDDEN,
        ),
        TransitionRule(
            cel=_unchanged("existingClaim"),
            message="existingClaim is immutable: create a new NimService to move to another claim",
            holds=lambda new, old: new.existing_claim == old.existing_claim,
            field_path=".existingClaim",
        ),
        TransitionRule(
            cel=_unchanged("storageClassName"),
            message="storageClassName is immutable: a PVC cannot change its StorageClass",
            holds=lambda new, old: new.storage_class_name == old.storage_class_name,
            field_path=".storageClassName",
        ),
    )
