"""A fix for kopf's namespace observer (kopf 1.45): namespaces created while the operator starts are served.

With namespace patterns (`nimify run --namespace 'e2e-*'`, the chart's list of watched namespaces), kopf lists
the namespaces once at start-up, then runs a watcher that lists them again and watches from there; it ignores
the events of that second listing (`raw_event["type"] is None`), assuming the first saw everything. A
namespace created between the two listings is in neither the first listing nor the watch, so kopf never
starts watching it until something modifies it (seen here: a namespace created 38 ms after the operator's
first listing stayed unserved for five minutes, until it was deleted). The same holds after every restart of
that watch (each server timeout): a namespace created between the old watch's end and the new listing is
missed. Processing listing events too is idempotent (a known namespace is added again), so every listing
now counts. The patch replaces one module-level function of kopf's, before the operator starts.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from kopf._cogs.structs import bodies, references
from kopf._core.reactor import observation

_KOPF_PROCESSOR = observation.process_discovered_namespace_event


async def process_namespace_event(
    *,
    raw_event: bodies.RawEvent,
    namespaces: Collection[references.NamespacePattern],
    insights: references.Insights,
    **kwargs: Any,
) -> None:
    """kopf's processor, for listing events too."""
    if raw_event["type"] is not None:
        await _KOPF_PROCESSOR(raw_event=raw_event, namespaces=namespaces, insights=insights, **kwargs)
        return
    async with insights.revised:
        observation.revise_namespaces(raw_events=[raw_event], insights=insights, namespaces=namespaces)
        insights.revised.notify_all()


def install() -> None:
    """Make kopf's namespace observer use `process_namespace_event` (it looks the name up when it starts)."""
    observation.process_discovered_namespace_event = process_namespace_event
