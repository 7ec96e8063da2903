"""Running `nimify serve` as a user would, and talking to the tritonserver it starts (shared by the serve and
corpus tests)."""

from __future__ import annotations

import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

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
