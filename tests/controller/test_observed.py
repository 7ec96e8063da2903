"""Observed: read-only views over kopf indexes (a collection of bodies per key)."""

from __future__ import annotations

from typing import Any

from nimify.api import EngineRecord
from nimify.controller.observed import Observed, ReadyEngine, first


def body(name: str, created: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ml"}
    if created is not None:
        meta["creationTimestamp"] = created
    return {"metadata": meta}


def test_first() -> None:
    assert first({}, "k") is None
    assert first({"k": []}, "k") is None
    assert first({"k": [1, 2]}, "k") == 1
    assert first({"k": (x for x in [3])}, "k") == 3


def test_get_by_kind_namespace_and_name() -> None:
    deployment = body("resnet50")
    observed = Observed(children={"Deployment": {("ml", "resnet50"): [deployment]}})
    assert observed.get("Deployment", "ml", "resnet50") is deployment
    assert observed.get("Deployment", "other", "resnet50") is None
    assert observed.get("Deployment", "ml", "bert") is None
    assert observed.get("Service", "ml", "resnet50") is None


def test_empty_observed() -> None:
    observed = Observed()
    assert observed.get("Job", "ml", "x") is None
    assert observed.build_pod("ml", "x") is None
    assert observed.ready_engine("ml", "claim", "key", besides="me") is None


def test_build_pod_is_the_newest() -> None:
    old, new = body("job-a", "2025-01-01T00:00:00Z"), body("job-b", "2025-01-01T00:10:00Z")
    observed = Observed(build_pods={("ml", "job"): [new, old]})
    assert observed.build_pod("ml", "job") is new
    assert Observed(build_pods={("ml", "job"): [old, new]}).build_pod("ml", "job") is new
    assert observed.build_pod("other", "job") is None


def test_build_pod_without_timestamp_loses() -> None:
    fresh, unknown = body("job-a", "2025-01-01T00:00:00Z"), body("job-b")
    assert Observed(build_pods={("ml", "job"): [unknown, fresh]}).build_pod("ml", "job") is fresh
    assert Observed(build_pods={("ml", "job"): [unknown]}).build_pod("ml", "job") is unknown


RECORD = EngineRecord.model_validate({"engine": {"cacheKey": "k"}, "signature": {}})


def test_ready_engine_by_namespace_claim_and_key() -> None:
    observed = Observed(ready_engines={("ml", "nimify-engines", "k"): [ReadyEngine(RECORD, "peer")]})
    assert observed.ready_engine("ml", "nimify-engines", "k", besides="me") == RECORD
    assert observed.ready_engine("ml", "other-claim", "k", besides="me") is None
    assert observed.ready_engine("other", "nimify-engines", "k", besides="me") is None
    assert observed.ready_engine("ml", "nimify-engines", "other-key", besides="me") is None


def test_a_nimservice_is_never_its_own_peer() -> None:
    observed = Observed(ready_engines={("ml", "nimify-engines", "k"): [ReadyEngine(RECORD, "me")]})
    assert observed.ready_engine("ml", "nimify-engines", "k", besides="me") is None
