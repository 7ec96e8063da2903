"""A bounded load generator for a Triton endpoint: a fixed concurrency for a fixed time, then latency
percentiles and throughput.

Built on tritonclient's asyncio clients (HTTP or gRPC), so one process keeps hundreds of requests in flight
without threads. Inputs come from the model's own metadata and config (dynamic dimensions become the batch
size for dimension 0 of a batching model and 1 elsewhere), filled with seeded random data; a small pool of
distinct inputs keeps Triton's response cache, if enabled, from answering everything.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Protocol = Literal["http", "grpc"]
MAX_DURATION_SECONDS = 3600.0
MAX_CONCURRENCY = 1024
INPUT_POOL = 8

# KServe v2 datatypes -> numpy (BYTES handled apart).
_NUMPY: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


@dataclass(frozen=True)
class TensorShape:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass
class LoadResult:
    """What one run measured."""

    duration_seconds: float
    concurrency: int
    batch_size: int
    latencies_seconds: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def requests(self) -> int:
        return len(self.latencies_seconds)

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def throughput(self) -> float:
        """Successful requests per second."""
        return self.requests / self.duration_seconds if self.duration_seconds > 0 else 0.0

    def percentile_ms(self, q: float) -> float | None:
        return percentile(self.latencies_seconds, q) * 1000 if self.latencies_seconds else None

    def summary(self) -> dict[str, Any]:
        latencies = {f"p{q:g}": self.percentile_ms(q) for q in (50, 90, 95, 99)}
        return {
            "durationSeconds": round(self.duration_seconds, 3),
            "concurrency": self.concurrency,
            "batchSize": self.batch_size,
            "requests": self.requests,
            "failed": self.failed,
            "errors": dict(self.errors.most_common(5)),
            "requestsPerSecond": round(self.throughput, 2),
            "inferencesPerSecond": round(self.throughput * self.batch_size, 2),
            "latencyMs": latencies | {"max": max(self.latencies_seconds, default=0) * 1000 or None},
        }


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile by the nearest-rank method (a value that was actually observed)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def request_shapes(inputs: Sequence[TensorShape], max_batch_size: int, batch_size: int) -> list[TensorShape]:
    """Concrete shapes: a batching model's dimension 0 is the batch (Triton's metadata shows it as -1);
    other dynamic dimensions become 1."""
    if batch_size < 1 or (max_batch_size and batch_size > max_batch_size):
        raise ValueError(
            f"batch size {batch_size} must be between 1 and the model's max_batch_size {max_batch_size}"
        )
    concrete = []
    for tensor in inputs:
        dims = list(tensor.shape)
        if max_batch_size and dims:
            dims[0] = batch_size
        concrete.append(TensorShape(tensor.name, tensor.datatype, tuple(d if d >= 0 else 1 for d in dims)))
    return concrete


def random_tensor(tensor: TensorShape, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    if tensor.datatype == "BYTES":
        return np.full(tensor.shape, b"nimify", dtype=np.object_)
    dtype = _NUMPY.get(tensor.datatype)
    if dtype is None:
        raise ValueError(
            f"input {tensor.name}: datatype {tensor.datatype} is not supported by the load generator"
        )
    if dtype is np.bool_:
        return rng.integers(0, 2, tensor.shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 8, tensor.shape).astype(dtype)
    return rng.standard_normal(tensor.shape).astype(dtype)


class _Client:
    """The two tritonclient asyncio clients behind one shape."""

    def __init__(self, url: str, protocol: Protocol, concurrency: int) -> None:
        self.protocol = protocol
        if protocol == "http":
            import tritonclient.http.aio as client_module
        else:
            import tritonclient.grpc.aio as client_module
        self.module = client_module
        if protocol == "http":
            self.client = client_module.InferenceServerClient(url, conn_limit=concurrency)
        else:
            self.client = client_module.InferenceServerClient(url)

    async def model(self, name: str, version: str) -> tuple[list[TensorShape], int]:
        if self.protocol == "http":
            metadata = await self.client.get_model_metadata(name, version)
            config = await self.client.get_model_config(name, version)
        else:
            metadata = await self.client.get_model_metadata(name, version, as_json=True)
            config = (await self.client.get_model_config(name, version, as_json=True))["config"]
        inputs = [
            TensorShape(t["name"], t["datatype"], tuple(int(d) for d in t["shape"]))
            for t in metadata["inputs"]
        ]
        return inputs, int(config.get("max_batch_size", 0) or 0)

    def inputs(self, shapes: Sequence[TensorShape], arrays: Sequence[np.ndarray[Any, Any]]) -> list[Any]:
        prepared = []
        for shape, array in zip(shapes, arrays, strict=True):
            tensor = self.module.InferInput(shape.name, list(shape.shape), shape.datatype)
            tensor.set_data_from_numpy(array)
            prepared.append(tensor)
        return prepared

    async def infer(self, name: str, version: str, inputs: list[Any]) -> None:
        await self.client.infer(name, inputs, model_version=version)

    async def close(self) -> None:
        await self.client.close()


async def run_load(
    url: str,
    model: str,
    *,
    duration: float,
    concurrency: int,
    protocol: Protocol = "http",
    batch_size: int = 1,
    model_version: str = "",
    seed: int = 0,
) -> LoadResult:
    """Keep `concurrency` requests in flight against `url` for `duration` seconds (no request starts later;
    one in flight at the deadline gets at most 30 s more).

    `url` is host:port (tritonclient's form, no scheme). Errors are counted by type, not raised, so a run
    through a rolling update reports how many requests failed.
    """
    if not 0 < duration <= MAX_DURATION_SECONDS:
        raise ValueError(f"duration must be in (0, {MAX_DURATION_SECONDS:.0f}] seconds, not {duration}")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be between 1 and {MAX_CONCURRENCY}, not {concurrency}")
    client = _Client(url, protocol, concurrency)
    try:
        described, max_batch_size = await client.model(model, model_version)
        shapes = request_shapes(described, max_batch_size, batch_size)
        rng = np.random.default_rng(seed)
        pool = [client.inputs(shapes, [random_tensor(s, rng) for s in shapes]) for _ in range(INPUT_POOL)]
        result = LoadResult(duration, concurrency, batch_size)
        started = time.monotonic()
        deadline = started + duration

        async def worker(index: int) -> None:
            sent = index
            while (now := time.monotonic()) < deadline:
                try:
                    await asyncio.wait_for(
                        client.infer(model, model_version, pool[sent % INPUT_POOL]),
                        timeout=deadline - now + 30,
                    )
                except Exception as error:
                    result.errors[_error_kind(error)] += 1
                else:
                    result.latencies_seconds.append(time.monotonic() - now)
                sent += concurrency

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        result.duration_seconds = time.monotonic() - started
        return result
    finally:
        await client.close()


def _error_kind(error: Exception) -> str:
    message = str(error).splitlines()[0][:120] if str(error) else ""
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
