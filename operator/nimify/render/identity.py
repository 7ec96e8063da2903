"""Names, labels and ownership shared by every child object (renderers and controller use these only)."""

from __future__ import annotations

import hashlib
from typing import Any

from nimify.api import NimService
from nimify.api.nimservice import API_VERSION, KIND

FIELD_MANAGER = "nimify-operator"
ANNOTATION_PREFIX = "nimify.dev"
MANAGED_BY = "nimify-operator"
PART_OF = "nimify"
APP_NAME = "nimservice"
NIMSERVICE_LABEL = f"{ANNOTATION_PREFIX}/nimservice"
ENGINE_KEY_ANNOTATION = f"{ANNOTATION_PREFIX}/engine-key"
CONFIG_HASH_ANNOTATION = f"{ANNOTATION_PREFIX}/config-hash"

COMPONENT_SERVER = "inference-server"
COMPONENT_BUILD = "engine-build"
COMPONENT_STORAGE = "engine-storage"

MANAGED_BY_SELECTOR = {"app.kubernetes.io/managed-by": MANAGED_BY}


def name_of(nim: NimService) -> str:
    if not nim.metadata.name:
        raise ValueError("a NimService from the apiserver always has metadata.name")
    return nim.metadata.name


def shared_labels(component: str) -> dict[str, str]:
    """Labels of an object that belongs to no single NimService (the namespace's engine cache claim)."""
    return {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def labels(nim: NimService, component: str) -> dict[str, str]:
    return shared_labels(component) | {
        "app.kubernetes.io/instance": name_of(nim),
        NIMSERVICE_LABEL: name_of(nim),
    }


def server_selector(nim: NimService) -> dict[str, str]:
    """The Deployment's selector: immutable, so only labels that never change for one NimService."""
    return {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": name_of(nim),
        "app.kubernetes.io/component": COMPONENT_SERVER,
    }


def nimservice_pods_selector(nim: NimService) -> dict[str, str]:
    """The Triton pods of every unit of the NimService (a rollout's candidate's too)."""
    return {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/component": COMPONENT_SERVER,
        NIMSERVICE_LABEL: name_of(nim),
    }


def owner_reference(nim: NimService, *, controller: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": name_of(nim),
        "uid": nim.metadata.uid,
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def object_meta(nim: NimService, name: str, component: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": nim.metadata.namespace,
        "labels": labels(nim, component),
        "ownerReferences": [owner_reference(nim)],
        **extra,
    }


def server_name(nim: NimService) -> str:
    """Deployment, Service, HPA and PDB share the NimService's name."""
    return name_of(nim)


def triton_config_name(nim: NimService) -> str:
    return f"{name_of(nim)}-triton-config"


def build_job_name(claim: str, cache_key: str, conversion_key: str = "") -> str:
    """Named from what it builds, where, and how it is checked: a retry, a restart or a second NimService
    finds the same Job, and a failed conversion runs again once its check settings change."""
    digest = hashlib.sha256(f"{claim}/{cache_key}/{conversion_key}".encode()).hexdigest()[:20]
    return f"nimify-engine-{digest}"
