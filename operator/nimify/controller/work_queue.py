"""The queue every reconcile goes through: NimService keys, deduplicated, worked on by a fixed number of
workers, failures retried with backoff.

Every trigger (a NimService's spec, a child's or a conversion pod's change, the Job a thousand NimServices
wait for, the resync) only adds keys here, so a burst queues instead of opening a request per trigger: a key
added while it waits is there once, a key added while it is being reconciled is reconciled once more
afterwards (nothing it saw may be lost), and one key is never reconciled twice at the same time. A failed
reconcile re-queues its own key after a backoff and touches no other. This is client-go's work queue
(controller-runtime's reconcile loop) in a few lines, since kopf has none for triggers of our own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import httpx2
from lightkube import ApiError

Key = TypeVar("Key", bound=Hashable)
logger = logging.getLogger(__name__)

FAILURE_FIRST_DELAY = 1.0


def failure_delay(failures: int, cap: float, first: float = FAILURE_FIRST_DELAY) -> float:
    """Backoff after `failures` failed reconciles in a row: 1 s, 2 s, 4 s, ... up to `cap`."""
    return float(min(first * 2 ** max(failures - 1, 0), max(cap, first)))


class WorkQueue(Generic[Key]):
    """Runs `work(key)` for queued keys, `workers` at a time. `work` returns a delay after which to run the
    key again (a refused child's backoff), or None."""

    def __init__(
        self,
        work: Callable[[Key], Awaitable[float | None]],
        *,
        workers: int,
        max_delay: float,
        first_delay: float = FAILURE_FIRST_DELAY,
    ) -> None:
        self._work = work
        self._workers = workers
        self._max_delay = max_delay
        self._first_delay = first_delay
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._active: set[Key] = set()
        self._again: set[Key] = set()  # added while active: run once more when done
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._failures: dict[Key, int] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._worker(), name=f"reconcile-{i}") for i in range(self._workers)]

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def __len__(self) -> int:
        return len(self._queued) + len(self._active)

    def add(self, key: Key) -> None:
        """Queue `key` now (a pending delayed run of it is no longer needed)."""
        if (timer := self._timers.pop(key, None)) is not None:
            timer.cancel()
        if key in self._active:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def add_after(self, key: Key, delay: float) -> None:
        """Queue `key` in `delay` seconds; the later of two delayed runs is dropped for the earlier."""
        loop = asyncio.get_running_loop()
        pending = self._timers.get(key)
        if pending is not None and pending.when() <= loop.time() + delay:
            return
        if pending is not None:
            pending.cancel()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def forget(self, key: Key) -> None:
        """The object is gone: drop its delayed runs and failure count (a queued run finds nothing)."""
        if (timer := self._timers.pop(key, None)) is not None:
            timer.cancel()
        self._failures.pop(key, None)
        self._again.discard(key)

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._active.add(key)
            try:
                delay = await self._work(key)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                delay = max(
                    failure_delay(failures, self._max_delay, self._first_delay), retry_after(error) or 0.0
                )
                logger.warning(
                    "reconcile of %s failed (%d in a row), retrying in %.0fs: %s: %s",
                    key,
                    failures,
                    delay,
                    type(error).__name__,
                    error,
                    exc_info=failures == 1 and not _transient(error),
                )
            else:
                self._failures.pop(key, None)
            finally:
                self._active.discard(key)
            if key in self._again:
                self._again.discard(key)
                self.add(key)
            elif delay is not None:
                self.add_after(key, delay)


# Answers that say "not now": the apiserver is busy, or another writer got there first.
TRANSIENT_CODES = frozenset({409, 429, 500, 502, 503, 504})


def retry_after(error: Exception) -> float | None:
    """The wait an apiserver asked for with its answer (429 from API Priority and Fairness, 503 while it
    shuts down): the Retry-After header, in seconds; None when it asked for none. APF's 429 comes as plain
    text, which lightkube raises as httpx's HTTPStatusError rather than its ApiError (a subclass)."""
    if not isinstance(error, httpx2.HTTPStatusError):
        return None
    value = error.response.headers.get("Retry-After", "")
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None  # absent, or an HTTP date (the apiserver sends seconds)


def _transient(error: Exception) -> bool:
    """Errors of the API or the connection to it, not of our code: their traceback says nothing new."""
    if isinstance(error, ApiError):
        return int(error.status.code or 0) in TRANSIENT_CODES
    if isinstance(error, httpx2.HTTPStatusError):  # an answer without a Status body (APF's 429)
        return error.response.status_code in TRANSIENT_CODES
    return isinstance(error, OSError | TimeoutError) or type(error).__module__.startswith(
        ("httpx", "httpcore")
    )
