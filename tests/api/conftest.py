"""Fixtures for admission tests: the NimService CRD installed, and one namespace per test module."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nimify.api import CRD_NAME
from tests.kube import ExistingCluster

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def nimservice_crd(cluster: ExistingCluster) -> str:
    """The CRD from crds/, applied and Established."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    return CRD_NAME


@pytest.fixture(scope="module")
def api_namespace(cluster: ExistingCluster, nimservice_crd: str) -> Iterator[str]:
    name = f"api-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
