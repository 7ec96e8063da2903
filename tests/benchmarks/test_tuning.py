"""The tuning benchmark's main path, briefly, on the MLP: the default and tuned configs, the ONNX Runtime
ceiling and the tuning's wall time are each measured. Never a time: the figures are hack/bench-tuning's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks.tuning import main

from nimify.triton.tuning import TuningResult


@pytest.mark.triton
def test_every_column_is_measured(tmp_path: Path) -> None:
    output = tmp_path / "figures.json"
    argv = ["--models", "mlp", "--budget", "4", "--trial-seconds", "0.3", "--confirm-seconds", "0.3"]
    argv += ["--ceiling-seconds", "0.1", "--p99-budget-ms", "1000"]
    assert main([*argv, "--output", str(output), "--workdir", str(tmp_path / "work")]) == 0
    (run,) = json.loads(output.read_text())["runs"]
    assert run["model"] == "mlp" and run["inputs"] == "input float[16]"
    assert run["default_infer_per_s"] > 0 and run["tuned_infer_per_s"] > 0, run
    assert run["onnxruntime_rows_per_s"] > 0 and run["onnxruntime_batch"] in (1, 2, 4, 8, 16, 32, 64)
    assert set(run["onnxruntime_by_batch"]) == {"1", "2", "4", "8", "16", "32", "64"}
    assert run["tuning_seconds"] > 0 and run["space_size"] == 36
    tuning = TuningResult.from_json(run["tuning"])
    assert tuning.of(tuning.default) and tuning.chosen is not None
    confirmation = TuningResult.from_json(run["confirmation"])
    assert [m.concurrency for m in confirmation.of(confirmation.default)] == [1, 4, 16]
