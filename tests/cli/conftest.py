"""Running the `nimify` CLI in-process, as a user would call it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from typer.testing import CliRunner, Result

from nimify.cli import _register_commands, app

Cli = Callable[..., Result]


@pytest.fixture(scope="session")
def cli() -> Cli:
    _register_commands()
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(app, list(args), env=env)

    return invoke
