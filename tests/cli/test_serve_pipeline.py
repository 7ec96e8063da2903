"""`nimify serve --pipeline` end to end: the members and the ensemble on the real tritonserver of the
nvidia-pytriton wheel, its answers against the members chained in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from nimify.engine.pipeline_reference import ChainedOnnxRuntime
from nimify.engine.reference import OnnxRuntimeModel
from tests.cli.pipeline_files import local_pipeline, model_file_args, write_pipeline
from tests.cli.serving import infer_http, nimify_serve
from tests.pipelines import ExportedPipeline, export_chain, export_fan

pytestmark = pytest.mark.triton


def _answers_as_the_chain(http: str, name: str, exported: ExportedPipeline, rows: list[int]) -> None:
    reference = ChainedOnnxRuntime(exported.pipeline, exported.models)
    for seed, count in enumerate(rows):
        feeds = exported.features(seed, count)
        got, want = infer_http(http, name, feeds), reference.run(feeds)
        assert set(got) == set(want)
        for output, value in want.items():
            # A [batch] output of a batching ensemble comes back as [batch, 1] (declared [1], no reshape).
            assert got[output].dtype == value.dtype
            np.testing.assert_allclose(got[output].reshape(value.shape), value, rtol=1e-5, atol=1e-5)


def test_serve_a_batching_chain(tmp_path: Path) -> None:
    chain = export_chain(tmp_path / "models")
    path = write_pipeline(tmp_path / "chain.yaml", chain.spec)
    args = ["--pipeline", str(path), *model_file_args(chain), "--max-batch-size", str(chain.max_batch_size)]
    with nimify_serve(*args, "--name", "scored") as served:
        http = served.endpoints["http"]
        assert served.endpoints["models"] == "scored, scaler, pca, classifier"
        assert served.endpoints["pipeline"] == f"scored at {http}/v2/models/scored/infer"
        assert served.endpoints["members"].startswith("scaler, pca, classifier, each reachable on its own")
        config = httpx.get(f"{http}/v2/models/scored/config").json()
        assert config["platform"] == "ensemble" and config["max_batch_size"] == chain.max_batch_size
        _answers_as_the_chain(http, "scored", chain, [1, 3, chain.max_batch_size])
        # A member answers on its own, under its name.
        features = chain.features(7)["features"]
        scaled = infer_http(http, "scaler", {"X": features})["variable"]
        np.testing.assert_allclose(
            scaled, OnnxRuntimeModel(chain.models["scaler"]).run({"X": features})["variable"]
        )


def test_serve_a_fan_beside_its_models(tmp_path: Path) -> None:
    fan = export_fan(tmp_path)
    with nimify_serve("--pipeline", str(local_pipeline(fan, tmp_path))) as served:
        http = served.endpoints["http"]
        assert served.endpoints["models"] == "fan, scaler, normalizer, pca, fanin"
        assert httpx.get(f"{http}/v2/models/fan/config").json()["max_batch_size"] == 0
        _answers_as_the_chain(http, "fan", fan, [fan.batch, fan.batch])
