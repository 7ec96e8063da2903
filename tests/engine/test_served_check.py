"""The onnxruntime backend's check: config.pbtxt loaded against the model and requests fed as Triton feeds
them, on real ONNX Runtime sessions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnxscript import FLOAT, script
from onnxscript import opset18 as op

from nimify.api import EngineSpec, TritonSpec
from nimify.engine.convert import ConvertRequest, run_conversion
from nimify.engine.result import ConversionResult
from nimify.engine.served_check import check_config_against_model, serve_requests
from nimify.model.errors import ModelError
from nimify.model.inspection import inspect_model
from nimify.model.onnxruntime_session import open_session
from nimify.model.samples import build_mlp, write_model, write_sample
from nimify.triton.config_reader import read_model_config
from nimify.triton.model_config import render_model_config
from tests.real_models import MAGIKA, OCR_DETECTOR, OCR_RECOGNISER, real_model


def convert(tmp_path: Path, model: Path, **engine: object) -> ConversionResult:
    request = ConvertRequest(
        uri=str(model),
        name="model",
        repository=tmp_path / "repository",
        work_dir=tmp_path / "work",
        backend="onnxruntime",
        gpus=0,
        engine=EngineSpec.model_validate({"backend": "onnxruntime", **engine}),
    )
    return run_conversion(request)


def config_for(path: Path, max_batch_size: int) -> str:
    return render_model_config(
        "m",
        inspect_model(path).signature,
        "onnxruntime_onnx",
        max_batch_size=max_batch_size,
        triton=TritonSpec(),
        gpus=0,
    )


def batch_mixing_model() -> onnx.ModelProto:
    """[batch, 4] → x - mean over the batch: named dims say "batch", yet each row depends on the others."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["x"], ["mean"], axes=[0], keepdims=1),
            helper.make_node("Sub", ["x", "mean"], ["centered"]),
        ],
        "mixing",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("centered", TensorProto.FLOAT, ["batch", 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_model_that_mixes_the_batch_fails_the_served_check(tmp_path: Path) -> None:
    model = write_model(batch_mixing_model(), tmp_path / "mixing.onnx")
    result = convert(tmp_path, model)
    assert result.error is not None and result.error.reason == "ParityFailed"
    assert "mixes the batch" in result.error.message and "maxBatchSize 0" in result.error.message
    assert not (tmp_path / "repository" / "model").exists()
    # Served without batching, every request runs alone, as the reference does.
    assert convert(tmp_path / "unbatched", model, maxBatchSize=0).ok


def test_declared_output_shape_the_model_does_not_produce(tmp_path: Path) -> None:
    broken = build_mlp()
    broken.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 5  # the graph computes 4
    result = convert(tmp_path, write_model(broken, tmp_path / "wrong.onnx"))
    assert result.error is not None and result.error.reason == "ServingConfigMismatch"
    assert "output 'logits': dimension 1 is 5 in the config, the model fixes it at 4" in result.error.message


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda text: text.replace("TYPE_FP32", "TYPE_FP16", 1), "is FLOAT16, the model's is tensor(float)"),
        (lambda text: text.replace("dims: [ 16 ]", "dims: [ 15 ]"), "dimension 1 is 15 in the config"),
        (lambda text: text.replace("dims: [ 16 ]", "dims: [ 16, 1 ]"), "has rank 3"),
        (lambda text: text.replace('name: "input"', 'name: "inputs"'), "lacks the model's input(s) input"),
        (lambda text: text.replace('name: "logits"', 'name: "scores"'), "declares output 'scores'"),
        (lambda text: text.replace("dims: [ 16 ]", "dims: [ -1 ]"), "the model fixes it at 16"),
    ],
)
def test_load_time_mismatches(tmp_path: Path, edit: Callable[[str], str], needle: str) -> None:
    path = write_sample("mlp", tmp_path)
    config = read_model_config(edit(config_for(path, 8)))
    with pytest.raises(ModelError) as error:
        check_config_against_model(config, open_session(path))
    assert error.value.reason == "ServingConfigMismatch"
    assert needle in error.value.message


def test_batching_needs_a_dynamic_first_dim(tmp_path: Path) -> None:
    path = write_sample("recurrent", tmp_path)  # state is [2, batch, 16]
    text = config_for(path, 0).replace("max_batch_size: 0", "max_batch_size: 4")
    text = text.replace("dims: [ -1, 8 ]", "dims: [ 8 ]").replace("dims: [ 2, -1, 16 ]", "dims: [ -1, 16 ]")
    with pytest.raises(ModelError) as error:
        check_config_against_model(read_model_config(text), open_session(path))
    assert "fixes dimension 0 at 2" in error.value.message


def test_requests_are_merged_up_to_max_batch_size(tmp_path: Path) -> None:
    path = write_sample("int_bool", tmp_path)  # its [batch] output travels as dims [1] with reshape []
    config = read_model_config(config_for(path, 4))
    session = open_session(path)
    check_config_against_model(config, session)
    rng = np.random.default_rng(0)
    requests = [
        {"token_ids": rng.integers(0, 9, (b, 3)), "mask": rng.integers(0, 2, (b, 3)).astype(bool)}
        for b in (1, 3, 2, 2, 4)
    ]
    calls: list[int] = []
    run = session.run

    class Counting:
        def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            calls.append(next(iter(feeds.values())).shape[0])
            return run(names, feeds)

    served = serve_requests(config, Counting(), requests)
    assert calls == [4, 4, 4]  # 1+3, 2+2, 4: never beyond max_batch_size
    for request, got in zip(requests, served, strict=True):
        (want,) = session.run(["total"], request)
        np.testing.assert_array_equal(got["total"], want)


def test_a_scalar_travels_as_one_element(tmp_path: Path) -> None:
    path = write_sample("recurrent", tmp_path)
    config = read_model_config(config_for(path, 0))
    assert config.inputs[2].dims == (1,)  # temperature: rank 0 in the model
    session = open_session(path)
    check_config_against_model(config, session)
    request = {
        "x": np.ones((3, 8), np.float32),
        "state": np.zeros((2, 3, 16), np.float32),
        "temperature": np.array(0.5, np.float32),
    }
    (got,) = serve_requests(config, session, [request])
    assert got["y"].shape == (3, 16)


def test_a_request_beyond_max_batch_size_is_refused(tmp_path: Path) -> None:
    path = write_sample("mlp", tmp_path)
    with pytest.raises(ModelError) as error:
        serve_requests(
            read_model_config(config_for(path, 2)),
            open_session(path),
            [{"input": np.zeros((3, 16), np.float32)}],
        )
    assert error.value.reason == "InvalidParityInputs" and "beyond max_batch_size 2" in error.value.message


@pytest.mark.parametrize("model", [MAGIKA, OCR_DETECTOR, OCR_RECOGNISER])
def test_exports_naming_each_batch_dim_apart_batch_once_the_runtime_agrees(
    tmp_path: Path, model: str
) -> None:
    """tf2onnx (magika) and paddle2onnx (RapidOCR) name each tensor's first dim apart (unk__214 / unk__215,
    DynamicDimension.0 / .3): names cannot tie them, so batching is assumed when asked, and the served check
    runs batched requests against each request alone before anything is published."""
    result = convert(tmp_path, real_model(model), maxBatchSize=4)
    assert result.ok, result.error
    assert result.batching is not None and result.batching.batched and result.batching.assumed
    assert result.parity is not None and result.parity.passed and result.max_batch_size == 4


@script()  # type: ignore[untyped-decorator]
def centred(x: Any) -> Any:  # typed at export, below
    return op.Sub(x, op.ReduceMean(x, op.Constant(value_ints=[0]), keepdims=1))


def test_a_model_naming_its_batch_dims_apart_that_mixes_the_batch_is_refused(tmp_path: Path) -> None:
    """Exported with onnxscript, each first dim named as tf2onnx names them; each row depends on the rest."""
    model = tmp_path / "mixing.onnx"
    proto = centred.to_model_proto(input_types=[FLOAT["unk__214", 4]], output_types=[FLOAT["unk__215", 4]])
    onnx.save(proto, str(model))
    result = convert(tmp_path, model, maxBatchSize=4)
    assert result.error is not None and result.error.reason == "ParityFailed"
    assert "mixes the batch" in result.error.message and "maxBatchSize 0" in result.error.message
