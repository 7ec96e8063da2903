"""kopf's namespace observer with nimify's fix: a namespace that only a listing shows is watched."""

from __future__ import annotations

from kopf._cogs.structs import bodies, references
from kopf._core.reactor import observation

import nimify.controller.operator  # noqa: F401  - installs the fix, as `nimify run` does
from nimify.controller.kopf_namespaces import process_namespace_event

PATTERNS: list[references.NamespacePattern] = ["e2e-*"]


def _event(kind: str | None, name: str, deleted: bool = False) -> bodies.RawEvent:
    metadata: dict[str, object] = {"name": name}
    if deleted:
        metadata["deletionTimestamp"] = "2026-12-02T00:00:00Z"
    return bodies.RawEvent(type=kind, object={"metadata": metadata})  # type: ignore[typeddict-item]


def test_the_operator_installs_it() -> None:
    assert observation.process_discovered_namespace_event is process_namespace_event


async def test_a_namespace_only_the_watchers_listing_shows_is_watched() -> None:
    insights = references.Insights()
    await process_namespace_event(raw_event=_event(None, "e2e-late"), namespaces=PATTERNS, insights=insights)
    await process_namespace_event(raw_event=_event(None, "other"), namespaces=PATTERNS, insights=insights)
    assert insights.namespaces == {"e2e-late"}


async def test_watch_events_are_kopf_s_own() -> None:
    insights = references.Insights()
    await process_namespace_event(raw_event=_event("ADDED", "e2e-a"), namespaces=PATTERNS, insights=insights)
    assert insights.namespaces == {"e2e-a"}
    await process_namespace_event(
        raw_event=_event("DELETED", "e2e-a", deleted=True), namespaces=PATTERNS, insights=insights
    )
    assert insights.namespaces == set()
