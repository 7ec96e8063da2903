"""The PersistentVolumeClaim holding built engines: shared by default, dedicated on request, or the user's."""

from __future__ import annotations

from typing import Any

from nimify.engine.location import engine_claim
from nimify.render.engine_claim import render_engine_claim
from nimify.settings import OperatorSettings
from tests.render.conftest import NAME, NAMESPACE, UID, nimservice


def claim_for(spec: dict[str, Any] | None, settings: OperatorSettings) -> dict[str, Any] | None:
    nim = nimservice(spec)
    return render_engine_claim(nim, engine_claim(nim, settings), settings)


def test_shared_default_claim(settings: OperatorSettings) -> None:
    claim = claim_for(None, settings)
    assert claim is not None
    assert claim["apiVersion"] == "v1" and claim["kind"] == "PersistentVolumeClaim"
    meta = claim["metadata"]
    assert meta["name"] == settings.engine_cache_claim and meta["namespace"] == NAMESPACE
    # One of several owners: garbage collection removes it with the last NimService using it.
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "nimify.dev/v1alpha1",
            "kind": "NimService",
            "name": NAME,
            "uid": UID,
            "controller": False,
            "blockOwnerDeletion": True,
        }
    ]
    # Labels that would name one NimService do not belong on a shared object.
    assert "app.kubernetes.io/instance" not in meta["labels"]
    assert NAME not in meta["labels"].values()
    assert meta["labels"]["app.kubernetes.io/component"] == "engine-storage"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "nimify-operator"
    assert claim["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "50Gi"}},
    }


def test_shared_claim_is_the_same_object_for_every_nimservice(settings: OperatorSettings) -> None:
    a = render_engine_claim(nimservice(name="a", uid="1"), "nimify-engines", settings)
    b = render_engine_claim(nimservice(name="b", uid="2"), "nimify-engines", settings)
    assert a is not None and b is not None
    # Apart from the owner each adds, both render the same claim, so their applies never fight.
    for claim in (a, b):
        claim["metadata"].pop("ownerReferences")
    assert a == b


def test_shared_claim_size_and_access_mode_from_settings(settings: OperatorSettings) -> None:
    custom = settings.model_copy(
        update={"engine_cache_size": "500Gi", "engine_cache_access_mode": "ReadWriteOnce"}
    )
    claim = render_engine_claim(nimservice(), "nimify-engines", custom)
    assert claim is not None
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "500Gi"
    assert "storageClassName" not in claim["spec"]


def test_dedicated_claim(settings: OperatorSettings) -> None:
    claim = claim_for({"storage": {"size": "20Gi", "storageClassName": "fast-ssd"}}, settings)
    assert claim is not None
    meta = claim["metadata"]
    assert meta["name"] == f"{NAME}-engines"
    assert meta["ownerReferences"][0]["controller"] is True
    assert meta["labels"]["app.kubernetes.io/instance"] == NAME
    assert claim["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "20Gi"}},
        "storageClassName": "fast-ssd",
    }


def test_dedicated_claim_without_storage_class_uses_the_cluster_default(settings: OperatorSettings) -> None:
    claim = claim_for({"storage": {"size": 21474836480}}, settings)
    assert claim is not None
    assert "storageClassName" not in claim["spec"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "21474836480"


def test_existing_claim_is_not_rendered(settings: OperatorSettings) -> None:
    assert claim_for({"storage": {"existingClaim": "team-engines"}}, settings) is None
