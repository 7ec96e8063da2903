"""The ONNX backend test corpus of the installed `onnx` wheel, through the CLI as a user would run it.

Every model goes through `nimify inspect`, which must accept exactly what ONNX Runtime loads and refuse the
rest with ONNX Runtime's own reason. A representative subset (every light_* model-zoo network and PyTorch
exports of every operator family) goes through `nimify convert --backend onnxruntime` into one repository,
which one real `nimify serve` (the tritonserver of the nvidia-pytriton wheel) serves; Triton's answers must
equal the corpus's recorded outputs at the corpus's own tolerance.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime
import pytest
import tritonclient.http as httpclient

from nimify.model.onnxruntime_session import open_session, runtime_message
from tests.cli.conftest import Cli
from tests.cli.serving import nimify_serve
from tests.onnx_corpus import CorpusModel, corpus_models, corpus_root

SERVE_READY_SECONDS = 600  # dozens of python-backend models on two cores


@functools.cache
def ort_refusal(path: Path) -> str | None:
    """ONNX Runtime's message when it cannot load the model (CPU provider, nothing run), else None."""
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4
    try:
        onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ORT's own pybind exception types
        return runtime_message(error)
    return None


def report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n[onnx corpus] {text}")


def test_inspect_accepts_every_model_onnx_runtime_loads(cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    models = corpus_models()
    assert len(models) >= 100, f"the corpus at {corpus_root()} looks incomplete"
    loaded = accepted = refused = 0
    wrong: list[str] = []
    for model in models:
        refusal = ort_refusal(model.path)
        result = cli("inspect", str(model.path), "--json")
        if refusal is None:
            loaded += 1
            if result.exit_code == 0:
                accepted += 1
            else:
                wrong.append(f"{model.label}: ONNX Runtime loads it, inspect says {result.stderr.strip()}")
            continue
        prefix = "error: OnnxRuntimeLoadFailed: ONNX Runtime cannot load "
        if result.exit_code == 1 and result.stderr.startswith(prefix) and refusal[:300] in result.stderr:
            refused += 1
        else:
            wrong.append(
                f"{model.label}: ONNX Runtime refuses it ({refusal[:200]}), inspect: {result.output}"
            )
    report(
        capsys,
        f"{len(models)} models: ONNX Runtime {onnxruntime.__version__} loads {loaded}; nimify inspect "
        f"accepts {accepted} and refuses {refused}, each with ONNX Runtime's reason",
    )
    assert wrong == []
    assert accepted == loaded and refused == len(models) - loaded


PYTORCH_SERVED = 24  # PyTorch exports served: every python-backend model is a process of its own


def _dtypes(model: CorpusModel) -> tuple[int, ...]:
    graph = onnx.load(str(model.path), load_external_data=False).graph
    stored = {t.name for t in graph.initializer}
    return tuple(sorted({v.type.tensor_type.elem_type for v in graph.input if v.name not in stored}))


def served_subset(models: list[CorpusModel]) -> list[CorpusModel]:
    """Every light model; PyTorch exports at an even stride across both folders; and the first model of every
    other input type (INT64 token ids, STRING, DOUBLE), so each path through Triton is served."""
    loadable = [m for m in models if ort_refusal(m.path) is None]
    chosen = [m for m in loadable if m.kind == "light"]
    pytorch = [m for m in loadable if m.kind.startswith("pytorch")]
    count = min(PYTORCH_SERVED, len(pytorch))
    chosen += [pytorch[round(i * (len(pytorch) - 1) / max(count - 1, 1))] for i in range(count)]
    covered = {_dtypes(m) for m in chosen}
    for model in loadable:
        if model not in chosen and (types := _dtypes(model)) not in covered:
            covered.add(types)
            chosen.append(model)
    return chosen


def _wire(array: npt.NDArray[Any], dims: list[int]) -> npt.NDArray[Any]:
    """The array as Triton takes it: a scalar as [1] (config dims [1])."""
    return array.reshape(dims) if array.ndim == 0 and dims == [1] else array


def _infer(client: httpclient.InferenceServerClient, model: str, inputs: list[npt.NDArray[Any]]) -> list[Any]:
    metadata = client.get_model_metadata(model)
    config = client.get_model_config(model)
    feeds: list[httpclient.InferInput] = []
    for spec, declared, array in zip(metadata["inputs"], config["input"], inputs, strict=True):
        if spec["datatype"] == "BYTES":
            array = np.array([v if isinstance(v, bytes) else str(v).encode() for v in array.ravel()], object)
            array = array.reshape(np.shape(inputs[len(feeds)]))
        wire = _wire(np.asarray(array), [int(d) for d in declared["dims"]])
        tensor = httpclient.InferInput(spec["name"], list(wire.shape), spec["datatype"])
        tensor.set_data_from_numpy(wire, binary_data=True)
        feeds.append(tensor)
    result = client.infer(model, feeds)
    return [result.as_numpy(output["name"]) for output in metadata["outputs"]]


def _compare(model: CorpusModel, got: Any, want: npt.NDArray[Any]) -> str | None:
    if want.dtype == object:
        text = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else v, otypes=[object])(got)
        return None if np.array_equal(text.reshape(want.shape), want) else "strings differ"
    if got.size == want.size and got.shape != want.shape and want.ndim == 0:
        got = got.reshape(want.shape)  # a scalar output travels as [1]
    if got.shape != want.shape or got.dtype != want.dtype:
        return f"got {got.dtype} {list(got.shape)}, expected {want.dtype} {list(want.shape)}"
    if not np.allclose(got, want, rtol=model.rtol, atol=model.atol, equal_nan=True):
        worst = float(np.max(np.abs(got.astype(np.float64) - want)))
        return f"max |difference| {worst:.3g} beyond rtol {model.rtol} atol {model.atol}"
    return None


@pytest.mark.triton
def test_served_subset_matches_the_recorded_outputs(
    tmp_path: Path, cli: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    subset = served_subset(corpus_models())
    pytorch = [m for m in subset if m.kind.startswith("pytorch")]
    light = [m for m in subset if m.kind == "light"]
    assert len(light) >= 8 and len(pytorch) >= 20
    repository = tmp_path / "repository"
    started = time.monotonic()
    for model in subset:
        args = ["convert", str(model.path), "--backend", "onnxruntime", "--name", model.serving_name]
        args += ["--repository", str(repository), "--samples", "1", "-q"]
        if model.kind != "light":
            # The conversion's own check runs on the corpus's recorded inputs: they mean something.
            inputs, _ = model.data_sets()[0]
            names = [arg.name for arg in open_session(model.path).get_inputs()]
            parity = tmp_path / "parity" / f"{model.serving_name}.npz"
            parity.parent.mkdir(exist_ok=True)
            # Strings as NumPy string arrays: parity files are read without pickles.
            arrays = [a.astype(str) if a.dtype == object else a for a in inputs]
            np.savez(parity, **dict(zip(names, arrays, strict=True)))
            args += ["--parity-inputs", str(parity)]
        result = cli(*args)
        assert result.exit_code == 0, f"{model.label}: {result.output}"
    converted = time.monotonic() - started

    compared, failures = 0, []
    with nimify_serve(str(repository), timeout=SERVE_READY_SECONDS) as served:
        ready = time.monotonic() - started - converted
        assert len(served.endpoints["models"].split(", ")) == len(subset)
        address = served.endpoints["http"].removeprefix("http://")
        for model in subset:
            # A client per model: no pooled connection outlives the requests it was opened for.
            client = httpclient.InferenceServerClient(address, network_timeout=300)
            try:
                for inputs, expected in model.data_sets():
                    try:
                        outputs = _infer(client, model.serving_name, inputs)
                    except Exception as error:
                        alive = served.process.poll() is None
                        pytest.fail(
                            f"{model.label}: {type(error).__name__}: {error} (nimify serve "
                            f"{'running' if alive else f'exited {served.process.returncode}'}):\n"
                            + "".join(served.stderr[-40:])
                        )
                    for index, (got, want) in enumerate(zip(outputs, expected, strict=True)):
                        compared += 1
                        if (problem := _compare(model, got, want)) is not None:
                            failures.append(f"{model.label} output {index}: {problem}")
            finally:
                client.close()
    report(
        capsys,
        f"served {len(subset)} models ({len(light)} light, {len(pytorch)} PyTorch exports, "
        f"{len(subset) - len(light) - len(pytorch)} others) "
        f"from one tritonserver; compared {compared} outputs with the recorded ones, {len(failures)} differ "
        f"(convert {converted:.0f}s, serve ready {ready:.0f}s)",
    )
    assert failures == []
