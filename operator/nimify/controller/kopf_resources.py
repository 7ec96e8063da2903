"""A fix for kopf's resource observer (kopf 1.44/1.45): an API whose CRD appears under a running operator is
watched, however late the apiserver's discovery publishes it.

kopf watches CRDs and, on each CRD event, reads the discovery of that CRD's group once, then watches what it
found. Two windows lose an API the operator has handlers for (the Gateway API's HTTPRoutes, KEDA's
ScaledObjects, installed after Nimify):
1. The apiserver publishes a new CRD in discovery asynchronously, after the update that sets its Established
   condition (the last event of that CRD). On a loaded machine kopf's read on that event can come first: it
   finds nothing, no further event comes, and kopf never watches the resource (a NimService with an HTTPRoute
   then waited for a Ready that never came, in the run that had just installed the CRDs).
2. kopf ignores the events of its CRD watcher's listings (at start and after every watch restart), so a CRD
   created between a watch's end and the next listing is missed until it changes.

This processor reads the group's discovery again, with growing pauses (RETRY_DELAYS, 30 s in all), until it
agrees with the CRD: each served version present once the CRD is Established, none once it is deleted; and it
processes a listing's CRD when its group is one the operator has handlers for and kopf knows none of its
resources. Each read replaces kopf's view of that group exactly as kopf's own processor does. The patch
replaces one module-level function of kopf's, before the operator starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from kopf._cogs.clients import scanning
from kopf._cogs.configs import configuration
from kopf._cogs.structs import bodies, references
from kopf._core.intents import registries
from kopf._core.reactor import observation

logger = logging.getLogger(__name__)

#: Pauses between reads of a group's discovery while it disagrees with the CRD (seconds).
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)

Scan = Callable[..., Awaitable[Collection[references.Resource]]]
_KOPF_PROCESSOR = observation.process_discovered_resource_event


def expected_in_discovery(raw_event: bodies.RawEvent) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(version, plural) pairs the group's discovery should list after this CRD event, and those it should
    not."""
    crd: dict[str, Any] = dict(raw_event["object"])
    spec = crd.get("spec") or {}
    plural = (spec.get("names") or {}).get("plural", "")
    versions = spec.get("versions") or []
    if raw_event["type"] == "DELETED" or (crd.get("metadata") or {}).get("deletionTimestamp"):
        return set(), {(version["name"], plural) for version in versions}
    conditions = (crd.get("status") or {}).get("conditions") or []  # null on a CRD just created
    if not any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
        return set(), set()  # not served yet: the update that establishes it is another event
    return {(version["name"], plural) for version in versions if version.get("served")}, set()


def handled_groups(registry: registries.OperatorRegistry) -> set[str | None]:
    """The API groups the operator's resource handlers select (None: any group)."""
    selectors = (
        registry._webhooks.get_all_selectors()
        | registry._indexing.get_all_selectors()
        | registry._watching.get_all_selectors()
        | registry._spawning.get_all_selectors()
        | registry._changing.get_all_selectors()
    )
    return {selector.group for selector in selectors}


async def process_resource_event(
    *,
    raw_event: bodies.RawEvent,
    settings: configuration.OperatorSettings,
    registry: registries.OperatorRegistry,
    insights: references.Insights,
    scan: Scan = scanning.scan_resources,
    delays: Collection[float] = RETRY_DELAYS,
    **kwargs: Any,
) -> None:
    """kopf's processor, until discovery agrees with the CRD; for listing events of unknown APIs too."""
    group = raw_event["object"]["spec"]["group"]
    try:
        present, absent = expected_in_discovery(raw_event)
    except (KeyError, TypeError, AttributeError) as error:  # a CRD shaped unlike any apiserver's: kopf's way
        logger.warning(f"A CRD of group {group!r} could not be read ({error!r}); read once, as kopf does")
        present, absent = set(), set()
    handled = handled_groups(registry)
    if group not in handled and None not in handled:
        await _KOPF_PROCESSOR(
            raw_event=raw_event, settings=settings, registry=registry, insights=insights, **kwargs
        )
        return
    if raw_event["type"] is None:
        known = insights.watched_resources | insights.indexed_resources
        if not present or any((r.group, r.plural) == (group, plural) for r in known for _, plural in present):
            return  # what kopf's first listing found already, as kopf assumes
    for attempt, delay in enumerate((0.0, *delays)):
        await asyncio.sleep(delay)
        try:
            resources = await scan(groups={group}, settings=settings, logger=logger)
        except Exception as error:
            if not attempt:
                raise  # the read kopf's own processor makes: its errors are kopf's to handle
            # A read of ours only (an apiserver restarting): kopf stops the operator on any error here.
            logger.warning(f"Reading the discovery of API group {group!r} again failed: {error!r}")
            return
        async with insights.revised:
            observation.revise_resources(
                resources=resources, insights=insights, registry=registry, group=group
            )
            await insights.backbone.fill(resources=resources)
            insights.revised.notify_all()
        found = {(resource.version, resource.plural) for resource in resources if resource.group == group}
        if present <= found and not absent & found:
            return
    logger.warning(
        f"The discovery of API group {group!r} still disagrees with its CRD after {sum(delays):g} s "
        f"(expected {sorted(present)}, gone {sorted(absent)}); the next CRD event reads it again."
    )


def install() -> None:
    """Make kopf's resource observer use `process_resource_event` (it looks the name up when it starts)."""
    observation.process_discovered_resource_event = process_resource_event
