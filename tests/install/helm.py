"""The Helm binary that hack/ensure-binaries.sh builds, run against the chart in charts/nimify."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "nimify"


@dataclass(frozen=True)
class Helm:
    binary: str
    kubeconfig: Path | None = None

    @classmethod
    def on(cls, bin_path: str, kubeconfig: Path | None = None) -> Helm:
        binary = shutil.which("helm", path=bin_path)
        if binary is None:
            raise RuntimeError(f"helm not found on {bin_path!r}: run hack/ensure-binaries.sh")
        return cls(binary, kubeconfig)

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        command = [self.binary, *args]
        if self.kubeconfig is not None:
            command.append(f"--kubeconfig={self.kubeconfig}")
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}{result.stdout}"
            )
        return result

    def template(self, *args: str, namespace: str = "nimify-system") -> list[dict[str, Any]]:
        """The chart rendered as the release `nimify` in `namespace`, as objects."""
        out = self("template", "nimify", str(CHART), f"--namespace={namespace}", *args).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = by_kind(objects, kind)
    return found
