"""The analyst's answer gate: when it asks (a candidate that serves, not judged yet), whom (one ready pod of
each unit, the serving unit first), with what (generated inputs of the model's signature), and what it makes
of the answers — two real ONNX Runtime sessions answer for the units. The real-node test (test_real_gateway)
asks two Tritons and a real Prometheus."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nimify.api.status import GateForm
from nimify.controller import rollout_analyst
from nimify.controller.children import DEPLOYMENT
from nimify.controller.observed import Observed
from nimify.controller.rollout_analyst import RolloutAnalyst
from nimify.engine.location import engine_location
from nimify.engine.reference import OnnxRuntimeModel
from nimify.model.samples import build_mlp, write_model
from nimify.render.identity import ENGINE_KEY_ANNOTATION
from tests.controller.test_reconciler import SETTINGS, T
from tests.render.conftest import MODEL_SHA256, NAME, NAMESPACE, nimservice

SIGNATURE = {
    "inputs": [{"name": "input", "dtype": "FLOAT", "shape": [-1, 16]}],
    "outputs": [{"name": "logits", "dtype": "FLOAT", "shape": [-1, 4]}],
}
CANDIDATE = f"{NAME}-canary"


def situation(answers: dict[str, Any], model_sha: str = MODEL_SHA256) -> tuple[Any, Observed]:
    """A canary whose candidate serves and was not judged yet, and the watches' view of its Deployment."""
    spec = {
        "engine": {"backend": "onnxruntime", "precision": "fp32"},
        "rollout": {"strategy": "Canary", "steps": [{"weight": 10}], "answers": answers},
    }
    key = engine_location(nimservice(spec), SETTINGS).cache_key
    engine = {"cacheKey": "s" * 64, "model": model_sha, "maxBatchSize": 4}
    status = {
        "engine": engine,
        "signature": SIGNATURE,
        "units": [
            {"name": NAME, "role": "Serving", "trafficPercent": 100},
            {"name": CANDIDATE, "role": "Candidate", "trafficPercent": 0, "signature": SIGNATURE,
             "engine": {"cacheKey": key, "maxBatchSize": 4}},
        ],
        "rollout": {"phase": "Progressing", "candidate": key, "generation": 1},
    }  # fmt: skip
    deployment = {
        "metadata": {"name": CANDIDATE, "generation": 1},
        "spec": {"template": {"metadata": {"annotations": {ENGINE_KEY_ANNOTATION: key}}}},
        "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1},
    }
    observed = Observed(children={DEPLOYMENT.kind: {(NAMESPACE, CANDIDATE): [deployment]}})
    return nimservice(spec, status=status), observed


class Units:
    """Pod addresses by unit, and an ONNX Runtime session answering for each address."""

    def __init__(self, tmp_path: Path, candidate_hidden: int) -> None:
        self.sessions = {
            "10.0.0.1:8000": OnnxRuntimeModel(write_model(build_mlp(), tmp_path / "serving.onnx")),
            "10.0.0.2:8000": OnnxRuntimeModel(
                write_model(build_mlp(hidden=candidate_hidden), tmp_path / "c.onnx")
            ),
        }
        self.asked: list[tuple[str, str, int]] = []

    async def pods(self, namespace: str, labels: dict[str, str]) -> list[str]:
        assert namespace == NAMESPACE
        return {NAME: ["10.0.0.1"], CANDIDATE: ["10.0.0.2"]}[labels["app.kubernetes.io/instance"]]

    def ask(self, address: str, model: str, signature: Any, inputs: Sequence[dict[str, Any]]) -> list[Any]:
        self.asked.append((address, model, len(inputs)))
        return [self.sessions[address].run(feeds) for feeds in inputs]


def test_the_gate_asks_one_pod_of_each_unit_the_same_inputs(tmp_path: Path) -> None:
    nim, observed = situation({"equivalence": "Auto", "samples": 6})
    units = Units(tmp_path, candidate_hidden=32)  # the same network: only the engine changed
    analyst = RolloutAnalyst(SETTINGS, pods=units.pods, ask=units.ask)
    found = asyncio.run(analyst.observe(nim, observed, T))
    assert units.asked == [("10.0.0.1:8000", NAME, 6), ("10.0.0.2:8000", NAME, 6)]
    gate = found.rollout_gate
    assert gate is not None and gate.form is GateForm.EQUIVALENCE and gate.passed and gate.samples == 6
    assert gate.figure == 0.0


def test_a_changed_network_fails_equivalence_declared(tmp_path: Path) -> None:
    nim, observed = situation({"equivalence": "Declared"}, model_sha="cd" * 32)
    units = Units(tmp_path, candidate_hidden=24)
    found = asyncio.run(RolloutAnalyst(SETTINGS, pods=units.pods, ask=units.ask).observe(nim, observed, T))
    gate = found.rollout_gate
    assert gate is not None and not gate.passed and gate.figure > 0.01
    assert gate.message.startswith("max abs error") and "on 'logits' > atol 0.001" in gate.message


def test_an_agreement_gate_counts_rows(tmp_path: Path) -> None:
    agreement = {"agreement": {"rule": "Top1", "minFraction": 0.99}}
    nim, observed = situation(agreement, model_sha="cd" * 32)
    units = Units(tmp_path, candidate_hidden=24)
    found = asyncio.run(RolloutAnalyst(SETTINGS, pods=units.pods, ask=units.ask).observe(nim, observed, T))
    gate = found.rollout_gate
    assert gate is not None and gate.form is GateForm.AGREEMENT and not gate.passed
    assert 0 < gate.figure < 0.99 and "answers agree on the top-1 class" in gate.message


def test_nothing_is_asked_without_a_gate_or_a_ready_candidate(tmp_path: Path) -> None:
    units = Units(tmp_path, candidate_hidden=24)
    analyst = RolloutAnalyst(SETTINGS, pods=units.pods, ask=units.ask)
    nim, observed = situation({}, model_sha="cd" * 32)  # a retrained model, no agreement gate
    assert asyncio.run(analyst.observe(nim, observed, T)) is observed
    nim, _ = situation({})
    assert asyncio.run(analyst.observe(nim, Observed(), T)).rollout_gate is None, "no candidate Deployment"
    assert units.asked == []


def test_units_that_cannot_be_asked_fail_the_gate_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nim, observed = situation({})

    def refuse(*_: Any) -> list[Any]:
        raise ConnectionRefusedError("connection refused")

    analyst = RolloutAnalyst(SETTINGS, pods=Units(tmp_path, 32).pods, ask=refuse)
    monkeypatch.setattr(rollout_analyst, "GATE_PAUSE_SECONDS", 0.0)
    gate = asyncio.run(analyst.observe(nim, observed, T)).rollout_gate
    assert gate is not None and not gate.passed
    assert gate.message == "the units could not be asked (3 attempts): connection refused"
    assert np.isfinite(gate.figure)
