"""The Triton Deployment: replicas, rollout safety, probes, ports, scheduling and the engine it mounts."""

from __future__ import annotations

from typing import Any

import pytest

from nimify.engine.location import EngineLocation
from nimify.render.deployment import (
    MODEL_REPOSITORY,
    PRE_STOP_SECONDS,
    ServedEngine,
    render_deployment,
    triton_args,
)
from nimify.render.identity import CONFIG_HASH_ANNOTATION, ENGINE_KEY_ANNOTATION, labels, server_selector
from nimify.settings import OperatorSettings
from tests.render.conftest import NAME, nimservice, unit_of

LOCATION = EngineLocation(cache_key="c" * 64, claim="nimify-engines")
ENGINE = ServedEngine(config_hash="0123456789abcdef")
GPU = "nvidia.com/gpu"
GPU_PRODUCT = "nvidia.com/gpu.product"
GPU_TOLERATION = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}
AUTOSCALING: dict[str, Any] = {"autoscaling": {"maxReplicas": 4, "targetQueueTimeMicroseconds": 20000}}


def deployment_for(
    spec: dict[str, Any] | None = None,
    engine: ServedEngine = ENGINE,
    settings: OperatorSettings | None = None,
    location: EngineLocation = LOCATION,
) -> dict[str, Any]:
    nim = nimservice(spec)
    return render_deployment(nim, unit_of(nim, location), engine, settings or OperatorSettings())


def pod(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def triton(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod(deployment)["containers"]
    assert container["name"] == "triton"
    result: dict[str, Any] = container
    return result


def test_kind_and_name() -> None:
    deployment = deployment_for()
    assert deployment["apiVersion"] == "apps/v1" and deployment["kind"] == "Deployment"
    assert deployment["metadata"]["name"] == NAME


@pytest.mark.parametrize(("spec", "replicas"), [({"replicas": 3}, 3), ({"replicas": 0}, 0)])
def test_replicas_from_spec(spec: dict[str, Any] | None, replicas: int) -> None:
    assert deployment_for(spec)["spec"]["replicas"] == replicas


def test_replicas_absent_when_the_spec_sets_none() -> None:
    # Kubernetes starts the Deployment with 1; later the count stays whatever it is (e.g. the HPA's last one
    # when autoscaling is turned off) instead of jumping back to 1.
    assert "replicas" not in deployment_for(None)["spec"]


def test_replicas_absent_when_autoscaled() -> None:
    # The HPA owns the count: an applied replicas field would fight it on every reconcile.
    assert "replicas" not in deployment_for(AUTOSCALING)["spec"]


def test_rolling_update_never_drops_capacity() -> None:
    strategy = deployment_for()["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert strategy["rollingUpdate"]["maxSurge"] >= 1


def test_selector_matches_pod_labels() -> None:
    deployment = deployment_for()
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector == server_selector(nimservice())
    assert selector.items() <= pod_labels.items()
    assert pod_labels == labels(nimservice(), "inference-server")


@pytest.mark.parametrize(("spec", "model"), [(None, NAME), ({"model": {"name": "classifier"}}, "classifier")])
def test_probes(spec: dict[str, Any] | None, model: str) -> None:
    container = triton(deployment_for(spec))
    ready = {"path": f"/v2/models/{model}/ready", "port": 8000}
    assert container["startupProbe"]["httpGet"] == ready
    assert container["readinessProbe"]["httpGet"] == ready
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8000}
    # Engines take minutes to load: the startup probe allows far longer than liveness would.
    startup = container["startupProbe"]
    liveness = container["livenessProbe"]
    assert (
        startup["periodSeconds"] * startup["failureThreshold"]
        > liveness["periodSeconds"] * liveness["failureThreshold"]
    )


def test_probes_follow_a_custom_http_port() -> None:
    container = triton(deployment_for({"expose": {"httpPort": 9000}}))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == 9000


@pytest.mark.parametrize(
    ("expose", "ports"),
    [
        ({}, (8000, 8001, 8002)),
        ({"httpPort": 9000, "grpcPort": 9001, "metricsPort": 9002}, (9000, 9001, 9002)),
    ],
)
def test_ports(expose: dict[str, int], ports: tuple[int, int, int]) -> None:
    deployment = deployment_for({"expose": expose})
    container = triton(deployment)
    assert container["ports"] == [
        {"name": "http", "containerPort": ports[0]},
        {"name": "grpc", "containerPort": ports[1]},
        {"name": "metrics", "containerPort": ports[2]},
    ]
    args = container["args"]
    assert f"--http-port={ports[0]}" in args
    assert f"--grpc-port={ports[1]}" in args
    assert f"--metrics-port={ports[2]}" in args
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(ports[2])
    assert annotations["prometheus.io/path"] == "/metrics"


def test_engine_and_config_annotations_roll_the_pods() -> None:
    annotations = deployment_for()["spec"]["template"]["metadata"]["annotations"]
    assert annotations[ENGINE_KEY_ANNOTATION] == LOCATION.cache_key
    assert annotations[CONFIG_HASH_ANNOTATION] == ENGINE.config_hash
    other_config = ServedEngine("fedcba9876543210")
    base = deployment_for()["spec"]["template"]
    assert deployment_for(location=EngineLocation("d" * 64, LOCATION.claim))["spec"]["template"] != base
    assert deployment_for(engine=other_config)["spec"]["template"] != base


def test_engine_and_config_mounted_read_only() -> None:
    deployment = deployment_for({"model": {"name": "classifier"}})
    mounts = {mount["name"]: mount for mount in triton(deployment)["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod(deployment)["volumes"]}
    assert mounts["engines"] == {
        "name": "engines",
        "mountPath": f"{MODEL_REPOSITORY}/classifier",
        "readOnly": True,
        "subPath": f"{LOCATION.repository}/model",
    }
    assert volumes["engines"]["persistentVolumeClaim"] == {"claimName": LOCATION.claim, "readOnly": True}
    assert mounts["triton-config"]["mountPath"] == f"{MODEL_REPOSITORY}/classifier/config.pbtxt"
    assert mounts["triton-config"]["subPath"] == "config.pbtxt"
    assert mounts["triton-config"]["readOnly"] is True
    assert volumes["triton-config"]["configMap"] == {"name": f"{NAME}-triton-config"}


def test_shared_memory_is_a_memory_empty_dir() -> None:
    deployment = deployment_for()
    mounts = {mount["name"]: mount for mount in triton(deployment)["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod(deployment)["volumes"]}
    assert mounts["shm"]["mountPath"] == "/dev/shm"
    assert volumes["shm"]["emptyDir"]["medium"] == "Memory"
    assert volumes["shm"]["emptyDir"]["sizeLimit"]


def test_restricted_security_context() -> None:
    deployment = deployment_for()
    assert pod(deployment)["securityContext"]["runAsNonRoot"] is True
    assert pod(deployment)["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod(deployment)["automountServiceAccountToken"] is False
    security = triton(deployment)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize(
    ("spec", "engine_product", "node_selector"),
    [
        (None, None, None),
        ({"resources": {"gpuProduct": "NVIDIA-L4"}}, None, {GPU_PRODUCT: "NVIDIA-L4"}),
        # Left out in the spec, replicas go where the engine was built: an engine runs on its product only.
        (None, "NVIDIA-H100-80GB-HBM3", {GPU_PRODUCT: "NVIDIA-H100-80GB-HBM3"}),
        ({"resources": {"gpuProduct": "NVIDIA-L4"}}, "NVIDIA-L4", {GPU_PRODUCT: "NVIDIA-L4"}),
        (
            {"placement": {"nodeSelector": {"pool": "inference"}}},
            "NVIDIA-L4",
            {"pool": "inference", GPU_PRODUCT: "NVIDIA-L4"},
        ),
        ({"placement": {"nodeSelector": {"pool": "inference"}}}, None, {"pool": "inference"}),
    ],
)
def test_node_selector(
    spec: dict[str, Any] | None, engine_product: str | None, node_selector: dict[str, str] | None
) -> None:
    engine = ServedEngine(ENGINE.config_hash, gpu_product=engine_product)
    assert pod(deployment_for(spec, engine)).get("nodeSelector") == node_selector


def test_placement_passthrough() -> None:
    affinity = {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": NAME}},
                    },
                }
            ]
        }
    }
    toleration = {"key": "dedicated", "operator": "Equal", "value": "inference", "effect": "NoSchedule"}
    spec = {
        "placement": {
            "tolerations": [toleration],
            "affinity": affinity,
            "priorityClassName": "inference-critical",
            "runtimeClassName": "nvidia",
        }
    }
    pod_spec = pod(deployment_for(spec))
    assert pod_spec["tolerations"] == [GPU_TOLERATION, toleration]
    assert pod_spec["affinity"] == affinity
    assert pod_spec["priorityClassName"] == "inference-critical"
    assert pod_spec["runtimeClassName"] == "nvidia"


def test_no_placement_fields_by_default() -> None:
    pod_spec = pod(deployment_for())
    for field in ("affinity", "priorityClassName", "runtimeClassName", "nodeSelector"):
        assert field not in pod_spec
    assert pod_spec["tolerations"] == [GPU_TOLERATION]


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ({}, {"limits": {GPU: 1}}),
        ({"gpus": 2}, {"limits": {GPU: 2}}),
        (
            {"gpus": 1, "cpu": "4", "memory": "16Gi"},
            {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {GPU: 1, "memory": "16Gi"}},
        ),
        ({"gpus": 1, "cpu": 2}, {"requests": {"cpu": "2"}, "limits": {GPU: 1}}),
    ],
)
def test_resources(resources: dict[str, Any], expected: dict[str, Any]) -> None:
    assert triton(deployment_for({"resources": resources}))["resources"] == expected


def test_cpu_replicas_get_no_gpu_or_gpu_toleration() -> None:
    deployment = deployment_for(
        {"engine": {"backend": "onnxruntime"}, "resources": {"gpus": 0, "cpu": "2", "memory": "4Gi"}}
    )
    assert triton(deployment)["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"memory": "4Gi"},
    }
    assert "tolerations" not in pod(deployment)


def test_triton_image_and_command() -> None:
    image = "nvcr.io/nvidia/tritonserver:25.11-py3"
    container = triton(deployment_for({"triton": {"image": image}}))
    assert container["image"] == image
    assert container["command"] == ["tritonserver"]


def test_triton_args_defaults() -> None:
    args = triton_args(nimservice().spec)
    assert f"--model-repository={MODEL_REPOSITORY}" in args
    assert "--model-control-mode=none" in args
    assert {"--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"} <= set(args)
    assert not any(arg.startswith("--cache-config") for arg in args)
    assert len(args) == len(set(args))


@pytest.mark.parametrize(
    ("cache", "flag"),
    [
        ({}, "--cache-config=local,size=268435456"),
        ({"sizeBytes": 67108864}, "--cache-config=local,size=67108864"),
        ({"enabled": False, "sizeBytes": 67108864}, None),
    ],
)
def test_triton_args_response_cache(cache: dict[str, Any], flag: str | None) -> None:
    args = triton_args(nimservice({"triton": {"responseCache": cache}}).spec)
    assert [arg for arg in args if arg.startswith("--cache-config")] == ([flag] if flag else [])


def test_triton_extra_args_come_last_in_order() -> None:
    extra = ["--log-verbose=1", "--backend-config=tensorrt,coalesce-request-input=true"]
    args = triton_args(nimservice({"triton": {"extraArgs": extra}}).spec)
    assert args[-2:] == extra
    assert triton(deployment_for({"triton": {"extraArgs": extra}}))["args"] == args


def test_pull_policy_comes_from_the_operator_settings() -> None:
    assert "imagePullPolicy" not in triton(deployment_for())  # Kubernetes' default for a tagged image
    local = deployment_for(settings=OperatorSettings(image_pull_policy="Never"))
    assert triton(local)["imagePullPolicy"] == "Never"


def test_a_terminating_replica_keeps_serving_until_services_forget_it() -> None:
    # Endpoints drop a terminating pod at once, but kube-proxy and load balancers need a moment: the preStop
    # delay keeps Triton answering meanwhile, and the grace period covers the delay plus Triton's own drain.
    deployment = deployment_for()
    assert triton(deployment)["lifecycle"]["preStop"] == {"sleep": {"seconds": PRE_STOP_SECONDS}}
    assert pod(deployment)["terminationGracePeriodSeconds"] >= PRE_STOP_SECONDS + 30


def test_service_account_and_pull_secrets(settings: OperatorSettings) -> None:
    assert "serviceAccountName" not in pod(deployment_for(settings=settings))
    defaults = settings.model_copy(
        update={
            "server_service_account": "triton",
            "build_service_account": "model-reader",
            "image_pull_secrets": ["nvcr-mirror"],
        }
    )
    served = pod(deployment_for(settings=defaults))
    # The serving pods never get the conversion's account (and with it the model bucket).
    assert served["serviceAccountName"] == "triton"
    assert served["imagePullSecrets"] == [{"name": "nvcr-mirror"}]
    own = pod(
        deployment_for(
            {"triton": {"serviceAccountName": "edge"}, "imagePullSecrets": ["team"]}, settings=defaults
        )
    )
    assert own["serviceAccountName"] == "edge"
    assert own["imagePullSecrets"] == [{"name": "nvcr-mirror"}, {"name": "team"}]
    assert own["automountServiceAccountToken"] is False
