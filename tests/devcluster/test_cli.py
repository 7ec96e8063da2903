"""`nimify dev-cluster` comes from this distribution, through the `nimify.cli` entry-point group."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import typer

from nimify.cli import PLUGIN_GROUP
from nimify_devcluster.cli import dev_cluster


def test_the_distribution_registers_the_command_group() -> None:
    (entry_point,) = [
        e for e in importlib.metadata.entry_points(group=PLUGIN_GROUP) if e.name == "dev-cluster"
    ]
    assert entry_point.value == "nimify_devcluster.cli:dev_cluster"
    assert entry_point.dist is not None and entry_point.dist.name == "nimify-devcluster"
    assert isinstance(entry_point.load(), typer.Typer)
    assert entry_point.load() is dev_cluster


def test_nimify_runs_it() -> None:
    nimify = Path(sys.executable).parent / "nimify"
    result = subprocess.run(
        [nimify, "dev-cluster", "--help"], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for command in ("up", "down", "leftovers", "kubeconfig", "run-builds", "demo", "images"):
        assert f" {command} " in result.stdout
