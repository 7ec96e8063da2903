"""Models written by real exporters at test time, through inspect, convert and a real `nimify serve`.

skl2onnx converts fitted scikit-learn pipelines (ai.onnx.ml operators, no dim names, a ZipMap output unless
disabled); onnxscript, the library PyTorch's own ONNX exporter emits its graphs with, writes a recurrent step
whose state carries the batch in dimension 1 next to a rank-0 temperature, and an audio model whose scalar
sample rate decides its STFT window (random parity data is not valid for it).

Why not torch.onnx.export here: the PyPI torch wheel for Linux is the CUDA build; importing it needs the
nvidia-* CUDA wheels (2.8 GB to download, 5.3 GB installed, a minute to install into every fresh CI venv),
and the CPU wheel lives on an index these machines cannot reach. The corpus test serves 25 PyTorch exports
from the onnx wheel instead; skl2onnx, scikit-learn and onnxscript cost about 210 MB and 15 s (warm cache).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import pytest
from onnx import numpy_helper
from onnxscript import FLOAT, INT64, script
from onnxscript import opset18 as op
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from nimify.engine.reference import OnnxRuntimeModel
from tests.cli.conftest import Cli
from tests.cli.serving import infer_http, nimify_serve

WEIGHTS = np.random.default_rng(1).standard_normal((8, 16)).astype(np.float32)


@script()  # type: ignore[untyped-decorator]
def recurrent_step(x: Any, state: Any, temperature: Any) -> Any:  # typed at export, below
    weights = op.Constant(value=numpy_helper.from_array(WEIGHTS, "weights"))
    new_state = op.Tanh(op.Mul(op.Add(op.MatMul(x, weights), state), temperature))
    y = op.ReduceMean(new_state, op.Constant(value_ints=[0]), keepdims=0)
    return y, new_state


@script()  # type: ignore[untyped-decorator]
def framed_energy(audio: Any, sample_rate: Any) -> Any:
    hop = op.Div(sample_rate, op.Constant(value_int=100))  # 10 ms frames, 20 ms windows
    window = op.Mul(hop, op.Constant(value_int=2))
    spectrum = op.STFT(op.Unsqueeze(audio, op.Constant(value_ints=[-1])), hop, None, window)
    power = op.ReduceSum(op.Mul(spectrum, spectrum), op.Constant(value_ints=[2, 3]), keepdims=0)
    return power


def _onnxscript(function: Any, path: Path, inputs: list[Any], outputs: list[Any]) -> None:
    onnx.save(function.to_model_proto(input_types=inputs, output_types=outputs), str(path))


@dataclass(frozen=True)
class Exported:
    directory: Path
    features: npt.NDArray[np.float32]
    logistic: Pipeline
    forest: Pipeline

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.onnx"


def _sklearn(pipeline: Pipeline, path: Path, *, zipmap: bool = False) -> None:
    options = {id(pipeline.steps[-1][1]): {"zipmap": False}} if not zipmap else None
    model = convert_sklearn(
        pipeline, initial_types=[("features", FloatTensorType([None, 4]))], options=options
    )
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    directory = tmp_path_factory.mktemp("exported")
    rng = np.random.default_rng(0)
    features = rng.standard_normal((300, 4)).astype(np.float32)
    labels = (features[:, 0] + features[:, 1] > 0).astype(int) + (features[:, 2] > 1)
    logistic = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression(max_iter=500))])
    logistic.fit(features, labels)
    forest = Pipeline(
        [
            ("scale", StandardScaler()),
            ("classify", RandomForestClassifier(n_estimators=8, max_depth=4, random_state=0)),
        ]
    )
    forest.fit(features, labels)
    _sklearn(logistic, directory / "logistic.onnx")
    _sklearn(forest, directory / "forest.onnx")
    _sklearn(forest, directory / "forest_zipmap.onnx", zipmap=True)
    # The state carries the batch in dimension 1; the temperature and the sample rate are rank-0 scalars.
    _onnxscript(
        recurrent_step,
        directory / "recurrent.onnx",
        [FLOAT["batch", 8], FLOAT[2, "batch", 16], FLOAT[()]],
        [FLOAT["batch", 16], FLOAT[2, "batch", 16]],
    )
    _onnxscript(
        framed_energy,
        directory / "energy.onnx",
        [FLOAT["batch", "samples"], INT64[()]],
        [FLOAT["batch", "frames"]],
    )
    return Exported(directory, features, logistic, forest)


def inspect_json(cli: Cli, path: Path, *args: str) -> dict[str, Any]:
    result = cli("inspect", str(path), "--json", *args)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_scikit_learn_pipelines_inspect(exported: Exported, cli: Cli) -> None:
    data = inspect_json(cli, exported.path("forest"))
    assert data["producer"].startswith("skl2onnx")
    assert "ai.onnx.ml::TreeEnsembleClassifier" in data["opTypes"] or "ai.onnx.ml::TreeEnsemble" in " ".join(
        data["opTypes"]
    )
    assert data["signature"]["inputs"] == [{"name": "features", "dtype": "FLOAT", "shape": [-1, 4]}]
    # skl2onnx names no dims: no batching by default, but it may be assumed when asked.
    assert data["batching"]["batched"] is False and "engine.maxBatchSize" in data["batching"]["reason"]
    # TensorRT has no ai.onnx.ml kernels; only its parser (and its plugins) can tell, so it is a warning.
    tensorrt = cli("inspect", str(exported.path("forest")), "--backend", "tensorrt")
    assert tensorrt.exit_code == 0, tensorrt.output
    assert "warning: operator(s) ai.onnx.ml::" in tensorrt.stderr and "plugin" in tensorrt.stderr


def test_zipmap_output_is_named_with_the_way_out(exported: Exported, cli: Cli) -> None:
    result = cli("inspect", str(exported.path("forest_zipmap")))
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "error: UnsupportedTensorType: forest_zipmap.onnx: output 'output_probability'"
    )
    assert "a ZipMap of class probabilities: export without it" in result.stderr


def test_onnxscript_recurrent_step_inspects(exported: Exported, cli: Cli) -> None:
    data = inspect_json(cli, exported.path("recurrent"))
    inputs = data["signature"]["inputs"]
    assert inputs[1] == {
        "name": "state",
        "dtype": "FLOAT",
        "shape": [2, -1, 16],
        "dimNames": [None, "batch", None],
    }
    assert inputs[2] == {"name": "temperature", "dtype": "FLOAT", "shape": []}
    assert "Constant" in data["opTypes"]
    assert (
        data["batching"]["batched"] is False
        and "'state' has a fixed first dimension (2)" in data["batching"]["reason"]
    )
    refused = cli(
        "convert", str(exported.path("recurrent")), "--backend", "onnxruntime", "--max-batch-size", "4",
        "--repository", str(exported.directory / "nowhere"), "-q",
    )  # fmt: skip
    assert refused.exit_code == 1 and json.loads(refused.stdout)["error"]["reason"] == "BatchingImpossible"


def convert(cli: Cli, path: Path, repository: Path, *args: str) -> dict[str, Any]:
    result = cli(
        "convert", str(path), "--backend", "onnxruntime", "--repository", str(repository), "-q", *args
    )
    line: dict[str, Any] = json.loads(result.stdout)
    assert (result.exit_code == 0) is line["ok"], result.output
    return line


def test_a_sample_rate_must_be_given_and_the_audio_length_is_searched(
    exported: Exported, cli: Cli, tmp_path: Path
) -> None:
    path = exported.path("energy")
    # A random sample rate (0 to 7) makes a hop of 0: no size helps, and the refusal names the input.
    failed = convert(cli, path, tmp_path / "a")
    assert failed["error"]["reason"] == "ParityInputsRequired"
    message = failed["error"]["message"]
    assert "audio, sample_rate generated" in message and "'sample_rate' (a scalar INT64)" in message
    # Given the rate, the audio length is searched: 8 samples are shorter than the model's window.
    only_rate = convert(cli, path, tmp_path / "b", "--parity-value", "sample_rate=16000")
    assert only_rate["ok"] and only_rate["parity"]["inputs"] == "searched", only_rate
    assert only_rate["parity"]["passed"] and only_rate["parity"]["shapes"][0].startswith("audio: [1, ")
    # A length the user fixed too short is the user's to fix.
    short = convert(
        cli, path, tmp_path / "d", "--parity-value", "sample_rate=16000", "--parity-shape", "audio=1x8"
    )
    assert (
        short["error"]["reason"] == "ParityInputsRequired"
        and "(audio generated)" in short["error"]["message"]
    )
    given = convert(
        cli, path, tmp_path / "c", "--parity-value", "sample_rate=16000", "--parity-shape", "audio=2x8000"
    )
    assert given["ok"] and given["parity"]["passed"] and given["parity"]["check"] == "servedConfig"


@pytest.fixture(scope="module")
def served(exported: Exported, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    from typer.testing import CliRunner

    from nimify.cli import _register_commands, app

    _register_commands()
    runner = CliRunner()
    repository = tmp_path_factory.mktemp("served") / "repository"

    def run(*args: str) -> None:
        result = runner.invoke(
            app, ["convert", *args, "--backend", "onnxruntime", "--repository", str(repository), "-q"]
        )
        assert result.exit_code == 0, result.output

    # No dim is named, so Triton batches these only because maxBatchSize asks; the conversion's check compares
    # batched requests with each request alone before publishing.
    run(str(exported.path("logistic")), "--max-batch-size", "8")
    run(str(exported.path("forest")), "--max-batch-size", "8")
    run(str(exported.path("recurrent")))
    run(str(exported.path("energy")), "--parity-value", "sample_rate=16000", "--parity-shape", "audio=1x4000")
    with nimify_serve(str(repository)) as server:
        yield server.endpoints


@pytest.mark.triton
def test_served_scikit_learn_pipelines_match_scikit_learn(exported: Exported, served: dict[str, str]) -> None:
    http = served["http"]
    batches = [
        exported.features[start : start + size] for start, size in ((0, 1), (1, 3), (4, 5), (9, 8), (17, 2))
    ]
    for name, pipeline in (("logistic", exported.logistic), ("forest", exported.forest)):
        # Sent at once, so Triton's dynamic batcher puts several requests into one batch.
        with ThreadPoolExecutor(max_workers=len(batches)) as pool:
            answers = list(
                pool.map(
                    infer_http,
                    [http] * len(batches),
                    [name] * len(batches),
                    [{"features": rows} for rows in batches],
                )
            )
        for rows, got in zip(batches, answers, strict=True):
            # A [batch] output travels as [batch, 1] (config dims [1], reshaped to the model's []).
            np.testing.assert_array_equal(got["label"], pipeline.predict(rows).reshape(-1, 1))
            np.testing.assert_allclose(
                got["probabilities"], pipeline.predict_proba(rows), rtol=1e-4, atol=1e-5
            )


@pytest.mark.triton
def test_served_recurrent_step_matches_numpy(exported: Exported, served: dict[str, str]) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 8)).astype(np.float32)
    state = rng.standard_normal((2, 3, 16)).astype(np.float32)
    got = infer_http(
        served["http"], "recurrent", {"x": x, "state": state, "temperature": np.array([0.5], np.float32)}
    )
    new_state = np.tanh((x @ WEIGHTS + state) * 0.5)
    np.testing.assert_allclose(got["new_state"], new_state, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["y"], new_state.mean(axis=0), rtol=1e-5, atol=1e-6)


@pytest.mark.triton
def test_served_audio_model_matches_onnx_runtime(exported: Exported, served: dict[str, str]) -> None:
    audio = np.sin(np.arange(2 * 16000, dtype=np.float32) / 9).reshape(2, 16000)
    got = infer_http(served["http"], "energy", {"audio": audio, "sample_rate": np.array([16000], np.int64)})
    want = OnnxRuntimeModel(exported.path("energy")).run(
        {"audio": audio, "sample_rate": np.array(16000, np.int64)}
    )
    np.testing.assert_allclose(got["power"], want["power"], rtol=1e-5)
