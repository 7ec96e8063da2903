"""What `nimify serve` hands to the local tritonserver: python-backend models, translated where needed."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from nimify.api import TritonSpec
from nimify.engine.convert import ConvertRequest, run_conversion
from nimify.model.errors import ModelError
from nimify.model.samples import write_sample
from nimify.triton.local_repository import repository_from_directory, repository_from_onnx
from nimify.triton.local_server import locate_tritonserver, prepare_backends, server_environment
from nimify.triton.repository import write_model_directory


def config_of(model_dir: Path) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig()
    text_format.Parse((model_dir / "config.pbtxt").read_text(), config)
    return config


def test_onnx_file_becomes_a_python_model(tmp_path: Path) -> None:
    model = write_sample("mlp", tmp_path / "in", external_data=True)
    triton = TritonSpec.model_validate({"responseCache": {"enabled": True}})
    local, report = repository_from_onnx(model, tmp_path / "repo", triton=triton)
    assert local.models == ("mlp",) and local.cache_wanted
    assert sorted(p.name for p in (tmp_path / "repo" / "mlp" / "1").iterdir()) == [
        "mlp.weights",
        "model.onnx",
        "model.py",
    ]
    assert config_of(tmp_path / "repo" / "mlp").backend == "python"
    assert report.batching.batched


def test_onnxruntime_repository_is_translated(tmp_path: Path) -> None:
    model = write_sample("multi_output", tmp_path / "in")
    triton = TritonSpec.model_validate(
        {"warmup": {"batchSizes": [2]}, "dynamicBatching": {"maxQueueDelayMicroseconds": 50}}
    )
    result = run_conversion(
        ConvertRequest(
            uri=str(model),
            name="multi",
            repository=tmp_path / "converted",
            work_dir=tmp_path / "work",
            backend="onnxruntime",
            triton=triton,
            gpus=1,
        )
    )
    assert result.ok, result.error
    local = repository_from_directory(tmp_path / "converted", tmp_path / "served")
    assert local.translated == ("multi",)
    config = config_of(tmp_path / "served" / "multi")
    assert config.backend == "python" and not config.platform
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert config.dynamic_batching.max_queue_delay_microseconds == 50  # settings survive the translation
    assert config.model_warmup[0].batch_size == 2
    assert (tmp_path / "served" / "multi" / "1" / "model.py").is_file()
    # The converted repository itself is left as it was.
    assert config_of(tmp_path / "converted" / "multi").platform == "onnxruntime_onnx"


def test_tensorrt_plans_are_refused(tmp_path: Path) -> None:
    write_model_directory(
        tmp_path / "repo", "engine", 'name: "engine"\nplatform: "tensorrt_plan"\n', {"model.plan": "x"}
    )
    with pytest.raises(ModelError) as error:
        repository_from_directory(tmp_path / "repo", tmp_path / "served")
    assert error.value.reason == "TensorRTNeedsGpu"


def test_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as error:
        repository_from_directory(tmp_path, tmp_path / "served")
    assert error.value.reason == "NotAModelRepository"


def test_backend_folder_has_the_stub_for_this_python(tmp_path: Path) -> None:
    installation = locate_tritonserver()
    backends = prepare_backends(installation, tmp_path / "backends")
    assert (backends / "python" / "triton_python_backend_stub").read_bytes() == installation.stub.read_bytes()
    assert (backends / "python" / "libtriton_python.so").is_file()
    env = server_environment(installation, {"PATH": "/usr/bin"})
    assert env["LD_LIBRARY_PATH"] == str(installation.libraries)
    assert env["PATH"].endswith(":/usr/bin")
