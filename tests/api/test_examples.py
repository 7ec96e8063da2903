"""The samples in docs/examples are valid, workable and as small as they claim."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nimify.api import NimService, nimservice_errors

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
SAMPLES = sorted(EXAMPLES.glob("*.yaml"))


def test_the_four_samples_exist() -> None:
    assert {sample.stem for sample in SAMPLES} >= {"minimal", "autoscaled", "gpu-product", "onnxruntime"}


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda sample: sample.stem)
def test_sample_is_valid_and_workable(sample: Path) -> None:
    document = yaml.safe_load(sample.read_text())
    assert nimservice_errors(document) == []
    NimService.model_validate(document)


def test_minimal_sample_is_at_most_ten_lines_of_spec() -> None:
    lines = (EXAMPLES / "minimal.yaml").read_text().splitlines()
    spec_lines = lines[lines.index("spec:") + 1 :]
    assert len([line for line in spec_lines if line.strip()]) <= 10
