"""Runs the chart's Argo CD health check the way Argo CD does: the Lua script on gopher-lua's Lua 5.1, with
the live object as the global `obj`, returning a table with status and message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa.lua51 as lua51

HEALTH_CHECK = Path(__file__).resolve().parents[2] / "charts" / "nimify" / "files" / "argocd-health.lua"


def _to_lua(runtime: Any, value: Any) -> Any:
    # Argo CD hands the object over as nested tables: JSON arrays become 1-based sequences.
    if isinstance(value, dict):
        return runtime.table_from({key: _to_lua(runtime, item) for key, item in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_to_lua(runtime, item) for item in value])
    return value


def argocd_health(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) the health check reports for `obj`."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = _to_lua(runtime, obj)
    result = runtime.execute(HEALTH_CHECK.read_text())
    return str(result["status"]), str(result["message"] or "")
