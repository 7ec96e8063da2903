"""The ConfigMap with config.pbtxt: triton settings roll the Deployment (through the hash), not the engine."""

from __future__ import annotations

from typing import Any

import pytest

from nimify.api import ModelSignature, NimService
from nimify.engine.location import engine_location
from nimify.render.identity import COMPONENT_SERVER
from nimify.render.triton_config import (
    CONFIG_KEY,
    config_hash,
    render_config_text,
    render_triton_config,
    toolkit_signature,
)
from nimify.settings import OperatorSettings
from tests.render.conftest import NAME, NAMESPACE, nimservice, unit_of

SIGNATURE = ModelSignature.model_validate(
    {
        "inputs": [{"name": "images", "dtype": "FLOAT", "shape": [-1, 3, 224, 224]}],
        "outputs": [{"name": "logits", "dtype": "FLOAT", "shape": [-1, 1000]}],
    }
)


def text_for(spec: dict[str, Any] | None = None, *, name: str = NAME, max_batch_size: int = 8) -> str:
    return render_config_text(nimservice(spec, name=name), SIGNATURE, max_batch_size)


def model_name(text: str) -> str:
    first = text.splitlines()[0]
    assert first.startswith("name: ")
    return first.removeprefix("name: ").strip('"')


def test_model_named_after_the_nimservice() -> None:
    assert model_name(text_for()) == NAME
    assert model_name(text_for(name="bert")) == "bert"


def test_model_named_by_spec_model_name() -> None:
    assert model_name(text_for({"model": {"name": "classifier"}})) == "classifier"


@pytest.mark.parametrize(
    ("spec", "platform", "kind"),
    [
        (None, "tensorrt_plan", "KIND_GPU"),
        ({"engine": {"backend": "onnxruntime"}, "resources": {"gpus": 0}}, "onnxruntime_onnx", "KIND_CPU"),
        ({"engine": {"backend": "onnxruntime"}}, "onnxruntime_onnx", "KIND_GPU"),
    ],
)
def test_platform_and_instance_kind(spec: dict[str, Any] | None, platform: str, kind: str) -> None:
    text = text_for(spec)
    assert f'platform: "{platform}"' in text
    assert f"kind: {kind}" in text


def test_max_batch_size_comes_from_the_engine() -> None:
    assert "max_batch_size: 8" in text_for()
    unbatched = text_for(max_batch_size=0)
    assert "max_batch_size: 0" in unbatched
    assert "dynamic_batching" not in unbatched


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param({"triton": {"dynamicBatching": {"maxQueueDelayMicroseconds": 500}}}, id="queue-delay"),
        pytest.param({"triton": {"dynamicBatching": {"preferredBatchSizes": [4, 8]}}}, id="preferred"),
        pytest.param({"triton": {"dynamicBatching": {"enabled": False}}}, id="disabled"),
        pytest.param({"triton": {"instancesPerGpu": 2}}, id="instances"),
        pytest.param({"triton": {"responseCache": {"sizeBytes": 67108864}}}, id="response-cache"),
        pytest.param({"triton": {"warmup": {"batchSizes": [1, 8]}}}, id="warmup"),
        pytest.param({"model": {"name": "classifier"}}, id="model-name"),
    ],
)
def test_triton_settings_change_the_text_and_hash(changed: dict[str, Any]) -> None:
    base, other = text_for(), text_for(changed)
    assert base != other
    assert config_hash(base) != config_hash(other)


def test_dynamic_batching_change_keeps_the_engine(settings: OperatorSettings) -> None:
    batching: dict[str, Any] = {"triton": {"dynamicBatching": {"maxQueueDelayMicroseconds": 500}}}
    assert engine_location(nimservice(), settings) == engine_location(nimservice(batching), settings)
    assert "max_queue_delay_microseconds: 500" in text_for(batching)


@pytest.mark.parametrize(
    "unchanged",
    [
        pytest.param({"replicas": 3}, id="replicas"),
        pytest.param({"engine": {"buildTimeoutSeconds": 600}}, id="build-timeout"),
        pytest.param({"expose": {"httpPort": 9000}}, id="ports"),
    ],
)
def test_unrelated_settings_keep_the_text(unchanged: dict[str, Any]) -> None:
    assert text_for() == text_for(unchanged)


def test_text_is_deterministic() -> None:
    assert text_for() == text_for()
    assert config_hash(text_for()) == config_hash(text_for())
    assert len(config_hash(text_for())) == 16


def test_config_map(settings: OperatorSettings) -> None:
    nim: NimService = nimservice()
    text = text_for()
    config_map = render_triton_config(nim, unit_of(nim), {CONFIG_KEY: text})
    assert config_map["apiVersion"] == "v1" and config_map["kind"] == "ConfigMap"
    assert config_map["metadata"]["name"] == f"{NAME}-triton-config"
    assert config_map["metadata"]["namespace"] == NAMESPACE
    assert config_map["metadata"]["labels"]["app.kubernetes.io/component"] == COMPONENT_SERVER
    assert config_map["data"] == {CONFIG_KEY: text}
    assert CONFIG_KEY == "config.pbtxt"


def test_toolkit_signature_marks_dynamic_dimensions() -> None:
    signature = toolkit_signature(SIGNATURE)
    assert signature.inputs[0].name == "images"
    assert signature.inputs[0].dims == (None, 3, 224, 224)
    assert signature.outputs[0].dims == (None, 1000)
    assert signature.inputs[0].dtype == "FLOAT"
