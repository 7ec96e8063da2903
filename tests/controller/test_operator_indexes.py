"""The operator's NimService indexes with serving units: ready engines of every unit, the conversion Jobs and
claims of every unit, and each unit's children by NimService."""

from __future__ import annotations

from typing import Any, cast

import kopf

from nimify.controller import operator
from nimify.controller.children import Index
from nimify.controller.observed import ReadyEngine
from nimify.render.identity import NIMSERVICE_LABEL
from tests.render.conftest import MODEL_SHA256, MODEL_URI, NAME, NAMESPACE, UID

# kopf types its decorated functions as called by kopf (every keyword); the tests pass what they read.
ready_engine_index: Any = operator.ready_engine_index
build_job_index: Any = operator.build_job_index
claim_user_index: Any = operator.claim_user_index
ENGINE = {"cacheKey": "a" * 64, "location": "nimify-engines/engines/aaa/repository", "maxBatchSize": 8}
CANDIDATE = {"cacheKey": "b" * 64, "location": "team-claim/engines/bbb/repository", "maxBatchSize": 8}
SIGNATURE = {"inputs": [{"name": "x", "dtype": "FLOAT", "shape": [-1, 3]}], "outputs": []}
READY = {
    "type": "EngineReady",
    "status": "True",
    "reason": "EngineBuilt",
    "lastTransitionTime": "2026-01-01T00:00:00Z",
}


def raw(document: dict[str, Any]) -> kopf.Body:
    return kopf.Body(cast(Any, document))


def body(status: dict[str, Any]) -> kopf.Body:
    return raw(
        {
            "apiVersion": "nimify.dev/v1alpha1",
            "kind": "NimService",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": UID, "generation": 1},
            "spec": {"model": {"uri": MODEL_URI, "sha256": MODEL_SHA256}},
            "status": status,
        }
    )


def units_status(engine_ready: bool) -> dict[str, Any]:
    return {
        "engine": ENGINE,
        "signature": SIGNATURE,
        "conditions": [READY | {"status": "True" if engine_ready else "False"}],
        "units": [
            {
                "name": NAME,
                "role": "Serving",
                "trafficPercent": 100,
                "engine": ENGINE,
                "signature": SIGNATURE,
            },
            {
                "name": f"{NAME}-canary",
                "role": "Candidate",
                "trafficPercent": 0,
                "engine": CANDIDATE,
                "signature": SIGNATURE,
            },
        ],
    }


async def test_every_units_ready_engine_is_indexed_the_serving_ones_once_engine_ready() -> None:
    nim = body(units_status(engine_ready=True))
    found = await ready_engine_index(body=nim, status=nim.status)
    assert set(found) == {
        (NAMESPACE, "nimify-engines", "a" * 64),
        (NAMESPACE, "team-claim", "b" * 64),
    }
    assert all(isinstance(ready, ReadyEngine) and ready.served_by == NAME for ready in found.values())
    assert found[(NAMESPACE, "team-claim", "b" * 64)].record.engine.cache_key == "b" * 64

    building = body(units_status(engine_ready=False))
    found = await ready_engine_index(body=building, status=building.status)
    assert set(found) == {(NAMESPACE, "team-claim", "b" * 64)}, "the serving unit builds a new engine"


async def test_a_status_from_before_units_and_a_broken_one() -> None:
    before = body({"engine": ENGINE, "signature": SIGNATURE, "conditions": [READY]})
    found = await ready_engine_index(body=before, status=before.status)
    assert set(found) == {(NAMESPACE, "nimify-engines", "a" * 64)}
    broken = body({"units": [{"name": NAME}]})  # no role: not a status the operator wrote
    assert await ready_engine_index(body=broken, status=broken.status) is None


async def test_jobs_and_claims_of_the_units() -> None:
    nim = body({})
    jobs = await build_job_index(body=nim, memo=kopf.Memo())
    claims = await claim_user_index(body=nim, memo=kopf.Memo())
    assert len(jobs) == 1 and next(iter(jobs))[1].startswith("nimify-engine-")
    assert claims == {(NAMESPACE, "nimify-engines"): NAME}
    invalid = raw({"metadata": {"name": NAME, "namespace": NAMESPACE, "uid": "x"}, "spec": {}})
    assert await build_job_index(body=invalid, memo=kopf.Memo()) is None


async def test_unit_children_are_indexed_by_their_nimservice() -> None:
    registered = kopf.get_default_registry()._indexing.get_all_handlers()
    handlers = {str(handler.id): handler for handler in registered}
    for index in (Index.UNIT_DEPLOYMENTS, Index.UNIT_CONFIG_MAPS):
        fn: Any = handlers[index.value].fn
        labels = {NIMSERVICE_LABEL: NAME}
        child = raw({"metadata": {"name": f"{NAME}-canary", "namespace": NAMESPACE, "labels": labels}})
        assert await fn(body=child) == {(NAMESPACE, NAME): f"{NAME}-canary"}
        assert await fn(body=raw({"metadata": {"name": "x", "namespace": NAMESPACE}})) is None
