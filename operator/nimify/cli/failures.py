"""How the model commands fail: one line naming the problem on stderr and a non-zero exit, never a
traceback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.markup import escape
from typer.exceptions import TyperException

from nimify.model.errors import ModelError

stderr = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_MODEL_ERROR = 1
EXIT_INTERNAL_ERROR = 3
EXIT_INTERRUPTED = 130


def fail(reason: str, message: str, code: int = EXIT_MODEL_ERROR) -> typer.Exit:
    stderr.print(f"[red]error:[/] {escape(reason)}: {escape(message)}")
    return typer.Exit(code)


@contextlib.contextmanager
def reported_failures() -> Iterator[None]:
    """Turn the toolkit's errors (and anything unexpected) into a one-line message and an exit code."""
    try:
        yield
    except ModelError as error:
        raise fail(error.reason, error.message) from None
    except KeyboardInterrupt:
        raise fail("Interrupted", "stopped by the user", EXIT_INTERRUPTED) from None
    except (typer.Exit, typer.Abort, TyperException):
        raise
    except Exception as error:  # the promise is no traceback, whatever breaks
        raise fail("InternalError", f"{type(error).__name__}: {error}", EXIT_INTERNAL_ERROR) from None
