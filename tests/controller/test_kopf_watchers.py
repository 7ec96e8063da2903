"""kopf's watcher, patched (controller/kopf_watchers.py): one stopped before its first listing ended gives
the operator's handlers back, where kopf's own holds them all back for good. Real kopf watchers and toggles;
only the apiserver's watch stream is one that never lists (as while it answers 429 "storage is
(re)initializing")."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kopf._cogs.aiokits import aiotoggles
from kopf._cogs.clients import watching
from kopf._cogs.configs.configuration import OperatorSettings
from kopf._cogs.structs import references
from kopf._core.reactor import queueing

from nimify.controller import kopf_watchers

GRPC_ROUTES = references.Resource(
    group="gateway.networking.k8s.io", version="v1", plural="grpcroutes", namespaced=True
)


async def never_lists(**_: Any) -> AsyncIterator[Any]:
    await asyncio.Event().wait()
    yield watching.Bookmark.LISTED  # never reached


async def handlers_free_after_a_watcher_stopped_early(watcher: Any) -> bool:
    indexed = aiotoggles.ToggleSet(all)
    toggle = await indexed.make_toggle(name="grpcroutes@a-namespace-going-away")

    async def processor(**_: Any) -> None:
        return None

    task = asyncio.create_task(
        watcher(
            namespace="a-namespace-going-away",
            settings=OperatorSettings(),
            resource=GRPC_ROUTES,
            processor=processor,
            operator_indexed=indexed,
            resource_indexed=toggle,
        )
    )
    await asyncio.sleep(0.05)
    assert not indexed.is_on(), "handlers wait while the first listing runs"
    task.cancel()  # the namespace is gone: kopf stops its watchers
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return indexed.is_on()


async def test_a_watcher_stopped_before_its_listing_no_longer_holds_the_handlers_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(watching, "infinite_watch", never_lists)
    assert not await handlers_free_after_a_watcher_stopped_early(kopf_watchers._KOPF_WATCHER), (
        "kopf's own watcher leaves its toggle behind (what the patch is for: if this fails, kopf fixed it)"
    )
    assert await handlers_free_after_a_watcher_stopped_early(kopf_watchers.watcher)


def test_the_operator_installs_it() -> None:
    import nimify.controller.operator  # noqa: F401  (installs its patches on import)

    assert queueing.watcher is kopf_watchers.watcher
