"""The operator with a real metrics pipeline (metrics-server, Prometheus, KEDA) on a kwok-only cluster:
the ScaledObject or the HPA, never both, and the autoscaler's own verdict on the NimService.

kwok's Triton pods serve no metrics (and Prometheus never scrapes toward them), so here every autoscaler
reports its metric missing: exactly what ScalingActive must surface. The real scaling under load runs on the
real node (tests/controller/test_autoscaling_real.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from nimify.model.digest import file_sha256
from nimify.model.samples import build_mlp, write_model
from nimify_devcluster.build_runner import BuildPodKubelet, create_local_claim
from nimify_devcluster.cluster import get_json, wait_established
from tests.controller.conftest import OperatorProcess, StoredModel, apply, condition, nimservice, wait_ready
from tests.kube import ExistingCluster, eventually, fresh_namespace
from tests.metrics_stack import REPO_ROOT, MetricsCluster, metrics_cluster

pytestmark = pytest.mark.cluster

QUEUE_TIME = {"minReplicas": 1, "maxReplicas": 3, "targetQueueTimeMicroseconds": 5000}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetricsCluster]:
    with metrics_cluster(f"autoscaling-{os.getpid()}", tmp_path_factory.mktemp("autoscaling")) as started:
        client = started.client
        client.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"))
        wait_established(client, "nimservices.nimify.dev")
        yield started


@pytest.fixture(scope="module")
def operator(stack: MetricsCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    client = stack.client
    assert stack.stack.prometheus_url is not None
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NIMIFY_KEDA_PROMETHEUS_URL", stack.stack.prometheus_url)
        patch.setenv("NIMIFY_KEDA_QUERY_WINDOW", "20s")
        process = OperatorProcess(
            client.operator_kubeconfig or client.kubeconfig, tmp_path_factory.mktemp("op") / "operator.log"
        )
        process.start()
    yield process
    process.stop()


@pytest.fixture
def scaled(
    stack: MetricsCluster, operator: OperatorProcess
) -> Iterator[tuple[ExistingCluster, str, StoredModel]]:
    client = stack.client
    with BuildPodKubelet(client), fresh_namespace(client, "e2e") as namespace:
        root = create_local_claim(client, namespace, "models")
        path = write_model(build_mlp(), root / "mlp.onnx")
        yield client, namespace, StoredModel("pvc://models/mlp.onnx", file_sha256(path))


def scaling_active(
    cluster: ExistingCluster, namespace: str, status: str, reason: str, mentions: str = ""
) -> dict[str, Any] | None:
    found = condition(cluster, namespace, "mlp", "ScalingActive")
    if found is None or (found["status"], found["reason"]) != (status, reason):
        return None
    return found if mentions in found["message"] else None


def test_keda_then_hpa_each_alone_and_each_reports_the_missing_metric(
    scaled: tuple[ExistingCluster, str, StoredModel],
) -> None:
    cluster, namespace, model = scaled
    apply(cluster, namespace, nimservice("mlp", model, autoscaling={**QUEUE_TIME, "autoscaler": "KEDA"}))
    wait_ready(cluster, namespace, "mlp", timeout=180)

    scaled_object = get_json(cluster, "scaledobject/mlp", "-n", namespace)
    assert scaled_object["metadata"]["ownerReferences"][0]["kind"] == "NimService"
    trigger = scaled_object["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus" and 'namespace="' + namespace + '"' in trigger["metadata"]["query"]
    assert cluster.kubectl("get", "hpa/mlp", "-n", namespace, check=False).returncode != 0, "no HPA of ours"
    eventually(lambda: get_json(cluster, "hpa/keda-hpa-mlp", "-n", namespace), 90)

    # KEDA's word: the ScaledObject's TriggerError, or (while KEDA still calls it Ready) its HPA's.
    missing = eventually(lambda: scaling_active(cluster, namespace, "False", "MetricUnavailable"), 150, 2)
    assert "ScaledObject mlp" in missing["message"] or "keda-hpa-mlp" in missing["message"], missing
    status = get_json(cluster, "nimservice/mlp", "-n", namespace)["status"]
    assert (
        status["autoscaler"]["kind"] == "ScaledObject" and status["autoscaler"]["hpaName"] == "keda-hpa-mlp"
    )
    events = get_json(cluster, "events", "-n", namespace, "--field-selector", "reason=MetricUnavailable")
    assert events["items"] and {e["type"] for e in events["items"]} == {"Warning"}, events["items"]
    ready = condition(cluster, namespace, "mlp", "Ready")
    assert ready is not None and ready["status"] == "True", "scaling does not decide Ready"

    # The other autoscaler: the ScaledObject goes (and KEDA takes its HPA with it), ours comes.
    apply(
        cluster,
        namespace,
        nimservice("mlp", model, autoscaling={**QUEUE_TIME, "autoscaler": "HorizontalPodAutoscaler"}),
    )
    eventually(
        lambda: cluster.kubectl("get", "scaledobject/mlp", "-n", namespace, check=False).returncode != 0, 90
    )
    eventually(
        lambda: cluster.kubectl("get", "hpa/keda-hpa-mlp", "-n", namespace, check=False).returncode != 0, 90
    )
    hpa = eventually(lambda: get_json(cluster, "hpa/mlp", "-n", namespace), 60)
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "nv_inference_queue_duration_us_per_request"
    # No custom-metrics adapter here: the HPA says so, and so does the NimService. Until the HPA controller's
    # next sync (15 s) the HPA may still report AmbiguousSelector from the moment KEDA's HPA was still there:
    # wait for the verdict about the metric itself.
    missing = eventually(
        lambda: scaling_active(
            cluster, namespace, "False", "MetricUnavailable", "nv_inference_queue_duration_us_per_request"
        ),
        150,
        2,
    )
    assert "HorizontalPodAutoscaler mlp" in missing["message"], missing
    assert get_json(cluster, "nimservice/mlp", "-n", namespace)["status"]["autoscaler"]["kind"] == (
        "HorizontalPodAutoscaler"
    )
