"""The NimServices the fault tests run: real models on a claim, CPU replicas that kwok runs, and the script's
view of what each should be."""

from __future__ import annotations

from typing import Any

import yaml

from nimify.model.digest import file_sha256
from nimify.model.samples import build_cnn, build_mlp, write_model
from nimify_devcluster.build_runner import create_local_claim
from tests.kube import ExistingCluster

Model = dict[str, str]  # spec.model: uri and sha256


def store_models(cluster: ExistingCluster, namespace: str) -> dict[str, Model]:
    """Two real ONNX models (an MLP and a CNN) on a claim `models` in `namespace`, as spec.model values."""
    root = create_local_claim(cluster, namespace, "models")
    models = {}
    for label, model in (("mlp", build_mlp()), ("cnn", build_cnn())):
        path = write_model(model, root / f"{label}.onnx")
        models[label] = {"uri": f"pvc://models/{label}.onnx", "sha256": file_sha256(path)}
    return models


def cpu_spec(model: Model, batch: int = 8, replicas: int = 1, delay: int = 500) -> dict[str, Any]:
    """A NimService spec on CPU replicas (a hundred of them drain no GPU pool); kwok runs them. `batch` and
    the model choose the engine (a conversion Job each), `replicas` and `delay` (Triton's queue delay, µs)
    only the Deployment and its config."""
    return {
        "model": dict(model),
        "engine": {"backend": "onnxruntime", "maxBatchSize": batch},
        "replicas": replicas,
        "resources": {"gpus": 0, "cpu": "10m", "memory": "64Mi"},
        "triton": {"dynamicBatching": {"maxQueueDelayMicroseconds": delay}},
    }


def nimservice(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "nimify.dev/v1alpha1",
        "kind": "NimService",
        "metadata": {"name": name},
        "spec": spec,
    }


def apply_specs(cluster: ExistingCluster, namespace: str, specs: dict[str, dict[str, Any]]) -> None:
    """Server-side apply NimServices (name -> spec) in one request per object, as a user's kubectl does."""
    cluster.kubectl(
        "apply", "--server-side", "--field-manager=chaos-script", "-n", namespace, "-f", "-",
        input=yaml.safe_dump_all([nimservice(name, spec) for name, spec in specs.items()]),
    )  # fmt: skip
