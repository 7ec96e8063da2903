"""The figures a chaos test reports: what it injected, how often, into how many NimServices, and the outcome.

Printed as one table at the end of the run (the issue's closing note is that table).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Figure:
    fault: str
    injected: int  # how many times (cases, kills, requests)
    affected: int  # NimServices (or fetches) it hit
    outcome: str  # e.g. "all refused with a named reason", "converged"
    seconds: float  # how long the test took to get there
    lost: str = "nothing"


@dataclass
class ChaosReport:
    figures: list[Figure] = field(default_factory=list)

    def add(self, figure: Figure) -> None:
        self.figures.append(figure)

    def table(self) -> list[str]:
        header = ("fault", "injected", "affected", "outcome", "seconds", "lost")
        rows = [header] + [
            (f.fault, str(f.injected), str(f.affected), f.outcome, f"{f.seconds:.1f}", f.lost)
            for f in self.figures
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
        lines.insert(1, "-+-".join("-" * width for width in widths))
        return lines
