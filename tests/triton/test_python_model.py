"""The generated model.py, run through its real `execute` path with an in-process backend shim."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from nimify.engine.reference import OnnxRuntimeModel, reference_inputs
from nimify.model.inspection import ModelReport, inspect_model
from nimify.model.samples import SAMPLES, write_sample
from nimify.triton.python_backend_shim import InferenceRequest, LoadedPythonModel, Tensor
from nimify.triton.python_model import render_python_model
from nimify.triton.repository import write_model_directory

Loaded = tuple[LoadedPythonModel, OnnxRuntimeModel, ModelReport]


@pytest.fixture
def load(tmp_path: Path) -> Iterator[Callable[[str], Loaded]]:
    opened: list[LoadedPythonModel] = []

    def loader(name: str) -> Loaded:
        path = write_sample(name, tmp_path / "models", external_data=name == "mlp")
        report = inspect_model(path)
        source = render_python_model(report.signature, batched=report.batching.batched)
        files: dict[str, Path | str] = {"model.onnx": path, "model.py": source}
        files.update({relative: path.parent / relative for relative in report.external_data})
        write_model_directory(tmp_path / "repo", name, "", files)
        model = LoadedPythonModel(tmp_path / "repo", name)
        opened.append(model)
        return model, OnnxRuntimeModel(path), report

    yield loader
    for model in opened:
        model.close()


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_request_alone_matches_onnxruntime(load: Callable[[str], Loaded], name: str) -> None:
    model, reference, report = load(name)
    inputs = reference_inputs(report.signature, 3, max_batch_size=8 if report.batching.batched else 0, seed=3)
    for feeds in inputs:
        got = model.infer(feeds)[0]
        for output, expected in reference.run(feeds).items():
            # Triton carries a scalar as [1]; everything else keeps the model's shape.
            np.testing.assert_array_equal(got[output], expected if expected.ndim else expected.reshape(1))


@pytest.mark.parametrize("name", ["mlp", "int_bool", "multi_output", "cnn"])
def test_requests_batched_together_are_split_back(load: Callable[[str], Loaded], name: str) -> None:
    model, reference, report = load(name)
    inputs = reference_inputs(report.signature, 5, max_batch_size=4, seed=5)
    responses = model.infer(*inputs)
    assert len(responses) == len(inputs)
    for feeds, got in zip(inputs, responses, strict=True):
        for output, value in reference.run(feeds).items():
            np.testing.assert_allclose(got[output], value, rtol=1e-6, atol=1e-6)


def test_a_bad_request_fails_alone(load: Callable[[str], Loaded]) -> None:
    model, reference, _ = load("mlp")
    good = np.ones((2, 16), np.float32)
    responses = model.model.execute([InferenceRequest([]), InferenceRequest([Tensor("input", good)])])
    assert responses[0].error is not None and "missing input input" in responses[0].error.message
    np.testing.assert_allclose(
        responses[1].outputs()["logits"], reference.run({"input": good})["logits"], rtol=1e-6
    )


def test_a_call_whose_every_request_fails_raises_so_that_triton_counts_the_failures(
    load: Callable[[str], Loaded],
) -> None:
    """Triton's python backend counts an error response as a success and a raised execute as a failure per
    request (nv_inference_request_failure, reason BACKEND; tried on tritonserver 2.51): a model that fails
    every request must show in the metrics a canary's analysis reads."""
    model, _, _ = load("mlp")
    with pytest.raises(RuntimeError, match="missing input input"):
        model.model.execute([InferenceRequest([]), InferenceRequest([])])
