"""A real OCI registry for the tests that push and pull (devcluster/registry.py): the distribution registry on
loopback, storing under a directory of the test's, stopped afterwards. Binary from hack/ensure-registry.sh
(cached; a cold machine builds it here, a minute) or NIMIFY_REGISTRY_BIN_PATH."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from nimify_devcluster.registry import LocalRegistry, start_registry, stop_registry
from tests.fetched import fetched_dir


def registry_bin_path() -> str:
    """The directory of the `registry` binary: $NIMIFY_REGISTRY_BIN_PATH, else hack/ensure-registry.sh's."""
    return str(fetched_dir("NIMIFY_REGISTRY_BIN_PATH", "ensure-registry.sh"))


@contextlib.contextmanager
def registry_on(
    directory: Path, *, host: str = "127.0.0.1", users: Mapping[str, str] | None = None
) -> Iterator[LocalRegistry]:
    """A registry storing under `directory` on `host` (anonymous, or these users' name -> password), always
    stopped afterwards."""
    registry = start_registry(directory, registry_bin_path(), host=host, users=users)
    try:
        yield registry
    finally:
        stop_registry(registry)


def registry_fixture(users: Mapping[str, str] | None = None) -> Any:
    """A module-scoped fixture of a registry on loopback (anonymous, or these users'). Use:
    `registry = registry_fixture()` in a test module."""

    @pytest.fixture(scope="module")
    def running_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
        with registry_on(tmp_path_factory.mktemp("registry"), users=users) as running:
            yield running

    return running_registry
