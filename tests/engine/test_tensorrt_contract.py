"""The fake `tensorrt` against the real bindings of TensorRT 10.16 and 11.4 (from PyPI, no GPU needed).

`import tensorrt` needs libnvinfer, which only NVIDIA's index serves (over a GB) and which needs a GPU to do
anything. The bindings package alone (tensorrt-cuXX-bindings, 1.3 MB on PyPI) holds everything the fake
copies: the enums, `nptype`, the signatures. hack/ensure-tensorrt-bindings.sh fetches it and builds three stub
libraries answering NULL/0 for the nine C entry points the bindings import, which is what TensorRT answers
without a usable GPU; so this also runs nimify's own TensorRT code on the real bindings and sees the real
exception become a ModelError. What needs a GPU (a build, a run) is checked by hack/gpu-check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.engine import fake_tensorrt
from tests.engine.fake_tensorrt import FakeCudaRuntime, FakeTensorRT

REPO_ROOT = Path(__file__).resolve().parents[2]


def _binding_dirs() -> list[Path]:
    listed = os.environ.get("NIMIFY_TENSORRT_BINDINGS")
    if not listed:
        # Cached after the first run; a cold machine downloads 2 x 1.3 MB from PyPI and compiles the stubs.
        result = subprocess.run(
            ["bash", str(REPO_ROOT / "hack" / "ensure-tensorrt-bindings.sh")],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
        listed = result.stdout.strip().splitlines()[-1]
        os.environ["NIMIFY_TENSORRT_BINDINGS"] = listed
    return [Path(d) for d in listed.split(":")]


@pytest.fixture(scope="module", params=[10, 11], ids=["tensorrt10", "tensorrt11"])
def real(request: pytest.FixtureRequest) -> dict[str, Any]:
    [directory] = [d for d in _binding_dirs() if (d / "major").read_text().strip() == str(request.param)]
    probe = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("tensorrt_contract_probe.py")), str(directory)],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    facts: dict[str, Any] = json.loads(probe.stdout.strip().splitlines()[-1])
    return facts


def fake_for(real: dict[str, Any], **options: Any) -> FakeTensorRT:
    return FakeTensorRT(real["version"], **options)


def members(enum: Any) -> dict[str, int]:
    return {name: int(value) for name, value in enum.__members__.items()}


def test_enums_are_the_real_ones(real: dict[str, Any]) -> None:
    fake = fake_for(real)
    enums = real["enums"]
    assert members(fake.NetworkDefinitionCreationFlag) == enums["NetworkDefinitionCreationFlag"]
    assert members(fake.BuilderFlag) == enums["BuilderFlag"]
    assert members(fake.DataType) == enums["DataType"]
    assert members(fake.TensorIOMode) == enums["TensorIOMode"]
    assert members(fake.MemoryPoolType) == enums["MemoryPoolType"]
    assert members(fake.TensorLocation) == enums["TensorLocation"]
    assert members(fake.ILogger.Severity) == real["severities"]
    assert sorted(a for a in real["severities"] if hasattr(fake.Logger, a)) == real["logger_levels"]
    assert {alias: getattr(fake, alias).name for alias in real["aliases"]} == real["aliases"]


def test_nptype_fails_where_the_real_one_does(real: dict[str, Any]) -> None:
    fake = fake_for(real)
    for name, answer in real["nptype"].items():
        try:
            got = fake.nptype(fake.DataType[name]).__name__
        except TypeError:
            got = "TypeError"
        assert got == answer, name
    assert real["nptype"]["BF16"] == real["nptype"]["FP8"] == real["nptype"]["INT4"] == "TypeError"


def test_every_call_nimify_makes_exists_and_answers_as_the_fake_does(real: dict[str, Any]) -> None:
    api = real["api"]
    missing = [f"{cls}.{attr}" for cls, attrs in api.items() for attr, kind in attrs.items() if kind is None]
    assert not missing
    # Refusals by return value, which nimify checks and the fake models.
    assert api["IBuilderConfig"]["set_timing_cache"] == ["bool"]
    assert api["IBuilderConfig"]["add_optimization_profile"] == ["int"]
    assert api["IBuilderConfig"]["get_timing_cache"] == ["ITimingCache"]  # or None: documented, not typed
    assert api["ITimingCache"]["combine"] == ["bool"]
    assert set(api["IExecutionContext"]["set_input_shape"]) == {"bool"}
    assert api["IExecutionContext"]["set_tensor_address"] == ["bool"]
    assert api["IExecutionContext"]["set_output_allocator"] == ["bool"]
    assert api["IExecutionContext"]["execute_async_v3"] == ["bool"]
    assert api["IExecutionContext"]["infer_shapes"] == ["list[str]"]
    assert api["ICudaEngine"]["is_shape_inference_io"] == ["bool"]
    assert api["OnnxParser"]["parse_from_file"] == ["bool"]
    assert api["IOptimizationProfile"]["set_shape"] == ["None"]  # refuses by raising RuntimeError
    assert real["init_libnvinfer_plugins"] == ["bool"]
    # The fake has the same calls.
    fake = fake_for(real)
    builder = fake.Builder(fake.Logger())
    config, network = builder.create_builder_config(), builder.create_network(0)
    objects = {
        "Builder": builder,
        "IBuilderConfig": config,
        "IOptimizationProfile": builder.create_optimization_profile(),
        "INetworkDefinition": network,
        "OnnxParser": fake.OnnxParser(network, fake.Logger()),
        "ITimingCache": config.create_timing_cache(b""),
    }
    for cls, obj in objects.items():
        for attr in api[cls]:
            assert hasattr(obj, attr), f"fake {cls} lacks {attr}"


def test_without_a_gpu_the_bindings_raise_what_the_fake_raises(real: dict[str, Any]) -> None:
    fake = fake_for(real, usable_gpu=False)
    for factory, key in ((fake.Builder, "builder_without_gpu"), (fake.Runtime, "runtime_without_gpu")):
        with pytest.raises(TypeError) as raised:
            factory(fake.Logger())
        assert real[key] == {"type": "TypeError", "reason": "", "message": str(raised.value)}


def test_nimify_on_the_real_bindings(real: dict[str, Any], tmp_path: Path) -> None:
    """nimify's logger and allocator subclasses and its plugin call work on the real classes, and what the
    bindings raise comes out as the same ModelError as with the fake."""
    assert real["logger_errors"] == ["probe"]
    assert real["allocator"] == {"is_output_allocator": True, "reallocate": 0x1000}
    assert real["plugins_warning"] is not None  # the stub's initLibNvInferPlugins says false
    for key in ("nimify_build", "nimify_runtime"):
        assert real[key]["type"] == "ModelError" and real[key]["reason"] == "TensorRTError", real[key]
        assert "TypeError: pybind11::init(): factory function returned nullptr" in real[key]["message"]

    from nimify.engine.tensorrt_build import BuildSettings, build_engine
    from nimify.engine.tensorrt_runner import TensorRTModel
    from nimify.model.errors import ModelError
    from nimify.model.samples import write_sample

    fake = fake_for(real, usable_gpu=False)
    with pytest.raises(ModelError) as build:
        build_engine(write_sample("mlp", tmp_path), tmp_path / "m.plan", BuildSettings(), trt=fake)
    assert build.value.message.startswith(real["nimify_build"]["message"].removeprefix("TensorRTError: "))
    with pytest.raises(ModelError) as load:
        TensorRTModel(b"plan", fake, FakeCudaRuntime())
    # The fake also logs "error: 35" as TensorRT does; the stubs log nothing.
    assert str(load.value).startswith(real["nimify_runtime"]["message"])


def test_the_fake_is_versioned_like_the_bindings() -> None:
    assert set(fake_tensorrt.NETWORK_FLAGS) == set(fake_tensorrt.BUILDER_FLAGS) == {10, 11}
    with pytest.raises(ValueError, match="10 and 11"):
        FakeTensorRT("8.6.1")
