"""config.pbtxt rendering: golden files per sample and platform, Triton's own parser, and each setting's rule.

Set NIMIFY_UPDATE_GOLDEN=1 to rewrite the golden files after an intended change (then review the diff).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from nimify.api import EngineSpec, ShapeProfile, TritonSpec
from nimify.model.errors import ModelError
from nimify.model.inspection import inspect_model
from nimify.model.samples import SAMPLES, write_sample
from nimify.triton.model_config import Platform, render_model_config, resolve_max_batch_size

GOLDEN = Path(__file__).parent / "golden"

TRITON = TritonSpec.model_validate(
    {
        "dynamicBatching": {
            "preferredBatchSizes": [8, 4],
            "maxQueueDelayMicroseconds": 200,
            "priorityLevels": 3,
            "maxQueueSize": 64,
        },
        "instancesPerGpu": 2,
        "responseCache": {"enabled": True},
        "warmup": {"batchSizes": [1, 8]},
    }
)
PROFILES = {
    "cnn": [ShapeProfile(input="image", min=[1, 3, 32, 32], opt=[8, 3, 224, 224], max=[8, 3, 512, 512])]
}


def render(tmp_path: Path, name: str, platform: Platform, triton: TritonSpec = TRITON, gpus: int = 1) -> str:
    report = inspect_model(write_sample(name, tmp_path))
    max_batch_size = resolve_max_batch_size(EngineSpec(), report.batching)
    return render_model_config(
        name, report.signature, platform, max_batch_size=max_batch_size, triton=triton, gpus=gpus,
        profiles=PROFILES.get(name, []),
    )  # fmt: skip


def parse(text: str) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig()
    text_format.Parse(text, config)
    return config


@pytest.mark.parametrize("platform", ["tensorrt_plan", "onnxruntime_onnx", "python"])
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_golden(tmp_path: Path, name: str, platform: Platform) -> None:
    text = render(tmp_path, name, platform, gpus=0 if platform == "python" else 1)
    golden = GOLDEN / f"{name}.{platform}.pbtxt"
    if os.environ.get("NIMIFY_UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()
    config = parse(text)
    assert config.name == name
    assert (config.backend == "python") is (platform == "python")


def test_rendering_is_deterministic(tmp_path: Path) -> None:
    assert render(tmp_path / "a", "multi_output", "tensorrt_plan") == render(
        tmp_path / "b", "multi_output", "tensorrt_plan"
    )


def test_batched_model_drops_the_batch_dim(tmp_path: Path) -> None:
    config = parse(render(tmp_path, "int_bool", "onnxruntime_onnx"))
    assert config.max_batch_size == 8
    assert [list(i.dims) for i in config.input] == [[-1], [-1]]
    total = config.output[0]
    assert list(total.dims) == [1] and total.HasField("reshape") and list(total.reshape.shape) == []
    assert [i.data_type for i in config.input] == [model_config_pb2.TYPE_INT64, model_config_pb2.TYPE_BOOL]


def test_unbatched_model_keeps_full_shapes_and_no_batcher(tmp_path: Path) -> None:
    config = parse(render(tmp_path, "recurrent", "onnxruntime_onnx"))
    assert config.max_batch_size == 0
    assert [list(i.dims) for i in config.input] == [[-1, 8], [2, -1, 16], [1]]
    assert not config.input[2].HasField("reshape")  # Triton refuses an empty reshape without batching
    assert not config.HasField("dynamic_batching")
    assert len(config.model_warmup) == 1 and config.model_warmup[0].batch_size == 1
    assert list(config.model_warmup[0].inputs["state"].dims) == [2, 1, 16]


def test_dynamic_batching_settings(tmp_path: Path) -> None:
    batching = parse(render(tmp_path, "mlp", "tensorrt_plan")).dynamic_batching
    assert list(batching.preferred_batch_size) == [4, 8]
    assert batching.max_queue_delay_microseconds == 200
    assert batching.priority_levels == 3
    assert batching.default_priority_level == 3  # unlabelled requests get the lowest priority
    assert batching.default_queue_policy.max_queue_size == 64


def test_explicit_default_priority(tmp_path: Path) -> None:
    triton = TRITON.model_copy(
        update={"dynamic_batching": TRITON.dynamic_batching.model_copy(update={"default_priority_level": 1})}
    )
    assert (
        parse(render(tmp_path, "mlp", "onnxruntime_onnx", triton)).dynamic_batching.default_priority_level
        == 1
    )


def test_minimal_spec(tmp_path: Path) -> None:
    config = parse(render(tmp_path, "mlp", "onnxruntime_onnx", TritonSpec(), gpus=0))
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert config.instance_group[0].count == 1
    assert config.HasField("dynamic_batching")
    assert not config.HasField("response_cache")
    assert not config.model_warmup


def test_dynamic_batching_disabled(tmp_path: Path) -> None:
    triton = TritonSpec.model_validate({"dynamicBatching": {"enabled": False}})
    assert not parse(render(tmp_path, "mlp", "onnxruntime_onnx", triton)).HasField("dynamic_batching")


def test_warmup_uses_profile_opt_for_dynamic_dims(tmp_path: Path) -> None:
    warmup = parse(render(tmp_path, "cnn", "tensorrt_plan")).model_warmup
    assert [w.batch_size for w in warmup] == [1, 8]
    assert list(warmup[0].inputs["image"].dims) == [3, 224, 224]
    assert warmup[0].inputs["image"].zero_data


def test_cuda_graphs_only_when_the_batch_is_the_only_dynamic_dim(tmp_path: Path) -> None:
    assert parse(render(tmp_path, "mlp", "tensorrt_plan")).optimization.cuda.graphs
    assert not parse(render(tmp_path, "cnn", "tensorrt_plan")).HasField("optimization")
    assert not parse(render(tmp_path, "mlp", "onnxruntime_onnx")).HasField("optimization")


def test_tensorrt_needs_a_gpu(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as error:
        render(tmp_path, "mlp", "tensorrt_plan", gpus=0)
    assert error.value.reason == "TensorRTNeedsGpu"


def test_max_batch_size_resolution(tmp_path: Path) -> None:
    batched = inspect_model(write_sample("mlp", tmp_path)).batching
    unbatched = inspect_model(write_sample("recurrent", tmp_path)).batching
    assert resolve_max_batch_size(EngineSpec(), batched) == 8
    assert resolve_max_batch_size(EngineSpec(max_batch_size=32), batched) == 32
    assert resolve_max_batch_size(EngineSpec(max_batch_size=0), batched) == 0
    assert resolve_max_batch_size(EngineSpec(), unbatched) == 0
    assert resolve_max_batch_size(EngineSpec(max_batch_size=0), unbatched) == 0
    with pytest.raises(ModelError) as error:
        resolve_max_batch_size(EngineSpec(max_batch_size=4), unbatched)
    assert error.value.reason == "BatchingImpossible"
    assert "'state'" in error.value.message


def test_warmup_beyond_max_batch_size(tmp_path: Path) -> None:
    report = inspect_model(write_sample("mlp", tmp_path))
    with pytest.raises(ModelError) as error:
        render_model_config(
            "mlp", report.signature, "onnxruntime_onnx", max_batch_size=4, triton=TRITON, gpus=1
        )
    assert error.value.reason == "WarmupBatchTooLarge"
