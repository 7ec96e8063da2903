"""NimServices serving model images (spec.model.uri oci://) through the Reconciler, resolved against a real
registry (tests/registry.py): served with no Job and no claim, resolved once per generation, refused with
the label and field named, a failed update leaving the serving image alone, private images through pull
secrets."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from nimify.api.conditions import ConditionReason
from nimify.controller.model_images import ImageResolver, Resolution, image_refusal
from nimify.controller.reconcile import Reconciler
from nimify.engine import model_image
from nimify.engine.model_image import Credentials, ImageReference, RegistryClient
from nimify.render.deployment import MODEL_IMAGE_CONTAINER
from nimify.render.units import ServingUnit, serving_unit
from nimify.settings import OperatorSettings
from nimify_devcluster.registry import LocalRegistry
from tests.controller.test_reconciler import Harness, T
from tests.registry import registry_fixture
from tests.render.conftest import NAME, nimservice

SIGNATURE = {
    "inputs": [{"name": "input", "dtype": "FLOAT", "shape": [-1, 16]}],
    "outputs": [{"name": "logits", "dtype": "FLOAT", "shape": [-1, 4]}],
}
LABELS = {
    model_image.FORMAT: "1",
    model_image.CACHE_KEY: "c" * 64,
    model_image.BACKEND: "onnxruntime",
    model_image.MAX_BATCH_SIZE: "8",
    model_image.SIGNATURE: json.dumps(SIGNATURE),
}
SPEC = {"engine": {"backend": "onnxruntime"}, "resources": {"gpus": 0}}


registry = registry_fixture()


private = registry_fixture(users={"alice": "s3cret"})


def push(
    registry: LocalRegistry,
    folder: Path,
    name: str,
    labels: dict[str, str] = LABELS,
    weights: bytes = b"\x01" * 64,
    credentials: Credentials | None = None,
) -> str:
    """Push a model folder as a model image; its uri pinned to the digest."""
    model = folder / name / "model"
    (model / "1").mkdir(parents=True, exist_ok=True)
    (model / "1" / "model.onnx").write_bytes(weights)
    reference = ImageReference.parse(f"oci://{registry.address}/models/{name}:v1")
    client = RegistryClient(registry.address, credentials=credentials, plain_http=True)
    return str(reference.pinned(client.push(reference, model, labels)))


class CountingResolver(ImageResolver):
    def __init__(self, settings: OperatorSettings, secrets: dict[str, dict[str, Any]]) -> None:
        async def read(namespace: str, name: str) -> dict[str, Any] | None:
            return secrets.get(name)

        super().__init__(settings, read_secret=read)
        self.calls = 0

    async def resolve(self, nim: Any, units: tuple[ServingUnit, ...]) -> dict[str, Resolution]:
        self.calls += 1
        return await super().resolve(nim, units)


class ImageHarness(Harness):
    """test_reconciler's harness serving a model image, resolved by a resolver that counts its calls."""

    def __init__(
        self, uri: str, registries: list[str], secrets: dict[str, dict[str, Any]] | None = None
    ) -> None:
        super().__init__(SPEC, built=False)
        settings = OperatorSettings(
            engine_cache_claim="nimify-engines",
            onnxruntime_builder_image="nimify:test",
            insecure_registries=registries,
        )
        self.resolver = CountingResolver(settings, secrets or {})
        self.reconciler = Reconciler(self.cluster, settings, clock=lambda: T, images=self.resolver)
        self.body["spec"] = {**copy.deepcopy(SPEC), "model": {"uri": uri}}

    def change(self, spec: dict[str, Any]) -> None:
        self.body["spec"] |= spec
        self.body["metadata"]["generation"] += 1

    def pod(self) -> dict[str, Any]:
        deployment = self.cluster.live("Deployment", NAME)
        pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
        return pod


async def test_a_model_image_is_served_without_a_job_or_a_claim(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    pinned = push(registry, tmp_path, "mlp")
    h = ImageHarness(f"oci://{registry.address}/models/mlp:v1", [registry.address])
    await h.converge()
    kinds = {kind for kind, _, _ in h.cluster.objects}
    assert "Job" not in kinds and "PersistentVolumeClaim" not in kinds
    assert h.condition("EngineReady")["reason"] == ConditionReason.ENGINE_FROM_IMAGE.value
    assert h.condition("Ready")["status"] == "True"
    status = h.body["status"]
    assert status["engine"]["location"] == pinned
    assert status["engine"]["cacheKey"] == "c" * 64
    assert status["signature"] == SIGNATURE
    pod = h.pod()
    [init] = pod["initContainers"]
    unit = serving_unit(
        nimservice({**SPEC, "model": {"uri": h.body["spec"]["model"]["uri"], "sha256": None}}),
        OperatorSettings(),
    )
    assert init["name"] == MODEL_IMAGE_CONTAINER
    assert init["args"] == [pinned, f"--to=/engines/{unit.location.repository}/model"]
    assert {"name": "NIMIFY_INSECURE_REGISTRIES", "value": json.dumps([registry.address])} in init["env"]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    engines = next(v for v in pod["volumes"] if v["name"] == "engines")
    assert engines == {"name": "engines", "emptyDir": {}}
    config = h.cluster.live("ConfigMap", f"{NAME}-triton-config")["data"]["config.pbtxt"]
    assert "max_batch_size: 8" in config and 'platform: "onnxruntime_onnx"' in config
    calls = h.resolver.calls
    await h.converge()
    assert h.resolver.calls == calls  # resolved for this generation: no registry asked again


async def test_a_moved_tag_is_picked_up_only_with_a_new_generation(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    first = push(registry, tmp_path / "a", "moving")
    h = ImageHarness(f"oci://{registry.address}/models/moving:v1", [registry.address])
    await h.converge()
    assert h.body["status"]["engine"]["location"] == first
    second = push(registry, tmp_path / "b", "moving", weights=b"\x02" * 64)
    assert second != first
    await h.converge()
    assert h.body["status"]["engine"]["location"] == first  # same generation: the digest it resolved
    assert h.pod()["initContainers"][0]["args"][0] == first

    h.change({"replicas": 2})
    await h.converge()
    assert h.body["status"]["engine"]["location"] == second
    assert h.pod()["initContainers"][0]["args"][0] == second


async def test_a_pinned_digest_is_never_resolved_again(registry: LocalRegistry, tmp_path: Path) -> None:
    pinned = push(registry, tmp_path, "pinned")
    digest_uri = pinned.replace(":v1@", "@")
    h = ImageHarness(digest_uri, [registry.address])
    await h.converge()
    calls = h.resolver.calls
    h.change({"replicas": 2})
    await h.converge()
    assert h.resolver.calls == calls
    assert h.body["status"]["engine"]["location"] == digest_uri


@pytest.mark.parametrize(
    ("labels", "reason", "named"),
    [
        ({}, ConditionReason.MODEL_IMAGE_UNLABELLED, model_image.FORMAT),
        ({model_image.FORMAT: "9"}, ConditionReason.MODEL_IMAGE_UNLABELLED, model_image.FORMAT),
        ({model_image.BACKEND: "python"}, ConditionReason.MODEL_IMAGE_MISMATCH, "spec.engine.backend"),
    ],
)
async def test_an_image_that_does_not_fit_stalls_with_the_label_and_field(
    registry: LocalRegistry, tmp_path: Path, labels: dict[str, str], reason: ConditionReason, named: str
) -> None:
    wanted = {k: v for k, v in (LABELS | labels).items() if labels or k != model_image.FORMAT}
    pinned = push(registry, tmp_path, f"misfit-{len(labels)}-{reason.value.lower()}", labels=wanted)
    h = ImageHarness(pinned, [registry.address])
    await h.converge()
    engine = h.condition("EngineReady")
    assert engine["status"] == "False"
    assert engine["reason"] == reason.value
    assert named in engine["message"]
    assert h.condition("Stalled")["status"] == "True"
    assert h.cluster.get("Deployment", NAME) is None


TENSORRT = LABELS | {
    model_image.BACKEND: "tensorrt",
    model_image.TENSORRT_VERSION: "10.13.3.9",
    model_image.GPU_PRODUCT: "NVIDIA-L4",
}
#: Served as a TensorRT engine built on an L4 with Triton 25.10's TensorRT.
SERVED_ON_L4 = {
    "engine": {"backend": "tensorrt"},
    "triton": {"image": "nvcr.io/nvidia/tritonserver:25.10-py3"},
    "resources": {"gpus": 1, "gpuProduct": "NVIDIA-L4"},
}


@pytest.mark.parametrize(
    ("spec", "label", "field"),
    [
        (
            {"triton": {"image": "nvcr.io/nvidia/tritonserver:26.06-py3"}},
            model_image.TENSORRT_VERSION,
            "spec.triton.image",
        ),
        (
            {"resources": {"gpus": 1, "gpuProduct": "NVIDIA-H100-80GB-HBM3"}},
            model_image.GPU_PRODUCT,
            "spec.resources.gpuProduct",
        ),
        ({"engine": {"backend": "tensorrt", "maxBatchSize": 4}}, model_image.MAX_BATCH_SIZE, "maxBatchSize"),
    ],
)
async def test_a_tensorrt_image_must_fit_the_triton_and_gpu_it_is_served_with(
    registry: LocalRegistry, tmp_path: Path, spec: dict[str, Any], label: str, field: str
) -> None:
    """Labelled by hand as `nimify build` labels a TensorRT engine built on an L4 (no GPU builds one here):
    what is checked is the labels, against the spec."""
    pinned = push(registry, tmp_path, f"trt-{label.rsplit('.', 1)[-1]}", labels=TENSORRT, weights=b"plan")
    h = ImageHarness(pinned, [registry.address])
    h.change(SERVED_ON_L4 | spec)
    await h.converge()
    engine = h.condition("EngineReady")
    assert (engine["status"], engine["reason"]) == ("False", ConditionReason.MODEL_IMAGE_MISMATCH.value)
    assert label in engine["message"] and field in engine["message"]
    assert h.cluster.get("Deployment", NAME) is None


async def test_a_tensorrt_image_built_for_the_served_release_and_product_fits(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    pinned = push(registry, tmp_path, "trt-fits", labels=TENSORRT, weights=b"plan")
    h = ImageHarness(pinned, [registry.address])
    h.change(SERVED_ON_L4)
    await h.converge()
    assert h.condition("EngineReady")["reason"] == ConditionReason.ENGINE_FROM_IMAGE.value
    assert h.body["status"]["engine"]["gpuProduct"] == "NVIDIA-L4"
    assert h.body["status"]["engine"]["tensorrtVersion"] == "10.13.3.9"
    pod = h.pod()
    assert pod["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-L4"


def test_an_unpinned_product_takes_the_image_s_own() -> None:
    """No product asked for: the image's label places it (the engine runs only there)."""
    unit = serving_unit(
        nimservice(
            {"model": {"uri": "oci://r.io/m:v1", "sha256": None}, **SERVED_ON_L4, "resources": {"gpus": 1}}
        ),
        OperatorSettings(),
    )
    assert image_refusal(unit, TENSORRT) is None


async def test_a_failed_update_keeps_the_served_image(registry: LocalRegistry, tmp_path: Path) -> None:
    pinned = push(registry, tmp_path, "stable")
    h = ImageHarness(pinned, [registry.address])
    await h.converge()
    h.change({"model": {"uri": f"oci://{registry.address}/models/absent:v9"}})
    await h.converge()
    engine = h.condition("EngineReady")
    assert (engine["status"], engine["reason"]) == ("False", ConditionReason.MODEL_IMAGE_NOT_FOUND.value)
    assert "absent:v9" in engine["message"]
    assert h.pod()["initContainers"][0]["args"][0] == pinned  # still serving what it served


async def test_a_private_image_resolves_with_the_pull_secret(private: LocalRegistry, tmp_path: Path) -> None:
    pinned = push(private, tmp_path, "secret-mlp", credentials=Credentials("alice", "s3cret"))
    config = {"auths": {private.address: {"auth": base64.b64encode(b"alice:s3cret").decode()}}}
    secret = {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()}

    h = ImageHarness(pinned, [private.address])
    await h.converge()
    engine = h.condition("EngineReady")
    assert engine["reason"] == ConditionReason.MODEL_IMAGE_UNAUTHORIZED.value
    assert "spec.imagePullSecrets" in engine["message"]

    h = ImageHarness(pinned, [private.address], secrets={"registry": secret})
    h.change({"imagePullSecrets": ["registry"]})
    await h.converge()
    assert h.condition("Ready")["status"] == "True"
    pod = h.pod()
    auth = next(v for v in pod["volumes"] if v["name"] == "registry-auth-0")
    assert auth["secret"]["secretName"] == "registry" and auth["secret"]["optional"] is True
    assert {
        "name": "registry-auth-0",
        "mountPath": "/var/run/nimify/registry-auth/0",
        "readOnly": True,
    } in pod["initContainers"][0]["volumeMounts"]
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert "s3cret" not in json.dumps(h.body["status"])
