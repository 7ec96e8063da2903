"""Candidates for a canary, built from the sample classifier (`build_mlp`: `input` [batch, 16] → `logits`
[batch, 4]): each has its signature and answers as the test needs them, through a branch of real operators
that ONNX Runtime runs (nothing is mocked). Weights seeded: each builder returns the same bytes."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import ModelProto, TensorProto, helper, numpy_helper

from nimify.engine.reference import OnnxRuntimeModel
from nimify.model.samples import build_mlp, write_model

#: The inputs an erroring candidate fails on: any element above this (the answer gate's generated inputs
#: are standard normal and never reach it).
FAILING_ABOVE = 100.0


def _rewired(
    extra_nodes: list[onnx.NodeProto], extra_weights: list[onnx.TensorProto], term: str
) -> ModelProto:
    """build_mlp's graph with its logits renamed `raw`, and `logits = raw + term` (term from extra nodes)."""
    model = build_mlp()
    graph = model.graph
    for node in graph.node:
        node.output[:] = ["raw" if out == "logits" else out for out in node.output]
    graph.node.extend([*extra_nodes, helper.make_node("Add", ["raw", term], ["logits"])])
    graph.initializer.extend(extra_weights)
    onnx.checker.check_model(model)
    return model


def biased(bias: list[float]) -> ModelProto:
    """The classifier with `bias` added to its logits: moves some rows' top-1 class (a retrained model)."""
    weight = numpy_helper.from_array(np.asarray(bias, dtype=np.float32), "shift")
    return _rewired([], [weight], "shift")


def slow(rounds: int = 2400, width: int = 1024) -> ModelProto:
    """The same answers, many times the latency: `rounds` square matmuls on the input, multiplied by zero
    (bounded by Tanh, so the zero stays a zero) and added to the logits."""
    rng = np.random.default_rng(7)
    widen = numpy_helper.from_array(rng.standard_normal((16, width)).astype(np.float32), "widen")
    square = numpy_helper.from_array(
        (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), "square"
    )
    zero = numpy_helper.from_array(np.zeros((1,), dtype=np.float32), "zero")
    nodes = [helper.make_node("MatMul", ["input", "widen"], ["busy0"])]
    for index in range(rounds):
        nodes += [
            helper.make_node("MatMul", [f"busy{index}", "square"], [f"mixed{index}"]),
            helper.make_node("Tanh", [f"mixed{index}"], [f"busy{index + 1}"]),
        ]
    nodes += [
        helper.make_node("ReduceSum", [f"busy{rounds}"], ["busy_sum"], keepdims=1),
        helper.make_node("Mul", ["busy_sum", "zero"], ["nothing"]),
    ]
    return _rewired(nodes, [widen, square, zero], "nothing")


def erroring() -> ModelProto:
    """The same answers, except that a request with an element above FAILING_ABOVE fails inside ONNX Runtime
    (a Gather out of its data's bounds)."""
    weights = [
        numpy_helper.from_array(np.array(FAILING_ABOVE, dtype=np.float32), "limit"),
        numpy_helper.from_array(np.array(1000, dtype=np.int64), "far"),
        numpy_helper.from_array(np.array([0.0], dtype=np.float32), "table"),
    ]
    nodes = [
        helper.make_node("ReduceMax", ["input"], ["largest"], keepdims=0),
        helper.make_node("Greater", ["largest", "limit"], ["beyond"]),
        helper.make_node("Cast", ["beyond"], ["beyond_int"], to=TensorProto.INT64),
        helper.make_node("Mul", ["beyond_int", "far"], ["index"]),
        helper.make_node("Gather", ["table", "index"], ["picked"], axis=0),
    ]
    return _rewired(nodes, weights, "picked")


def top1_agreement(model: ModelProto, rows: int = 4096, seed: int = 11) -> float:
    """The share of standard normal rows on which `model` and build_mlp's classifier pick the same class
    (the answer gate's generated inputs are standard normal too)."""
    import tempfile
    from pathlib import Path

    inputs = np.random.default_rng(seed).standard_normal((rows, 16)).astype(np.float32)
    with tempfile.TemporaryDirectory() as directory:
        base = OnnxRuntimeModel(write_model(build_mlp(), Path(directory) / "base.onnx"))
        other = OnnxRuntimeModel(write_model(model, Path(directory) / "other.onnx"))
        a = base.run({"input": inputs})["logits"].argmax(axis=-1)
        b = other.run({"input": inputs})["logits"].argmax(axis=-1)
    return float(np.mean(a == b))


def agreeing(target: float) -> tuple[ModelProto, float]:
    """A biased classifier whose top-1 agreement with build_mlp's is near `target` (searched over the bias
    on class 0), and the agreement measured."""
    low, high = 0.0, 50.0  # agreement falls as the bias grows
    best = biased([0.0, 0.0, 0.0, 0.0]), 1.0
    for _ in range(30):
        middle = (low + high) / 2
        model = biased([middle, 0.0, 0.0, 0.0])
        measured = top1_agreement(model)
        best = (model, measured) if abs(measured - target) < abs(best[1] - target) else best
        if measured > target:
            low = middle
        else:
            high = middle
    return best
