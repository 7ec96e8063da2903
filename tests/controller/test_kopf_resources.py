"""kopf's resource observer with nimify's fix: an API whose discovery lags its CRD is watched all the same.

The operator's real handler registry (kopf's default one, filled by importing the operator) decides what is
watched; the discovery reads are scripted, because the apiserver's lag between a CRD's Established update and
its discovery cannot be produced on demand. The real path (CRDs installed under a running operator, then a
NimService with an HTTPRoute served) is tests/controller/test_children_e2e.py's HTTPRoute test.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import kopf
from kopf._cogs.structs import bodies, references
from kopf._core.reactor import observation

import nimify.controller.operator  # noqa: F401  - registers the handlers and installs the fix
from nimify.controller.kopf_resources import expected_in_discovery, handled_groups, process_resource_event

GATEWAY = "gateway.networking.k8s.io"
HTTPROUTES = references.Resource(
    group=GATEWAY, version="v1", plural="httproutes", kind="HTTPRoute", namespaced=True, preferred=True,
    verbs=frozenset({"list", "watch", "get", "patch", "create", "delete"}),
)  # fmt: skip


def _crd(kind: str | None, *, established: bool = True, deleted: bool = False) -> bodies.RawEvent:
    metadata: dict[str, Any] = {"name": f"httproutes.{GATEWAY}"}
    if deleted:
        metadata["deletionTimestamp"] = "2026-12-07T00:00:00Z"
    crd = {
        "metadata": metadata,
        "spec": {
            "group": GATEWAY,
            "names": {"plural": "httproutes"},
            "versions": [{"name": "v1", "served": True}, {"name": "v1beta1", "served": False}],
        },
        "status": {"conditions": [{"type": "Established", "status": "True" if established else "False"}]},
    }
    return bodies.RawEvent(type=kind, object=crd)  # type: ignore[typeddict-item]


class LaggingDiscovery:
    """Discovery that lists the group's resources only from the `lag`-th read on."""

    def __init__(self, lag: int, resources: Collection[references.Resource] = (HTTPROUTES,)) -> None:
        self.lag, self.resources, self.reads = lag, set(resources), 0

    async def __call__(self, **_: Any) -> Collection[references.Resource]:
        self.reads += 1
        return self.resources if self.reads > self.lag else set()


async def _process(event: bodies.RawEvent, insights: references.Insights, scan: LaggingDiscovery) -> None:
    await process_resource_event(
        raw_event=event,
        settings=kopf.OperatorSettings(),
        registry=kopf.get_default_registry(),
        insights=insights,
        scan=scan,
        delays=(0, 0, 0, 0),
    )


def test_the_operator_installs_it() -> None:
    assert observation.process_discovered_resource_event is process_resource_event


def test_the_gateway_api_is_a_group_the_operator_handles() -> None:
    assert GATEWAY in handled_groups(kopf.get_default_registry())


def test_what_discovery_should_show() -> None:
    assert expected_in_discovery(_crd("MODIFIED")) == ({("v1", "httproutes")}, set())
    just_created = _crd("ADDED")
    just_created["object"]["status"] = {"conditions": None}  # as the apiserver lists a CRD it just took
    assert expected_in_discovery(just_created) == (set(), set())
    assert expected_in_discovery(_crd("ADDED", established=False)) == (set(), set())
    gone = {("v1", "httproutes"), ("v1beta1", "httproutes")}
    assert expected_in_discovery(_crd("DELETED", deleted=True)) == (set(), gone)


async def test_an_established_crd_whose_discovery_lags_is_watched() -> None:
    insights, discovery = references.Insights(), LaggingDiscovery(lag=2)
    await _process(_crd("MODIFIED"), insights, discovery)
    assert discovery.reads == 3
    assert HTTPROUTES in insights.watched_resources


async def test_a_crd_only_a_listing_shows_is_watched() -> None:
    insights, discovery = references.Insights(), LaggingDiscovery(lag=0)
    await _process(_crd(None), insights, discovery)
    assert HTTPROUTES in insights.watched_resources
    # Listed again (the next watch restart): known, so no read.
    await _process(_crd(None), insights, discovery)
    assert discovery.reads == 1


async def test_a_deleted_crd_is_no_longer_watched_once_discovery_drops_it() -> None:
    insights = references.Insights()
    await _process(_crd("MODIFIED"), insights, LaggingDiscovery(lag=0))
    assert HTTPROUTES in insights.watched_resources

    class Dropping(LaggingDiscovery):
        async def __call__(self, **_: Any) -> Collection[references.Resource]:
            self.reads += 1
            return self.resources if self.reads <= self.lag else set()

    discovery = Dropping(lag=1)
    await _process(_crd("DELETED", deleted=True), insights, discovery)
    assert discovery.reads == 2
    assert HTTPROUTES not in insights.watched_resources


async def test_a_discovery_that_never_agrees_gives_up_after_its_delays() -> None:
    insights, discovery = references.Insights(), LaggingDiscovery(lag=100)
    await _process(_crd("MODIFIED"), insights, discovery)
    assert discovery.reads == 5  # the first read and one after each of the four delays
    assert HTTPROUTES not in insights.watched_resources


async def test_a_later_read_that_fails_ends_the_retries_without_stopping_the_operator() -> None:
    class Failing(LaggingDiscovery):
        async def __call__(self, **kwargs: Any) -> Collection[references.Resource]:
            if self.reads:
                self.reads += 1
                raise ConnectionError("the apiserver restarts")
            return await super().__call__(**kwargs)

    insights, discovery = references.Insights(), Failing(lag=100)
    await _process(_crd("MODIFIED"), insights, discovery)  # no exception: kopf would stop the operator
    assert discovery.reads == 2
