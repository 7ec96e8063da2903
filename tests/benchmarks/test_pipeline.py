"""The pipeline benchmark's main path, briefly, on the chain: every way answers the same and is measured.
Never a time: the figures are hack/bench-pipeline's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from benchmarks.pipeline import check_agreement, main

WAYS = {"triton ensemble", "chained servers (HTTP)", "onnxruntime in process"}


@pytest.mark.triton
def test_every_way_answers_and_is_measured(tmp_path: Path) -> None:
    output = tmp_path / "figures.json"
    argv = ["--pipelines", "chain", "--duration", "0.3", "--concurrency", "2"]
    assert main([*argv, "--output", str(output), "--workdir", str(tmp_path / "work")]) == 0
    (run,) = json.loads(output.read_text())["runs"]
    assert run["pipeline"] == "chain" and set(run["ways"]) == WAYS
    for way, figures in run["ways"].items():
        assert figures["latency_requests"] > 0 and figures["throughput_requests"] > 0, way
        assert all(value > 0 for value in figures["latency_ms"].values()), way
        assert figures["requests_per_s"] > 0 and figures["rows_per_s"] > 0, way


def test_ways_that_disagree_stop_the_benchmark() -> None:
    floor = {"label": np.array([0, 1]), "probabilities": np.array([[0.25, 0.75], [0.5, 0.5]])}
    served = {"label": np.array([[0], [1]]), "probabilities": floor["probabilities"] + 1e-7}
    check_agreement({"floor": floor, "served": served})  # a trailing 1 and a rounding are the same answer
    with pytest.raises(AssertionError, match="disagree on probabilities"):
        check_agreement(
            {"floor": floor, "served": {**served, "probabilities": floor["probabilities"] + 1e-3}}
        )
    with pytest.raises(AssertionError, match="answered"):
        check_agreement({"floor": floor, "served": {"label": served["label"]}})
