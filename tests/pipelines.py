"""Pipelines of real models for the tests and the benchmark: scikit-learn stages exported by skl2onnx, and a
PyTorch export of the ONNX backend corpus as the step where two branches meet.

- `chain`: StandardScaler → PCA(2) → LogisticRegression, three models, each exported on its own (the way
  a team publishes a preprocessing model and a classifier), served with batching (skl2onnx names no dims, so
  every member is told it batches: engine.maxBatchSize).
- `fan`: StandardScaler, then two branches side by side (a Normalizer and a PCA(4)), then the corpus's
  `test_operator_max` (torch.max of two [3, 4] tensors) where they meet; the PCA branch also leaves the
  pipeline. The corpus model fixes its batch at 3, so nothing batches.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import Normalizer, StandardScaler

from nimify.api.spec import PipelineSpec
from tests.onnx_corpus import corpus_root

FEATURES = 4
FAN_IN = "pytorch-operator/test_operator_max"


@dataclass(frozen=True)
class ExportedPipeline:
    name: str
    spec: dict[str, Any]
    """spec.pipeline, with each member's uri a placeholder: `models` holds the files by member name."""
    models: dict[str, Path]
    batch: int
    """Rows per request the pipeline takes (its fixed batch, or any up to maxBatchSize)."""
    max_batch_size: int = 0

    @property
    def pipeline(self) -> PipelineSpec:
        return PipelineSpec.model_validate(self.spec)

    def features(self, seed: int, rows: int | None = None) -> dict[str, npt.NDArray[np.float32]]:
        data = np.random.default_rng(seed).standard_normal((rows or self.batch, FEATURES))
        return {"features": data.astype(np.float32)}

    def with_uris(self, uri: Any) -> dict[str, Any]:
        """spec.pipeline with each member's model.uri as `uri(member name, file)` says."""
        spec: dict[str, Any] = {**self.spec, "members": []}
        for member in self.spec["members"]:
            model = {**member["model"], "uri": uri(member["name"], self.models[member["name"]])}
            spec["members"].append({**member, "model": model})
        return spec


def _export(estimator: Any, path: Path, input_name: str, width: int, **options: Any) -> Path:
    model = convert_sklearn(
        estimator,
        initial_types=[(input_name, FloatTensorType([None, width]))],
        options={id(estimator): options} if options else None,
        target_opset=17,
    )
    onnx.save(model, str(path))
    return path


def export_normalizer(path: Path) -> Path:
    """A stage with the scaler's signature that answers otherwise: X [N, 4] → variable [N, 4]."""
    return _export(Normalizer(), path, "X", FEATURES)


def _training(rows: int = 200) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    rng = np.random.default_rng(0)
    features = rng.standard_normal((rows, FEATURES)).astype(np.float32) * [1.0, 3.0, 0.5, 2.0]
    labels = (features[:, 0] + features[:, 1] > 0).astype(np.int64) + (features[:, 2] > 0.5)
    return features.astype(np.float32), labels


def _member(name: str) -> dict[str, Any]:
    return {"name": name, "model": {"uri": f"https://models.example/{name}.onnx"}}


def export_chain(directory: Path, max_batch_size: int = 4) -> ExportedPipeline:
    directory.mkdir(parents=True, exist_ok=True)
    features, labels = _training()
    scaler = StandardScaler().fit(features)
    scaled = scaler.transform(features)
    pca = PCA(n_components=2, random_state=0).fit(scaled)
    classifier = LogisticRegression(max_iter=500).fit(pca.transform(scaled), labels)
    models = {
        "scaler": _export(scaler, directory / "scaler.onnx", "X", FEATURES),
        "pca": _export(pca, directory / "pca.onnx", "X", FEATURES),
        "classifier": _export(classifier, directory / "classifier.onnx", "X", 2, zipmap=False),
    }
    spec = {
        "members": [_member(name) for name in models],
        "steps": [
            {"member": "scaler", "inputs": [{"name": "X", "from": "input.features"}]},
            {"member": "pca", "inputs": [{"name": "X", "from": "scaler.variable"}]},
            {"member": "classifier", "inputs": [{"name": "X", "from": "pca.variable"}]},
        ],
        "outputs": [
            {"name": "label", "from": "classifier.label"},
            {"name": "probabilities", "from": "classifier.probabilities"},
        ],
    }
    return ExportedPipeline("chain", spec, models, batch=max_batch_size, max_batch_size=max_batch_size)


def export_fan(directory: Path) -> ExportedPipeline:
    directory.mkdir(parents=True, exist_ok=True)
    features, _ = _training()
    scaler = StandardScaler().fit(features)
    pca = PCA(n_components=FEATURES, random_state=0).fit(scaler.transform(features))
    fan_in = directory / "fanin.onnx"
    shutil.copyfile(corpus_root() / FAN_IN / "model.onnx", fan_in)
    models = {
        "scaler": _export(scaler, directory / "scaler.onnx", "X", FEATURES),
        "normalizer": _export(Normalizer(), directory / "normalizer.onnx", "X", FEATURES),
        "pca": _export(pca, directory / "pca.onnx", "X", FEATURES),
        "fanin": fan_in,
    }
    spec = {
        "members": [_member(name) for name in models],
        "steps": [
            {"member": "scaler", "inputs": [{"name": "X", "from": "input.features"}]},
            {"member": "normalizer", "inputs": [{"name": "X", "from": "scaler.variable"}]},
            {"member": "pca", "inputs": [{"name": "X", "from": "scaler.variable"}]},
            {
                "member": "fanin",
                "inputs": [
                    {"name": "0", "from": "normalizer.variable"},
                    {"name": "1", "from": "pca.variable"},
                ],
            },
        ],
        "outputs": [
            {"name": "larger", "from": "fanin.2"},
            {"name": "components", "from": "pca.variable"},
        ],
    }
    return ExportedPipeline("fan", spec, models, batch=3)
