"""`nimify doctor`: dependency checks, and cluster checks against a fake client."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nimify.cli.doctor import check_cluster, check_gpu_nodes, check_packages
from tests.cli.conftest import Cli


class FakeCluster:
    def __init__(self, nodes: list[dict[str, Any]] | Exception, crd: dict[str, Any] | None) -> None:
        self._nodes, self._crd = nodes, crd

    async def custom_resource_definition(self, name: str) -> Mapping[str, Any] | None:
        assert name == "nimservices.nimify.dev"
        return self._crd

    async def nodes(self) -> Sequence[Mapping[str, Any]]:
        if isinstance(self._nodes, Exception):
            raise self._nodes
        return self._nodes


def node(name: str, product: str | None = None, gpus: str | None = None) -> dict[str, Any]:
    labels = {"nvidia.com/gpu.product": product} if product else {}
    allocatable = {"nvidia.com/gpu": gpus} if gpus else {}
    return {"metadata": {"name": name, "labels": labels}, "status": {"allocatable": allocatable}}


CRD = {"spec": {"versions": [{"name": "v1alpha1", "served": True}]}}


async def test_ready_cluster() -> None:
    nodes = [
        node("cpu-0"),
        node("gpu-0", "NVIDIA-H100-80GB-HBM3", "8"),
        node("gpu-1", "NVIDIA-H100-80GB-HBM3", "8"),
    ]
    checks = await check_cluster(FakeCluster(nodes, CRD))
    assert [(c.name, c.status) for c in checks] == [("cluster", "ok"), ("crd", "ok"), ("gpu nodes", "ok")]
    assert checks[1].detail.endswith("serving v1alpha1")
    assert checks[2].detail == "NVIDIA-H100-80GB-HBM3: 2 node(s)"


async def test_missing_crd_and_gpu_labels() -> None:
    checks = await check_cluster(FakeCluster([node("n0", gpus="1")], None))
    statuses = {c.name: (c.status, c.detail) for c in checks}
    assert statuses["crd"][0] == "fail" and "not installed" in statuses["crd"][1]
    assert statuses["gpu nodes"][0] == "warn"
    assert statuses["gpu labels"] == ("warn", "n0 offer nvidia.com/gpu without nvidia.com/gpu.product")


async def test_unreachable_cluster() -> None:
    checks = await check_cluster(FakeCluster(ConnectionRefusedError("connection refused"), CRD))
    assert len(checks) == 1 and checks[0].status == "fail" and "connection refused" in checks[0].detail


def test_gpu_node_summary() -> None:
    checks = check_gpu_nodes(
        [node("a", "NVIDIA-L4"), node("b", "NVIDIA-A100-SXM4-80GB"), node("c", "NVIDIA-L4")]
    )
    assert checks[0].detail == "NVIDIA-A100-SXM4-80GB: 1 node(s); NVIDIA-L4: 2 node(s)"


def test_packages() -> None:
    checks = {c.name: c.status for c in check_packages()}
    assert checks["python: onnx"] == checks["python: onnxruntime"] == "ok"
    assert checks["python: tensorrt"] in ("ok", "warn")


def test_command_without_cluster(cli: Cli) -> None:
    result = cli("doctor", "--no-cluster")
    assert result.exit_code == 0, result.output
    assert "tritonserver" in result.stdout and "python: onnxruntime" in result.stdout


def test_command_with_a_broken_kubeconfig(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "config").write_text("not: a kubeconfig\n")
    result = cli("doctor", "--kubeconfig", str(tmp_path / "config"))
    assert result.exit_code == 1
    assert "fail" in result.stdout and "cluster" in result.stdout
