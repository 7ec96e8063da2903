"""Who the pods the operator creates run as and how they pull their images: the spec's choice, else the
operator's default, else the namespace's default ServiceAccount."""

from __future__ import annotations

from typing import Any

from nimify.api import NimService
from nimify.settings import OperatorSettings


def pull_secret_names(nim: NimService, settings: OperatorSettings) -> list[str]:
    """The operator's pull secrets (the registry of its builder images, a mirror of nvcr.io), then the
    NimService's own, each once (a model image's registry credentials among them)."""
    return list(dict.fromkeys([*settings.image_pull_secrets, *(nim.spec.image_pull_secrets or [])]))


def pull_secrets(nim: NimService, settings: OperatorSettings) -> list[dict[str, str]]:
    return [{"name": name} for name in pull_secret_names(nim, settings)]


def pod_identity(service_account: str | None, nim: NimService, settings: OperatorSettings) -> dict[str, Any]:
    """The pod-spec fields for `service_account` (None: the namespace's default) and the pull secrets.

    The API token stays unmounted whatever the account: neither pod talks to the Kubernetes API, and the
    workload-identity webhooks (EKS, GKE, Azure) project their own audience-bound token.
    """
    fields: dict[str, Any] = {"automountServiceAccountToken": False}
    if service_account:
        fields["serviceAccountName"] = service_account
    if secrets := pull_secrets(nim, settings):
        fields["imagePullSecrets"] = secrets
    return fields


def build_pod_identity(nim: NimService, settings: OperatorSettings) -> dict[str, Any]:
    """The conversion Job's pod: the account that may read the model (workload identity)."""
    return pod_identity(
        nim.spec.the_model.service_account_name or settings.build_service_account, nim, settings
    )


def server_pod_identity(nim: NimService, settings: OperatorSettings) -> dict[str, Any]:
    """The Triton pods: an account of their own, without the conversion's bucket access."""
    return pod_identity(
        nim.spec.triton.service_account_name or settings.server_service_account, nim, settings
    )
