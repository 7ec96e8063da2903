"""What every benchmark prints beside its figures: timestamped progress on stderr, and the machine's load
(figures are only comparable on a quiet machine)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load() -> str:
    """The load averages over 1, 5 and 15 minutes."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def recorded(settings: Mapping[str, Any], runs: Callable[[], list[Any]]) -> dict[str, Any]:
    """A benchmark's figures (`runs()`) with what they are comparable under: when, how many CPUs, the
    settings, and the load average before and after."""
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpus": os.cpu_count(),
        "load_at_start": load(),
        **settings,
    }
    results["runs"] = runs()
    results["load_at_end"] = load()
    return results
