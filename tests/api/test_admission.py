"""The CRD on a real kube-apiserver: defaults, refusals, explain, columns, scale and status round trips."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from nimify.api import NimService
from nimify_devcluster.cluster import get_json
from tests.api.cases import FULL_STATUS, INVALID, INVALID_PARAMS, VALID_PARAMS, Case
from tests.kube import ExistingCluster

pytestmark = pytest.mark.cluster

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
SAMPLES = sorted(EXAMPLES.glob("*.yaml"))


def apply(
    cluster: ExistingCluster, namespace: str, document: dict[str, Any], *flags: str
) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(
        "apply",
        "--server-side",
        "-n",
        namespace,
        "-f",
        "-",
        *flags,
        input=yaml.safe_dump(document),
        check=False,
    )


def created(cluster: ExistingCluster, namespace: str, document: dict[str, Any]) -> dict[str, Any]:
    result = apply(cluster, namespace, document)
    assert result.returncode == 0, result.stderr
    return dict(get_json(cluster, "nimservice", document["metadata"]["name"], "-n", namespace))


def patch_status(cluster: ExistingCluster, namespace: str, name: str, status: dict[str, Any]) -> None:
    cluster.kubectl(
        "patch",
        "nimservice",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda sample: sample.stem)
def test_sample_is_accepted_with_the_documented_defaults(
    cluster: ExistingCluster, api_namespace: str, sample: Path
) -> None:
    document = yaml.safe_load(sample.read_text())
    stored = created(cluster, api_namespace, document)
    # The apiserver filled in exactly the defaults the pydantic models declare, no more, no fewer.
    assert stored["spec"] == NimService.model_validate(document).to_dict()["spec"]
    assert stored["spec"]["triton"]["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert stored["spec"]["expose"]["httpPort"] == 8000
    # What the apiserver returns parses and serializes back unchanged, server metadata included.
    assert NimService.model_validate(stored).to_dict() == stored


def test_minimal_sample_gains_every_nested_default(cluster: ExistingCluster, api_namespace: str) -> None:
    document = yaml.safe_load((EXAMPLES / "minimal.yaml").read_text())
    document["metadata"]["name"] = "minimal-defaults"
    spec = created(cluster, api_namespace, document)["spec"]
    assert spec["engine"] == {
        "backend": "tensorrt",
        "precision": "auto",
        "parity": {"atol": 0.001, "rtol": 0.001, "samples": 8},
        "buildTimeoutSeconds": 1800,
    }
    assert spec["triton"] == {
        "image": "nvcr.io/nvidia/tritonserver:25.10-py3",
        "dynamicBatching": {"enabled": True},
        "instancesPerGpu": 1,
    }
    assert spec["resources"] == {"gpus": 1}
    assert spec["expose"] == {
        "serviceType": "ClusterIP",
        "httpPort": 8000,
        "grpcPort": 8001,
        "metricsPort": 8002,
    }
    assert spec["paused"] is False
    assert "replicas" not in spec


@pytest.mark.parametrize("case", INVALID_PARAMS)
def test_invalid_spec_is_refused_at_admission(
    cluster: ExistingCluster, api_namespace: str, case: Case
) -> None:
    result = apply(
        cluster, api_namespace, case.document(f"refused-{INVALID.index(case)}"), "--dry-run=server"
    )
    print(f"{case.id}: {result.stderr.strip()}")
    assert result.returncode != 0, f"{case.id} was accepted"
    assert case.path in result.stderr
    assert case.message is None or case.message in result.stderr, result.stderr
    assert 'Duplicate value: "object"' not in result.stderr, "a rule's message was dropped"


@pytest.mark.parametrize("case", VALID_PARAMS)
def test_tricky_valid_spec_is_accepted(cluster: ExistingCluster, api_namespace: str, case: Case) -> None:
    result = apply(cluster, api_namespace, case.document("accepted"), "--dry-run=server")
    assert result.returncode == 0, result.stderr


def test_explain_prints_the_descriptions(cluster: ExistingCluster, nimservice_crd: str) -> None:
    def explained(field: str) -> str:
        output = cluster.kubectl("explain", field).stdout
        print(output)
        return " ".join(output.split())

    engine = explained("nimservice.spec.engine")
    assert "Backend, precision and TensorRT build options." in engine
    for field in (
        "backend",
        "precision",
        "profiles",
        "maxBatchSize",
        "parity",
        "buildTimeoutSeconds",
        "workspace",
    ):
        assert f"{field} <" in engine, field
    assert "TensorRT 11 (Triton 26.06 and later) removed those flags" in explained(
        "nimservice.spec.engine.precision"
    )


def test_printer_columns(cluster: ExistingCluster, api_namespace: str) -> None:
    document = yaml.safe_load((EXAMPLES / "gpu-product.yaml").read_text())
    document["metadata"]["name"] = "columns"
    created(cluster, api_namespace, document)
    patch_status(
        cluster,
        api_namespace,
        "columns",
        {
            "replicas": 2,
            "readyReplicas": 1,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "ReplicasUnavailable",
                    "message": "1 of 2 replicas ready",
                    "lastTransitionTime": "2025-11-20T10:00:00Z",
                }
            ],
        },
    )
    table = cluster.kubectl("get", "nimservices", "columns", "-n", api_namespace).stdout
    print(table)
    header, row = table.splitlines()
    assert header.split() == ["NAME", "READY", "REASON", "READY-REPLICAS", "REPLICAS", "MODEL", "AGE"]
    assert row.split()[:6] == [
        "columns",
        "False",
        "ReplicasUnavailable",
        "1",
        "2",
        "hf://acme-vision/yolo-detector@v2.1/onnx/model.onnx",
    ]
    wide = cluster.kubectl("get", "nimservices", "columns", "-n", api_namespace, "-o", "wide").stdout
    print(wide)
    wide_header, wide_row = wide.splitlines()
    wide_columns = ["BACKEND", "GPU", "PRECISION", "ROLLOUT", "CANARY", "DESIRED", "SCALING"]
    assert wide_header.split()[-7:] == wide_columns
    # No rollout, not autoscaled: ROLLOUT, CANARY, DESIRED and SCALING stay empty.
    assert wide_row.split()[-3:] == ["tensorrt", "NVIDIA-H100-80GB-HBM3", "fp16"]
    assert "columns" in cluster.kubectl("get", "nimsvc", "-n", api_namespace).stdout
    assert "columns" in cluster.kubectl("get", "nimify", "-n", api_namespace).stdout


def test_scale_subresource_sets_replicas(cluster: ExistingCluster, api_namespace: str) -> None:
    document = yaml.safe_load((EXAMPLES / "minimal.yaml").read_text())
    document["metadata"]["name"] = "scaled"
    created(cluster, api_namespace, document)
    patch_status(
        cluster, api_namespace, "scaled", {"replicas": 1, "selector": "app.kubernetes.io/instance=scaled"}
    )
    cluster.kubectl("scale", "nimservice/scaled", "--replicas=3", "-n", api_namespace)
    stored = get_json(cluster, "nimservice", "scaled", "-n", api_namespace)
    assert stored["spec"]["replicas"] == 3
    scale_path = f"/apis/nimify.dev/v1alpha1/namespaces/{api_namespace}/nimservices/scaled/scale"
    scale = json.loads(cluster.kubectl("get", "--raw", scale_path).stdout)
    assert scale["spec"]["replicas"] == 3
    assert scale["status"] == {"replicas": 1, "selector": "app.kubernetes.io/instance=scaled"}


def test_scale_is_refused_while_autoscaling(cluster: ExistingCluster, api_namespace: str) -> None:
    document = yaml.safe_load((EXAMPLES / "autoscaled.yaml").read_text())
    document["metadata"]["name"] = "autoscaled-scale"
    created(cluster, api_namespace, document)
    result = cluster.kubectl(
        "scale", "nimservice/autoscaled-scale", "--replicas=3", "-n", api_namespace, check=False
    )
    assert result.returncode != 0
    assert "spec.replicas" in result.stderr and "autoscaling" in result.stderr


def test_status_round_trips_and_leaves_generation_alone(cluster: ExistingCluster, api_namespace: str) -> None:
    document = yaml.safe_load((EXAMPLES / "minimal.yaml").read_text())
    document["metadata"]["name"] = "with-status"
    generation = created(cluster, api_namespace, document)["metadata"]["generation"]
    patch_status(cluster, api_namespace, "with-status", FULL_STATUS)
    stored = get_json(cluster, "nimservice", "with-status", "-n", api_namespace)
    assert stored["status"] == FULL_STATUS, "the apiserver pruned or changed status fields"
    assert stored["metadata"]["generation"] == generation
    assert NimService.model_validate(stored).to_dict() == stored


@pytest.mark.parametrize(
    ("name", "storage", "change", "path"),
    [
        (
            "class-changed",
            {"size": "1Gi", "storageClassName": "a"},
            {"storageClassName": "b"},
            "storageClassName",
        ),
        (
            "class-removed",
            {"size": "1Gi", "storageClassName": "a"},
            {"storageClassName": None},
            "storageClassName",
        ),
        ("claim-changed", {"existingClaim": "models-a"}, {"existingClaim": "models-b"}, "existingClaim"),
    ],
)
def test_storage_identity_is_immutable(
    cluster: ExistingCluster,
    api_namespace: str,
    name: str,
    storage: dict[str, Any],
    change: dict[str, Any],
    path: str,
) -> None:
    document = {
        "apiVersion": "nimify.dev/v1alpha1",
        "kind": "NimService",
        "metadata": {"name": f"storage-{name}"},
        "spec": {"model": {"uri": "s3://models/resnet/model.onnx"}, "storage": storage},
    }
    created(cluster, api_namespace, document)
    result = cluster.kubectl(
        "patch",
        f"nimservice/storage-{name}",
        "-n",
        api_namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"storage": change}}),
        check=False,
    )
    print(result.stderr)
    assert result.returncode != 0
    assert f"spec.storage.{path}" in result.stderr and "immutable" in result.stderr


def test_storage_size_may_grow(cluster: ExistingCluster, api_namespace: str) -> None:
    document = {
        "apiVersion": "nimify.dev/v1alpha1",
        "kind": "NimService",
        "metadata": {"name": "storage-grow"},
        "spec": {"model": {"uri": "s3://models/resnet/model.onnx"}, "storage": {"size": "10Gi"}},
    }
    created(cluster, api_namespace, document)
    cluster.kubectl(
        "patch",
        "nimservice",
        "storage-grow",
        "-n",
        api_namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"storage": {"size": "20Gi"}}}),
    )
