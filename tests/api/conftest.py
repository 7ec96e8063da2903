"""Fixtures for admission tests: one namespace per test module (the CRD comes from tests/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kube import ExistingCluster

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def api_namespace(cluster: ExistingCluster, nimservice_crd: str) -> Iterator[str]:
    name = f"api-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
