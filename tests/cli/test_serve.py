"""`nimify serve` end to end: the real tritonserver of the nvidia-pytriton wheel, real clients and metrics."""

from __future__ import annotations

import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from nimify.engine.reference import OnnxRuntimeModel
from nimify.model.samples import write_sample

pytestmark = pytest.mark.triton

NIMIFY = str(Path(sys.executable).parent / "nimify")
KSERVE = {"float32": "FP32", "int64": "INT64", "bool": "BOOL"}


@dataclass
class Served:
    process: subprocess.Popen[str]
    endpoints: dict[str, str]
    stderr: list[str]


@contextmanager
def nimify_serve(*args: str, timeout: float = 180) -> Iterator[Served]:
    """Run `nimify serve` as a user would; yield once it printed its endpoints; stop it with SIGTERM."""
    process = subprocess.Popen(
        [NIMIFY, "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: queue.Queue[str | None] = queue.Queue()
    stderr: list[str] = []

    def pump_stdout() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    def pump_stderr() -> None:
        assert process.stderr is not None
        stderr.extend(process.stderr)

    threads = [
        threading.Thread(target=pump_stdout, daemon=True),
        threading.Thread(target=pump_stderr, daemon=True),
    ]
    for thread in threads:
        thread.start()
    endpoints: dict[str, str] = {}
    try:
        while "metrics" not in endpoints:
            line = lines.get(timeout=timeout)
            if line is None:
                process.wait(10)
                for thread in threads:
                    thread.join(5)
                pytest.fail(f"nimify serve exited with {process.returncode}: {''.join(stderr)}")
            key, _, value = line.strip().partition(" ")
            endpoints[key] = value.strip()
        yield Served(process, endpoints, stderr)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for thread in threads:
            thread.join(5)


def port_open(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((host, int(port))) == 0


def infer_http(url: str, model: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    inputs = []
    for name, array in feeds.items():
        tensor = httpclient.InferInput(name, list(array.shape), KSERVE[array.dtype.name])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer(model, inputs)
    response: dict[str, Any] = result.get_response()
    outputs = {o["name"]: result.as_numpy(o["name"]) for o in response["outputs"]}
    client.close()
    return outputs


def infer_grpc(url: str, model: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    client = grpcclient.InferenceServerClient(url)
    inputs = []
    for name, array in feeds.items():
        tensor = grpcclient.InferInput(name, list(array.shape), KSERVE[array.dtype.name])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer(model, inputs)
    outputs = {o.name: result.as_numpy(o.name) for o in result.get_response().outputs}
    client.close()
    return outputs


def success_count(metrics_url: str, model: str) -> int:
    text = httpx.get(metrics_url, timeout=10).text
    found = re.search(
        rf'^nv_inference_request_success{{model="{model}",version="1"}} (\d+)', text, re.MULTILINE
    )
    assert found, text
    return int(found.group(1))


def test_serve_onnx_file(tmp_path: Path) -> None:
    model = write_sample("multi_output", tmp_path)
    reference = OnnxRuntimeModel(model)
    rng = np.random.default_rng(11)
    requests = [
        (protocol, {"x": rng.standard_normal((batch, 8)).astype(np.float32)})
        for protocol in ("http", "grpc")
        for batch in (1, 8)
        for _ in range(6)
    ]
    with nimify_serve(str(model), "--max-queue-delay-us", "2000", "--instances", "2") as served:
        assert served.endpoints["models"] == "multi_output"
        http, grpc, metrics = served.endpoints["http"], served.endpoints["grpc"], served.endpoints["metrics"]
        assert http.startswith("http://127.0.0.1:") and grpc.startswith("127.0.0.1:")
        assert httpx.get(f"{http}/v2/health/ready").status_code == 200
        config = httpx.get(f"{http}/v2/models/multi_output/config").json()
        assert config["max_batch_size"] == 8 and config["backend"] == "python"

        def send(request: tuple[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
            protocol, feeds = request
            return (
                infer_http(http, "multi_output", feeds)
                if protocol == "http"
                else infer_grpc(grpc, "multi_output", feeds)
            )

        with ThreadPoolExecutor(max_workers=12) as pool:
            answers = list(pool.map(send, requests))
        for (_, feeds), got in zip(requests, answers, strict=True):
            want = reference.run(feeds)
            assert set(got) == set(want)
            for name, value in want.items():
                assert got[name].shape == value.shape and got[name].dtype == value.dtype
                np.testing.assert_allclose(got[name], value, rtol=1e-6, atol=1e-6)
        assert success_count(metrics, "multi_output") == len(requests)
        process = served.process
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        assert "tritonserver stopped (exit code 0)" in "".join(served.stderr)
    assert not port_open(grpc)


def test_serve_a_converted_repository(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    for name in ("recurrent", "int_bool"):
        model = write_sample(name, tmp_path / "models")
        command = [
            NIMIFY,
            "convert",
            str(model),
            "--backend",
            "onnxruntime",
            "--repository",
            str(repository),
            "-q",
        ]
        converted = subprocess.run(command, capture_output=True, text=True, check=False)
        assert converted.returncode == 0, converted.stderr
        assert json.loads(converted.stdout)["ok"]
    with nimify_serve(str(repository)) as served:
        assert sorted(served.endpoints["models"].split(", ")) == ["int_bool", "recurrent"]
        assert "onnxruntime_onnx served by the python backend" in "".join(served.stderr)
        http, grpc = served.endpoints["http"], served.endpoints["grpc"]

        # Non-batching model with a rank-0 input, sent as Triton carries scalars: shape [1].
        feeds: dict[str, np.ndarray] = {
            "x": np.ones((3, 8), np.float32),
            "state": np.zeros((2, 3, 16), np.float32),
            "temperature": np.array([0.5], np.float32),
        }
        got = infer_grpc(grpc, "recurrent", feeds)
        want = OnnxRuntimeModel(tmp_path / "models" / "recurrent.onnx").run(
            {**feeds, "temperature": np.array(0.5, np.float32)}
        )
        np.testing.assert_allclose(got["y"], want["y"], rtol=1e-6)
        np.testing.assert_allclose(got["new_state"], want["new_state"], rtol=1e-6)

        # Batched model whose [batch] output travels as [batch, 1].
        feeds = {
            "token_ids": np.arange(12, dtype=np.int64).reshape(3, 4),
            "mask": np.array([[True, False] * 2] * 3),
        }
        got = infer_http(http, "int_bool", feeds)
        want = OnnxRuntimeModel(tmp_path / "models" / "int_bool.onnx").run(feeds)
        np.testing.assert_array_equal(got["total"], want["total"].reshape(3, 1))
