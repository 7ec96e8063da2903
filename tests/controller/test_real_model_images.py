"""Model images on the real node, through a real registry: `nimify build` pushes, a NimService with the oci://
uri serves it with no Job (the model-image init container pulls it into the replica), a private repository
through a pull secret, a --serving-image image run as a plain Pod, and a refusal from the image's labels.

The registries (the distribution registry, devcluster/registry.py) listen on the bridge's host address, where
the pods and the node's containerd (a hosts.toml for each, plain HTTP) reach them; the operator runs on this
machine with them as its insecureRegistries.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nimify.engine.reference import OnnxRuntimeModel
from nimify.model.samples import build_mlp, write_model
from nimify_devcluster.cluster import get_json
from nimify_devcluster.images import buildah_for
from nimify_devcluster.node_config import HOST_IP
from nimify_devcluster.real_node import RealNodeInfo
from nimify_devcluster.registry import LocalRegistry, node_hosts_config
from tests.controller.test_real_pods import (
    INPUT,
    HostOperator,
    apply,
    condition,
    first_answer,
    service_url,
    wait_ready,
)
from tests.kube import ExistingCluster, eventually, fresh_namespace
from tests.registry import registry_on

pytestmark = [pytest.mark.cluster, pytest.mark.real_node]

WATCHED = "oci-*"
USER, PASSWORD = "ci", "registry-pass-1"
NIMIFY = Path(sys.executable).parent / "nimify"


@dataclass(frozen=True)
class Registries:
    public: LocalRegistry
    private: LocalRegistry


@pytest.fixture(scope="module")
def registries(real_node: RealNodeInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registries]:
    hosts = Path(real_node.registry_hosts_dir)
    with (
        registry_on(tmp_path_factory.mktemp("public"), host=HOST_IP) as public,
        registry_on(tmp_path_factory.mktemp("private"), host=HOST_IP, users={USER: PASSWORD}) as private,
    ):
        written = [node_hosts_config(hosts, registry) for registry in (public, private)]
        try:
            yield Registries(public, private)
        finally:
            for path in written:
                path.unlink(missing_ok=True)
                path.parent.rmdir()


@pytest.fixture(scope="module")
def operator(
    cluster: ExistingCluster,
    nimservice_crd: str,
    real_node: RealNodeInfo,
    registries: Registries,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[HostOperator]:
    insecure = json.dumps([registries.public.address, registries.private.address])
    running = HostOperator(
        cluster.operator_kubeconfig or cluster.kubeconfig,
        real_node,
        tmp_path_factory.mktemp("operator") / "operator.log",
        namespaces=WATCHED,
        settings={"NIMIFY_INSECURE_REGISTRIES": insecure},
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(build_mlp(), tmp_path_factory.mktemp("model") / "mlp.onnx")


def build(
    model: Path, image: str, *extra: str, env: dict[str, str] | None = None, backend: str = "onnxruntime"
) -> str:
    """`nimify build` as a user runs it; the pushed reference (with its digest), its last line."""
    done = subprocess.run(
        [
            str(NIMIFY),
            "build",
            str(model),
            "--image",
            image,
            "--plain-http",
            "--backend",
            backend,
            "-q",
            *extra,
        ],
        capture_output=True,
        text=True,
        env=os.environ | (env or {}),
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def image_nimservice(name: str, uri: str, node: RealNodeInfo, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "nimify.dev/v1alpha1",
        "kind": "NimService",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": uri},
            "engine": {"backend": "onnxruntime"},
            "triton": {"image": node.images["triton-cpu"]},
            "resources": {"gpus": 0, "cpu": "100m", "memory": "1Gi"},
            "placement": {"runtimeClassName": node.runtime_class},
            **spec,
        },
    }


@pytest.fixture
def namespace(cluster: ExistingCluster, operator: HostOperator) -> Iterator[str]:
    with fresh_namespace(cluster, "oci") as name:
        yield name


def expected(model: Path) -> np.ndarray:
    return np.asarray(OnnxRuntimeModel(model).run({"input": INPUT})["logits"])


def test_a_built_image_is_served_with_no_job_and_answers_like_onnx_runtime(
    cluster: ExistingCluster, real_node: RealNodeInfo, registries: Registries, namespace: str, model: Path
) -> None:
    tag = f"oci://{registries.public.address}/models/mlp:v1"
    pinned = build(model, tag)
    assert pinned.startswith(f"{tag}@sha256:")
    started = time.monotonic()
    apply(cluster, namespace, image_nimservice("mlp", tag, real_node))
    nim = wait_ready(cluster, namespace, "mlp")
    ready_after = time.monotonic() - started
    assert get_json(cluster, "jobs", "-n", namespace)["items"] == []
    assert get_json(cluster, "pvc", "-n", namespace)["items"] == []
    assert nim["status"]["engine"]["location"] == pinned
    assert condition(nim, "EngineReady")["reason"] == "EngineFromImage"
    answer = first_answer(service_url(cluster, namespace, "mlp"), "mlp")
    np.testing.assert_allclose(answer, expected(model), rtol=1e-5, atol=1e-6)
    print(f"\napply -> Ready from oci:// (tag resolved, init container pulled {pinned}): {ready_after:.1f} s")


def test_a_private_image_is_served_through_the_pull_secret(
    cluster: ExistingCluster, real_node: RealNodeInfo, registries: Registries, namespace: str, model: Path
) -> None:
    address = registries.private.address
    pinned = build(
        model,
        f"{address}/team/mlp:v1",
        env={"NIMIFY_REGISTRY_USERNAME": USER, "NIMIFY_REGISTRY_PASSWORD": PASSWORD},
    )
    # Without the secret: the operator cannot read the image, and says so.
    apply(cluster, namespace, image_nimservice("mlp", pinned, real_node))

    def refused() -> dict[str, Any] | None:
        nim = get_json(cluster, "nimservice/mlp", "-n", namespace)
        found = [c for c in (nim.get("status") or {}).get("conditions") or [] if c["type"] == "EngineReady"]
        return found[0] if found and found[0]["reason"] == "ModelImageUnauthorized" else None

    eventually(refused, timeout=60)
    config = {"auths": {address: {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}
    cluster.kubectl(
        "create", "secret", "generic", "registry", "-n", namespace,
        "--type=kubernetes.io/dockerconfigjson", f"--from-literal=.dockerconfigjson={json.dumps(config)}",
    )  # fmt: skip
    apply(cluster, namespace, image_nimservice("mlp", pinned, real_node, imagePullSecrets=["registry"]))
    nim = wait_ready(cluster, namespace, "mlp")
    assert nim["status"]["engine"]["location"] == pinned
    answer = first_answer(service_url(cluster, namespace, "mlp"), "mlp")
    np.testing.assert_allclose(answer, expected(model), rtol=1e-5, atol=1e-6)
    assert PASSWORD not in json.dumps(nim)


def test_an_image_for_another_backend_is_refused_with_the_label_named(
    cluster: ExistingCluster, real_node: RealNodeInfo, registries: Registries, namespace: str, model: Path
) -> None:
    # ONNX Runtime in Triton's python backend: not what a NimService with the onnxruntime backend serves.
    pinned = build(model, f"{registries.public.address}/models/mlp-python:v1", backend="python")
    apply(cluster, namespace, image_nimservice("mlp", pinned, real_node))

    def stalled() -> dict[str, Any] | None:
        nim = get_json(cluster, "nimservice/mlp", "-n", namespace)
        conditions = (nim.get("status") or {}).get("conditions") or []
        found = [c for c in conditions if c["type"] == "Stalled" and c["status"] == "True"]
        return found[0] if found else None

    found = eventually(stalled, timeout=60)
    assert found["reason"] == "ModelImageMismatch"
    assert "dev.nimify.engine.backend" in found["message"] and "spec.engine.backend" in found["message"]
    assert get_json(cluster, "deployments", "-n", namespace)["items"] == []


def test_a_serving_image_runs_as_a_plain_pod_and_answers(
    cluster: ExistingCluster,
    real_node: RealNodeInfo,
    registries: Registries,
    namespace: str,
    model: Path,
    tmp_path: Path,
) -> None:
    # buildah works on the dev cluster's image store, where the triton-cpu image already is: no copy of it.
    store = buildah_for()
    conf = tmp_path / "storage.conf"
    conf.write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{store.root}"\nrunroot = "{store.runroot}"\n'
    )
    pinned = build(
        model,
        f"{registries.public.address}/models/mlp-serving:v1",
        "--serving-image",
        "--base-image",
        f"containers-storage:{real_node.images['triton-cpu']}",
        "--name",
        "mlp",
        env={"CONTAINERS_STORAGE_CONF": str(conf)},
    )
    image = pinned.removeprefix("oci://")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "mlp-serving"},
        "spec": {
            "runtimeClassName": real_node.runtime_class,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
            "containers": [
                {
                    "name": "triton",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "ports": [{"containerPort": 8000}],
                    "readinessProbe": {
                        "httpGet": {"path": "/v2/health/ready", "port": 8000},
                        "periodSeconds": 1,
                    },
                    "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}},
                    "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}],
                }
            ],
            "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}}],
        },
    }
    apply(cluster, namespace, pod)
    cluster.kubectl("wait", "--for=condition=Ready", "pod/mlp-serving", "-n", namespace, "--timeout=180s")
    address = get_json(cluster, "pod/mlp-serving", "-n", namespace)["status"]["podIP"]
    answer = first_answer(f"http://{address}:8000", "mlp")
    np.testing.assert_allclose(answer, expected(model), rtol=1e-5, atol=1e-6)
