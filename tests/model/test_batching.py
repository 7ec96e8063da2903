"""The batching rule: one shared, named, dynamic dimension 0 across every input and output, or no batching."""

from __future__ import annotations

import pytest

from nimify.model.batching import assume_batching, decide_batching
from nimify.model.signature import Dim, Signature, TensorInfo


def signature(inputs: list[tuple[Dim, ...]], outputs: list[tuple[Dim, ...]]) -> Signature:
    return Signature(
        tuple(TensorInfo(f"in{i}", "FLOAT", dims) for i, dims in enumerate(inputs)),
        tuple(TensorInfo(f"out{i}", "FLOAT", dims) for i, dims in enumerate(outputs)),
    )


@pytest.mark.parametrize(
    ("inputs", "outputs", "batched", "reason"),
    [
        ([("N", 3)], [("N", 2)], True, "is 'N'"),
        ([("N", 3), ("N", "seq")], [("N",)], True, "is 'N'"),
        ([("N", 3)], [("M", 2)], False, "first dimensions differ"),
        ([("N", 3), ("seq", 3)], [("N",)], False, "first dimensions differ"),
        ([(2, "N", 3)], [("N", 3)], False, "fixed first dimension (2)"),
        ([("N", 3), ()], [("N", 3)], False, "input 'in1' is a scalar"),
        ([("N", 3)], [()], False, "output 'out0' is a scalar"),
        ([(None, 3)], [(None, 2)], False, "unnamed dynamic first dimension"),
        ([("N", 3)], [(None, 2)], False, "output 'out0' has an unnamed"),
        ([(1, 3)], [(1, 2)], False, "fixed first dimension (1)"),
        ([], [("N",)], False, "no inputs"),
    ],
)
def test_decide_batching(
    inputs: list[tuple[Dim, ...]], outputs: list[tuple[Dim, ...]], batched: bool, reason: str
) -> None:
    decision = decide_batching(signature(inputs, outputs))
    assert decision.batched is batched
    assert reason in decision.reason
    assert (decision.batch_dim is not None) is batched


@pytest.mark.parametrize(
    ("inputs", "outputs", "assumable"),
    [
        ([(None, 4)], [(None,), (None, 3)], True),  # skl2onnx: no dim is ever named
        ([("N", 4)], [(None, 3)], True),  # a name on one side only ties nothing apart
        # Two names: an exporter's placeholders (tf2onnx's unk__N) or two dims; the conversion checks which.
        ([("N", 4)], [("M", 3), (None,)], True),
        ([(None, 4), ()], [(None,)], False),  # a scalar has no batch dimension
        ([(None, 4)], [(2, None)], False),
    ],
)
def test_batching_may_be_assumed_only_where_nothing_rules_it_out(
    inputs: list[tuple[Dim, ...]], outputs: list[tuple[Dim, ...]], assumable: bool
) -> None:
    decision = decide_batching(signature(inputs, outputs))
    assert not decision.batched and decision.assumable is assumable
    assumed = assume_batching(decision, 4)
    assert assumed.batched is assumable and assumed.assumed is assumable
    if assumable:
        assert "assumed because engine.maxBatchSize is 4" in assumed.reason
        assert assumed.to_json()["assumed"] is True
    assert assume_batching(decision, 0) == decision
