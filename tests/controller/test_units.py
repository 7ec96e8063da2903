"""Serving units through the Reconciler: one unit is exactly today's children, two are two engines side by
side, and a unit that goes away takes its children with it.

`golden/children_before_units.json` holds, for every valid API test case and every boundary spec, a digest of
each object the desired set rendered before serving units existed (a new NimService, and one whose engine is
ready): with one unit, nothing may differ, or an upgrade would roll every Deployment. Regenerate it (only for
a change meant to alter rendered objects) with
`NIMIFY_REGENERATE_GOLDEN=1 pytest tests/controller/test_units.py`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from nimify.api import NimService, UnitRole
from nimify.controller.desired import desired_set
from nimify.controller.observed import Observed
from nimify.controller.reconcile import Reconciler
from nimify.engine.location import engine_location
from nimify.render.identity import build_job_name
from nimify.render.units import ServingUnit, extra_unit, serving_unit, unit_selector
from nimify.settings import OperatorSettings
from tests.api.cases import VALID
from tests.chaos.boundaries import boundary_specs
from tests.controller.memory_cluster import MemoryCluster
from tests.controller.test_reconciler import SETTINGS, Harness, T, served_status
from tests.render.conftest import NAME, NAMESPACE, UID, nimservice

GOLDEN = Path(__file__).parent / "golden" / "children_before_units.json"
GOLDEN_SETTINGS = OperatorSettings()
GOLDEN_SIGNATURE = {
    "inputs": [{"name": "x", "dtype": "FLOAT", "shape": [-1, 3]}],
    "outputs": [{"name": "y", "dtype": "FLOAT", "shape": [-1, 2]}],
}


def _documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for case in VALID:
        if "pipeline" not in case.spec:  # pipelines came after units: tests/controller/test_pipeline.py
            yield case.id, case.document("case")
    for number, spec in enumerate(boundary_specs()):
        document = {"apiVersion": "nimify.dev/v1alpha1", "kind": "NimService", "metadata": {"name": "edge"}}
        yield f"boundary-{number}", document | {"spec": spec}


def _rendered(document: dict[str, Any], served: bool) -> dict[str, str | None] | None:
    """Digests of what the desired set writes for `document` with no children yet, keyed by action."""
    document = copy.deepcopy(document)
    document["metadata"] |= {"namespace": "team", "uid": "0000-uid", "generation": 3}
    try:
        nim = NimService.model_validate(document)
    except ValidationError:
        return None  # refused at admission
    if served:
        location = engine_location(nim, GOLDEN_SETTINGS)
        engine = {
            "cacheKey": location.cache_key,
            "location": f"{location.claim}/{location.repository}",
            "maxBatchSize": 4,
            "gpuProduct": "NVIDIA-A100-SXM4-80GB",
            "cacheHit": False,
        }
        condition = {
            "type": "EngineReady",
            "status": "True",
            "reason": "EngineBuilt",
            "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
            "observedGeneration": 3,
        }
        status = {
            "engine": engine,
            "signature": GOLDEN_SIGNATURE,
            "parity": {"passed": True, "samples": 8},
            "conditions": [condition],
        }
        nim = NimService.model_validate(document | {"status": status})
    rendered: dict[str, str | None] = {}
    for action in desired_set(nim, Observed(), GOLDEN_SETTINGS).actions:
        body = getattr(action, "desired", None)
        key = f"{type(action).__name__}:{action.target[0]}/{action.target[1]}"
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
        rendered[key] = digest if body is not None else None
    return rendered


def _all_rendered() -> dict[str, dict[str, str | None]]:
    result = {}
    for case_id, document in _documents():
        for served in (False, True):
            if (rendered := _rendered(document, served)) is not None:
                result[f"{case_id}/{'served' if served else 'new'}"] = rendered
    return result


def test_one_unit_renders_exactly_the_children_of_before() -> None:
    now = _all_rendered()
    if os.environ.get("NIMIFY_REGENERATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
    before = json.loads(GOLDEN.read_text())
    assert len(before) > 300
    changed = {case: (before.get(case), now.get(case)) for case in before.keys() | now.keys()}
    changed = {case: pair for case, pair in changed.items() if pair[0] != pair[1]}
    assert not changed, (
        f"{len(changed)} cases render other objects than before, e.g. {next(iter(changed.items()))}"
    )


# --- two units ----------------------------------------------------------------------------------------------

CANARY_SHA256 = "cd" * 32


def two_units(nim: NimService, settings: OperatorSettings) -> tuple[ServingUnit, ...]:
    """The serving unit, and a candidate serving another build of the model beside it."""
    spec = nim.spec.model_copy(
        update={"model": nim.spec.the_model.model_copy(update={"sha256": CANARY_SHA256})}
    )
    return serving_unit(nim, settings), extra_unit(nim, "canary", UnitRole.CANDIDATE, spec, settings, 10)


def candidate_status(spec: dict[str, Any]) -> dict[str, Any]:
    """The candidate unit's entry once its engine is built."""
    location = two_units(nimservice(spec), SETTINGS)[1].location
    served = served_status(spec)
    where = {"cacheKey": location.cache_key, "location": f"{location.claim}/{location.repository}"}
    return {
        "name": f"{NAME}-canary",
        "role": "Candidate",
        "trafficPercent": 10,
        "engine": served["engine"] | where,
        "signature": served["signature"],
    }


class TwoUnits(Harness):
    def __init__(self, *, built: bool) -> None:
        super().__init__(built=built)
        self.reconciler = Reconciler(self.cluster, SETTINGS, clock=lambda: T, units=two_units)
        if built:
            self.body["status"]["units"] = [candidate_status(self.spec)]


async def test_two_units_build_two_engines_then_serve_them_side_by_side() -> None:
    h = TwoUnits(built=False)
    await h.reconcile()
    jobs = [call.name for call in h.cluster.writes() if call.kind == "Job"]
    assert len(jobs) == 2 and len(set(jobs)) == 2, "one conversion Job per engine"
    assert all(name.startswith("nimify-engine-") for name in jobs)
    assert h.cluster.get("Deployment", NAME) is None, "nothing to serve before an engine is ready"

    h = TwoUnits(built=True)
    await h.reconcile()
    kinds = sorted(call.kind for call in h.cluster.writes() if call.verb == "apply")
    assert kinds.count("Deployment") == 2 and kinds.count("ConfigMap") == 2 and kinds.count("Service") == 1
    serving, candidate = h.cluster.live("Deployment", NAME), h.cluster.live("Deployment", f"{NAME}-canary")
    assert h.cluster.get("ConfigMap", f"{NAME}-triton-config") is not None
    assert h.cluster.get("ConfigMap", f"{NAME}-canary-triton-config") is not None
    for body in (serving, candidate, h.cluster.live("ConfigMap", f"{NAME}-canary-triton-config")):
        (owner,) = body["metadata"]["ownerReferences"]
        assert owner["uid"] == UID and owner["controller"] is True
    # Selectors never overlap, and the Service sends traffic to the serving unit only.
    selectors = [d["spec"]["selector"]["matchLabels"] for d in (serving, candidate)]
    assert selectors[0] != selectors[1]
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in (serving, candidate)]
    assert selectors[0].items() <= pods[0].items() and not selectors[0].items() <= pods[1].items()
    assert not selectors[1].items() <= pods[0].items()
    service = h.cluster.live("Service", NAME)["spec"]["selector"]
    assert service.items() <= pods[0].items() and not service.items() <= pods[1].items()
    # Each mounts its own engine and its own config.
    keys = {
        d["spec"]["template"]["metadata"]["annotations"]["nimify.dev/engine-key"]
        for d in (serving, candidate)
    }
    assert len(keys) == 2
    volumes = candidate["spec"]["template"]["spec"]["volumes"]
    assert {"name": "triton-config", "configMap": {"name": f"{NAME}-canary-triton-config"}} in volumes
    # The status records an engine per unit, the serving unit's also where it always was.
    units = {unit["name"]: unit for unit in h.body["status"]["units"]}
    assert units[NAME]["role"] == "Serving" and units[NAME]["trafficPercent"] == 100
    assert units[NAME]["engine"] == h.body["status"]["engine"]
    assert units[f"{NAME}-canary"]["engine"]["cacheKey"] in keys
    assert h.body["status"]["engine"]["cacheKey"] != units[f"{NAME}-canary"]["engine"]["cacheKey"]


async def test_a_unit_that_goes_away_takes_its_children_and_nothing_else() -> None:
    h = TwoUnits(built=True)
    await h.reconcile()
    h.cluster.roll_out(NAME)
    # A Deployment of the same label that this NimService does not control stays.
    stranger = copy.deepcopy(h.cluster.live("Deployment", f"{NAME}-canary"))
    stranger["metadata"] |= {"name": f"{NAME}-users-own", "ownerReferences": []}
    h.cluster.put(stranger)

    h.reconciler = Reconciler(h.cluster, SETTINGS, clock=lambda: T)  # back to one unit
    h.cluster.forget_calls()
    await h.reconcile()
    deleted = sorted((call.kind, call.name) for call in h.cluster.writes() if call.verb == "delete")
    assert deleted == [("ConfigMap", f"{NAME}-canary-triton-config"), ("Deployment", f"{NAME}-canary")]
    assert h.cluster.get("Deployment", NAME) is not None and h.cluster.get("Deployment", f"{NAME}-users-own")
    assert [unit["name"] for unit in h.body["status"]["units"]] == [NAME]
    await h.converge()
    h.cluster.forget_calls()
    await h.reconcile()
    assert h.cluster.writes() == [], "nothing more to do once the unit's children are gone"


def test_two_units_with_one_engine_share_its_job_and_claim() -> None:
    nim = nimservice()

    def twins(nim: NimService, settings: OperatorSettings) -> tuple[ServingUnit, ...]:
        return serving_unit(nim, settings), extra_unit(nim, "twin", UnitRole.CANDIDATE, nim.spec, settings)

    desired = desired_set(nim, Observed(), SETTINGS, twins)
    targets = [action.target for action in desired.actions]
    location = engine_location(nim, SETTINGS)
    job = build_job_name(location.claim, location.cache_key, location.conversion_key)
    assert targets.count(("Job", job)) == 1
    assert targets.count(("PersistentVolumeClaim", location.claim)) == 1


def test_unit_names_selectors_and_limits() -> None:
    nim = nimservice()
    serving, canary = two_units(nim, SETTINGS)
    assert (serving.name, serving.config_map_name) == (NAME, f"{NAME}-triton-config")
    assert (canary.name, canary.config_map_name) == (f"{NAME}-canary", f"{NAME}-canary-triton-config")
    assert unit_selector(serving)["app.kubernetes.io/instance"] == NAME
    assert serving.location != canary.location and canary.spec.the_model.sha256 == CANARY_SHA256
    assert canary.nimservice.metadata == nim.metadata, "identity and ownership stay the NimService's"
    with pytest.raises(ValueError, match="longer than 63"):
        extra_unit(nim, "x" * 60, UnitRole.CANDIDATE, nim.spec, SETTINGS)


def test_memory_cluster_indexes_unit_children_like_the_operator() -> None:
    cluster = MemoryCluster(NAMESPACE)
    assert cluster.observed().unit_children("Deployment", NAMESPACE, NAME) == set()
