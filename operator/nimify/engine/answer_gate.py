"""The answer gate's comparison of two units' answers to the same inputs (spec.rollout.answers): equivalence
within tolerances, Polygraphy's rule as engine.parity compares an engine with ONNX Runtime (the serving unit
is the reference), or agreement on the top-1 class or the side of a threshold. Pure; imported by the
operator only when a gate runs (it needs numpy, which the operator otherwise never loads)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from nimify.api.spec.rollout import AgreementRule, AgreementSpec
from nimify.api.status import AnswerGateStatus, GateForm
from nimify.engine.parity import compare_outputs

Arrays = dict[str, npt.NDArray[Any]]


def equivalence_verdict(
    serving: Sequence[Arrays], candidate: Sequence[Arrays], atol: float, rtol: float
) -> AnswerGateStatus:
    """The candidate's answers against the serving unit's, as engine.parity compares an engine with ONNX
    Runtime (the serving unit is the reference)."""
    report = compare_outputs(serving, candidate, atol=atol, rtol=rtol)
    where = f" on '{report.worst_output}'" if report.worst_output else ""
    message = (
        f"max abs error {report.max_abs_error:.3g}{where} "
        f"{'within' if report.passed else '>'} atol {atol:g} (rtol {rtol:g}) on {report.samples} inputs"
    )
    if not report.passed and report.failures:
        message += f": {report.failures[0]}"
    return AnswerGateStatus(
        form=GateForm.EQUIVALENCE,
        samples=report.samples,
        figure=report.max_abs_error,
        limit=atol,
        passed=report.passed,
        message=message[:1024],
    )


def _labels(array: npt.NDArray[Any], spec: AgreementSpec) -> npt.NDArray[Any]:
    values = np.asarray(array, dtype=np.float64)
    if spec.rule is AgreementRule.TOP1:
        values = values.reshape(-1, values.shape[-1]) if values.ndim else values.reshape(1, 1)
        classes: npt.NDArray[Any] = np.argmax(values, axis=-1)
        return classes
    assert spec.threshold is not None
    sides: npt.NDArray[Any] = (values > spec.threshold).reshape(-1)
    return sides


def agreement_verdict(
    serving: Sequence[Arrays], candidate: Sequence[Arrays], spec: AgreementSpec, output: str
) -> AnswerGateStatus:
    """The share of answers (Top1: rows; Threshold: elements) on which both units agree."""
    agreeing = total = 0
    for want, got in zip(serving, candidate, strict=True):
        a, b = _labels(want[output], spec), _labels(got[output], spec)
        if a.shape != b.shape:
            return AnswerGateStatus(
                form=GateForm.AGREEMENT,
                samples=len(serving),
                figure=0.0,
                limit=spec.min_fraction,
                passed=False,
                message=f"output '{output}': the candidate answers {b.size} values where the serving unit "
                f"answers {a.size}",
            )
        agreeing += int(np.count_nonzero(a == b))
        total += int(a.size)
    fraction = agreeing / total if total else 0.0
    passed = fraction >= spec.min_fraction
    rule = "top-1 class" if spec.rule is AgreementRule.TOP1 else f"side of {spec.threshold:g}"
    return AnswerGateStatus(
        form=GateForm.AGREEMENT,
        samples=len(serving),
        figure=round(fraction, 6),
        limit=spec.min_fraction,
        passed=passed,
        message=f"{fraction:.1%} of '{output}' answers agree on the {rule} "
        f"({agreeing} of {total} on {len(serving)} inputs; {'≥' if passed else '<'} "
        f"{spec.min_fraction:.1%})",
    )
