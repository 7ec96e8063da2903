"""The scale benchmark at a small N, as a smoke test of correctness: every NimService gets Ready, the operator
has no reconcile error and writes nothing once idle. Never a time: the figures are hack/bench-scale's."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from benchmarks.scale import Options, run_nimservices

pytestmark = pytest.mark.cluster

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def options(tmp_path_factory: pytest.TempPathFactory) -> Options:
    ensure = ["bash", str(REPO_ROOT / "hack" / "ensure-binaries.sh")]
    bin_path = (
        os.environ.get("NIMIFY_BIN_PATH")
        or (
            subprocess.run(ensure, check=True, stdout=subprocess.PIPE, text=True)
            .stdout.strip()
            .splitlines()[-1]
        )
    )
    return Options(bin_path, tmp_path_factory.mktemp("bench"), idle_seconds=10, settle_seconds=5, timeout=900)


def check(figures: dict[str, Any]) -> None:
    assert figures["reconcile_errors"] == 0, figures["reconcile_errors_by_reason"]
    assert figures["operator_log"]["error_lines"] == 0, figures["operator_log"]["examples"]
    assert figures["failed_builds"] == 0
    assert (figures["idle"]["writes"], figures["idle"]["writes_counted"]) == (0, 0)


def test_fifty_nimservices_sharing_one_model(options: Options) -> None:
    figures = run_nimservices("shared", 50, False, options)  # returns once all 50 are Ready
    check(figures)
    assert figures["jobs"] == 1, "one conversion Job serves every NimService of the engine"


def test_nimservices_with_models_of_their_own(options: Options) -> None:
    figures = run_nimservices("distinct", 5, True, options)
    check(figures)
    assert figures["jobs"] == 5
