"""The reconcile queue: one entry per key, a bounded number at work, one key never twice at once, a failure
retried with backoff without holding up the others."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx2
from lightkube import ApiError

from nimify.controller.work_queue import WorkQueue, failure_delay, retry_after


class Recorder:
    """Work that records each key it runs and can be held at a gate."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.runs: list[str] = []
        self.active: set[str] = set()
        self.most_active = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = fail or set()
        self.returns: dict[str, float | None] = {}

    async def __call__(self, key: str) -> float | None:
        assert key not in self.active, f"{key} reconciled twice at the same time"
        self.active.add(key)
        self.most_active = max(self.most_active, len(self.active))
        try:
            await self.gate.wait()
            self.runs.append(key)
            if key in self.fail:
                raise RuntimeError(f"{key} broke")
            return self.returns.pop(key, None)
        finally:
            self.active.discard(key)


async def until(check: Callable[[], bool]) -> None:
    """Wait (on a loaded machine, as long as it takes) until `check` holds."""
    async with asyncio.timeout(10):
        while not check():  # noqa: ASYNC110 - another task's state, polled
            await asyncio.sleep(0.005)


async def settle(queue: WorkQueue[str]) -> None:
    await until(lambda: not len(queue))


async def test_a_key_queued_many_times_runs_once() -> None:
    work = Recorder()
    work.gate.clear()
    queue: WorkQueue[str] = WorkQueue(work, workers=1, max_delay=60)
    queue.start()
    queue.add("busy")  # holds the only worker
    await until(lambda: "busy" in work.active)
    for _ in range(5):
        queue.add("a")
    work.gate.set()
    await settle(queue)
    await queue.stop()
    assert work.runs == ["busy", "a"]


async def test_a_key_added_while_it_runs_runs_once_more_afterwards() -> None:
    work = Recorder()
    work.gate.clear()
    queue: WorkQueue[str] = WorkQueue(work, workers=4, max_delay=60)
    queue.start()
    queue.add("a")
    await until(lambda: "a" in work.active)
    queue.add("a")  # a change it may not have seen
    queue.add("a")
    work.gate.set()
    await settle(queue)
    await queue.stop()
    assert work.runs == ["a", "a"]


async def test_no_more_than_the_workers_at_once() -> None:
    work = Recorder()
    work.gate.clear()
    queue: WorkQueue[str] = WorkQueue(work, workers=3, max_delay=60)
    queue.start()
    for index in range(20):
        queue.add(f"k{index}")
    await until(lambda: len(work.active) == 3)
    work.gate.set()
    await settle(queue)
    await queue.stop()
    assert sorted(work.runs) == sorted(f"k{index}" for index in range(20))
    assert work.most_active == 3


async def test_a_failure_retries_that_key_with_backoff_and_the_others_go_on() -> None:
    work = Recorder(fail={"bad"})
    queue: WorkQueue[str] = WorkQueue(work, workers=1, max_delay=60, first_delay=0.05)
    queue.start()
    for key in ("bad", "a", "b"):
        queue.add(key)
    await until(lambda: work.runs.count("bad") == 3)  # retried after 0.05 s, then 0.1 s
    await queue.stop()
    assert work.runs[:3] == ["bad", "a", "b"], "one failure does not hold up the others"


async def test_a_returned_delay_runs_the_key_again_then() -> None:
    work = Recorder()
    work.returns["a"] = 0.05
    queue: WorkQueue[str] = WorkQueue(work, workers=1, max_delay=60)
    queue.start()
    queue.add("a")
    await until(lambda: work.runs == ["a", "a"])
    await queue.stop()


async def test_the_earlier_of_two_delayed_runs_wins_and_forget_drops_it() -> None:
    work = Recorder()
    queue: WorkQueue[str] = WorkQueue(work, workers=1, max_delay=60)
    queue.start()
    queue.add_after("a", 0.05)
    queue.add_after("a", 10)
    queue.add_after("b", 0.05)
    queue.forget("b")
    await until(lambda: work.runs == ["a"])
    await asyncio.sleep(0.1)  # b was due as early as a
    await queue.stop()
    assert work.runs == ["a"]


def test_failure_backoff_doubles_up_to_the_cap() -> None:
    assert [failure_delay(n, 60) for n in (1, 2, 3, 7, 20)] == [1, 2, 4, 60, 60]


def _api_error(code: int, headers: dict[str, str]) -> ApiError:
    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "message": "slow down"}
    request = httpx2.Request("PATCH", "https://127.0.0.1/apis/apps/v1/namespaces/x/deployments/y")
    return ApiError(
        request=request, response=httpx2.Response(code, headers=headers, json=status, request=request)
    )


def test_the_wait_an_apiserver_asks_for_is_read_from_retry_after() -> None:
    assert retry_after(_api_error(429, {"Retry-After": "7"})) == 7
    assert retry_after(_api_error(429, {})) is None
    assert retry_after(_api_error(503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) is None
    assert retry_after(RuntimeError("not the API's")) is None
    # API Priority and Fairness answers in plain text: lightkube raises httpx's error, not ApiError.
    request = httpx2.Request("GET", "https://127.0.0.1/api/v1/pods")
    plain = httpx2.Response(429, headers={"Retry-After": "2"}, text="Too many requests", request=request)
    assert retry_after(httpx2.HTTPStatusError("429", request=request, response=plain)) == 2


async def test_a_throttled_reconcile_waits_at_least_as_long_as_the_apiserver_asked() -> None:
    runs: list[float] = []
    loop = asyncio.get_running_loop()

    async def throttled(key: str) -> float | None:
        runs.append(loop.time())
        if len(runs) == 1:
            raise _api_error(429, {"Retry-After": "0.3"})
        return None

    queue: WorkQueue[str] = WorkQueue(throttled, workers=1, max_delay=60, first_delay=0.01)
    queue.start()
    queue.add("a")
    await until(lambda: len(runs) == 2)
    await queue.stop()
    assert runs[1] - runs[0] >= 0.3  # not the 0.01 s of the first backoff step
