"""The load generator: its arithmetic, and a short bounded run against the real tritonserver."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from nimify.model.samples import write_sample
from nimify.triton.load import LoadResult, TensorShape, percentile, random_tensor, request_shapes, run_load
from nimify.triton.local_repository import repository_from_onnx
from nimify.triton.local_server import LocalTriton

NIMIFY = str(Path(sys.executable).parent / "nimify")


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    assert percentile([3.0], 99) == 3.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_request_shapes() -> None:
    inputs = [TensorShape("x", "FP32", (-1, 16)), TensorShape("state", "FP32", (2, -1, 8))]
    assert request_shapes(inputs, 8, 4) == [
        TensorShape("x", "FP32", (4, 16)),
        TensorShape("state", "FP32", (4, 1, 8)),
    ]
    # Without batching dimension 0 is the model's own; dynamic dimensions become 1.
    assert request_shapes(inputs, 0, 1)[1].shape == (2, 1, 8)
    with pytest.raises(ValueError, match="max_batch_size 8"):
        request_shapes(inputs, 8, 9)


def test_random_tensors_have_the_datatype() -> None:
    rng = np.random.default_rng(0)
    assert random_tensor(TensorShape("a", "INT64", (2, 3)), rng).dtype == np.int64
    assert random_tensor(TensorShape("b", "BOOL", (2,)), rng).dtype == np.bool_
    assert random_tensor(TensorShape("c", "BYTES", (1,)), rng).tolist() == [b"nimify"]
    with pytest.raises(ValueError, match="not supported"):
        random_tensor(TensorShape("d", "COMPLEX", (1,)), rng)


def test_summary() -> None:
    result = LoadResult(2.0, 2, 4, latencies_seconds=[0.01, 0.02, 0.03, 0.04])
    result.errors["TimeoutError"] += 1
    summary = result.summary()
    assert (summary["requests"], summary["failed"], summary["requestsPerSecond"]) == (4, 1, 2.0)
    assert summary["inferencesPerSecond"] == 8.0
    assert summary["latencyMs"]["p50"] == pytest.approx(20.0) and summary["latencyMs"][
        "max"
    ] == pytest.approx(40.0)


@pytest.mark.parametrize(("duration", "concurrency"), [(0, 1), (4000, 1), (1, 0), (1, 5000)])
async def test_bounds(duration: float, concurrency: int) -> None:
    with pytest.raises(ValueError):
        await run_load("127.0.0.1:1", "m", duration=duration, concurrency=concurrency)


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTriton]:
    directory = tmp_path_factory.mktemp("load")
    model = write_sample("mlp", directory)
    local, _ = repository_from_onnx(model, directory / "repository", name="mlp")
    with LocalTriton(local.path) as server:
        yield server


@pytest.mark.triton
@pytest.mark.parametrize("protocol", ["http", "grpc"])
async def test_run_against_real_triton(triton: LocalTriton, protocol: str) -> None:
    endpoints = triton.endpoints
    url = endpoints.http.removeprefix("http://") if protocol == "http" else endpoints.grpc
    result = await run_load(url, "mlp", duration=2, concurrency=4, protocol=protocol, batch_size=2)  # type: ignore[arg-type]
    assert result.failed == 0, result.errors
    assert result.requests > 0 and result.summary()["latencyMs"]["p99"] is not None


@pytest.mark.triton
def test_command_prints_json_and_counts_failures(triton: LocalTriton) -> None:
    url = triton.endpoints.http.removeprefix("http://")
    done = subprocess.run(
        [NIMIFY, "load", url, "--model", "mlp", "--duration", "1", "--concurrency", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["requests"] > 0 and summary["failed"] == 0 and summary["concurrency"] == 2
    missing = subprocess.run(
        [NIMIFY, "load", url, "--model", "nope", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode != 0 and "nope" in missing.stderr
