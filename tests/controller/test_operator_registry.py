"""What the operator registers with kopf: event handlers and indexes only, which is what lets it skip kopf's
per-event essence (operator.NoEssence) and keeps kopf from writing anything on a NimService."""

from __future__ import annotations

import kopf

import nimify.controller.operator


def test_no_handler_needs_kopf_s_change_tracking_or_a_finalizer() -> None:
    registry = kopf.get_default_registry()
    assert not registry._changing.get_all_handlers(), "on.create/update/delete/resume need kopf's essence"
    assert not registry._spawning.get_all_handlers(), "daemons and timers need it too, and a finalizer"
    assert registry._watching.get_all_handlers() and registry._indexing.get_all_handlers()


def test_the_essence_is_empty_and_costs_no_copy() -> None:
    storage = nimify.controller.operator.NoEssence(prefix="nimify.dev")
    body = kopf.Body({"metadata": {"name": "a"}, "spec": {"large": list(range(1000))}})
    assert storage.build(body=body) == {}
