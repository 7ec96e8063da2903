"""Comparing a candidate's outputs (TensorRT engine, exported repository) with ONNX Runtime's reference.

The pass rule is Polygraphy's, and its comparator decides it (`SimpleCompareFunc`, check "elemwise"): an
element fails only when its absolute difference exceeds atol AND its difference relative to the reference
exceeds rtol, i.e. it passes within max(atol, rtol * |reference|). That is deliberate: the verdict is the
one `polygraphy run model.onnx --trt --onnxrt --atol A --rtol R` gives on a GPU (the reference runner last:
relative differences are taken to the second runner's outputs), so a ParityFailed can be reproduced with
NVIDIA's own tool. (numpy's allclose bound, atol + rtol * |reference|, is up to twice as
loose; it is not what Nimify uses.)

Kept here, because Polygraphy's comparator does not do it: strings are compared for equality (it cannot
subtract them); NaN at the same places on both sides agrees (it fails every NaN), so matching NaNs are
zeroed on both sides first and differing NaN positions are reported; scalars are compared as shape [1] (it
fails on rank 0); and the reported relative error counts only elements whose reference magnitude exceeds
atol, because Polygraphy's divides near-zero references by 2e-16 and near zero the absolute error is what
the rule judges.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Arrays = dict[str, npt.NDArray[Any]]


@dataclass(frozen=True)
class ParityReport:
    samples: int
    atol: float
    rtol: float
    max_abs_error: float
    max_rel_error: float
    passed: bool
    worst_output: str | None = None
    failures: tuple[str, ...] = ()

    def to_status(self) -> dict[str, Any]:
        """The ParityStatus fields (camelCase), as the NimService status and the convert result carry them."""
        return {
            "maxAbsError": self.max_abs_error,
            "maxRelError": self.max_rel_error,
            "samples": self.samples,
            "passed": self.passed,
        }

    def to_json(self) -> dict[str, Any]:
        data = self.to_status()
        data.update({"atol": self.atol, "rtol": self.rtol, "worstOutput": self.worst_output})
        if self.failures:
            data["failures"] = list(self.failures)
        return data


def _polygraphy_verdict(
    name: str, got: npt.NDArray[np.float64], want: npt.NDArray[np.float64], atol: float, rtol: float
) -> tuple[bool, float]:
    """Polygraphy's elementwise verdict and its maximum absolute difference, with its logging silenced
    (it prints to stdout, where `nimify convert` writes its result line)."""
    from polygraphy.comparator import IterationResult, SimpleCompareFunc
    from polygraphy.logger import G_LOGGER

    compare = SimpleCompareFunc(
        atol=atol, rtol=rtol, check_error_stat="elemwise", infinities_compare_equal=True
    )
    with G_LOGGER.verbosity(G_LOGGER.CRITICAL), np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = compare(
            IterationResult({name: got}, runner_name="candidate"),
            IterationResult({name: want}, runner_name="reference"),
        )[name]
    return bool(result), float(result.max_absdiff)


def _compare(
    name: str, got: npt.NDArray[Any], want: npt.NDArray[Any], atol: float, rtol: float
) -> tuple[float, float, str | None]:
    if got.shape != want.shape:
        return 0.0, 0.0, f"output '{name}': shape {list(got.shape)}, reference {list(want.shape)}"
    if want.dtype == object or got.dtype == object:
        same = bool(np.array_equal(got.astype(str), want.astype(str)))
        return (0.0, 0.0, None) if same else (0.0, 0.0, f"output '{name}': strings differ")
    if want.size == 0:
        return 0.0, 0.0, None
    got64 = np.asarray(got, dtype=np.float64).reshape(got.shape or (1,))
    want64 = np.asarray(want, dtype=np.float64).reshape(want.shape or (1,))
    nan_got, nan_want = np.isnan(got64), np.isnan(want64)
    if not np.array_equal(nan_got, nan_want):
        return (
            0.0,
            0.0,
            f"output '{name}': NaN in {int(np.sum(nan_got != nan_want))} places where the other side has "
            "none",
        )
    got64, want64 = np.where(nan_got, 0.0, got64), np.where(nan_want, 0.0, want64)
    passed, abs_error = _polygraphy_verdict(name, got64, want64, atol, rtol)
    with np.errstate(invalid="ignore"):
        diff = np.abs(got64 - want64)
    diff = np.where(np.isnan(diff), 0.0, diff)  # equal infinities: inf - inf
    magnitude = np.abs(want64)
    relevant = magnitude > atol
    with np.errstate(invalid="ignore"):
        rel_error = float((diff[relevant] / magnitude[relevant]).max()) if np.any(relevant) else 0.0
    if passed:
        return abs_error, rel_error, None
    if not np.all(np.isfinite(diff)):
        return abs_error, rel_error, f"output '{name}': infinite difference (an overflow on one side)"
    outside = int(np.sum((diff > atol) & (diff > rtol * magnitude)))
    return (
        abs_error,
        rel_error,
        f"output '{name}': {outside} of {diff.size} elements beyond both atol {atol} and rtol {rtol}",
    )


def compare_outputs(
    reference: Sequence[Arrays], candidate: Sequence[Arrays], *, atol: float, rtol: float
) -> ParityReport:
    if len(reference) != len(candidate):
        raise ValueError("reference and candidate must hold the same samples")
    max_abs = max_rel = 0.0
    worst: str | None = None
    failures: list[str] = []
    for index, (want, got) in enumerate(zip(reference, candidate, strict=True)):
        for name, expected in want.items():
            if name not in got:
                failures.append(f"sample {index}: output '{name}' missing")
                continue
            abs_error, rel_error, failure = _compare(name, np.asarray(got[name]), expected, atol, rtol)
            if abs_error > max_abs:
                max_abs, worst = abs_error, name
            max_rel = max(max_rel, rel_error)
            if failure is not None:
                failures.append(f"sample {index}: {failure}")
    return ParityReport(
        samples=len(reference),
        atol=atol,
        rtol=rtol,
        max_abs_error=max_abs,
        max_rel_error=max_rel,
        passed=not failures,
        worst_output=worst,
        failures=tuple(failures[:10]),
    )
