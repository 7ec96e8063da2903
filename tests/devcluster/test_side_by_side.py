"""Two local clusters run at once without sharing ports, files or state."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nimify_devcluster.cluster import running_cluster
from nimify_devcluster.topology import NodePool
from tests.kube import ExistingCluster

pytestmark = pytest.mark.cluster


@pytest.mark.skipif("NIMIFY_TEST_KUBECONFIG" in os.environ, reason="needs the Go-built local binaries")
def test_a_second_cluster_runs_beside_the_session_cluster(cluster: ExistingCluster, tmp_path: Path) -> None:
    with running_cluster(
        "side", os.environ["NIMIFY_BIN_PATH"], tmp_path / "side", (NodePool("cpu", 1),)
    ) as side:
        first = cluster.kubectl("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}")
        assert first.stdout != side.server
        side.kubectl("create", "configmap", "only-here")
        side_nodes = json.loads(side.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        assert [n["metadata"]["name"] for n in side_nodes] == ["cpu-0"]
        assert cluster.kubectl("get", "configmap", "only-here", check=False).returncode != 0
    assert not (tmp_path / "side").exists(), "stopping a cluster removes its files"
