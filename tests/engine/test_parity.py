"""The parity comparison: Polygraphy's elementwise rule, honest error figures, shape/NaN/string handling."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

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
    assert report.failures == ("sample 0: output 'y': 1 of 3 elements beyond both atol 0.001 and rtol 0.001",)


@pytest.mark.parametrize(
    ("candidate", "passed"),
    [
        # allclose would pass all of these (bound atol + rtol*|ref| = 0.2); Polygraphy's rule is
        # max(atol, rtol*|ref|) = 0.1: an element fails when it is beyond BOTH tolerances.
        (1.09, True),
        (1.15, False),
        (0.85, False),
    ],
)
def test_the_rule_is_polygraphys_not_allclose(candidate: float, passed: bool) -> None:
    reference = [{"y": np.array([1.0])}]
    report = compare_outputs(reference, [{"y": np.array([candidate])}], atol=0.1, rtol=0.1)
    assert report.passed is passed
    assert np.allclose(candidate, 1.0, atol=0.1, rtol=0.1)  # the looser rule nimify does not use


def test_rule_matches_polygraphy_directly() -> None:
    """The verdict is Polygraphy's SimpleCompareFunc (elemwise) on random data, element rule included."""
    from polygraphy.comparator import IterationResult, SimpleCompareFunc
    from polygraphy.logger import G_LOGGER

    rng = np.random.default_rng(3)
    for _ in range(20):
        want = rng.standard_normal(50)
        got = want + rng.standard_normal(50) * 1e-3
        ours = compare_outputs([{"y": want}], [{"y": got}], atol=1e-3, rtol=1e-3)
        with G_LOGGER.verbosity(G_LOGGER.CRITICAL):
            theirs = SimpleCompareFunc(atol=1e-3, rtol=1e-3)(
                IterationResult({"y": got}, runner_name="c"), IterationResult({"y": want}, runner_name="r")
            )["y"]
        assert ours.passed is bool(theirs)
        by_hand = not np.any((np.abs(got - want) > 1e-3) & (np.abs(got - want) / np.abs(want) > 1e-3))
        assert ours.passed is by_hand


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


def test_infinities() -> None:
    reference = [{"y": np.array([np.inf, 1.0])}]
    assert compare_outputs(reference, [{"y": np.array([np.inf, 1.0])}], atol=0, rtol=0).passed
    report = compare_outputs(reference, [{"y": np.array([3.0e38, 1.0])}], atol=1, rtol=1)
    assert not report.passed and "infinite difference" in report.failures[0]


def test_integers_bools_and_strings() -> None:
    reference = [{"i": np.array([1, 2], np.int64), "b": np.array([True]), "s": np.array(["a"], dtype=object)}]
    assert compare_outputs(reference, reference, atol=0, rtol=0).passed
    other = [{"i": np.array([1, 3], np.int64), "b": np.array([True]), "s": np.array(["b"], dtype=object)}]
    report = compare_outputs(reference, other, atol=0, rtol=0)
    assert not report.passed and report.max_abs_error == 1.0 and len(report.failures) == 2


def test_scalars_empty_tensors_and_bfloat16() -> None:
    scalar = [{"y": np.float32(2.0).reshape(())}]
    assert compare_outputs(scalar, scalar, atol=0, rtol=0).passed
    empty = [{"y": np.zeros((0, 3), np.float32)}]
    assert compare_outputs(empty, empty, atol=0, rtol=0).passed
    # An engine's bf16 output against ONNX Runtime's float32 reference.
    reference = [{"y": np.array([1.0, 2.5, -3.0], np.float32)}]
    candidate = [{"y": np.array([1.0, 2.5, -3.0], ml_dtypes.bfloat16)}]
    assert compare_outputs(reference, candidate, atol=1e-3, rtol=1e-3).passed


def test_nothing_reaches_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    """`nimify convert` prints its result line on stdout; Polygraphy's logger must stay quiet."""
    compare_outputs([{"y": np.ones(3)}], [{"y": np.zeros(3)}], atol=0, rtol=0)
    assert capsys.readouterr().out == ""


def test_status_fields() -> None:
    values = [{"y": np.ones(2)}]
    assert compare_outputs(values, values, atol=0.1, rtol=0.2).to_status() == {
        "maxAbsError": 0.0,
        "maxRelError": 0.0,
        "samples": 1,
        "passed": True,
    }
