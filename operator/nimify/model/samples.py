"""Small ONNX models built in code, one per signature shape that matters to batching and config rendering.

Tests of every layer (toolkit, renderers, operator, end to end) build their models here, and so can a user who
wants to try `nimify serve` without a model at hand. Weights are seeded, so each builder returns the same
bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import ModelProto, TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # old enough for every ONNX Runtime and TensorRT parser we support


def _weights(name: str, shape: tuple[int, ...], seed: int) -> onnx.TensorProto:
    values = np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 0.5
    return numpy_helper.from_array(values, name)


def _model(graph: onnx.GraphProto, opset: int = OPSET) -> ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="nimify-samples",
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(model)
    return model


def build_mlp(features: int = 16, hidden: int = 32, classes: int = 4) -> ModelProto:
    """`input` FLOAT [batch, 16] → `logits` FLOAT [batch, 4]: the plain batched case."""
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["input", "w1", "b1"], ["hidden"]),
            helper.make_node("Relu", ["hidden"], ["activated"]),
            helper.make_node("Gemm", ["activated", "w2", "b2"], ["logits"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        [
            _weights("w1", (features, hidden), 1),
            _weights("b1", (hidden,), 2),
            _weights("w2", (hidden, classes), 3),
            _weights("b2", (classes,), 4),
        ],
    )
    return _model(graph)


def build_cnn(channels: int = 3, filters: int = 4) -> ModelProto:
    """`image` FLOAT [batch, 3, height, width] → `features` FLOAT [batch, 4]: dynamic spatial dims."""
    graph = helper.make_graph(
        [
            helper.make_node(
                "Conv", ["image", "kernel", "bias"], ["conv"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]
            ),
            helper.make_node("Relu", ["conv"], ["activated"]),
            helper.make_node("GlobalAveragePool", ["activated"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
        ],
        "cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", channels, "height", "width"])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", filters])],
        [_weights("kernel", (filters, channels, 3, 3), 5), _weights("bias", (filters,), 6)],
    )
    return _model(graph)


def build_int_bool() -> ModelProto:
    """`token_ids` INT64 and `mask` BOOL, both [batch, seq] → `total` FLOAT [batch] (masked sum of ids)."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["mask"], ["mask_int"], to=TensorProto.INT64),
            helper.make_node("Mul", ["token_ids", "mask_int"], ["kept"]),
            helper.make_node("ReduceSum", ["kept", "axes"], ["summed"], keepdims=0),
            helper.make_node("Cast", ["summed"], ["total"], to=TensorProto.FLOAT),
        ],
        "int_bool",
        [
            helper.make_tensor_value_info("token_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch"])],
        [numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )
    return _model(graph)


def build_multi_output(features: int = 8) -> ModelProto:
    """`x` [batch, 8] → `total` [batch, 1] and `normalized` [batch, 8] FLOAT, `argmax` INT64 [batch, 1]."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSumSquare", ["x"], ["squares"], axes=[1], keepdims=1),
            helper.make_node("Sqrt", ["squares"], ["norm"]),
            helper.make_node("Add", ["norm", "epsilon"], ["safe_norm"]),
            helper.make_node("Div", ["x", "safe_norm"], ["normalized"]),
            helper.make_node("ReduceSum", ["x", "axes"], ["total"], keepdims=1),
            helper.make_node("ArgMax", ["x"], ["argmax"], axis=1, keepdims=1),
        ],
        "multi_output",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [
            helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info("normalized", TensorProto.FLOAT, ["batch", features]),
            helper.make_tensor_value_info("argmax", TensorProto.INT64, ["batch", 1]),
        ],
        [
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
            numpy_helper.from_array(np.array(1e-6, dtype=np.float32), "epsilon"),
        ],
    )
    return _model(graph)


def build_recurrent(features: int = 8, hidden: int = 16, layers: int = 2) -> ModelProto:
    """`x` [batch, 8], `state` [2, batch, 16] and a rank-0 `temperature` → `y` [batch, 16], `new_state`.

    The state's batch is dimension 1 and the temperature has no dimensions: Triton must not batch this model.
    """
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["projected"]),
            helper.make_node("Add", ["projected", "state"], ["mixed"]),
            helper.make_node("Mul", ["mixed", "temperature"], ["scaled"]),
            helper.make_node("Tanh", ["scaled"], ["new_state"]),
            helper.make_node("ReduceMean", ["new_state"], ["y"], axes=[0], keepdims=0),
        ],
        "recurrent",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [layers, "batch", hidden]),
            helper.make_tensor_value_info("temperature", TensorProto.FLOAT, []),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", hidden]),
            helper.make_tensor_value_info("new_state", TensorProto.FLOAT, [layers, "batch", hidden]),
        ],
        [_weights("w", (features, hidden), 7)],
    )
    return _model(graph)


def build_spectrogram(window: int = 400, hop: int = 160) -> ModelProto:
    """`audio` FLOAT [batch, samples] → `spectrum` FLOAT [batch, frames, 201, 2]: reflect-padded STFT.

    Not in SAMPLES on purpose: a reflect pad of half a window needs more samples than a random parity input
    has (8), so converting it needs parity inputs (`engine.parity.inputs` or a generated shape).
    """
    half = window // 2
    hann = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / window)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Pad", ["audio", "pads"], ["padded"], mode="reflect"),
            helper.make_node("Unsqueeze", ["padded", "last"], ["signal"]),
            helper.make_node("STFT", ["signal", "hop", "window"], ["spectrum"], onesided=1),
        ],
        "spectrogram",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "samples"])],
        [helper.make_tensor_value_info("spectrum", TensorProto.FLOAT, ["batch", "frames", half + 1, 2])],
        [
            numpy_helper.from_array(np.array([0, half, 0, half], dtype=np.int64), "pads"),
            numpy_helper.from_array(np.array([-1], dtype=np.int64), "last"),
            numpy_helper.from_array(np.array(hop, dtype=np.int64), "hop"),
            numpy_helper.from_array(hann, "window"),
        ],
    )
    return _model(graph)


SAMPLES: dict[str, Callable[[], ModelProto]] = {
    "mlp": build_mlp,
    "cnn": build_cnn,
    "int_bool": build_int_bool,
    "multi_output": build_multi_output,
    "recurrent": build_recurrent,
}


def write_model(model: ModelProto, path: Path, *, external_data: str | None = None) -> Path:
    """Save a model; with `external_data`, every initializer goes to that file next to it (even tiny ones)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if external_data is None:
        onnx.save_model(model, str(path))
    else:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=external_data,
            size_threshold=0,
        )
    return path


def write_sample(name: str, directory: Path, *, external_data: bool = False) -> Path:
    """Write sample `name` (one of SAMPLES) as `<directory>/<name>.onnx`, weights in `<name>.weights` if
    asked."""
    model = SAMPLES[name]()
    return write_model(
        model, directory / f"{name}.onnx", external_data=f"{name}.weights" if external_data else None
    )
