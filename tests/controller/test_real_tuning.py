"""Tuned serving on the real node: the tuning Job measures the built engine in the triton-cpu image with a
real sweep (Triton's repository API, the load generator, Optuna), the status shows the table and the choice,
the running Triton serves the chosen config, and a second NimService on the same engine reuses the tuning with
no second Job."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from nimify_devcluster.cluster import get_json
from nimify_devcluster.real_node import RealNodeInfo
from tests.controller.test_real_pods import (
    HostOperator,
    Model,
    apply,
    real_nimservice,
    running_operator,
    service_url,
    store_models,
    wait_ready,
)
from tests.kube import ExistingCluster, eventually, fresh_namespace

pytestmark = [pytest.mark.cluster, pytest.mark.real_node]

#: A small search a CPU replica measures in about a minute: 2 instances x 2 delays, each at 2 concurrencies.
BUDGET_SECONDS = 90
TUNING: dict[str, Any] = {
    "p99LatencyBudgetMilliseconds": 500,
    "maxInstances": 2,
    "preferredBatchSizes": [[4]],
    "maxQueueDelaysMicroseconds": [0, 500],
    "concurrency": [1, 4],
    "timeBudgetSeconds": BUDGET_SECONDS,
    "trialSeconds": 1,
}


@pytest.fixture(scope="module")
def operator(
    cluster: ExistingCluster,
    nimservice_crd: str,
    real_node: RealNodeInfo,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[HostOperator]:
    with running_operator(
        cluster, real_node, tmp_path_factory.mktemp("operator"), namespaces="tune-*"
    ) as running:
        yield running


@pytest.fixture
def tuned(cluster: ExistingCluster, operator: HostOperator) -> Iterator[tuple[str, dict[str, Model]]]:
    with fresh_namespace(cluster, "tune") as namespace:
        yield namespace, store_models(cluster, namespace)


def tuned_condition(cluster: ExistingCluster, namespace: str, name: str) -> dict[str, Any] | None:
    nim = get_json(cluster, f"nimservice/{name}", "-n", namespace)
    found = [c for c in (nim.get("status") or {}).get("conditions") or [] if c["type"] == "Tuned"]
    return found[0] if found and found[0]["reason"] != "Tuning" else None


def tuning_jobs(cluster: ExistingCluster, namespace: str) -> list[str]:
    names = [job["metadata"]["name"] for job in get_json(cluster, "jobs", "-n", namespace)["items"]]
    return [name for name in names if name.startswith("nimify-tune-")]


def test_a_tuned_nimservice_serves_the_measured_choice_and_a_second_reuses_it(
    cluster: ExistingCluster, real_node: RealNodeInfo, tuned: tuple[str, dict[str, Model]]
) -> None:
    namespace, models = tuned
    spec = {"triton": {"image": real_node.images["triton-cpu"], "tuning": TUNING}}
    body = real_nimservice(
        "mlp", models["v1"], real_node, engine={"backend": "onnxruntime", "maxBatchSize": 8}
    )
    body["spec"]["triton"] = spec["triton"]
    apply(cluster, namespace, body)
    wait_ready(cluster, namespace, "mlp")  # the default config serves while the tuning Job measures

    condition = eventually(lambda: tuned_condition(cluster, namespace, "mlp"), timeout=420, interval=2)
    nim = get_json(cluster, "nimservice/mlp", "-n", namespace)
    tuning = nim["status"]["tuning"]
    print("\n[tuning] condition:", condition["reason"], "-", condition["message"])
    print(f"[tuning] {tuning['trials']} trials in {tuning['seconds']} s, partial: {tuning['partial']}")
    for row in tuning["measurements"]:
        config = row["config"]
        print(
            f"[tuning] {config['instances']}x {config.get('preferredBatchSizes') or 'auto'}"
            f" {config['maxQueueDelayMicroseconds']} us @ {row['concurrency']}:"
            f" {row['throughput']:.1f} infer/s,"
            f" p50 {row['p50Milliseconds']:.2f} ms, p99 {row['p99Milliseconds']:.2f} ms"
        )
    assert condition["reason"] in ("TuningApplied", "TuningObjectiveMissed")
    assert tuning["measurements"] and tuning["trials"] >= 1
    assert tuning["seconds"] <= BUDGET_SECONDS + 30
    assert len(tuning_jobs(cluster, namespace)) == 1

    if condition["reason"] == "TuningApplied":
        chosen = tuning["chosen"]
        assert tuning["capacityPerReplica"] > 0

        def serving_chosen() -> dict[str, Any] | None:
            wait_ready(cluster, namespace, "mlp")
            url = service_url(cluster, namespace, "mlp")
            config = httpx.get(f"{url}/v2/models/mlp/config", timeout=10).json()
            count = config["instance_group"][0]["count"]
            delay = int((config.get("dynamic_batching") or {}).get("max_queue_delay_microseconds") or 0)
            return (
                config
                if (count, delay) == (chosen["instances"], chosen["maxQueueDelayMicroseconds"])
                else None
            )

        eventually(serving_chosen, timeout=180, interval=2)  # the running Triton serves the chosen config

    second = real_nimservice(
        "peer", models["v1"], real_node, engine={"backend": "onnxruntime", "maxBatchSize": 8}
    )
    second["spec"]["triton"] = spec["triton"]
    apply(cluster, namespace, second)
    reused = eventually(lambda: tuned_condition(cluster, namespace, "peer"), timeout=180, interval=1)
    peer = get_json(cluster, "nimservice/peer", "-n", namespace)["status"]
    assert peer["tuning"]["key"] == tuning["key"]
    expected = "TuningReused" if condition["reason"] == "TuningApplied" else "TuningObjectiveMissed"
    assert reused["reason"] == expected
    assert len(tuning_jobs(cluster, namespace)) == 1, "the same engine and GPU product are never tuned twice"
