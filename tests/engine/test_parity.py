"""The parity comparison: allclose per element, honest error figures, shape and NaN mismatches."""

from __future__ import annotations

import numpy as np

from nimify.engine.parity import compare_outputs


def test_identical() -> None:
    values = [{"y": np.arange(6, dtype=np.float32).reshape(2, 3)}]
    report = compare_outputs(values, values, atol=1e-3, rtol=1e-3)
    assert report.passed and report.max_abs_error == 0.0 and report.samples == 1


def test_within_and_beyond_tolerance() -> None:
    reference = [{"y": np.array([1.0, 100.0, 0.0], np.float32)}]
    close = [{"y": np.array([1.0005, 100.05, 0.0004], np.float32)}]
    report = compare_outputs(reference, close, atol=1e-3, rtol=1e-3)
    assert report.passed
    assert abs(report.max_abs_error - 0.05) < 1e-4
    # the 0.0004 off a zero reference counts toward absolute error only
    assert abs(report.max_rel_error - 5e-4) < 1e-5
    far = [{"y": np.array([1.1, 100.0, 0.0], np.float32)}]
    report = compare_outputs(reference, far, atol=1e-3, rtol=1e-3)
    assert not report.passed and report.worst_output == "y"
    assert report.failures == ("sample 0: output 'y': 1 of 3 elements beyond atol 0.001 + rtol 0.001",)


def test_shape_mismatch_and_missing_output() -> None:
    reference = [{"y": np.zeros((2, 3)), "z": np.zeros(1)}]
    candidate = [{"y": np.zeros((3, 2))}]
    report = compare_outputs(reference, candidate, atol=1, rtol=1)
    assert not report.passed
    assert "shape [3, 2], reference [2, 3]" in report.failures[0]
    assert "output 'z' missing" in report.failures[1]


def test_nan_handling() -> None:
    reference = [{"y": np.array([np.nan, 1.0])}]
    assert compare_outputs(reference, [{"y": np.array([np.nan, 1.0])}], atol=0, rtol=0).passed
    report = compare_outputs(reference, [{"y": np.array([0.0, 1.0])}], atol=1, rtol=1)
    assert not report.passed and "NaN" in report.failures[0]


def test_integers_bools_and_strings() -> None:
    reference = [{"i": np.array([1, 2], np.int64), "b": np.array([True]), "s": np.array(["a"], dtype=object)}]
    assert compare_outputs(reference, reference, atol=0, rtol=0).passed
    other = [{"i": np.array([1, 3], np.int64), "b": np.array([True]), "s": np.array(["b"], dtype=object)}]
    report = compare_outputs(reference, other, atol=0, rtol=0)
    assert not report.passed and report.max_abs_error == 1.0 and len(report.failures) == 2


def test_status_fields() -> None:
    values = [{"y": np.ones(2)}]
    assert compare_outputs(values, values, atol=0.1, rtol=0.2).to_status() == {
        "maxAbsError": 0.0,
        "maxRelError": 0.0,
        "samples": 1,
        "passed": True,
    }
