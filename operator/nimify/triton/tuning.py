"""Tuned serving: the Triton config chosen from measured profiles instead of Nimify's default.

A bounded sweep over model instances, the dynamic batcher's preferred batch sizes and its maximum queue delay.
Each candidate is loaded into a running tritonserver (explicit model control, the config given with the load
request), then measured with the load generator (nimify.triton.load) for a fixed time at each concurrency
level of the search space, one request of one row at a time per client: batches are the dynamic batcher's
doing, which is what is tuned. Triton's statistics API says how long requests waited in its queue.

The default config is measured first, always, so every result holds the default's figures; then Optuna
proposes candidates (its grid sampler when the budget covers the whole space, TPE otherwise) until the space
is measured or the time budget cannot hold another trial (a partial result: the budget is exceeded by at most
one trial). `choose` then picks the candidate that serves the objective: the highest throughput within a p99
budget, or the lowest p99 at a request rate. Runs of a few seconds on a busy machine differ by 10% and more
between two runs of one config, so the best of many is partly luck: the best and the default are measured
again, back to back, and each is judged by its worse runs.

Everything but `run_sweep` is pure and imports nothing beyond the standard library at import, so the operator
decodes results and renders tuned configs without Optuna, numpy or tritonclient.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

if TYPE_CHECKING:
    import optuna
    import tritonclient.http.aio as aio

T = TypeVar("T")
ObjectiveKind = Literal["maxThroughput", "minLatency"]
OBJECTIVE_KINDS: tuple[ObjectiveKind, ...] = ("maxThroughput", "minLatency")
Log = Callable[[str], None]

DEFAULT_DELAYS_US = (0, 100, 500, 2000)
DEFAULT_CONCURRENCY = (1, 4, 16)
LOAD_TIMEOUT_SECONDS = 300.0  # one load request (instances start one after another)
READY_TIMEOUT_SECONDS = 120.0  # a loaded model's readiness
LOAD_GUESS_SECONDS = 2.0  # a candidate's load before one was timed (python-backend stubs start in ~1 s each)
WARMUP_SECONDS = 1.0  # at most; each instance's first requests (ORT's first run, connections)
MAX_ERRORS = 5  # candidates whose trial failed, kept in the result
# What a sweep's choice must beat the default by (run_sweep's min_gain): two runs of one config differ by
# 5-15% here (2 cores shared by client and server), and a change of config restarts the model's instances.
DEFAULT_MIN_GAIN = 0.05

# A result's measurement table: one row per (candidate, concurrency), the candidate by its index.
COLUMNS = ("candidate", "concurrency", "requests", "failed", "throughput", "p50Ms", "p99Ms", "queueUs")


def _ints(values: Iterable[Any], what: str, minimum: int) -> tuple[int, ...]:
    found = tuple(int(v) for v in values)
    if any(v < minimum for v in found):
        raise ValueError(f"{what} must be at least {minimum}: {list(found)}")
    return found


@dataclass(frozen=True)
class Candidate:
    """One serving config: Triton's instance_group count and dynamic batcher settings. No preferred batch
    sizes means Triton decides (it forms the largest batch it can, up to max_batch_size)."""

    instances: int
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int

    def __post_init__(self) -> None:
        if self.instances < 1:
            raise ValueError(f"instances must be at least 1, not {self.instances}")
        if self.max_queue_delay_us < 0:
            raise ValueError(f"the queue delay must not be negative: {self.max_queue_delay_us}")
        sizes = tuple(sorted(set(_ints(self.preferred_batch_sizes, "preferred batch sizes", 1))))
        object.__setattr__(self, "preferred_batch_sizes", sizes)  # one spelling per config: sorted, once

    def label(self) -> str:
        sizes = ",".join(map(str, self.preferred_batch_sizes)) or "auto"
        return f"{self.instances}x, batch {sizes}, {self.max_queue_delay_us} µs"

    def to_json(self) -> dict[str, Any]:
        return {
            "instances": self.instances,
            "preferredBatchSizes": list(self.preferred_batch_sizes),
            "maxQueueDelayMicroseconds": self.max_queue_delay_us,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Candidate:
        return cls(
            int(data["instances"]),
            tuple(int(v) for v in data.get("preferredBatchSizes") or ()),
            int(data.get("maxQueueDelayMicroseconds") or 0),
        )


@dataclass(frozen=True)
class SearchSpace:
    """The candidates (every combination of the first three axes) and the concurrency levels each is
    measured at."""

    instances: tuple[int, ...]
    preferred_batch_sizes: tuple[tuple[int, ...], ...]
    max_queue_delays_us: tuple[int, ...]
    concurrency: tuple[int, ...]

    def __post_init__(self) -> None:
        axes = {
            "instances": self.instances,
            "preferredBatchSizes": self.preferred_batch_sizes,
            "maxQueueDelaysMicroseconds": self.max_queue_delays_us,
            "concurrency": self.concurrency,
        }
        for name, values in axes.items():
            if not values:
                raise ValueError(f"the search space's {name} is empty")
        object.__setattr__(self, "instances", _unique(_ints(self.instances, "instances", 1)))
        object.__setattr__(
            self, "max_queue_delays_us", _unique(_ints(self.max_queue_delays_us, "queue delays", 0))
        )
        object.__setattr__(self, "concurrency", _unique(_ints(self.concurrency, "concurrency", 1)))
        groups = (
            tuple(sorted(set(_ints(g, "preferred batch sizes", 1)))) for g in self.preferred_batch_sizes
        )
        object.__setattr__(self, "preferred_batch_sizes", _unique(groups))

    @property
    def size(self) -> int:
        """How many candidates (each is measured at every concurrency level)."""
        return len(self.instances) * len(self.preferred_batch_sizes) * len(self.max_queue_delays_us)

    def candidates(self) -> list[Candidate]:
        return [
            Candidate(n, sizes, delay)
            for n in self.instances
            for sizes in self.preferred_batch_sizes
            for delay in self.max_queue_delays_us
        ]

    @classmethod
    def default_for(cls, max_batch_size: int, max_instances: int = 4) -> SearchSpace:
        """Instances in powers of two up to `max_instances`; where the model batches (max_batch_size 2 and
        up), each power of two from 2 below max_batch_size as the one preferred size, or none (Triton then
        prefers max_batch_size itself: it fills an empty list in so), and queue delays from none to 2 ms (a
        preferred size of 1 would turn batching off); concurrency 1, 4 and 16, none beyond twice what the
        largest config can take at once."""
        if max_batch_size < 0 or max_instances < 1:
            raise ValueError("max_batch_size must be >= 0 and max_instances >= 1")
        instances = tuple(_powers_of_two(max_instances))
        if max_batch_size > 1:
            powers = (p for p in _powers_of_two(max_batch_size) if 1 < p < max_batch_size)
            sizes: tuple[tuple[int, ...], ...] = ((), *((p,) for p in powers))
            delays: tuple[int, ...] = DEFAULT_DELAYS_US
        else:  # nothing to batch (max_batch_size 0 or 1): only the instances are left to tune
            sizes, delays = ((),), (0,)
        cap = max(4, 2 * max_instances * max(1, max_batch_size))
        return cls(instances, sizes, delays, tuple(c for c in DEFAULT_CONCURRENCY if c <= cap))

    def to_json(self) -> dict[str, Any]:
        return {
            "instances": list(self.instances),
            "preferredBatchSizes": [list(g) for g in self.preferred_batch_sizes],
            "maxQueueDelaysMicroseconds": list(self.max_queue_delays_us),
            "concurrency": list(self.concurrency),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SearchSpace:
        return cls(
            tuple(data["instances"]),
            tuple(tuple(g) for g in data["preferredBatchSizes"]),
            tuple(data["maxQueueDelaysMicroseconds"]),
            tuple(data["concurrency"]),
        )


def _powers_of_two(limit: int) -> list[int]:
    return [1 << k for k in range(limit.bit_length()) if 1 << k <= limit]


def _unique(values: Iterable[T]) -> tuple[T, ...]:
    return tuple(dict.fromkeys(values))


@dataclass(frozen=True)
class Objective:
    """maxThroughput: the highest throughput whose p99 is within `p99_budget_ms` (any p99 when None);
    minLatency: the lowest p99 among runs that reached `request_rate` (any rate when None)."""

    kind: ObjectiveKind
    p99_budget_ms: float | None = None
    request_rate: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in OBJECTIVE_KINDS:
            raise ValueError(f"objective {self.kind!r} is not one of {', '.join(OBJECTIVE_KINDS)}")
        for name, value in (("p99 budget", self.p99_budget_ms), ("request rate", self.request_rate)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"the {name} must be a positive number, not {value}")

    def describe(self) -> str:
        if self.kind == "maxThroughput":
            budget = "" if self.p99_budget_ms is None else f" within p99 {self.p99_budget_ms:g} ms"
            return f"maximum throughput{budget}"
        rate = "" if self.request_rate is None else f" at {self.request_rate:g} infer/s"
        return f"minimum p99 latency{rate}"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind}
        if self.p99_budget_ms is not None:
            data["p99BudgetMs"] = self.p99_budget_ms
        if self.request_rate is not None:
            data["requestRate"] = self.request_rate
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Objective:
        budget, rate = data.get("p99BudgetMs"), data.get("requestRate")
        return cls(
            cast(ObjectiveKind, data["kind"]),
            None if budget is None else float(budget),
            None if rate is None else float(rate),
        )


@dataclass(frozen=True)
class Measurement:
    """One candidate at one concurrency for the trial's time. `throughput` counts successful requests (of one
    row each) per second; `queue_us` is the mean time a request waited in Triton's queue (its statistics API,
    the difference over the run)."""

    candidate: Candidate
    concurrency: int
    requests: int
    failed: int
    throughput: float
    p50_ms: float
    p99_ms: float
    queue_us: float

    @property
    def usable(self) -> bool:
        """Every request answered (a config that fails requests is never chosen)."""
        return self.failed == 0 and self.requests > 0

    def row(self) -> list[Any]:
        return [
            self.concurrency,
            self.requests,
            self.failed,
            round(self.throughput, 1),
            round(self.p50_ms, 3),
            round(self.p99_ms, 3),
            round(self.queue_us, 1),
        ]

    @classmethod
    def from_row(cls, candidate: Candidate, row: Sequence[Any]) -> Measurement:
        concurrency, requests, failed, throughput, p50, p99, queue = row
        return cls(
            candidate,
            int(concurrency),
            int(requests),
            int(failed),
            float(throughput),
            float(p50),
            float(p99),
            float(queue),
        )

    def to_json(self) -> dict[str, Any]:
        return {"candidate": self.candidate.to_json()} | dict(zip(COLUMNS[1:], self.row(), strict=True))


@dataclass
class TuningResult:
    """A sweep's measurements (in the order measured: a confirmed config's second round follows the
    others) and choice. `capacity` is the chosen config's best throughput that meets the objective (infer/s
    per replica); `trials` counts the candidates measured after the default; `partial` says the budget ran
    out before the space did."""

    measurements: list[Measurement]
    default: Candidate
    chosen: Candidate | None
    met: bool
    partial: bool
    trials: int
    seconds: float
    capacity: float | None
    sampler: str = ""  # "grid" or "tpe"; "" when no trial ran
    errors: list[str] = field(default_factory=list)  # trials that failed (a candidate Triton would not load)
    omitted: int = 0  # measurements left out of a reduced result (`essentials`)
    confirmed: bool = False  # the choice and the default measured again, each taken at its worse run

    def of(self, candidate: Candidate) -> list[Measurement]:
        return [m for m in self.measurements if m.candidate == candidate]

    def essentials(self) -> TuningResult:
        """Only the default's and the chosen config's measurements (a termination message that would not fit
        otherwise)."""
        kept = [m for m in self.measurements if m.candidate in (self.default, self.chosen)]
        return replace(self, measurements=kept, omitted=self.omitted + len(self.measurements) - len(kept))

    def to_json(self) -> dict[str, Any]:
        """Compact: each candidate once, the measurements as rows of `columns` that name it by index."""
        candidates: dict[Candidate, int] = {self.default: 0}
        rows = []
        for m in self.measurements:
            index = candidates.setdefault(m.candidate, len(candidates))
            rows.append([index, *m.row()])
        data: dict[str, Any] = {
            "default": self.default.to_json(),
            "chosen": None if self.chosen is None else self.chosen.to_json(),
            "met": self.met,
            "capacity": None if self.capacity is None else round(self.capacity, 1),
            "partial": self.partial,
            "trials": self.trials,
            "seconds": round(self.seconds, 1),
            "sampler": self.sampler,
            "confirmed": self.confirmed,
            "candidates": [c.to_json() for c in candidates],
            "columns": list(COLUMNS),
            "measurements": rows,
        }
        if self.errors:
            data["errors"] = self.errors
        if self.omitted:
            data["omitted"] = self.omitted
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TuningResult:
        candidates = [Candidate.from_json(c) for c in data["candidates"]]
        columns = list(data.get("columns") or COLUMNS)
        order = [columns.index(name) for name in COLUMNS]
        measurements = []
        for row in data["measurements"]:
            ordered = [row[i] for i in order]
            measurements.append(Measurement.from_row(candidates[int(ordered[0])], ordered[1:]))
        chosen = data.get("chosen")
        capacity = data.get("capacity")
        return cls(
            measurements=measurements,
            default=Candidate.from_json(data["default"]),
            chosen=None if chosen is None else Candidate.from_json(chosen),
            met=bool(data["met"]),
            partial=bool(data["partial"]),
            trials=int(data["trials"]),
            seconds=float(data["seconds"]),
            capacity=None if capacity is None else float(capacity),
            sampler=str(data.get("sampler") or ""),
            errors=[str(e) for e in data.get("errors") or ()],
            omitted=int(data.get("omitted") or 0),
            confirmed=bool(data.get("confirmed")),
        )


# --- choosing (pure) ----------------------------------------------------------------------------------------


def _best(measurements: Iterable[Measurement], objective: Objective) -> tuple[Measurement | None, bool]:
    """The measurement that serves the objective best and whether it meets it; else the closest (smallest p99
    overshoot, or highest throughput short of the rate) and False. Runs with failed requests never count."""
    usable = [m for m in measurements if m.usable]
    if not usable:
        return None, False
    if objective.kind == "maxThroughput":
        budget = objective.p99_budget_ms
        meeting = [m for m in usable if budget is None or m.p99_ms <= budget]
        if meeting:
            return max(meeting, key=lambda m: (m.throughput, -m.p99_ms)), True
        return min(usable, key=lambda m: (m.p99_ms, -m.throughput)), False
    rate = objective.request_rate
    meeting = [m for m in usable if rate is None or m.throughput >= rate]
    if meeting:
        return min(meeting, key=lambda m: (m.p99_ms, -m.throughput)), True
    return max(usable, key=lambda m: (m.throughput, -m.p99_ms)), False


def meets(measurement: Measurement, objective: Objective) -> bool:
    if not measurement.usable:
        return False
    if objective.kind == "maxThroughput":
        return objective.p99_budget_ms is None or measurement.p99_ms <= objective.p99_budget_ms
    return objective.request_rate is None or measurement.throughput >= objective.request_rate


def choose(
    measurements: Sequence[Measurement], objective: Objective, default: Candidate, *, min_gain: float = 0.0
) -> tuple[Candidate | None, bool, float | None]:
    """(config, met, capacity): the config whose measurement serves the objective best, whether it meets it,
    and its best throughput among its measurements that meet it (None when not met). When nothing meets it,
    the closest config with met False: the caller serves the default then and reports the closest. None
    when no measurement answered every request.

    The default is kept on a tie, and, with `min_gain`, unless the best beats the default's own best by more
    than that fraction (throughput above it, or p99 below it): runs of a few seconds differ by several per
    cent between two runs of the same config, and a change of config restarts the model's instances."""
    best, met = _best(measurements, objective)
    if best is None:
        return None, False, None
    chosen = best.candidate
    if any(m.candidate == default and _same_figure(m, best, objective) for m in measurements):
        chosen = default
    elif met and min_gain > 0:
        own, default_met = _best([m for m in measurements if m.candidate == default], objective)
        if own is not None and default_met:
            if objective.kind == "maxThroughput":
                better = best.throughput > own.throughput * (1 + min_gain)
            else:
                better = best.p99_ms < own.p99_ms * (1 - min_gain)
            chosen = chosen if better else default
    if not met:
        return chosen, False, None
    capacity = max(m.throughput for m in measurements if m.candidate == chosen and meets(m, objective))
    return chosen, True, capacity


def worse_runs(
    first: Sequence[Measurement], second: Sequence[Measurement], objective: Objective
) -> list[Measurement]:
    """A config measured twice, at each concurrency level the run that serves the objective worse: a choice
    must hold in both rounds (the best of many runs of a few seconds is partly luck)."""
    again = {m.concurrency: m for m in second}
    found = []
    for run in first:
        other = again.get(run.concurrency)
        if other is None:
            found.append(run)
            continue
        better, _ = _best([run, other], objective)
        found.append(other if better is run else run)
    return found


def _same_figure(a: Measurement, b: Measurement, objective: Objective) -> bool:
    if not a.usable:
        return False
    if objective.kind == "maxThroughput":
        return (a.throughput, a.p99_ms) == (b.throughput, b.p99_ms)
    return (a.p99_ms, a.throughput) == (b.p99_ms, b.throughput)


def _score(measurements: Sequence[Measurement], objective: Objective) -> float | None:
    """The figure Optuna maximises for one candidate: any config that meets the objective scores above any
    that does not, and among those the closer scores higher. None when nothing was answered."""
    best, met = _best(measurements, objective)
    if best is None:
        return None
    if objective.kind == "maxThroughput":
        return best.throughput if met else -best.p99_ms
    return -best.p99_ms if met else -1e9 + best.throughput


# --- Triton's config (pure) ---------------------------------------------------------------------------------


def default_candidate(config: Mapping[str, Any]) -> Candidate:
    """The candidate a Triton model config (its JSON form) is: its first instance group's count and its
    dynamic batcher's settings. Triton fills an empty preferred_batch_size in with [max_batch_size]: that
    list reads as none, as the NimService's spec and Nimify's config.pbtxt spell the same config."""
    groups = config.get("instance_group") or [{}]
    batching = config.get("dynamic_batching") or {}
    sizes = tuple(int(v) for v in batching.get("preferred_batch_size") or ())
    if sizes == (int(config.get("max_batch_size") or 0),):
        sizes = ()
    return Candidate(
        int(groups[0].get("count") or 1), sizes, int(batching.get("max_queue_delay_microseconds") or 0)
    )


def tuned_config(config: Mapping[str, Any], candidate: Candidate) -> dict[str, Any]:
    """The model config (Triton's JSON form, as GET /v2/models/NAME/config returns it) with the candidate's
    instance count in every instance group (per GPU for a GPU group) and its dynamic batcher settings; every
    other field kept. A model without batching (max_batch_size 0) takes only the instance count."""
    tuned = copy.deepcopy(dict(config))
    groups = tuned.get("instance_group") or [{"kind": "KIND_CPU"}]
    tuned["instance_group"] = [{**group, "count": candidate.instances} for group in groups]
    max_batch_size = int(tuned.get("max_batch_size") or 0)
    if max_batch_size == 0:
        if candidate.preferred_batch_sizes or candidate.max_queue_delay_us:
            raise ValueError(
                f"{tuned.get('name', 'the model')} does not batch (max_batch_size 0): a config with"
                f" {candidate.label()} does not apply"
            )
        return tuned
    if too_large := [s for s in candidate.preferred_batch_sizes if s > max_batch_size]:
        raise ValueError(f"preferred batch sizes {too_large} exceed max_batch_size {max_batch_size}")
    tuned["dynamic_batching"] = {
        **(tuned.get("dynamic_batching") or {}),
        "preferred_batch_size": list(candidate.preferred_batch_sizes),
        "max_queue_delay_microseconds": candidate.max_queue_delay_us,
    }
    return tuned


def check_space(space: SearchSpace, max_batch_size: int) -> None:
    """ValueError naming what the model's max_batch_size rules out."""
    if max_batch_size == 0:
        if any(space.preferred_batch_sizes) or any(space.max_queue_delays_us):
            raise ValueError(
                "the model does not batch (max_batch_size 0): tune its instances only (no preferred batch"
                " sizes, queue delay 0)"
            )
        return
    if too_large := sorted({s for g in space.preferred_batch_sizes for s in g if s > max_batch_size}):
        raise ValueError(
            f"preferred batch sizes {too_large} exceed the model's max_batch_size {max_batch_size}"
        )


# --- the sweep ----------------------------------------------------------------------------------------------


def host_port(url: str) -> str:
    """tritonclient's form of an address: host:port, no scheme."""
    return url.removeprefix("http://").removeprefix("https://").rstrip("/")


class _Measurer:
    """Reads and loads configs and measures the model at each concurrency level: each call runs in an event
    loop of its own with a client of its own (Optuna's loop calls it, synchronously)."""

    def __init__(
        self, url: str, model: str, concurrency: Sequence[int], trial_seconds: float, seed: int
    ) -> None:
        self.address = host_port(url)
        self.model = model
        self.concurrency = concurrency
        self.trial_seconds = trial_seconds
        self.seed = seed
        self.load_seconds: list[float] = []

    def _client(self) -> aio.InferenceServerClient:
        import tritonclient.http.aio as aio

        return aio.InferenceServerClient(self.address, conn_timeout=LOAD_TIMEOUT_SECONDS)

    def config(self) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            client = self._client()
            try:
                config: dict[str, Any] = await client.get_model_config(self.model)
                return config
            finally:
                await client.close()

        return asyncio.run(read())

    def load(self, config: Mapping[str, Any]) -> None:
        async def load() -> None:
            client = self._client()
            try:
                await client.load_model(self.model, config=json.dumps(config))
                deadline = time.monotonic() + READY_TIMEOUT_SECONDS
                while not await client.is_model_ready(self.model):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"not ready {READY_TIMEOUT_SECONDS:.0f} s after its load")
                    await asyncio.sleep(0.1)
            finally:
                await client.close()

        started = time.monotonic()
        asyncio.run(load())
        self.load_seconds.append(time.monotonic() - started)

    def measure(self, candidate: Candidate) -> list[Measurement]:
        return asyncio.run(self._measure(candidate))

    async def _measure(self, candidate: Candidate) -> list[Measurement]:
        from nimify.triton.load import run_load

        client = self._client()
        try:
            warmup = min(WARMUP_SECONDS, self.trial_seconds / 2)
            await run_load(self.address, self.model, duration=warmup, concurrency=max(self.concurrency))
            found = []
            for concurrency in self.concurrency:
                count, ns = await self._queue_totals(client)
                result = await run_load(
                    self.address,
                    self.model,
                    duration=self.trial_seconds,
                    concurrency=concurrency,
                    seed=self.seed,
                )
                after_count, after_ns = await self._queue_totals(client)
                queued = after_count - count
                found.append(
                    Measurement(
                        candidate,
                        concurrency,
                        result.requests,
                        result.failed,
                        result.throughput,
                        result.percentile_ms(50) or 0.0,
                        result.percentile_ms(99) or 0.0,
                        (after_ns - ns) / queued / 1000 if queued > 0 else 0.0,
                    )
                )
            return found
        finally:
            await client.close()

    async def _queue_totals(self, client: aio.InferenceServerClient) -> tuple[int, int]:
        """Requests queued and their nanoseconds in the queue, so far (Triton's statistics API)."""
        stats = await client.get_inference_statistics(self.model)
        count = ns = 0
        for entry in stats.get("model_stats", []):
            queue = entry.get("inference_stats", {}).get("queue", {})
            count += int(queue.get("count", 0))
            ns += int(queue.get("ns", 0))
        return count, ns


def _summary(measurements: Sequence[Measurement], objective: Objective) -> str:
    best, met = _best(measurements, objective)
    if best is None:
        return "no run answered every request"
    verdict = "meets the objective" if met else "misses the objective"
    return (
        f"best {best.throughput:.1f} infer/s at p99 {best.p99_ms:.2f} ms (concurrency {best.concurrency}),"
        f" {verdict}"
    )


def _sizes_label(sizes: tuple[int, ...]) -> str:
    return ",".join(map(str, sizes)) or "auto"


class _TrialFailedError(Exception):
    """A candidate Triton would not load or serve: the trial fails, the sweep goes on."""


class _Sweep:
    """Optuna's trials over a space: each proposes a candidate, which is loaded and measured unless measured
    already. The budget is checked before each trial."""

    def __init__(
        self,
        measurer: _Measurer,
        config: dict[str, Any],
        default: Candidate,
        space: SearchSpace,
        objective: Objective,
        budget_seconds: float,
        started: float,
        seed: int,
        say: Log,
        reserve: int,
        min_gain: float,
    ) -> None:
        self.measurer = measurer
        self.config = config
        self.default = default
        self.space = space
        self.objective = objective
        self.budget_seconds = budget_seconds
        self.started = started
        self.say = say
        self.groups = {_sizes_label(g): g for g in space.preferred_batch_sizes}
        self.measured: dict[Candidate, list[Measurement]] = {}
        self.unmeasured = space.candidates()
        self.durations: list[float] = []  # the default's measurement, then each trial (its load too)
        self.errors: list[str] = []
        self.trials = 0
        self.partial = False
        self.loaded_other = False  # a candidate's config replaced the default's
        self.picker = random.Random(seed)
        self.reserve = reserve  # trials' worth of time kept for the confirmation, once a candidate leads
        self.min_gain = min_gain
        self.again: dict[Candidate, list[Measurement]] = {}  # the confirmation's round

    def record(self, candidate: Candidate, found: list[Measurement], seconds: float) -> None:
        self.measured[candidate] = found
        if candidate in self.unmeasured:
            self.unmeasured.remove(candidate)
        self.durations.append(seconds)

    def leader(self) -> Candidate | None:
        """The config the figures so far choose."""
        return choose(self.figures(), self.objective, self.default, min_gain=self.min_gain)[0]

    def room_for_another(self) -> bool:
        """Whether the budget holds one more trial as long as the longest so far, the default's reload and,
        while a candidate leads the default, the reserve to measure the two again."""
        reserve = self.reserve if self.leader() not in (None, self.default) else 0
        estimate = max(self.durations) * (1 + reserve) + max(self.measurer.load_seconds, default=0.0)
        return time.monotonic() - self.started + estimate <= self.budget_seconds

    def measurements(self) -> list[Measurement]:
        """Every run, in the order measured."""
        return [m for found in (*self.measured.values(), *self.again.values()) for m in found]

    def figures(self) -> list[Measurement]:
        """What the choice is made on: a config measured twice at its worse runs, and not at all where its
        second round failed."""
        found = []
        for candidate, runs in self.measured.items():
            if candidate not in self.again:
                found.extend(runs)
            elif self.again[candidate]:
                found.extend(worse_runs(runs, self.again[candidate], self.objective))
        return found

    def confirm(self, candidate: Candidate) -> None:
        """The candidate measured again, then the default (reloaded: the sweep ends with it anyway), back to
        back. A second round that fails rules the candidate out; the default keeps its first."""
        for config in (candidate, self.default):
            label = "the default again" if config == self.default else "again"
            try:
                self.measurer.load(
                    self.config if config == self.default else tuned_config(self.config, config)
                )
                self.again[config] = self.measurer.measure(config)
            except Exception as error:
                message = f"{label} ({config.label()}): {type(error).__name__}: {error}"[:300]
                self.say(message)
                self.errors.append(message)
                if config != self.default:
                    self.again[config] = []
                continue
            self.say(f"{label} ({config.label()}): {_summary(self.again[config], self.objective)}")
            if config == self.default:
                self.loaded_other = False

    def params(self, candidate: Candidate) -> dict[str, Any]:
        return {
            "instances": candidate.instances,
            "preferredBatchSizes": _sizes_label(candidate.preferred_batch_sizes),
            "maxQueueDelayUs": candidate.max_queue_delay_us,
        }

    def objective_value(self, trial: optuna.Trial) -> float:
        import optuna

        candidate = Candidate(
            trial.suggest_categorical("instances", list(self.space.instances)),
            self.groups[trial.suggest_categorical("preferredBatchSizes", list(self.groups))],
            trial.suggest_categorical("maxQueueDelayUs", list(self.space.max_queue_delays_us)),
        )
        if candidate in self.measured:  # the default, or TPE proposing it again: its figures stand
            if self.unmeasured:
                trial.study.enqueue_trial(self.params(self.picker.choice(self.unmeasured)))
            score = _score(self.measured[candidate], self.objective)
            if score is None:
                raise optuna.TrialPruned("measured before, and failed")
            return score
        started = time.monotonic()
        self.trials += 1
        try:
            self.loaded_other = True
            self.measurer.load(tuned_config(self.config, candidate))
            found = self.measurer.measure(candidate)
        except Exception as error:  # a config Triton refuses, a model that stops answering
            message = f"{candidate.label()}: {type(error).__name__}: {error}"[:300]
            self.say(f"trial {self.trials} failed: {message}")
            self.errors.append(message)
            self.record(candidate, [], time.monotonic() - started)
            raise _TrialFailedError(message) from None
        self.record(candidate, found, time.monotonic() - started)
        self.say(f"trial {self.trials} ({candidate.label()}): {_summary(found, self.objective)}")
        score = _score(found, self.objective)
        if score is None:
            raise _TrialFailedError(f"{candidate.label()}: no run answered every request")
        return score

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if not self.unmeasured:
            study.stop()
        elif not self.room_for_another():
            self.partial = True
            study.stop()

    def run(self, sampler: optuna.samplers.BaseSampler) -> None:
        import optuna

        if not self.unmeasured:
            return
        if not self.room_for_another():
            self.partial = True
            return
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials are said once, by `say`
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(
            self.objective_value,
            n_trials=2 * self.space.size + 4,  # every other trial at least measures a new candidate
            catch=(_TrialFailedError,),
            callbacks=[self.after_trial],
        )
        self.partial = self.partial or bool(self.unmeasured)


def _sampler(space: SearchSpace, affordable: float, seed: int) -> tuple[optuna.samplers.BaseSampler, str]:
    """Optuna's grid sampler when the budget can cover every candidate, TPE otherwise."""
    import optuna

    if space.size <= affordable:
        grid: dict[str, list[str | int]] = {
            "instances": list(space.instances),
            "preferredBatchSizes": [_sizes_label(g) for g in space.preferred_batch_sizes],
            "maxQueueDelayUs": list(space.max_queue_delays_us),
        }
        return optuna.samplers.GridSampler(grid, seed=seed), "grid"
    # TPE starts from random trials; with room for only a few, a third of them is enough.
    startup = max(3, min(10, int(affordable) // 3))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup), "tpe"


def run_sweep(
    url: str,
    model: str,
    space: SearchSpace,
    objective: Objective,
    *,
    budget_seconds: float,
    trial_seconds: float = 3.0,
    seed: int = 0,
    log: Log | None = None,
    confirm: bool = True,
    min_gain: float = DEFAULT_MIN_GAIN,
) -> TuningResult:
    """Measure `model` on the running tritonserver at `url` (started with --model-control-mode=explicit, the
    model loaded with its default config): the default first, then candidates of `space` while the budget
    holds another trial (estimated from the trials so far: the budget is exceeded by at most one trial; a
    budget smaller than the default's measurement still returns it, partial). The default config is loaded
    again at the end.

    With `confirm`, while a candidate leads the default, two trials' time is kept for the end: the leader and
    the default are measured again back to back, and the choice between the two is made on each one's worse
    runs (`confirmed`); where a last trial took the lead with no time left, on single runs. `min_gain` as in
    `choose`.

    Raises what reading the config or measuring the default raises (the server or model unreachable), and
    ValueError for a space the model's max_batch_size rules out; a candidate that fails is recorded in
    `errors` and never chosen. Runs event loops of its own: not for a coroutine."""
    if not budget_seconds > 0 or not trial_seconds > 0:
        raise ValueError("the budget and the trial time must be positive")
    say = log or (lambda message: None)
    started = time.monotonic()
    measurer = _Measurer(url, model, space.concurrency, trial_seconds, seed)
    config = measurer.config()
    check_space(space, int(config.get("max_batch_size") or 0))
    default = default_candidate(config)
    reserve = 2 if confirm else 0  # the confirmation: a candidate's trial and the default's measurement
    sweep = _Sweep(
        measurer, config, default, space, objective, budget_seconds, started, seed, say, reserve, min_gain
    )
    sweep.record(default, measurer.measure(default), time.monotonic() - started)
    say(f"default ({default.label()}): {_summary(sweep.measured[default], objective)}")

    first = sweep.durations[0]
    sampler, sampler_name = _sampler(space, (budget_seconds - first) / (first + LOAD_GUESS_SECONDS), seed)
    try:
        sweep.run(sampler)
        best = sweep.leader()
        if confirm and best is not None and best != default:
            if time.monotonic() - started + max(sweep.durations) <= budget_seconds:
                sweep.confirm(best)
            else:
                say(f"no time left to measure {best.label()} and the default again: chosen on single runs")
    except BaseException:
        if sweep.loaded_other:  # best effort: what went wrong is the news
            with contextlib.suppress(Exception):
                measurer.load(config)
        raise
    if sweep.loaded_other:
        try:
            measurer.load(config)
        except Exception as error:
            sweep.errors.append(f"reloading the default config: {type(error).__name__}: {error}"[:300])

    figures = sweep.figures()
    if sweep.again:  # the two measured again: a third config's single run is no match for their worse
        figures = [m for m in figures if m.candidate in sweep.again]
    chosen, met, capacity = choose(figures, objective, default, min_gain=min_gain)
    return TuningResult(
        measurements=sweep.measurements(),
        default=default,
        chosen=chosen,
        met=met,
        partial=sweep.partial,
        trials=sweep.trials,
        seconds=time.monotonic() - started,
        capacity=capacity,
        sampler=sampler_name if sweep.trials else "",
        errors=sweep.errors[-MAX_ERRORS:],
        confirmed=all(sweep.again.get(c) for c in (chosen, default)) if chosen is not None else False,
    )
