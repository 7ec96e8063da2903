"""The conversion Job: what it runs, where, with which rights, and how it fails."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nimify.api import NimServiceSpec
from nimify.engine.location import ENGINE_MOUNT, engine_location
from nimify.render.build_job import builder_image, model_claim, render_build_job
from nimify.render.identity import ENGINE_KEY_ANNOTATION, build_job_name
from nimify.settings import OperatorSettings
from tests.render.conftest import nimservice, unit_of

GPU = "nvidia.com/gpu"
GPU_PRODUCT = "nvidia.com/gpu.product"
GPU_TOLERATION = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}
ONNXRUNTIME: dict[str, Any] = {"engine": {"backend": "onnxruntime"}, "resources": {"gpus": 0}}
FULL_SPEC: dict[str, Any] = {
    "model": {
        "uri": "hf://acme-vision/yolo-detector@v2.1/onnx/model.onnx",
        "credentialsSecret": "hf-token",
        "name": "yolo",
    },
    "engine": {
        "precision": "fp16",
        "maxBatchSize": 8,
        "profiles": [
            {"input": "images", "min": [1, 3, 64, 64], "opt": [4, 3, 64, 64], "max": [8, 3, 64, 64]}
        ],
        "parity": {"atol": 0.01, "rtol": 0.01, "samples": 16},
        "workspace": "8Gi",
        "buildTimeoutSeconds": 900,
    },
    "triton": {"instancesPerGpu": 2, "warmup": {"batchSizes": [1, 8]}},
    "resources": {"gpus": 1, "gpuProduct": "NVIDIA-H100-80GB-HBM3", "memory": "32Gi"},
    "replicas": 2,
    "storage": {"size": "20Gi", "storageClassName": "fast-ssd"},
}


def job_for(spec: dict[str, Any] | None, settings: OperatorSettings) -> dict[str, Any]:
    nim = nimservice(spec)
    return render_build_job(nim, unit_of(nim, settings=settings), settings)


def pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def container(job: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod_spec(job)["containers"]
    assert len(containers) == 1
    return containers[0]


def env(job: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container(job)["env"]}


def test_job_spec_limits_from_settings_and_spec(settings: OperatorSettings) -> None:
    custom = settings.model_copy(update={"build_backoff_limit": 3, "build_ttl_seconds": 600})
    job = job_for({"engine": {"buildTimeoutSeconds": 900}}, custom)
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["spec"]["backoffLimit"] == 3
    assert job["spec"]["ttlSecondsAfterFinished"] == 600
    assert job["spec"]["activeDeadlineSeconds"] == 900
    assert pod_spec(job)["restartPolicy"] == "Never"


def test_default_build_timeout(settings: OperatorSettings) -> None:
    assert job_for(None, settings)["spec"]["activeDeadlineSeconds"] == 1800


def test_name_and_engine_key_annotation(settings: OperatorSettings) -> None:
    nim = nimservice()
    location = engine_location(nim, settings)
    job = render_build_job(nim, unit_of(nim, location), settings)
    assert job["metadata"]["name"] == build_job_name(
        location.claim, location.cache_key, location.conversion_key
    )
    assert job["metadata"]["annotations"] == {ENGINE_KEY_ANNOTATION: location.cache_key}
    assert job["spec"]["template"]["metadata"]["annotations"] == {ENGINE_KEY_ANNOTATION: location.cache_key}


def test_same_engine_same_job_other_engine_other_job(settings: OperatorSettings) -> None:
    name = job_for(None, settings)["metadata"]["name"]
    assert job_for({"replicas": 3}, settings)["metadata"]["name"] == name
    # A new deadline or parity check is a new conversion of the same engine (a failed one is retried).
    assert job_for({"engine": {"buildTimeoutSeconds": 60}}, settings)["metadata"]["name"] != name
    assert job_for({"engine": {"precision": "fp32"}}, settings)["metadata"]["name"] != name
    assert job_for({"storage": {"size": "20Gi"}}, settings)["metadata"]["name"] != name


@pytest.mark.parametrize(
    ("spec", "node_selector"),
    [
        (None, None),
        ({"resources": {"gpuProduct": "NVIDIA-L4"}}, {GPU_PRODUCT: "NVIDIA-L4"}),
        (
            {"resources": {"gpuProduct": "NVIDIA-L4"}, "placement": {"nodeSelector": {"pool": "gpu"}}},
            {"pool": "gpu", GPU_PRODUCT: "NVIDIA-L4"},
        ),
        ({"placement": {"nodeSelector": {"pool": "gpu"}}}, {"pool": "gpu"}),
    ],
)
def test_node_selector(
    settings: OperatorSettings, spec: dict[str, Any] | None, node_selector: dict[str, str] | None
) -> None:
    assert pod_spec(job_for(spec, settings)).get("nodeSelector") == node_selector


@pytest.mark.parametrize(
    ("spec", "gpu_limit"),
    [(None, 1), ({"resources": {"gpus": 4}}, 1), (ONNXRUNTIME, None)],
)
def test_gpu_limit_only_for_tensorrt(
    settings: OperatorSettings, spec: dict[str, Any] | None, gpu_limit: int | None
) -> None:
    resources = container(job_for(spec, settings))["resources"]
    assert resources["limits"].get(GPU) == gpu_limit
    assert GPU not in resources["requests"]
    assert resources["limits"]["memory"] and resources["requests"]["memory"]


@pytest.mark.parametrize(
    ("build_resources", "requests", "memory_limit"),
    [
        (None, {"cpu": "1", "memory": "4Gi"}, "16Gi"),
        ({"cpu": 8, "memory": "24Gi", "memoryLimit": "48Gi"}, {"cpu": "8", "memory": "24Gi"}, "48Gi"),
        # A larger request alone raises the default limit with it, never below the request.
        ({"memory": "32Gi"}, {"cpu": "1", "memory": "32Gi"}, "32Gi"),
        ({"memory": "2Gi"}, {"cpu": "1", "memory": "2Gi"}, "16Gi"),
        ({"memoryLimit": "64Gi"}, {"cpu": "1", "memory": "4Gi"}, "64Gi"),
        # A limit below the default request: the request follows it down (the apiserver refuses more).
        ({"memoryLimit": "1Gi"}, {"cpu": "1", "memory": "1Gi"}, "1Gi"),
        ({"cpu": 0, "memoryLimit": "512Mi"}, {"cpu": "0", "memory": "512Mi"}, "512Mi"),
    ],
)
def test_build_resources_from_the_spec_else_the_operator_defaults(
    settings: OperatorSettings,
    build_resources: dict[str, Any] | None,
    requests: dict[str, str],
    memory_limit: str,
) -> None:
    resources = container(job_for({"engine": {"buildResources": build_resources}}, settings))["resources"]
    assert resources["requests"] == requests
    assert resources["limits"]["memory"] == memory_limit


def test_operator_default_build_resources(settings: OperatorSettings) -> None:
    larger = settings.model_copy(
        update={"build_cpu": "4", "build_memory": "16Gi", "build_memory_limit": "64Gi"}
    )
    resources = container(job_for(None, larger))["resources"]
    assert resources["requests"] == {"cpu": "4", "memory": "16Gi"}
    assert resources["limits"]["memory"] == "64Gi"


def test_build_resources_stay_out_of_the_engine_cache_key_but_name_another_job(
    settings: OperatorSettings,
) -> None:
    # The same engine comes out; a conversion killed for its memory runs again, as a new Job, with more.
    plain = job_for(None, settings)
    bigger = job_for({"engine": {"buildResources": {"memory": "64Gi", "memoryLimit": "64Gi"}}}, settings)
    assert (
        plain["metadata"]["annotations"][ENGINE_KEY_ANNOTATION]
        == (bigger["metadata"]["annotations"][ENGINE_KEY_ANNOTATION])
    )
    assert plain["metadata"]["name"] != bigger["metadata"]["name"]


@pytest.mark.parametrize(
    ("spec_account", "default_account", "expected"),
    [(None, None, None), (None, "model-reader", "model-reader"), ("s3-reader", "model-reader", "s3-reader")],
)
def test_service_account_from_the_spec_else_the_operator_default(
    settings: OperatorSettings, spec_account: str | None, default_account: str | None, expected: str | None
) -> None:
    configured = settings.model_copy(update={"build_service_account": default_account})
    pod = pod_spec(job_for({"model": {"serviceAccountName": spec_account}}, configured))
    assert pod.get("serviceAccountName") == expected
    # Workload identity needs no Kubernetes API token; its webhooks project their own.
    assert pod["automountServiceAccountToken"] is False


def test_pull_secrets_operator_first_then_the_spec_each_once(settings: OperatorSettings) -> None:
    configured = settings.model_copy(update={"image_pull_secrets": ["builder-registry", "nvcr-mirror"]})
    assert "imagePullSecrets" not in pod_spec(job_for(None, settings))
    pod = pod_spec(job_for({"imagePullSecrets": ["nvcr-mirror", "team-registry"]}, configured))
    assert pod["imagePullSecrets"] == [
        {"name": "builder-registry"},
        {"name": "nvcr-mirror"},
        {"name": "team-registry"},
    ]


def test_gpu_toleration_first_then_user_tolerations(settings: OperatorSettings) -> None:
    assert pod_spec(job_for(None, settings))["tolerations"] == [GPU_TOLERATION]
    user = {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
    job = job_for({"placement": {"tolerations": [user], "priorityClassName": "batch-low"}}, settings)
    assert pod_spec(job)["tolerations"] == [GPU_TOLERATION, user]
    assert pod_spec(job)["priorityClassName"] == "batch-low"


def test_tensorrt_build_uses_the_gpu_runtime_class(settings: OperatorSettings) -> None:
    job = job_for({"placement": {"runtimeClassName": "nvidia"}}, settings)
    assert pod_spec(job).get("runtimeClassName") == "nvidia"


NODE_AFFINITY = {
    "requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [
            {"matchExpressions": [{"key": "cloud.example/gpu-pool", "operator": "In", "values": ["h100"]}]}
        ]
    }
}


def test_build_follows_the_replicas_node_affinity(settings: OperatorSettings) -> None:
    job = job_for({"placement": {"affinity": {"nodeAffinity": NODE_AFFINITY}}}, settings)
    assert pod_spec(job).get("affinity", {}).get("nodeAffinity") == NODE_AFFINITY


@pytest.mark.parametrize("spec", [None, FULL_SPEC, ONNXRUNTIME, {"model": {"sha256": None}}])
def test_spec_env_round_trips(settings: OperatorSettings, spec: dict[str, Any] | None) -> None:
    nim = nimservice(spec)
    job = render_build_job(nim, unit_of(nim, settings=settings), settings)
    # The Job reads it back with the same model the apiserver's data went through.
    assert NimServiceSpec.model_validate_json(env(job)["NIMIFY_SPEC"]) == nim.spec
    assert NimServiceSpec.model_validate(json.loads(env(job)["NIMIFY_SPEC"])) == nim.spec


def test_credentials_only_through_secret_ref(settings: OperatorSettings) -> None:
    job = job_for({"model": {"credentialsSecret": "models-prod-s3"}}, settings)
    assert container(job)["envFrom"] == [{"secretRef": {"name": "models-prod-s3"}}]
    assert [item["name"] for item in container(job)["env"]] == [
        "NIMIFY_SPEC",
        "NIMIFY_MODEL_URI_DENIED_RANGES",
    ]
    # Nothing reads the Secret's data: no secretKeyRef values, no secret volumes.
    text = json.dumps(job)
    assert "secretKeyRef" not in text
    assert all("secret" not in volume for volume in pod_spec(job)["volumes"])


def test_no_env_from_without_credentials(settings: OperatorSettings) -> None:
    assert "envFrom" not in container(job_for(None, settings))


def test_engine_claim_mounted_and_cache_key_passed(settings: OperatorSettings) -> None:
    nim = nimservice()
    location = engine_location(nim, settings)
    job = render_build_job(nim, unit_of(nim, location), settings)
    volumes = {volume["name"]: volume for volume in pod_spec(job)["volumes"]}
    assert volumes["engines"]["persistentVolumeClaim"] == {"claimName": location.claim}
    mounts = {mount["name"]: mount for mount in container(job)["volumeMounts"]}
    assert mounts["engines"]["mountPath"] == ENGINE_MOUNT
    assert not mounts["engines"].get("readOnly")
    args = container(job)["args"]
    assert f"--cache-key={location.cache_key}" in args
    assert f"--repository={ENGINE_MOUNT}/{location.repository}" in args
    assert "model-source" not in volumes


def test_pvc_model_claim_mounted_read_only(settings: OperatorSettings) -> None:
    job = job_for({"model": {"uri": "pvc://model-store/sentiment/distilbert.onnx"}}, settings)
    volumes = {volume["name"]: volume for volume in pod_spec(job)["volumes"]}
    mounts = {mount["name"]: mount for mount in container(job)["volumeMounts"]}
    assert volumes["model-source"]["persistentVolumeClaim"] == {"claimName": "model-store", "readOnly": True}
    assert mounts["model-source"] == {
        "name": "model-source",
        "mountPath": "/mnt/pvc/model-store",
        "readOnly": True,
    }
    assert "--pvc-root=/mnt/pvc" in container(job)["args"]


@pytest.mark.parametrize(
    ("uri", "claim"),
    [
        ("pvc://model-store/a/b.onnx", "model-store"),
        ("pvc://store.team/b.onnx", "store.team"),
        ("s3://bucket/pvc/b.onnx", None),
        ("https://host.example/pvc/b.onnx", None),
    ],
)
def test_model_claim(uri: str, claim: str | None) -> None:
    assert model_claim(nimservice({"model": {"uri": uri}})) == claim


def test_restricted_security_context(settings: OperatorSettings) -> None:
    job = job_for(None, settings)
    pod = pod_spec(job)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container(job)["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in security
    # A read-only root needs writable scratch space where the conversion writes.
    writable = {mount["mountPath"] for mount in container(job)["volumeMounts"] if not mount.get("readOnly")}
    assert {"/work", "/tmp", ENGINE_MOUNT} <= writable


def test_result_lands_in_the_termination_message(settings: OperatorSettings) -> None:
    convert = container(job_for(None, settings))
    assert convert["command"] == ["nimify", "convert"]
    assert convert["terminationMessagePath"] == "/dev/termination-log"
    assert "--termination-log=/dev/termination-log" in convert["args"]
    assert convert["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_extra_build_pod_labels(settings: OperatorSettings) -> None:
    custom = settings.model_copy(update={"build_pod_labels": {"cost-center": "ml-42"}})
    job = job_for(None, custom)
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["cost-center"] == "ml-42"
    assert pod_labels["app.kubernetes.io/component"] == "engine-build"
    assert pod_labels["app.kubernetes.io/managed-by"] == "nimify-operator"
    # The Job object keeps the standard labels only.
    assert "cost-center" not in job["metadata"]["labels"]


@pytest.mark.parametrize(
    ("spec", "image"),
    [
        (None, "registry.example/nimify-builder:test-trt25.10"),
        (
            {"triton": {"image": "nvcr.io/nvidia/tritonserver:24.05-py3"}},
            "registry.example/nimify-builder:test-trt24.05",
        ),
        (
            {"triton": {"image": "nvcr.io/nvidia/tritonserver:26.06-py3@sha256:" + "1" * 64}},
            "registry.example/nimify-builder:test-trt26.06",
        ),
        (
            {"triton": {"image": "registry.example/triton:custom"}},
            "registry.example/nimify-builder:test-trtunknown",
        ),
        # TensorRT-LLM images ship another TensorRT than their release (10.14 at 26.06): another builder.
        (
            {"triton": {"image": "nvcr.io/nvidia/tritonserver:26.06-trtllm-python-py3"}},
            "registry.example/nimify-builder:test-trt26.06-trtllm",
        ),
        (ONNXRUNTIME, "registry.example/nimify:test"),
        (
            {**ONNXRUNTIME, "triton": {"image": "nvcr.io/nvidia/tritonserver:24.05-py3"}},
            "registry.example/nimify:test",
        ),
    ],
)
def test_builder_image(settings: OperatorSettings, spec: dict[str, Any] | None, image: str) -> None:
    assert builder_image(nimservice(spec), settings) == image
    assert container(job_for(spec, settings))["image"] == image


def test_default_builder_image_carries_the_release() -> None:
    assert (
        OperatorSettings.model_fields["builder_image"].default.format(release="25.10").endswith("-trt25.10")
    )


def test_pull_policy_comes_from_the_operator_settings(settings: OperatorSettings) -> None:
    assert "imagePullPolicy" not in container(job_for(None, settings))
    local = settings.model_copy(update={"image_pull_policy": "Never"})
    assert container(job_for(None, local))["imagePullPolicy"] == "Never"
