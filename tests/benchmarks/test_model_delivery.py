"""The model delivery benchmark's table (the run itself needs the machine's one real node to itself:
hack/bench-model-delivery, never inside the suite, whose session cluster holds that node)."""

from __future__ import annotations

from benchmarks.model_delivery import BYTES_PER_HIDDEN, Timing, table

from nimify.model.samples import build_mlp


def test_the_large_model_has_the_size_asked_for() -> None:
    hidden = int(3e6 / BYTES_PER_HIDDEN)  # 3 MB
    size = build_mlp(hidden=hidden).ByteSize()
    assert 2.9e6 < size < 3.1e6


def test_the_table_has_a_row_per_measurement_and_the_build_times() -> None:
    timings = [
        Timing("small", 0.0021, "pvc://", "cold", 6.54, "EngineBuilt"),
        Timing("small", 0.0021, "oci://", "warm", 5.01, "EngineFromImage"),
    ]
    text = table(timings, {"small": 0.93})
    assert "| small | 0.0021 MB | pvc:// | cold | 6.5 s | EngineBuilt |" in text
    assert "| small | 0.0021 MB | oci:// | warm | 5.0 s | EngineFromImage |" in text
    assert "nimify build (convert, check, push) of the small model: 0.9 s" in text
