"""The dev cluster's metrics pipeline on a kwok-only cluster: the aggregated metrics APIs are served, KEDA
turns a ScaledObject into an HPA and reports a missing metric, Prometheus evaluates the autoscaling PromQL
and never targets kwok's fake pods."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nimify.api.spec import Autoscaler
from nimify.autoscaling.adapter_rules import prometheus_adapter_rules
from nimify.autoscaling.queries import deployment_pods_selector, gpu_utilization, queue_time_per_request
from nimify.controller.autoscaling import keda_hpa_name, scaling_verdict
from nimify.render.scaled_object import render_scaled_object
from nimify.settings import OperatorSettings
from nimify_devcluster.cluster import get_json, wait_established
from tests.kube import apply, eventually, fresh_namespace
from tests.metrics_stack import REPO_ROOT, MetricsCluster, metrics_cluster
from tests.render.conftest import nimservice

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetricsCluster]:
    with metrics_cluster(f"metrics-{os.getpid()}", tmp_path_factory.mktemp("metrics")) as started:
        yield started


def target_deployment(name: str) -> dict[str, Any]:
    """A Deployment for a ScaledObject to scale (the operator would render the Triton one)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {"name": "triton", "image": "triton", "resources": {"requests": {"cpu": "1"}}}
                    ]
                },
            },
        },
    }


def prometheus(stack: MetricsCluster, path: str, **params: str) -> Any:
    assert stack.stack.prometheus_url is not None
    url = f"{stack.stack.prometheus_url}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def test_metrics_apis_are_served(stack: MetricsCluster) -> None:
    for api in ("v1beta1.metrics.k8s.io", "v1beta1.external.metrics.k8s.io"):
        service = get_json(stack.client, "apiservice", api)
        available = {c["type"]: c["status"] for c in service["status"]["conditions"]}
        assert available["Available"] == "True", service["status"]
    # metrics-server answers through the apiserver (kwok's fake nodes are not its business: none listed).
    nodes = json.loads(stack.client.kubectl("get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes").stdout)
    assert nodes["kind"] == "NodeMetricsList" and nodes["items"] == []


def test_prometheus_evaluates_the_autoscaling_queries(stack: MetricsCluster) -> None:
    pods = deployment_pods_selector("ml", "resnet50")
    queries = [queue_time_per_request(pods, "30s"), gpu_utilization(pods)]
    # The adapter's rules with its template filled in the way prometheus-adapter fills it.
    for rule in prometheus_adapter_rules():
        filled = rule["metricsQuery"].replace("<<.LabelMatchers>>", 'namespace="ml",pod=~"a|b"')
        queries.append(filled.replace("<<.GroupBy>>", "pod"))
    for query in queries:
        answer = prometheus(stack, "/api/v1/query", query=query)
        assert answer["status"] == "success", (query, answer)


def test_keda_makes_an_hpa_and_reports_the_missing_metric(stack: MetricsCluster) -> None:
    cluster = stack.client
    with fresh_namespace(cluster, "keda") as namespace:
        nim = nimservice(
            {"autoscaling": {"autoscaler": "KEDA", "maxReplicas": 3, "targetQueueTimeMicroseconds": 1000}},
            namespace=namespace,
        )
        settings = OperatorSettings(
            keda_prometheus_url=stack.stack.prometheus_url or "", keda_query_window="30s"
        )
        scaled = render_scaled_object(nim, settings)
        assert scaled is not None
        scaled["metadata"].pop("ownerReferences")  # no NimService object here; KEDA does not care
        apply(cluster, namespace, target_deployment("resnet50"), scaled)
        hpa = eventually(
            lambda: get_json(cluster, "hpa", "-n", namespace, keda_hpa_name("resnet50", None)), 90
        )
        assert hpa["spec"]["scaleTargetRef"]["name"] == "resnet50"
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
        assert hpa["spec"]["metrics"][0]["type"] == "External"

        # No Triton pod exists, so the query returns nothing: with ignoreNullValues false that is an error
        # KEDA reports, and the NimService's ScalingActive says so.
        def verdict() -> Any:
            so = get_json(cluster, "scaledobject", "-n", namespace, "resnet50")
            hpa_now = get_json(cluster, "hpa", "-n", namespace, keda_hpa_name("resnet50", so))
            found = scaling_verdict(Autoscaler.KEDA, "resnet50", hpa_now, so)
            return found if found.status.value == "False" else None

        found = eventually(verdict, 120, interval=2)
        assert found.reason.value == "MetricUnavailable", found
        metric = get_json(cluster, "scaledobject", "-n", namespace, "resnet50")["status"][
            "externalMetricNames"
        ][0]
        failed = cluster.kubectl(
            "get",
            "--raw",
            f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}"
            "?labelSelector=scaledobject.keda.sh%2Fname%3Dresnet50",
            check=False,
        )
        assert failed.returncode != 0


def test_prometheus_never_targets_kwok_pods(stack: MetricsCluster) -> None:
    cluster = stack.client
    with fresh_namespace(cluster, "scrape") as namespace:
        labels = {
            "app": "fake-triton",
            "app.kubernetes.io/managed-by": "nimify-operator",
            "app.kubernetes.io/component": "inference-server",
        }
        pod: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "fake-triton",
                "labels": labels,
                "annotations": {"prometheus.io/scrape": "true"},
            },
            "spec": {
                "containers": [
                    {"name": "t", "image": "triton", "ports": [{"name": "metrics", "containerPort": 8002}]}
                ]
            },
        }
        apply(cluster, namespace, pod)
        cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod/fake-triton", "--timeout=60s")

        def dropped() -> list[dict[str, Any]]:
            targets = prometheus(stack, "/api/v1/targets", state="any")["data"]
            assert not [t for t in targets["activeTargets"] if t["labels"].get("job") == "nimify-triton"]
            return [
                t
                for t in targets["droppedTargets"]
                if t["discoveredLabels"].get("__meta_kubernetes_pod_name") == "fake-triton"
            ]

        # Discovered (so the filter, not discovery, keeps it out) and dropped.
        assert eventually(dropped, 60, interval=2)


def test_doctor_checks_the_metrics_apis_and_metrics(stack: MetricsCluster) -> None:
    """`nimify doctor` on the live pipeline: APIs served, KEDA's metric failing with KEDA's reason, the HPA
    path's adapter missing, CPU usage absent for pods kwok runs."""
    cluster = stack.client
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"))
    wait_established(cluster, "nimservices.nimify.dev")
    with fresh_namespace(cluster, "doctor") as namespace:
        keda = nimservice(
            {
                "resources": {"cpu": "1"},
                "autoscaling": {
                    "autoscaler": "KEDA",
                    "maxReplicas": 3,
                    "targetQueueTimeMicroseconds": 1000,
                    "targetCpuUtilization": 50,
                },
            },
            name="keda-scaled",
            namespace=namespace,
        )
        hpa = nimservice(
            {"autoscaling": {"maxReplicas": 3, "targetQueueTimeMicroseconds": 1000}},
            name="hpa-scaled",
            namespace=namespace,
        )
        bodies = [n.model_dump(mode="json", by_alias=True, exclude_none=True) for n in (keda, hpa)]
        for body in bodies:
            for key in ("uid", "generation"):
                body["metadata"].pop(key, None)
            body.pop("status", None)
        settings = OperatorSettings(keda_prometheus_url=stack.stack.prometheus_url or "")
        scaled = render_scaled_object(keda, settings)
        assert scaled is not None
        scaled["metadata"].pop("ownerReferences")
        apply(cluster, namespace, *bodies, scaled, target_deployment("keda-scaled"))
        eventually(
            lambda: get_json(cluster, "scaledobject", "-n", namespace, "keda-scaled")["status"].get(
                "externalMetricNames"
            ),
            90,
        )
        done = subprocess.run(
            [
                str(Path(sys.executable).parent / "nimify"),
                "doctor",
                "--kubeconfig",
                str(cluster.kubeconfig),
                "-n",
                namespace,
            ],
            capture_output=True,
            text=True,
            timeout=180,
            env={"COLUMNS": "400", "PATH": "/usr/bin:/bin"},
        )
        assert "Traceback" not in done.stderr, done.stderr
        lines = done.stdout.splitlines()

        def line(*parts: str) -> str:
            found = [text for text in lines if all(part in text for part in parts)]
            assert found, (parts, done.stdout)
            return found[0]

        assert line("ok", "api: metrics.k8s.io", "kube-system/metrics-server")
        assert line("ok", "api: external.metrics.k8s.io", "keda/keda-metrics-apiserver")
        assert line("fail", "api: custom.metrics.k8s.io", "v1beta2.custom.metrics.k8s.io")
        assert line("fail", f"{namespace}/hpa-scaled", "custom.metrics.k8s.io not served")
        assert line("fail", f"{namespace}/keda-scaled s0-prometheus", "KEDA cannot compute it")
        assert line("fail", f"{namespace}/keda-scaled cpu", "no CPU usage")
        assert done.returncode == 1
