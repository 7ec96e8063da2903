"""What every benchmark prints beside its figures: timestamped progress on stderr, and the machine's load
(figures are only comparable on a quiet machine)."""

from __future__ import annotations

import os
import sys
import time


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load() -> str:
    """The load averages over 1, 5 and 15 minutes."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())
