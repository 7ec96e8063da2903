"""The parity search on real models from real exporters: sizes ONNX Runtime accepts are found where the
default of 8 is refused, recorded as searched, and what a size search cannot find is named."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from nimify.engine import parity_search
from nimify.engine.parity_search import ReferenceSet, reference_set
from nimify.engine.reference import OnnxRuntimeModel
from nimify.model.errors import ModelError
from nimify.model.inspection import inspect_model
from tests.real_models import MAGIKA, OCR_DETECTOR, SILERO_VAD_NAMED, SILERO_VAD_UNNAMED, real_model


def references(relative: str, clock: Callable[[], float] = time.monotonic) -> ReferenceSet:
    path = real_model(relative)
    signature = inspect_model(path).signature
    return reference_set(OnnxRuntimeModel(path), signature, 8, max_batch_size=0, advice="ADVICE", clock=clock)


def test_a_detector_that_needs_multiples_of_32_is_searched_to_32() -> None:
    found = references(OCR_DETECTOR)
    assert found.origin == "searched"
    assert {feeds["x"].shape[2:] for feeds in found.inputs} == {(32, 32)}
    assert found.shapes[0] == "x: [1, 3, 32, 32]"
    assert len(found.outputs) == 8


def test_an_stft_front_end_gets_a_window_it_can_pad() -> None:
    found = references(SILERO_VAD_NAMED)
    assert found.origin == "searched"
    lengths = {feeds["input"].shape[1] for feeds in found.inputs}
    assert len(lengths) == 1 and lengths.pop() > 64, found.shapes
    # The state's dim named 'batch' follows the input's batch in every sample.
    assert all(feeds["state"].shape[1] == feeds["input"].shape[0] for feeds in found.inputs)


def test_a_model_that_runs_at_the_default_is_not_searched() -> None:
    found = references(MAGIKA)
    assert (found.origin, found.shapes) == ("generated", [])


def test_what_no_size_fixes_is_named() -> None:
    # Nothing ties the state's unnamed dim to the batch, and 'sr' is a rate: the user must say.
    with pytest.raises(ModelError) as refused:
        references(SILERO_VAD_UNNAMED)
    assert refused.value.reason == "ParityInputsRequired"
    message = refused.value.message
    assert "sizes 8 to 4096 of the dynamic dims and integer inputs of ones and zeros" in message
    assert "ran none" in message
    assert "'sr' (a scalar INT64)" in message and message.endswith("ADVICE")


def test_the_search_keeps_to_its_time(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter(range(0, 10_000, 100))
    with pytest.raises(ModelError) as refused:
        references(OCR_DETECTOR, clock=lambda: float(next(ticks)))
    assert "tries" not in refused.value.message, "past SEARCH_SECONDS at once: nothing tried"
    monkeypatch.setattr(parity_search, "MAX_ELEMENTS", 3 * 16 * 16)
    with pytest.raises(ModelError):
        references(OCR_DETECTOR)  # 32x32 is beyond the element budget


def test_integer_inputs_are_tried_as_ones_and_zeros_where_random_ids_are_refused() -> None:
    # The ONNX corpus's Embedding (a torch export): random ids 0 to 7 overrun its table; ones do not.
    from tests.onnx_corpus import corpus_models

    (model,) = [m for m in corpus_models() if m.label == "pytorch-converted/test_Embedding"]
    signature = inspect_model(model.path).signature
    found = reference_set(OnnxRuntimeModel(model.path), signature, 4, max_batch_size=0)
    assert found.origin == "searched" and all(shape.endswith("= 1") for shape in found.shapes), found.shapes


def test_inputs_whose_answers_break_the_declared_shapes_are_not_taken() -> None:
    # Expand to a shape given as an input: ones run, but answer [1, 3, 1] where the model declares [1, 3, 3].
    from tests.onnx_corpus import corpus_models

    (model,) = [m for m in corpus_models() if m.label == "simple/test_expand_shape_model2"]
    signature = inspect_model(model.path).signature
    with pytest.raises(ModelError) as refused:
        reference_set(OnnxRuntimeModel(model.path), signature, 4, max_batch_size=0)
    assert refused.value.reason == "ParityInputsRequired"
