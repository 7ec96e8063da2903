"""The PersistentVolumeClaim that holds built engines."""

from __future__ import annotations

from typing import Any

from nimify.api import NimService
from nimify.render.identity import COMPONENT_STORAGE, object_meta, shared_labels
from nimify.settings import OperatorSettings


def render_engine_claim(nim: NimService, claim: str, settings: OperatorSettings) -> dict[str, Any] | None:
    """The claim to create, or None for a user's existing claim.

    The namespace-wide cache claim is shared, and the same object whichever NimService renders it: it has
    no owner (a list of every NimService using it would grow, and be rewritten, with each of them), so it
    is written once; the operator deletes it when the last NimService using it goes (desired.py).
    """
    storage = nim.spec.storage
    if storage is not None and storage.existing_claim:
        return None
    size = storage.size if storage is not None and storage.size is not None else settings.engine_cache_size
    spec: dict[str, Any] = {
        "accessModes": [settings.engine_cache_access_mode],
        "resources": {"requests": {"storage": str(size)}},
    }
    if storage is None:
        metadata = {
            "name": claim,
            "namespace": nim.metadata.namespace,
            "labels": shared_labels(COMPONENT_STORAGE),
        }
    else:
        if storage.storage_class_name:
            spec["storageClassName"] = storage.storage_class_name
        metadata = object_meta(nim, claim, COMPONENT_STORAGE)
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata, "spec": spec}
