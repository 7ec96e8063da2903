"""The Python-based `onnxruntime` backend: production configs (`platform: "onnxruntime_onnx"`) unchanged.

Through the in-process shim for every sample (single and batched requests), and on the real tritonserver of
the nvidia-pytriton wheel with the backend folder `prepare_backends` assembles (the triton-cpu image's).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from nimify.api import EngineSpec, TritonSpec
from nimify.engine.reference import OnnxRuntimeModel, reference_inputs
from nimify.model.dtypes import by_name
from nimify.model.inspection import ModelReport, inspect_model
from nimify.model.samples import SAMPLES, write_sample
from nimify.triton.local_server import LocalTriton
from nimify.triton.model_config import render_model_config, resolve_max_batch_size
from nimify.triton.python_backend_shim import LoadedPythonModel
from nimify.triton.python_model import render_onnxruntime_backend
from nimify.triton.repository import write_model_directory

BATCHING = TritonSpec.model_validate({"dynamicBatching": {"maxQueueDelayMicroseconds": 100}})


def production_repository(root: Path, name: str) -> tuple[Path, ModelReport, str]:
    """A model repository as `nimify convert` writes it for the onnxruntime backend."""
    model = write_sample(name, root / "models")
    report = inspect_model(model)
    max_batch_size = resolve_max_batch_size(EngineSpec(backend="onnxruntime"), report.batching)
    config = render_model_config(
        name, report.signature, "onnxruntime_onnx", max_batch_size=max_batch_size, triton=BATCHING, gpus=0
    )
    write_model_directory(root / "repo", name, config, {"model.onnx": model})
    return root / "repo", report, config


def triton_json(config_text: str) -> dict[str, Any]:
    """The config as Triton hands it to a python backend's initialize() (proto field names, enum names)."""
    config = model_config_pb2.ModelConfig()
    text_format.Parse(config_text, config)
    return dict(json_format.MessageToDict(config, preserving_proto_field_name=True))


@pytest.fixture
def backend_source(tmp_path: Path) -> Path:
    path = tmp_path / "backends" / "onnxruntime" / "model.py"
    path.parent.mkdir(parents=True)
    path.write_text(render_onnxruntime_backend())
    return path


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_sample_matches_onnxruntime_through_the_backend(
    tmp_path: Path, backend_source: Path, name: str
) -> None:
    repository, report, config = production_repository(tmp_path, name)
    model = LoadedPythonModel(repository, name, source=backend_source, config=triton_json(config))
    try:
        reference = OnnxRuntimeModel(repository / name / "1" / "model.onnx")
        batched = report.batching.batched
        inputs = reference_inputs(report.signature, 4, max_batch_size=4 if batched else 0, seed=7)
        for feeds in inputs:
            got = model.infer(feeds)[0]
            for output, expected in reference.run(feeds).items():
                np.testing.assert_array_equal(got[output], expected if expected.ndim else expected.reshape(1))
        if batched:  # several requests in one execute(), as the dynamic batcher delivers them
            for feeds, got in zip(inputs, model.infer(*inputs), strict=True):
                for output, expected in reference.run(feeds).items():
                    np.testing.assert_allclose(got[output], expected, rtol=1e-6, atol=1e-6)
    finally:
        model.close()


def test_a_config_naming_a_tensor_the_model_lacks_fails_to_load(tmp_path: Path, backend_source: Path) -> None:
    repository, _, config = production_repository(tmp_path, "mlp")
    broken = triton_json(config)
    broken["input"][0]["name"] = "not_there"
    with pytest.raises(ValueError, match="declares not_there, which the ONNX model lacks"):
        LoadedPythonModel(repository, "mlp", source=backend_source, config=broken)


@pytest.fixture
def served_mlp(tmp_path: Path) -> Iterator[tuple[LocalTriton, ModelReport, Path]]:
    repository, report, _ = production_repository(tmp_path, "mlp")
    with LocalTriton(repository) as server:
        yield server, report, repository


@pytest.mark.triton
def test_the_real_tritonserver_serves_the_production_config(
    served_mlp: tuple[LocalTriton, ModelReport, Path],
) -> None:
    server, report, repository = served_mlp
    http = server.endpoints.http
    assert httpx.get(f"{http}/v2/models/mlp/ready", timeout=10).status_code == 200
    metadata = httpx.get(f"{http}/v2/models/mlp/config", timeout=10).json()
    assert metadata.get("platform") == "onnxruntime_onnx" or metadata.get("backend") == "onnxruntime"
    feeds = reference_inputs(report.signature, 1, max_batch_size=4, seed=11)[0]
    body = {
        "inputs": [
            {
                "name": tensor.name,
                "shape": list(feeds[tensor.name].shape),
                "datatype": by_name(tensor.dtype).kserve,
                "data": feeds[tensor.name].ravel().tolist(),
            }
            for tensor in report.signature.inputs
        ]
    }
    response = httpx.post(f"{http}/v2/models/mlp/infer", content=json.dumps(body), timeout=30)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in response.json()["outputs"]}
    for name, expected in OnnxRuntimeModel(repository / "mlp" / "1" / "model.onnx").run(feeds).items():
        np.testing.assert_allclose(outputs[name], expected, rtol=1e-5, atol=1e-6)
