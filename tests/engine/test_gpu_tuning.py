"""`hack/gpu-check --tune` up to the GPU: the same step (a tritonserver in explicit mode on the repository
gpu-check wrote, the sweep, the default-against-tuned table) driven with the nvidia-pytriton wheel's server
and an ONNX model instead of the serving image's server and a TensorRT engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from nimify.engine.gpu_tuning import render_tuning, tune_model
from nimify.model.samples import build_mlp, write_model
from nimify.triton.local_repository import repository_from_onnx
from nimify.triton.local_server import locate_tritonserver, prepare_backends, server_environment
from nimify.triton.tuning import Objective


@pytest.mark.triton
def test_the_tune_step_measures_default_and_tuned_on_a_real_server(tmp_path: Path) -> None:
    model = write_model(build_mlp(), tmp_path / "mlp.onnx")
    local, _ = repository_from_onnx(model, tmp_path / "repository", name="mlp")
    installation = locate_tritonserver()
    backends = prepare_backends(installation, tmp_path / "backends")
    objective = Objective("maxThroughput", p99_budget_ms=200)
    tuned = tune_model(
        local.path,
        "mlp",
        objective,
        budget_seconds=8,
        trial_seconds=0.5,
        binary=str(installation.server),
        extra_args=[f"--backend-directory={backends}", f"--cache-directory={installation.caches}"],
        env=server_environment(installation),
    )
    assert tuned.error == "" and tuned.result is not None
    default, _ = tuned.figures()
    assert default is not None and default > 0
    table = render_tuning([tuned], objective)
    assert "| mlp | " in table and "maximum throughput within p99 200 ms" in table


def test_a_missing_server_is_reported_per_engine(tmp_path: Path) -> None:
    model = write_model(build_mlp(), tmp_path / "mlp.onnx")
    local, _ = repository_from_onnx(model, tmp_path / "repository", name="mlp")
    objective = Objective("maxThroughput", p99_budget_ms=50)
    tuned = tune_model(
        local.path, "mlp", objective, budget_seconds=5, trial_seconds=0.5, binary=str(tmp_path / "absent")
    )
    assert tuned.result is None and tuned.error
    assert "FAILED" in render_tuning([tuned], objective)
