"""Comparing a candidate's outputs (TensorRT engine, exported repository) with ONNX Runtime's reference.

The pass rule is numpy's allclose, element by element: |candidate - reference| <= atol + rtol * |reference|
(Polygraphy's comparator works the same way). The reported relative error only counts elements whose reference
magnitude exceeds atol: near zero the absolute error is what the rule judges, and a relative figure there is
noise that would hide the real one.
"""

from __future__ import annotations

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
    got64, want64 = got.astype(np.float64), want.astype(np.float64)
    nan_got, nan_want = np.isnan(got64), np.isnan(want64)
    if not np.array_equal(nan_got, nan_want):
        return (
            0.0,
            0.0,
            f"output '{name}': NaN in {int(np.sum(nan_got != nan_want))} places where the other side has "
            "none",
        )
    finite = ~nan_want
    diff = np.abs(got64 - want64)[finite]
    magnitude = np.abs(want64)[finite]
    # Equal infinities give inf - inf = nan; they agree, so they count as no error.
    diff = np.where(np.isnan(diff), 0.0, diff)
    if not np.all(np.isfinite(diff)):
        return 0.0, 0.0, f"output '{name}': infinite difference (an overflow on one side)"
    abs_error = float(diff.max()) if diff.size else 0.0
    relevant = magnitude > atol
    rel_error = float((diff[relevant] / magnitude[relevant]).max()) if np.any(relevant) else 0.0
    within = diff <= atol + rtol * magnitude
    failure = None
    if not np.all(within):
        outside = int(np.sum(~within))
        failure = f"output '{name}': {outside} of {diff.size} elements beyond atol {atol} + rtol {rtol}"
    return abs_error, rel_error, failure


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
