"""Fixtures of the chaos suite: the figures table, printed at the end of the run."""

from __future__ import annotations

import pytest

from tests.chaos.report import ChaosReport
from tests.chaos.scale import SCALE

_REPORT = ChaosReport()


@pytest.fixture(scope="session")
def chaos_report() -> ChaosReport:
    return _REPORT


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _REPORT.figures:
        terminalreporter.section(f"chaos figures (NIMIFY_CHAOS_SCALE={SCALE})")
        for line in _REPORT.table():
            terminalreporter.write_line(line)
