"""The Helm binary for the chart tests (built and cached by hack/ensure-binaries.sh)."""

from __future__ import annotations

import pytest

from tests.conftest import _bin_path
from tests.install.helm import Helm


@pytest.fixture(scope="session")
def helm() -> Helm:
    return Helm.on(_bin_path())
