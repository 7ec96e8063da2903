"""`nimify doctor` against the real control plane: the CRD is found and the GPU pools are reported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.kube import ExistingCluster

pytestmark = pytest.mark.cluster


def test_doctor_reports_the_crd_and_the_gpu_products(cluster: ExistingCluster, nimservice_crd: str) -> None:
    nimify = Path(sys.executable).parent / "nimify"
    result = subprocess.run(
        [str(nimify), "doctor", "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    assert "Traceback" not in result.stderr
    output = result.stdout
    assert nimservice_crd in output
    assert "NVIDIA-H100-80GB-HBM3" in output and "NVIDIA-L4" in output, output
