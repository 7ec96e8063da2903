"""`nimify serve` end to end: the real tritonserver of the nvidia-pytriton wheel, real clients and metrics."""

from __future__ import annotations

import json
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from nimify.engine.reference import OnnxRuntimeModel
from nimify.model.samples import write_sample
from tests.cli.serving import NIMIFY, infer_grpc, infer_http, nimify_serve, port_open, success_count

pytestmark = pytest.mark.triton


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
