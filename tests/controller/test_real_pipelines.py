"""Pipelines on the real node: each member converted by its Job in the nimify image, the end-to-end check
Job (the triton-cpu image's Triton as a native sidecar, the check in the nimify image), then one Triton
serving every member and the ensemble, answering through the Service's ClusterIP as ONNX Runtime chained
in this process answers. A member changed in place rebuilds alone while the old chain keeps answering.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from nimify.engine.pipeline_reference import ChainedOnnxRuntime
from nimify.model.digest import file_sha256
from nimify_devcluster.build_runner import create_local_claim
from nimify_devcluster.cluster import get_json
from nimify_devcluster.real_node import RealNodeInfo
from tests.cli.serving import infer_http
from tests.controller.test_real_pods import HostOperator, apply, running_operator, service_url, wait_ready
from tests.kube import ExistingCluster, eventually, fresh_namespace
from tests.pipelines import ExportedPipeline, export_chain, export_fan, export_normalizer

pytestmark = [pytest.mark.cluster, pytest.mark.real_node]

WATCHED = "pipe-*"


@pytest.fixture(scope="module")
def pipeline_operator(
    cluster: ExistingCluster,
    nimservice_crd: str,
    real_node: RealNodeInfo,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[HostOperator]:
    with running_operator(cluster, real_node, tmp_path_factory.mktemp("operator"), WATCHED) as operator:
        yield operator


@pytest.fixture
def namespace(cluster: ExistingCluster, pipeline_operator: HostOperator) -> Iterator[tuple[str, Path]]:
    with fresh_namespace(cluster, "pipe") as name:
        yield name, create_local_claim(cluster, name, "models")


def _stored(exported: ExportedPipeline, root: Path) -> dict[str, Any]:
    """spec.pipeline with each member's file copied onto the claim and named by its pvc:// uri and digest."""
    folder = root / exported.name
    folder.mkdir(parents=True, exist_ok=True)

    def uri(member: str, path: Path) -> str:
        (folder / path.name).write_bytes(path.read_bytes())
        return f"pvc://models/{exported.name}/{path.name}"

    spec = exported.with_uris(uri)
    for member in spec["members"]:
        member["model"]["sha256"] = file_sha256(exported.models[member["name"]])
    return spec


def _nimservice(
    name: str, pipeline: dict[str, Any], node: RealNodeInfo, max_batch_size: int
) -> dict[str, Any]:
    return {
        "apiVersion": "nimify.dev/v1alpha1",
        "kind": "NimService",
        "metadata": {"name": name},
        "spec": {
            "pipeline": pipeline,
            "engine": {"backend": "onnxruntime", "maxBatchSize": max_batch_size},
            "triton": {
                "image": node.images["triton-cpu"],
                "dynamicBatching": {"maxQueueDelayMicroseconds": 100},
            },
            "resources": {"gpus": 0, "cpu": "100m", "memory": "2Gi"},
            "placement": {"runtimeClassName": node.runtime_class},
        },
    }


def _answers(url: str, model: str, feeds: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
    return infer_http(url, model, feeds)


def _assert_equal(got: dict[str, npt.NDArray[Any]], want: dict[str, npt.NDArray[Any]]) -> None:
    for name, expected in want.items():
        np.testing.assert_allclose(got[name].reshape(expected.shape), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("which", ["chain", "fan"])
def test_a_pipeline_is_built_checked_and_served_as_one_ensemble(
    cluster: ExistingCluster,
    real_node: RealNodeInfo,
    namespace: tuple[str, Path],
    tmp_path: Path,
    which: str,
) -> None:
    ns, root = namespace
    exported = export_chain(tmp_path / "m") if which == "chain" else export_fan(tmp_path / "m")
    pipeline = _stored(exported, root)
    if which == "fan":  # the corpus model fixes a batch of 3 the pipeline's input does not show
        pipeline["parity"] = {"generated": [{"input": "features", "shape": [3, 4]}]}
    apply(cluster, ns, _nimservice(which, pipeline, real_node, exported.max_batch_size))
    nim = wait_ready(cluster, ns, which, timeout=600)
    status = nim["status"]
    assert status["parity"]["check"] == "ensemble" and status["parity"]["passed"], status["parity"]
    assert [t["name"] for t in status["signature"]["inputs"]] == ["features"]
    members = {u["name"]: u for u in status["units"] if u["role"] == "PipelineMember"}
    assert set(members) == {f"{which}-{m}" for m in exported.models}
    assert all(u["engine"]["location"] and u["parity"]["passed"] for u in members.values())

    jobs = get_json(cluster, "jobs", "-n", ns)["items"]
    conversions = [j for j in jobs if j["metadata"]["name"].startswith("nimify-engine-")]
    checks = [j for j in jobs if j["metadata"]["name"].startswith("nimify-pipeline-")]
    assert len(conversions) == len(exported.models) and len(checks) == 1
    (check_pod,) = get_json(
        cluster, "pods", "-n", ns, "-l", f"batch.kubernetes.io/job-name={checks[0]['metadata']['name']}"
    )["items"]
    assert check_pod["spec"]["nodeName"] == real_node.name
    (check,) = check_pod["status"]["containerStatuses"]
    assert check["state"]["terminated"]["exitCode"] == 0
    sidecar = next(c for c in check_pod["status"]["initContainerStatuses"] if c["name"] == "triton")
    assert sidecar["image"] == real_node.images["triton-cpu"]

    url = service_url(cluster, ns, which)
    reference = ChainedOnnxRuntime(exported.pipeline, exported.models)
    for seed in range(3):
        feeds = exported.features(seed)

        def answered(f: dict[str, npt.NDArray[Any]] = feeds) -> dict[str, npt.NDArray[Any]]:
            return _answers(url, which, f)

        _assert_equal(eventually(answered, timeout=30, interval=0.5), reference.run(feeds))
    # Members answer by their own names on the same server.
    feeds = exported.features(7)
    scaled = _answers(url, "scaler", {"X": feeds["features"]})["variable"]
    np.testing.assert_allclose(
        scaled, reference.sessions["scaler"].run({"X": feeds["features"]})["variable"], rtol=1e-5, atol=1e-5
    )


def test_a_member_change_rebuilds_it_alone_and_the_old_chain_serves_until_the_new_one_is_ready(
    cluster: ExistingCluster,
    real_node: RealNodeInfo,
    namespace: tuple[str, Path],
    tmp_path: Path,
) -> None:
    ns, root = namespace
    exported = export_chain(tmp_path / "m")
    pipeline = _stored(exported, root)
    apply(cluster, ns, _nimservice("chain", pipeline, real_node, exported.max_batch_size))
    wait_ready(cluster, ns, "chain", timeout=600)
    jobs_before = {j["metadata"]["name"] for j in get_json(cluster, "jobs", "-n", ns)["items"]}
    url = service_url(cluster, ns, "chain")
    feeds = exported.features(3)
    old = ChainedOnnxRuntime(exported.pipeline, exported.models).run(feeds)
    eventually(lambda: _answers(url, "chain", feeds), timeout=30, interval=0.5)

    # The scaler becomes a Normalizer: same signature, other answers.
    models = dict(exported.models)
    models["scaler"] = export_normalizer(tmp_path / "m" / "normalizer.onnx")
    changed = ExportedPipeline(exported.name, exported.spec, models, exported.batch, exported.max_batch_size)
    new = ChainedOnnxRuntime(changed.pipeline, models).run(feeds)
    assert not np.allclose(old["probabilities"], new["probabilities"])
    new_pipeline = copy.deepcopy(pipeline)
    (root / "chain" / "normalizer.onnx").write_bytes(models["scaler"].read_bytes())
    new_pipeline["members"][0]["model"] = {
        "uri": "pvc://models/chain/normalizer.onnx",
        "sha256": file_sha256(models["scaler"]),
    }

    seen: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(0.3):
            try:
                got = _answers(url, "chain", feeds)["probabilities"].reshape(old["probabilities"].shape)
            except Exception as error:
                failures.append(repr(error))
                continue
            if np.allclose(got, old["probabilities"], atol=1e-5):
                seen.append("old")
            elif np.allclose(got, new["probabilities"], atol=1e-5):
                seen.append("new")
            else:
                seen.append("other")

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        apply(cluster, ns, _nimservice("chain", new_pipeline, real_node, exported.max_batch_size))

        def rolled() -> bool:
            nim = get_json(cluster, "nimservice/chain", "-n", ns)
            ready = next(c for c in nim["status"]["conditions"] if c["type"] == "Ready")
            return (
                ready["status"] == "True" and ready.get("observedGeneration") == nim["metadata"]["generation"]
            )

        eventually(rolled, timeout=600, interval=1)
        eventually(lambda: seen[-3:] == ["new"] * 3, timeout=60, interval=0.5)
    finally:
        stop.set()
        thread.join(timeout=10)
    new_jobs = {j["metadata"]["name"] for j in get_json(cluster, "jobs", "-n", ns)["items"]} - jobs_before
    assert sorted(n.split("-")[1] for n in new_jobs) == ["engine", "pipeline"], (
        new_jobs
    )  # one member, one check
    assert not failures, failures
    assert "other" not in seen, seen  # never a chain of one old and one new member
    first_new = seen.index("new")
    # The old chain answered while the member was rebuilt and the pipeline checked (a rolling update may
    # still send a request to the terminating old replica once the new one is Ready: no more than that).
    assert seen[:first_new] and set(seen[:first_new]) == {"old"}, seen
    print(f"\n{len(seen)} answers while the member changed: {seen.count('old')} old, {seen.count('new')} new")
    _assert_equal(_answers(url, "chain", feeds), new)
