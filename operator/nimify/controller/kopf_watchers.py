"""A fix for kopf's watchers (kopf 1.45): a watcher stopped before its first listing ends no longer blocks
every handler of the operator.

kopf runs handlers only once every indexed resource has been listed: each watcher of an indexed resource (one
per resource kind and namespace) holds a toggle of the operator's "indexed" set, which it drops when its first
listing ends; every handler waits for the set to be all dropped. A watcher that is stopped before its listing
ended (its namespace deleted while the apiserver answered its list with 429 "storage is (re)initializing",
right after a CRD was installed) never drops its toggle: from then on the operator runs its indexers on every
event but no handler at all. Seen twice in CI: the operator heard the events of a conversion Job that had
finished and reconciled nothing for three minutes (test_http_route_comes_and_goes_with_the_spec, just after
the Gateway API's CRDs were installed and a previous test's namespace went away). The patch drops the toggle
when the watcher ends, however it ends; dropping an already dropped toggle does nothing. It replaces one
module-level function of kopf's, which the orchestrator looks up each time it starts a watcher.
"""

from __future__ import annotations

from typing import Any

from kopf._cogs.aiokits import aiotoggles
from kopf._core.reactor import queueing

_KOPF_WATCHER = queueing.watcher


async def watcher(
    *,
    operator_indexed: aiotoggles.ToggleSet | None = None,
    resource_indexed: aiotoggles.Toggle | None = None,
    **kwargs: Any,
) -> None:
    """kopf's watcher, dropping its readiness toggle when it ends."""
    try:
        await _KOPF_WATCHER(operator_indexed=operator_indexed, resource_indexed=resource_indexed, **kwargs)
    finally:
        if operator_indexed is not None and resource_indexed is not None:
            await operator_indexed.drop_toggle(resource_indexed)


def install() -> None:
    """Make kopf's orchestrator start `watcher` (it looks the name up for every watcher it starts)."""
    queueing.watcher = watcher
