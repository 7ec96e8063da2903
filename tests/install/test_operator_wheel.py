"""The operator's wheel, what the nimify images install, carries no module of the development cluster.

The development cluster is a distribution of its own (devcluster/, `nimify_devcluster`) that adds
`nimify dev-cluster` through the `nimify.cli` entry-point group; the wheel is built here the way the image
builder builds it (`build_operator_wheel`).
"""

from __future__ import annotations

import re
import shutil
import zipfile

import pytest

from nimify_devcluster.images import build_operator_wheel
from tests.conftest import REPO_ROOT

#: An import of the development cluster, under its name today or the one it had inside `nimify`.
DEVCLUSTER_IMPORT = re.compile(
    r"^\s*(from|import)\s+(nimify_devcluster|nimify\.devcluster|nimify\.cli\.devcluster)\b"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel of this checkout's sources, built next to what an in-place build before the move left in
    build/lib (setuptools would package that too)."""
    checkout = tmp_path_factory.mktemp("checkout")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, checkout / name)
    shutil.copytree(REPO_ROOT / "operator" / "nimify", checkout / "operator" / "nimify")
    stale = checkout / "build" / "lib" / "nimify" / "devcluster" / "cluster.py"
    stale.parent.mkdir(parents=True)
    stale.write_text('"""Left by a build of the time the development cluster was nimify.devcluster."""\n')
    return zipfile.ZipFile(build_operator_wheel(checkout, tmp_path_factory.mktemp("dist")))


def test_carries_the_operator_and_no_devcluster_module(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    modules = [name for name in names if name.endswith(".py")]
    assert "nimify/cli/__init__.py" in modules
    assert "nimify/controller/reconcile.py" in modules
    assert [name for name in modules if not name.startswith("nimify/")] == []
    assert [name for name in names if "devcluster" in name] == []


def test_no_module_imports_the_devcluster(wheel: zipfile.ZipFile) -> None:
    importers = [
        name
        for name in wheel.namelist()
        if name.endswith(".py")
        and any(DEVCLUSTER_IMPORT.match(line) for line in wheel.read(name).decode().splitlines())
    ]
    assert importers == []


def test_adds_no_command_group(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [name for name in wheel.namelist() if name.endswith(".dist-info/entry_points.txt")]
    # The console script only: `nimify.cli` command groups come from other distributions.
    assert wheel.read(entry_points).decode().split() == [
        "[console_scripts]",
        "nimify",
        "=",
        "nimify.cli:main",
    ]
