"""NimService documents the API must refuse (with the field each refusal names) and tricky ones it accepts.

The same tables drive the pydantic unit tests and the admission tests against a real apiserver, so the CEL
rules and their Python twins are held to the same answers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest

from nimify.api import API_VERSION, KIND

DELETE = object()
BASE_SPEC: dict[str, Any] = {"model": {"uri": "s3://models/resnet/model.onnx"}}


def merged(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """`base` with `patch` merged in: nested dicts merge, DELETE removes a key, anything else replaces."""
    result = copy.deepcopy(base)
    for key, value in patch.items():
        if value is DELETE:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


@dataclass(frozen=True)
class Case:
    id: str
    path: str
    """The field the refusal must name (a prefix of it for list items: `spec.engine.profiles`)."""
    spec: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    """A metadata.name to test; otherwise the caller picks one."""
    message: str | None = None
    """Words the refusal must say (where the message itself is what a case is about)."""

    def document(self, name: str = "case") -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": self.name or name},
            "spec": merged(BASE_SPEC, self.spec),
        }


def _profile(min_: list[int], opt: list[int], max_: list[int], name: str = "x") -> dict[str, Any]:
    return {"input": name, "min": min_, "opt": opt, "max": max_}


ROUTE: dict[str, Any] = {"httpRoute": {"host": "mlp.example.com", "gatewayRef": {"name": "public"}}}
PIPELINE: dict[str, Any] = {
    "members": [
        {"name": "scaler", "model": {"uri": "s3://models/scaler.onnx"}, "engine": {"backend": "onnxruntime"}},
        {"name": "classifier", "model": {"uri": "s3://models/classifier.onnx"}},
    ],
    "steps": [
        {"member": "scaler", "inputs": [{"name": "X", "from": "input.features"}]},
        {"member": "classifier", "inputs": [{"name": "float_input", "from": "scaler.variable"}]},
    ],
    "outputs": [{"name": "label", "from": "classifier.output_label"}],
}


def pipeline(edit: Any = None) -> dict[str, Any]:
    """A spec patch serving PIPELINE (a scaler feeding a classifier) instead of a model, `edit(p)` applied."""
    document = copy.deepcopy(PIPELINE)
    if edit is not None:
        edit(document)
    return {"model": DELETE, "pipeline": document}


def _set(path: str, value: Any) -> Any:
    """An edit of PIPELINE: `value` at a dotted path whose numbers index lists."""

    def edit(document: dict[str, Any]) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = document
        for part in parents:
            node = node[part]
        node[last] = value

    return edit


PLAN = {"model": {"uri": "s3://models/resnet/model.plan"}}
TRT11_IMAGE = "nvcr.io/nvidia/tritonserver:26.06-py3"

INVALID = [
    # model
    Case("uri-missing", "spec.model.uri", {"model": {"uri": DELETE, "format": "onnx"}}),
    Case(
        "uri-ftp-scheme",
        "spec.model.uri",
        {"model": {"uri": "ftp://host/model.onnx"}},
        message="must start with one of https://, s3://, gs://, pvc://, hf://, oci://",
    ),
    Case(
        "uri-plain-http",
        "spec.model.uri",
        {"model": {"uri": "http://host/model.onnx"}},
        message="plain http and others are not fetched",
    ),
    Case(
        "uri-s3-bucket-upper-case",
        "spec.model.uri",
        {"model": {"uri": "s3://Models/model.onnx"}},
        message="a s3:// uri takes the form s3://BUCKET/KEY",
    ),
    Case(
        "uri-https-with-fragment",
        "spec.model.uri",
        {"model": {"uri": "https://host.example.com/model.onnx#x"}},
        message="https://HOST[:PORT]/PATH[?QUERY]",
    ),
    Case(
        "uri-dot-dot-segment", "spec.model.uri", {"model": {"uri": "s3://models/a/../../secret/model.onnx"}}
    ),
    Case("uri-encoded-dot-dot", "spec.model.uri", {"model": {"uri": "https://host/a/%2e%2e/model.onnx"}}),
    Case(
        "uri-pvc-without-path",
        "spec.model.uri",
        {"model": {"uri": "pvc://claim"}},
        message="pvc://CLAIM/PATH",
    ),
    Case("uri-hf-without-file", "spec.model.uri", {"model": {"uri": "hf://org"}}, message="hf://ORG/REPO"),
    Case(
        "uri-gs-without-object",
        "spec.model.uri",
        {"model": {"uri": "gs://bucket", "format": "onnx"}},
        message="gs://BUCKET/OBJECT",
    ),
    Case(
        "uri-oci-without-tag-or-digest",
        "spec.model.uri",
        {"model": {"uri": "oci://registry.example.com/models/mlp"}},
        message="oci://REGISTRY[:PORT]/REPOSITORY:TAG",
    ),
    Case(
        "uri-oci-short-digest",
        "spec.model.uri",
        {"model": {"uri": "oci://registry.example.com/models/mlp@sha256:abc"}},
        message="oci://REGISTRY[:PORT]/REPOSITORY:TAG",
    ),
    Case(
        "oci-with-sha256",
        "spec.model.sha256",
        {"model": {"uri": "oci://registry.example.com/models/mlp:v1", "sha256": "ab" * 32}},
        message="pinned by its uri",
    ),
    Case(
        "oci-with-format",
        "spec.model.format",
        {"model": {"uri": "oci://registry.example.com/models/mlp:v1", "format": "onnx"}},
        message="its labels say what it is",
    ),
    Case("sha256-too-short", "spec.model.sha256", {"model": {"sha256": "abc123"}}),
    # triton.tuning
    Case(
        "tuning-throughput-without-budget",
        "spec.triton.tuning.p99LatencyBudgetMilliseconds",
        {"triton": {"tuning": {}}},
        message="maxThroughput needs p99LatencyBudgetMilliseconds",
    ),
    Case(
        "tuning-latency-without-rate",
        "spec.triton.tuning.requestRate",
        {"triton": {"tuning": {"objective": "minLatency"}}},
        message="minLatency needs requestRate",
    ),
    Case(
        "tuning-budget-zero",
        "spec.triton.tuning.p99LatencyBudgetMilliseconds",
        {"triton": {"tuning": {"p99LatencyBudgetMilliseconds": 0}}},
    ),
    Case(
        "tuning-sizes-over-max-batch",
        "spec.triton.tuning.preferredBatchSizes",
        {
            "engine": {"maxBatchSize": 8},
            "triton": {"tuning": {"p99LatencyBudgetMilliseconds": 50, "preferredBatchSizes": [[4], [16]]}},
        },
        message="must not exceed engine.maxBatchSize",
    ),
    Case(
        "tuning-time-budget-too-short",
        "spec.triton.tuning.timeBudgetSeconds",
        {"triton": {"tuning": {"p99LatencyBudgetMilliseconds": 50, "timeBudgetSeconds": 5}}},
    ),
    Case(
        "tuning-model-image",
        "spec.triton.tuning",
        {
            "model": {"uri": "oci://registry.example.com/models/mlp:v1"},
            "triton": {"tuning": {"p99LatencyBudgetMilliseconds": 50}},
        },
        message="a model image is tuned where it is built",
    ),
    # rollout
    Case(
        "canary-without-steps",
        "spec.rollout.steps",
        {"rollout": {"strategy": "Canary"}, "expose": ROUTE},
        message="a Canary rollout needs steps",
    ),
    Case(
        "steps-without-canary",
        "spec.rollout.steps",
        {"rollout": {"steps": [{"weight": 10}]}},
        message="steps belong to a Canary rollout",
    ),
    Case(
        "canary-weights-not-increasing",
        "spec.rollout.steps",
        {"rollout": {"strategy": "Canary", "steps": [{"weight": 50}, {"weight": 20}]}, "expose": ROUTE},
        message="must increase",
    ),
    Case(
        "canary-weights-repeated",
        "spec.rollout.steps",
        {"rollout": {"strategy": "Canary", "steps": [{"weight": 20}, {"weight": 20}]}, "expose": ROUTE},
        message="must increase",
    ),
    Case(
        "canary-weight-100",
        "spec.rollout.steps[0].weight",
        {"rollout": {"strategy": "Canary", "steps": [{"weight": 100}]}, "expose": ROUTE},
    ),
    Case(
        "canary-hold-negative",
        "spec.rollout.steps[0].holdSeconds",
        {"rollout": {"strategy": "Canary", "steps": [{"weight": 10, "holdSeconds": -1}]}, "expose": ROUTE},
    ),
    Case(
        "canary-strategy-unknown",
        "spec.rollout.strategy",
        {"rollout": {"strategy": "BlueGreen"}},
    ),
    Case(
        "canary-name-too-long",
        "metadata.name",
        {"rollout": {"strategy": "Canary", "steps": [{"weight": 10}]}, "expose": ROUTE},
        name="n" * 57,
        message="NAME-canary",
    ),
    Case(
        "canary-pipeline",
        "spec.rollout.strategy",
        {**pipeline(), "rollout": {"strategy": "Canary", "steps": [{"weight": 10}]}, "expose": ROUTE},
        message="a pipeline rolls out by Replace",
    ),
    Case(
        "canary-analysis-without-a-metric",
        "spec.rollout.analysis",
        {"rollout": {"strategy": "Canary", "steps": [{"weight": 10}], "analysis": {"minRequests": 5}}},
        message="analysis needs a metric",
    ),
    Case(
        "analysis-without-canary",
        "spec.rollout",
        {"rollout": {"analysis": {"maxErrorRatio": 0.1}}},
        message="analysis and answers judge a Canary rollout",
    ),
    Case(
        "canary-error-ratio-above-one",
        "spec.rollout.analysis.maxErrorRatio",
        {"rollout": {"strategy": "Canary", "steps": [{"weight": 10}], "analysis": {"maxErrorRatio": 1.5}}},
    ),
    Case(
        "canary-latency-ratio-below-one",
        "spec.rollout.analysis.maxLatencyRatio",
        {"rollout": {"strategy": "Canary", "steps": [{"weight": 10}], "analysis": {"maxLatencyRatio": 0.5}}},
    ),
    Case(
        "canary-min-requests-negative",
        "spec.rollout.steps[0].minRequests",
        {"rollout": {"strategy": "Canary", "steps": [{"weight": 10, "minRequests": -1}]}},
    ),
    Case(
        "canary-equivalence-unknown",
        "spec.rollout.answers.equivalence",
        {"rollout": {"strategy": "Canary", "steps": [{"weight": 10}], "answers": {"equivalence": "Maybe"}}},
    ),
    Case(
        "canary-threshold-agreement-without-threshold",
        "spec.rollout.answers.agreement.threshold",
        {
            "rollout": {
                "strategy": "Canary",
                "steps": [{"weight": 10}],
                "answers": {"agreement": {"rule": "Threshold", "minFraction": 0.9}},
            }
        },
        message="needs threshold",
    ),
    Case(
        "canary-top1-agreement-with-threshold",
        "spec.rollout.answers.agreement.threshold",
        {
            "rollout": {
                "strategy": "Canary",
                "steps": [{"weight": 10}],
                "answers": {"agreement": {"rule": "Top1", "threshold": 0.5, "minFraction": 0.9}},
            }
        },
        message="threshold belongs to a Threshold agreement",
    ),
    Case(
        "canary-agreement-fraction-zero",
        "spec.rollout.answers.agreement.minFraction",
        {
            "rollout": {
                "strategy": "Canary",
                "steps": [{"weight": 10}],
                "answers": {"agreement": {"rule": "Top1", "minFraction": 0}},
            }
        },
    ),
    Case(
        "grpc-route-on-the-http-route-s-host",
        "spec.expose.grpcRoute.host",
        {"expose": {**ROUTE, "grpcRoute": {"host": "mlp.example.com", "gatewayRef": {"name": "public"}}}},
        message="grpcRoute needs a host other than httpRoute's",
    ),
    Case("format-unknown", "spec.model.format", {"model": {"format": "pytorch"}}),
    Case("format-not-inferable", "spec.model.format", {"model": {"uri": "s3://models/resnet/weights.bin"}}),
    Case(
        "credentials-secret-upper-case",
        "spec.model.credentialsSecret",
        {"model": {"credentialsSecret": "S3"}},
    ),
    Case("model-name-underscore", "spec.model.name", {"model": {"name": "res_net"}}),
    # engine
    Case("backend-unknown", "spec.engine.backend", {"engine": {"backend": "tensorflow"}}),
    Case("precision-unknown", "spec.engine.precision", {"engine": {"precision": "int4"}}),
    Case(
        "onnxruntime-fp16",
        "spec.engine.precision",
        {"engine": {"backend": "onnxruntime", "precision": "fp16"}},
    ),
    Case("onnxruntime-tensorrt-plan", "spec.engine.backend", {**PLAN, "engine": {"backend": "onnxruntime"}}),
    Case("plan-with-precision", "spec.engine.precision", {**PLAN, "engine": {"precision": "fp16"}}),
    Case(
        "plan-with-profiles",
        "spec.engine.profiles",
        {**PLAN, "engine": {"profiles": [_profile([1], [1], [1])]}},
    ),
    Case(
        "tensorrt11-fp16-flag",
        "spec.engine.precision",
        {"engine": {"precision": "fp16"}, "triton": {"image": TRT11_IMAGE}},
    ),
    Case(
        "tensorrt11-int8-flag",
        "spec.engine.precision",
        {"engine": {"precision": "int8"}, "triton": {"image": "nvcr.io/nvidia/tritonserver:27.01-py3"}},
    ),
    Case(
        "profile-min-above-opt",
        "spec.engine.profiles[0]",
        {"engine": {"profiles": [_profile([4], [2], [8])]}},
    ),
    Case(
        "profile-rank-mismatch",
        "spec.engine.profiles[0]",
        {"engine": {"profiles": [_profile([1, 3], [1], [1])]}},
    ),
    Case(
        "profile-zero-dimension",
        "spec.engine.profiles[0].min[0]",
        {"engine": {"profiles": [_profile([0], [1], [1])]}},
    ),
    Case(
        "profile-duplicate-input",
        "spec.engine.profiles",
        {"engine": {"profiles": [_profile([1], [1], [1]), _profile([1], [2], [2])]}},
    ),
    Case(
        "profile-batch-below-max-batch-size",
        "spec.engine.profiles",
        {"engine": {"maxBatchSize": 16, "profiles": [_profile([1, 3], [4, 3], [8, 3])]}},
    ),
    Case("max-batch-size-negative", "spec.engine.maxBatchSize", {"engine": {"maxBatchSize": -1}}),
    Case("parity-atol-negative", "spec.engine.parity.atol", {"engine": {"parity": {"atol": -0.1}}}),
    Case(
        "parity-inputs-dotdot",
        "spec.engine.parity.inputs.uri",
        {"engine": {"parity": {"inputs": {"uri": "https://host.example.com/a/../b/samples.npz"}}}},
    ),
    Case(
        "parity-inputs-not-a-uri",
        "spec.engine.parity.inputs.uri",
        {"engine": {"parity": {"inputs": {"uri": "ftp://host/samples.npz"}}}},
        message="must start with one of https://",
    ),
    Case(
        "parity-inputs-oci",
        "spec.engine.parity.inputs.uri",
        {"engine": {"parity": {"inputs": {"uri": "oci://registry.example.com/samples:v1"}}}},
        message="must start with one of https://, s3://, gs://, pvc://, hf:// (",
    ),
    Case(
        "parity-inputs-bad-digest",
        "spec.engine.parity.inputs.sha256",
        {"engine": {"parity": {"inputs": {"uri": "s3://models/s.npz", "sha256": "abc"}}}},
    ),
    Case(
        "parity-generated-empty",
        "spec.engine.parity.generated[0]",
        {"engine": {"parity": {"generated": [{"input": "x"}]}}},
    ),
    Case(
        "parity-generated-duplicate",
        "spec.engine.parity.generated",
        {"engine": {"parity": {"generated": [{"input": "x", "value": 1}, {"input": "x", "shape": [1]}]}}},
    ),
    Case(
        "parity-generated-zero-dimension",
        "spec.engine.parity.generated[0].shape[0]",
        {"engine": {"parity": {"generated": [{"input": "x", "shape": [0]}]}}},
    ),
    Case(
        "build-timeout-too-short", "spec.engine.buildTimeoutSeconds", {"engine": {"buildTimeoutSeconds": 5}}
    ),
    Case("workspace-not-a-quantity", "spec.engine.workspace", {"engine": {"workspace": "lots"}}),
    Case(
        "build-memory-limit-below-request",
        "spec.engine.buildResources.memoryLimit",
        {"engine": {"buildResources": {"memory": "32Gi", "memoryLimit": "16Gi"}}},
    ),
    Case(
        "build-cpu-not-a-quantity",
        "spec.engine.buildResources.cpu",
        {"engine": {"buildResources": {"cpu": "four"}}},
    ),
    Case(
        "build-service-account-upper-case",
        "spec.model.serviceAccountName",
        {"model": {"serviceAccountName": "Model-Reader"}},
    ),
    # triton
    Case("image-without-tag", "spec.triton.image", {"triton": {"image": "nvcr.io/nvidia/tritonserver"}}),
    Case("image-latest", "spec.triton.image", {"triton": {"image": "nvcr.io/nvidia/tritonserver:latest"}}),
    Case("extra-arg-owned-port", "spec.triton.extraArgs", {"triton": {"extraArgs": ["--http-port=9000"]}}),
    Case(
        "extra-arg-owned-repository",
        "spec.triton.extraArgs",
        {"triton": {"extraArgs": ["--log-verbose=1", "--model-repository=/tmp"]}},
    ),
    Case("extra-arg-not-a-flag", "spec.triton.extraArgs[0]", {"triton": {"extraArgs": ["rm -rf /"]}}),
    Case("instances-per-gpu-zero", "spec.triton.instancesPerGpu", {"triton": {"instancesPerGpu": 0}}),
    Case(
        "default-priority-without-levels",
        "spec.triton.dynamicBatching.defaultPriorityLevel",
        {"triton": {"dynamicBatching": {"defaultPriorityLevel": 2}}},
    ),
    Case(
        "default-priority-above-levels",
        "spec.triton.dynamicBatching.defaultPriorityLevel",
        {"triton": {"dynamicBatching": {"priorityLevels": 2, "defaultPriorityLevel": 3}}},
    ),
    Case(
        "preferred-batch-size-duplicate",
        "spec.triton.dynamicBatching.preferredBatchSizes",
        {"triton": {"dynamicBatching": {"preferredBatchSizes": [4, 4]}}},
    ),
    Case(
        "preferred-batch-size-above-max",
        "spec.triton.dynamicBatching.preferredBatchSizes",
        {"engine": {"maxBatchSize": 8}, "triton": {"dynamicBatching": {"preferredBatchSizes": [4, 16]}}},
    ),
    Case(
        "warmup-batch-size-above-max",
        "spec.triton.warmup.batchSizes",
        {"engine": {"maxBatchSize": 4}, "triton": {"warmup": {"batchSizes": [8]}}},
    ),
    Case(
        "response-cache-too-small",
        "spec.triton.responseCache.sizeBytes",
        {"triton": {"responseCache": {"sizeBytes": 10}}},
    ),
    Case(
        "triton-service-account-with-slash",
        "spec.triton.serviceAccountName",
        {"triton": {"serviceAccountName": "kube-system/default"}},
    ),
    # resources and placement
    Case("tensorrt-without-gpu", "spec.resources.gpus", {"resources": {"gpus": 0}}),
    Case(
        "gpu-product-without-gpu",
        "spec.resources.gpuProduct",
        {"engine": {"backend": "onnxruntime"}, "resources": {"gpus": 0, "gpuProduct": "NVIDIA-L4"}},
    ),
    Case("memory-not-a-quantity", "spec.resources.memory", {"resources": {"memory": "16 GB"}}),
    Case("cpu-negative", "spec.resources.cpu", {"resources": {"cpu": "-2"}}),
    Case("storage-size-negative-integer", "spec.storage.size", {"storage": {"size": -1}}),
    Case(
        "node-selector-contradicts-gpu-product",
        "spec.placement.nodeSelector",
        {
            "resources": {"gpuProduct": "NVIDIA-L4"},
            "placement": {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
        },
    ),
    Case(
        "toleration-exists-with-value",
        "spec.placement.tolerations[0].value",
        {"placement": {"tolerations": [{"key": "gpu", "operator": "Exists", "value": "yes"}]}},
    ),
    Case(
        "toleration-seconds-without-no-execute",
        "spec.placement.tolerations[0].tolerationSeconds",
        {"placement": {"tolerations": [{"key": "gpu", "effect": "NoSchedule", "tolerationSeconds": 30}]}},
    ),
    Case(
        "priority-class-invalid",
        "spec.placement.priorityClassName",
        {"placement": {"priorityClassName": "High!"}},
    ),
    # replicas and autoscaling
    Case("replicas-negative", "spec.replicas", {"replicas": -1}),
    Case(
        "replicas-and-autoscaling",
        "spec.replicas",
        {"replicas": 2, "autoscaling": {"maxReplicas": 4, "targetGpuUtilization": 80}},
    ),
    Case(
        "autoscaling-max-below-min",
        "spec.autoscaling.maxReplicas",
        {"autoscaling": {"minReplicas": 5, "maxReplicas": 2, "targetGpuUtilization": 80}},
    ),
    Case("autoscaling-without-target", "spec.autoscaling", {"autoscaling": {"maxReplicas": 4}}),
    Case(
        "autoscaling-without-max",
        "spec.autoscaling.maxReplicas",
        {"autoscaling": {"targetGpuUtilization": 80}},
    ),
    Case(
        "autoscaling-gpu-target-above-100",
        "spec.autoscaling.targetGpuUtilization",
        {"autoscaling": {"maxReplicas": 4, "targetGpuUtilization": 150}},
    ),
    Case(
        "autoscaling-cpu-target-without-cpu-request",
        "spec.autoscaling.targetCpuUtilization",
        {"autoscaling": {"maxReplicas": 4, "targetCpuUtilization": 70}},
    ),
    Case(
        "scaling-policy-type-unknown",
        "spec.autoscaling.behavior.scaleUp.policies[0].type",
        {
            "autoscaling": {
                "maxReplicas": 4,
                "targetGpuUtilization": 80,
                "behavior": {"scaleUp": {"policies": [{"type": "Nodes", "value": 1, "periodSeconds": 60}]}},
            }
        },
    ),
    # Admitted once, then a child refused by the apiserver (issue: the full-scale hostile-spec run found them)
    Case(
        "scale-down-policies-empty",
        "spec.autoscaling.behavior.scaleDown.policies",
        {
            "autoscaling": {
                "maxReplicas": 4,
                "targetGpuUtilization": 80,
                "behavior": {"scaleDown": {"policies": []}},
            }
        },
        message="policies must list at least one policy",
    ),
    Case(
        "scale-up-policies-empty",
        "spec.autoscaling.behavior.scaleUp.policies",
        {
            "autoscaling": {
                "autoscaler": "KEDA",
                "maxReplicas": 4,
                "targetQueueTimeMicroseconds": 500,
                "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0, "policies": []}},
            }
        },
        message="policies must list at least one policy",
    ),
    Case(
        "build-memory-limit-zero",
        "spec.engine.buildResources.memoryLimit",
        {"engine": {"buildResources": {"cpu": 0, "memoryLimit": 0}}},
        message="memoryLimit must be greater than zero",
    ),
    Case(
        "build-memory-limit-zero-with-a-unit",
        "spec.engine.buildResources.memoryLimit",
        {"engine": {"buildResources": {"memoryLimit": "0Gi"}}},
        message="memoryLimit must be greater than zero",
    ),
    Case(
        "workspace-a-fraction-of-a-byte",
        "spec.engine.workspace",
        {"engine": {"workspace": "1m"}},
        message="workspace must be a whole number of bytes",
    ),
    Case(
        "replica-memory-zero",
        "spec.resources.memory",
        {"resources": {"memory": "0"}},
        message="memory must be greater than zero",
    ),
    Case(
        "ingress-host-an-ip-address",
        "spec.expose.ingress.host",
        {"expose": {"ingress": {"host": "10.0.0.1"}}},
        message="host must be a DNS name, not an IP address",
    ),
    Case(
        "http-route-host-an-ip-address",
        "spec.expose.httpRoute.host",
        {"expose": {"httpRoute": {"host": "192.168.1.20", "gatewayRef": {"name": "public"}}}},
        message="host must be a DNS name, not an IP address",
    ),
    # expose
    Case("service-type-unknown", "spec.expose.serviceType", {"expose": {"serviceType": "ExternalName"}}),
    Case("ports-collide", "spec.expose", {"expose": {"grpcPort": 8000}}),
    Case("port-out-of-range", "spec.expose.metricsPort", {"expose": {"metricsPort": 70000}}),
    Case(
        "ingress-and-http-route",
        "spec.expose.httpRoute",
        {
            "expose": {
                "ingress": {"host": "a.example.com"},
                "httpRoute": {"host": "a.example.com", "gatewayRef": {"name": "gw"}},
            }
        },
    ),
    Case("ingress-host-invalid", "spec.expose.ingress.host", {"expose": {"ingress": {"host": "Not A Host"}}}),
    Case(
        "http-route-without-gateway",
        "spec.expose.httpRoute.gatewayRef",
        {"expose": {"httpRoute": {"host": "a.b"}}},
    ),
    # storage, paused, unknown fields, metadata
    Case(
        "storage-size-and-existing-claim",
        "spec.storage",
        {"storage": {"size": "10Gi", "existingClaim": "models"}},
    ),
    Case("storage-empty", "spec.storage", {"storage": {}}),
    Case(
        "storage-class-with-existing-claim",
        "spec.storage.storageClassName",
        {"storage": {"existingClaim": "models", "storageClassName": "fast"}},
    ),
    Case("paused-not-boolean", "spec.paused", {"paused": "yes"}),
    Case("pull-secret-upper-case", "spec.imagePullSecrets", {"imagePullSecrets": ["Mirror"]}),
    Case("pull-secret-twice", "spec.imagePullSecrets", {"imagePullSecrets": ["mirror", "mirror"]}),
    Case("unknown-field", "spec.modelUri", {"modelUri": "s3://models/resnet/model.onnx"}),
    Case("unknown-nested-field", "spec.engine.fp16", {"engine": {"fp16": True}}),
    Case("name-starts-with-digit", "metadata.name", name="7b-model"),
    # Pipelines: what the spec alone shows (the rest needs the members' signatures: the operator's).
    Case("pipeline-and-model", "spec.model", {"pipeline": PIPELINE}, message="exactly one of them"),
    Case("neither-model-nor-pipeline", "spec.model", {"model": DELETE}),
    Case(
        "pipeline-tuned",
        "spec.triton.tuning",
        {**pipeline(), "triton": {"tuning": {"p99LatencyBudgetMilliseconds": 50}}},
        message="a pipeline's ensemble is not tuned",
    ),
    Case(
        "pipeline-step-of-no-member",
        "spec.pipeline.steps",
        pipeline(_set("steps.1.member", "ranker")),
        message="every step runs a member listed in members",
    ),
    Case(
        "pipeline-member-in-no-step",
        "spec.pipeline.members",
        pipeline(
            lambda p: p["members"].append({"name": "spare", "model": {"uri": "s3://models/spare.onnx"}})
        ),
        message="every member runs in a step",
    ),
    Case(
        "pipeline-source-of-no-step",
        "spec.pipeline.steps",
        pipeline(_set("steps.1.inputs.0.from", "normalizer.variable")),
        message="names no step",
    ),
    Case(
        "pipeline-step-feeds-itself",
        "spec.pipeline.steps",
        pipeline(_set("steps.1.inputs.0.from", "classifier.output_label")),
        message="or the step itself",
    ),
    Case(
        "pipeline-source-not-a-reference",
        "spec.pipeline.steps[0].inputs[0].from",
        pipeline(_set("steps.0.inputs.0.from", "features")),
    ),
    Case(
        "pipeline-step-read-by-nothing",
        "spec.pipeline.steps",
        pipeline(_set("outputs.0.from", "scaler.variable")),
        message="would run for nothing",
    ),
    Case(
        "pipeline-output-of-no-step",
        "spec.pipeline.outputs",
        pipeline(_set("outputs.0.from", "ranker.scores")),
        message="an output of one of the steps",
    ),
    Case(
        "pipeline-output-is-a-pipeline-input",
        "spec.pipeline.outputs",
        pipeline(_set("outputs.0.from", "input.features")),
        message="an output of one of the steps",
    ),
    Case(
        "pipeline-tensor-passed-out-twice",
        "spec.pipeline.outputs",
        pipeline(lambda p: p["outputs"].append({"name": "again", "from": "classifier.output_label"})),
        message="Triton passes a tensor out once",
    ),
    Case(
        "pipeline-output-named-like-an-input",
        "spec.pipeline.outputs",
        pipeline(_set("outputs.0.name", "features")),
        message="share a name",
    ),
    Case(
        "pipeline-member-named-input",
        "spec.pipeline.members[0].name",
        pipeline(lambda p: (_set("members.0.name", "input")(p), _set("steps.0.member", "input")(p))),
        message="choose another name",
    ),
    Case(
        "pipeline-member-model-named",
        "spec.pipeline.members[1].model.name",
        pipeline(_set("members.1.model.name", "clf")),
        message="remove model.name",
    ),
    Case(
        "pipeline-member-named-like-the-nimservice",
        "spec.pipeline.members",
        pipeline(),
        name="scaler",
        message="may not take the NimService's name",
    ),
    Case(
        "pipeline-member-name-too-long-with-the-nimservice",
        "spec.pipeline.members",
        pipeline(),
        name="n" * 54,
        message="must fit 63 characters",
    ),
    Case(
        "pipeline-member-twice",
        "spec.pipeline.members",
        pipeline(lambda p: p["members"].append(copy.deepcopy(p["members"][0]))),
    ),
    Case(
        "pipeline-member-in-two-steps",
        "spec.pipeline.steps",
        pipeline(lambda p: p["steps"].append(copy.deepcopy(p["steps"][0]))),
    ),
    Case(
        "pipeline-member-input-fed-twice",
        "spec.pipeline.steps",
        pipeline(lambda p: p["steps"][1]["inputs"].append({"name": "float_input", "from": "input.raw"})),
    ),
    Case(
        "pipeline-profiles-for-all-members",
        "spec.engine.profiles",
        {**pipeline(), "engine": {"profiles": [_profile([1, 4], [8, 4], [16, 4], "X")]}},
        message="give them in each member's engine",
    ),
    Case(
        "pipeline-member-engine-checked-as-spec-engine",
        "spec.pipeline.members[0].engine.precision",
        pipeline(_set("members.0.engine.precision", "fp16")),
    ),
]

VALID = [
    Case("minimal", "", {}),
    Case(
        "format-given-for-unknown-suffix",
        "",
        {"model": {"uri": "gs://bucket/m/weights.bin", "format": "onnx"}},
    ),
    Case(
        "https-with-query", "", {"model": {"uri": "https://host.example.com:8443/m/model.onnx?sig=abc&x=1"}}
    ),
    Case("hf-with-revision", "", {"model": {"uri": "hf://org/repo@v1.0/sub/dir/model.onnx"}}),
    Case("pvc-uri", "", {"model": {"uri": "pvc://model-store/a/b/model.plan"}}),
    Case("oci-tag", "", {"model": {"uri": "oci://registry.example.com:5000/team/models/mlp:v1.2-cpu"}}),
    Case(
        "tuning-min-latency",
        "",
        {
            "engine": {"maxBatchSize": 16},
            "triton": {
                "tuning": {
                    "objective": "minLatency",
                    "requestRate": 200,
                    "maxInstances": 2,
                    "preferredBatchSizes": [[4, 8], [16]],
                    "maxQueueDelaysMicroseconds": [0, 250],
                    "concurrency": [2, 8],
                    "timeBudgetSeconds": 300,
                    "trialSeconds": 2,
                }
            },
        },
    ),
    Case(
        "canary-steps",
        "",
        {
            "rollout": {
                "strategy": "Canary",
                "steps": [
                    {"weight": 5, "holdSeconds": 0},
                    {"weight": 25},
                    {"weight": 99, "holdSeconds": 86400},
                ],
                "paused": True,
            },
            "expose": ROUTE,
        },
        name="n" * 56,
    ),
    Case(
        "canary-judged",
        "",
        {
            "rollout": {
                "strategy": "Canary",
                "steps": [{"weight": 10, "minRequests": 100}, {"weight": 50, "holdSeconds": 300}],
                "analysis": {
                    "maxErrorRatio": 0.01,
                    "maxLatencyRatio": 1.5,
                    "maxQueueTimeRatio": 2,
                    "minRequests": 50,
                    "intervalSeconds": 10,
                },
                "answers": {
                    "samples": 32,
                    "equivalence": "Declared",
                    "atol": 0.01,
                    "rtol": 0.01,
                    "agreement": {
                        "rule": "Threshold",
                        "output": "score",
                        "threshold": 0.5,
                        "minFraction": 0.95,
                    },
                },
            },
            "expose": ROUTE,
        },
    ),
    Case(
        "canary-with-grpc-route",
        "",
        {
            "rollout": {"strategy": "Canary", "steps": [{"weight": 20}]},
            "expose": {
                **ROUTE,
                "grpcRoute": {"host": "grpc.mlp.example.com", "gatewayRef": {"name": "public"}},
            },
        },
    ),
    Case("replace-explicit", "", {"rollout": {"strategy": "Replace"}}),
    Case("canary-without-gateway", "", {"rollout": {"strategy": "Canary", "steps": [{"weight": 50}]}}),
    Case("oci-digest", "", {"model": {"uri": f"oci://10.0.0.1:5000/mlp@sha256:{'a' * 64}"}}),
    Case("oci-tag-and-digest", "", {"model": {"uri": f"oci://ghcr.io/org/mlp:v1@sha256:{'b' * 64}"}}),
    Case("tensorrt10-fp16", "", {"engine": {"precision": "fp16"}}),
    Case("tensorrt11-auto", "", {"engine": {"precision": "auto"}, "triton": {"image": TRT11_IMAGE}}),
    Case("tensorrt11-plan", "", {**PLAN, "triton": {"image": TRT11_IMAGE}}),
    # TensorRT-LLM images of 26.06 still ship TensorRT 10: the builder flags stay allowed.
    Case(
        "trtllm-26.06-fp16",
        "",
        {
            "engine": {"precision": "fp16"},
            "triton": {"image": "nvcr.io/nvidia/tritonserver:26.06-trtllm-python-py3"},
        },
    ),
    Case("onnxruntime-cpu", "", {"engine": {"backend": "onnxruntime"}, "resources": {"gpus": 0}}),
    Case(
        "onnxruntime-profiles-size-parity-inputs",
        "",
        {"engine": {"backend": "onnxruntime", "profiles": [_profile([1, 400], [4, 16000], [8, 48000])]}},
    ),
    Case(
        "parity-inputs-and-generated",
        "",
        {
            "engine": {
                "backend": "onnxruntime",
                "parity": {
                    "inputs": {"uri": "hf://org/speech@v2/parity/samples.npz", "sha256": "b" * 64},
                    "generated": [
                        {"input": "sample_rate", "shape": [], "value": 16000},
                        {"input": "audio", "shape": [1, 16000]},
                    ],
                },
            }
        },
    ),
    Case(
        "image-with-digest",
        "",
        {"triton": {"image": "registry.local:5000/triton/server:25.10-py3@sha256:" + "a" * 64}},
    ),
    Case(
        "extra-args-free-flags", "", {"triton": {"extraArgs": ["--log-verbose=1", "--exit-timeout-secs=30"]}}
    ),
    Case("replicas-zero", "", {"replicas": 0}),
    Case(
        "gpu-product-matching-node-selector",
        "",
        {
            "resources": {"gpuProduct": "NVIDIA-L4"},
            "placement": {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4", "pool": "inference"}},
        },
    ),
    Case(
        "affinity-passed-through",
        "",
        {
            "placement": {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {"key": "zone", "operator": "In", "values": ["a", "b"]}
                                    ]
                                }
                            ]
                        }
                    }
                }
            }
        },
    ),
    Case(
        "profiles-fit-max-batch-size",
        "",
        {"engine": {"maxBatchSize": 8, "profiles": [_profile([1, 3], [4, 3], [8, 3])]}},
    ),
    Case("storage-existing-claim", "", {"storage": {"existingClaim": "models"}}),
    Case("storage-quantity-as-integer", "", {"storage": {"size": 1073741824}}),
    Case(
        "build-memory-limit-equal-in-other-units",
        "",
        {"engine": {"buildResources": {"memory": "16Gi", "memoryLimit": "16384Mi"}}},
    ),
    Case(
        "build-memory-limit-as-integer",
        "",
        {"engine": {"buildResources": {"cpu": 8, "memory": "64G", "memoryLimit": 68719476736}}},
    ),
    Case("build-memory-without-limit", "", {"engine": {"buildResources": {"memory": "64Gi"}}}),
    # The default request (4Gi) follows a smaller limit down; a CPU request of 0 is Kubernetes' own "none".
    Case(
        "build-limit-below-the-default-request",
        "",
        {"engine": {"buildResources": {"cpu": 0, "memoryLimit": "1Gi"}}},
    ),
    Case(
        "identities-and-pull-secrets",
        "",
        {
            "model": {"uri": "s3://models-prod/resnet/model.onnx", "serviceAccountName": "model-reader"},
            "triton": {"serviceAccountName": "triton"},
            "imagePullSecrets": ["nvcr-mirror", "registry.internal"],
        },
    ),
    Case("pipeline-chain", "", pipeline()),
    Case(
        "pipeline-fan-out-fan-in",
        "",
        pipeline(
            lambda p: (
                p["members"].append({"name": "ranker", "model": {"uri": "hf://org/ranker/model.onnx"}}),
                p["steps"].append(
                    {
                        "member": "ranker",
                        "inputs": [
                            {"name": "scaled", "from": "scaler.variable"},
                            {"name": "label", "from": "classifier.output_label"},
                            {"name": "raw", "from": "input.features"},
                        ],
                    }
                ),
                p["outputs"].append({"name": "rank", "from": "ranker.output.1"}),
            )
        ),
    ),
]

# A status with every field set, as the operator would write it.
FULL_STATUS: dict[str, Any] = {
    "observedGeneration": 3,
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Serving",
            "message": "2 of 2 replicas serve resnet",
            "lastTransitionTime": "2025-11-20T10:00:00Z",
            "observedGeneration": 3,
        }
    ],
    "replicas": 2,
    "readyReplicas": 2,
    "selector": "app.kubernetes.io/instance=resnet",
    "signature": {
        "inputs": [{"name": "data", "dtype": "FLOAT", "shape": [-1, 3, 224, 224]}],
        "outputs": [{"name": "resnetv17_dense0_fwd", "dtype": "FLOAT", "shape": [-1, 1000]}],
    },
    "engine": {
        "cacheKey": "sha256-abc",
        "tensorrtVersion": "10.13.3",
        "gpuProduct": "NVIDIA-H100-80GB-HBM3",
        "buildSeconds": 81.5,
        "cacheHit": False,
    },
    "parity": {
        "check": "tensorrtEngine",
        "inputs": "generated",
        "maxAbsError": 0.0004,
        "maxRelError": 0.002,
        "samples": 8,
        "passed": True,
    },
    "endpoints": {
        "http": "http://resnet.default.svc:8000",
        "grpc": "resnet.default.svc:8001",
        "metrics": "http://resnet.default.svc:8002/metrics",
    },
}

INVALID_PARAMS = [pytest.param(case, id=case.id) for case in INVALID]
VALID_PARAMS = [pytest.param(case, id=case.id) for case in VALID]
