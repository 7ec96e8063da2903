"""The TensorRT build path against a fake `tensorrt` of major 10 and 11 that refuses like the real one."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper

from nimify.api import ShapeProfile
from nimify.engine.tensorrt_build import (
    BuildReport,
    BuildSettings,
    build_engine,
    precision_plan,
    timing_cache_path,
    write_atomically,
)
from nimify.model.errors import ModelError
from nimify.model.samples import build_mlp, write_model, write_sample
from tests.engine.fake_tensorrt import PLUGIN_DOMAIN, FakeTensorRT

PROFILE = [ShapeProfile(input="input", min=[1, 16], opt=[8, 16], max=[8, 16])]
H100, L4 = "NVIDIA H100 80GB HBM3", "NVIDIA L4"


def quantized_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y"]),
    ]
    inits = [
        helper.make_tensor("scale", TensorProto.FLOAT, [], [0.1]),
        helper.make_tensor("zero", TensorProto.INT8, [], [0]),
    ]
    return helper.make_model(
        helper.make_graph(nodes, "q", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)]
    )


def plugin_model(directory: Path) -> Path:
    """A graph with one node of TensorRT's plugin library (the parser needs the plugins registered)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    node = helper.make_node("ScatterElements_TRT", ["x"], ["y"], domain=PLUGIN_DOMAIN)
    graph = helper.make_graph([node], "plugin", [x], [y])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(PLUGIN_DOMAIN, 1)]
    )
    return write_model(model, directory / "plugin.onnx")


def build(
    trt: FakeTensorRT, tmp_path: Path, *, plan: str = "m.plan", model: str = "mlp", **settings: object
) -> tuple[Path, BuildReport]:
    values: dict[str, Any] = {"profiles": PROFILE, **settings}
    path = tmp_path / plan
    report = build_engine(write_sample(model, tmp_path / "in"), path, BuildSettings(**values), trt=trt)
    return path, report


@pytest.mark.parametrize(
    ("major", "precision", "network", "flags", "cleared"),
    [
        (10, "auto", ("STRONGLY_TYPED",), (), ()),
        (10, "fp32", ("STRONGLY_TYPED",), (), ("TF32",)),
        (10, "fp16", (), ("FP16",), ()),
        (10, "bf16", (), ("BF16",), ()),
        (11, "auto", (), (), ()),
        (11, "fp32", (), (), ("TF32",)),
    ],
)
def test_precision_plan(
    major: int, precision: str, network: tuple[str, ...], flags: tuple[str, ...], cleared: tuple[str, ...]
) -> None:
    plan = precision_plan(major, precision)
    assert (plan.network_flags, plan.builder_flags, plan.clear_flags) == (network, flags, cleared)


def test_tensorrt_11_keeps_strongly_typed_and_drops_explicit_batch() -> None:
    """What the old comment got wrong: 11 keeps STRONGLY_TYPED (deprecated, ignored); EXPLICIT_BATCH went."""
    eleven, ten = FakeTensorRT("11.4.0.106"), FakeTensorRT("10.16.1.11")
    assert int(eleven.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 0
    assert not hasattr(eleven.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    assert int(ten.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 1
    assert not hasattr(eleven.BuilderFlag, "FP16") and hasattr(ten.BuilderFlag, "FP16")


@pytest.mark.parametrize("precision", ["fp16", "bf16", "int8", "fp8"])
def test_tensorrt_11_has_no_precision_flags(precision: str) -> None:
    with pytest.raises(ModelError) as error:
        precision_plan(11, precision)
    assert error.value.reason == "PrecisionNeedsGraph"
    assert "strongly typed" in error.value.message and "precision auto" in error.value.message


def test_int8_needs_quantize_nodes() -> None:
    with pytest.raises(ModelError) as error:
        precision_plan(10, "int8", build_mlp())
    assert error.value.reason == "QuantizationMissing"
    assert precision_plan(10, "int8", quantized_model()).builder_flags == ("INT8",)


def test_unknown_precision() -> None:
    with pytest.raises(ModelError) as error:
        precision_plan(10, "fp4")
    assert error.value.reason == "UnknownPrecision"


def test_tensorrt_10_fp16_build(tmp_path: Path) -> None:
    trt = FakeTensorRT("10.13.0.35")
    onnx_path = write_sample("mlp", tmp_path)
    settings = BuildSettings(precision="fp16", profiles=PROFILE, workspace_bytes=2**30)
    report = build_engine(onnx_path, tmp_path / "out" / "model.plan", settings, trt=trt)
    calls = dict(trt.calls)
    assert calls["create_network"] == 0  # weak typing: no STRONGLY_TYPED with a precision flag
    assert ("set_flag", "FP16") in trt.calls
    assert calls["set_memory_pool_limit"] == ("WORKSPACE", 2**30)
    assert calls["set_shape"] == ("input", (1, 16), (8, 16), (8, 16))
    assert calls["parse_from_file"] == str(onnx_path)
    assert report.tensorrt_version == "10.13.0.35"
    assert report.precision == "weakly typed, builder flag FP16"
    assert report.plan_bytes == (tmp_path / "out" / "model.plan").stat().st_size
    assert report.warnings == ("fake warning",)
    assert report.timing_cache == "none"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["model.plan"]  # written atomically


def test_tensorrt_10_auto_is_strongly_typed(tmp_path: Path) -> None:
    trt = FakeTensorRT("10.8.0.43")
    build(trt, tmp_path)
    assert dict(trt.calls)["create_network"] == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert not [c for c in trt.calls if c[0] in ("set_flag", "set_memory_pool_limit")]


def test_tensorrt_11_auto_and_fp32(tmp_path: Path) -> None:
    trt = FakeTensorRT("11.4.0.106")
    build(trt, tmp_path, plan="a.plan", precision="auto")
    build(trt, tmp_path, plan="b.plan", precision="fp32")
    assert [c[1] for c in trt.calls if c[0] == "create_network"] == [0, 0]
    assert ("clear_flag", "TF32") in trt.calls
    assert not [c for c in trt.calls if c[0] == "set_flag"]


def test_tensorrt_11_refuses_fp16_before_building(tmp_path: Path) -> None:
    trt = FakeTensorRT("11.4.0.106")
    with pytest.raises(ModelError) as error:
        build(trt, tmp_path, precision="fp16")
    assert error.value.reason == "PrecisionNeedsGraph"
    assert trt.calls == []


def test_parse_failure_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as error:
        build(FakeTensorRT(fail_parse=True), tmp_path)
    assert error.value.reason == "OnnxParseFailed"
    assert "node 3: Assertion failed" in error.value.message


def test_build_failure_carries_the_log(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as error:
        build(FakeTensorRT(fail_build=True), tmp_path)
    assert error.value.reason == "EngineBuildFailed"
    assert "out of memory" in error.value.message
    assert not (tmp_path / "m.plan").exists()


# --- Defect 4: TensorRT's plugin library is registered before the parser runs. ---


def test_plugins_are_initialized_before_parsing(tmp_path: Path) -> None:
    trt = FakeTensorRT()
    build_engine(plugin_model(tmp_path), tmp_path / "m.plan", BuildSettings(), trt=trt)
    names = [name for name, _ in trt.calls]
    assert names.index("init_libnvinfer_plugins") < names.index("parse_from_file")
    assert ("init_libnvinfer_plugins", "") in trt.calls


def test_without_plugins_the_parser_refuses_plugin_ops(tmp_path: Path) -> None:
    """What happened before the fix, as the fake (and TensorRT) answers it."""
    trt = FakeTensorRT()
    parser = trt.OnnxParser(trt.Builder(trt.Logger()).create_network(0), trt.Logger())
    assert not parser.parse_from_file(str(plugin_model(tmp_path)))
    assert "plugin not found" in parser.get_error(0).desc()


# --- Defect 7: what the bindings raise becomes a ModelError. ---


def test_no_usable_gpu_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as error:
        build(FakeTensorRT(usable_gpu=False), tmp_path)
    assert error.value.reason == "TensorRTError"
    assert "starting TensorRT's builder failed: TypeError" in error.value.message
    assert "factory function returned nullptr" in error.value.message
    assert "error: 35" in error.value.message  # TensorRT's log travels with it


# --- Defect 3 (builder side): refused profiles and shape-tensor inputs are named. ---


def test_inconsistent_profile_is_refused_by_name(tmp_path: Path) -> None:
    # TensorRT has rules of its own; model_construct skips the spec's, so the refusal path is reached.
    bad = [ShapeProfile.model_construct(input="input", min=[8, 16], opt=[4, 16], max=[8, 16])]
    with pytest.raises(ModelError) as error:
        build(FakeTensorRT(), tmp_path, profiles=bad)
    assert error.value.reason == "ProfileRefused"
    assert "engine.profiles[input]" in error.value.message and "inconsistent" in error.value.message


def test_dynamic_input_without_profile_fails_the_build(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as error:
        build(FakeTensorRT(), tmp_path, profiles=[])
    assert error.value.reason == "EngineBuildFailed"
    assert "no optimization profile" in error.value.message


def test_shape_tensor_inputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as error:
        build(FakeTensorRT(shape_tensors={"input"}), tmp_path)
    assert error.value.reason == "ShapeTensorInput" and "'input'" in error.value.message


# --- Defect 1: timing caches per (TensorRT version, GPU product), locked, atomic, refusals rebuilt. ---


def test_timing_cache_path_is_per_version_and_gpu_product(tmp_path: Path) -> None:
    a = timing_cache_path(tmp_path, "10.16.1.11", "NVIDIA-H100-80GB-HBM3")
    assert a == tmp_path / "timing-caches" / "tensorrt-10.16.1.11" / "NVIDIA-H100-80GB-HBM3.cache"
    assert timing_cache_path(tmp_path, "11.4.0.106", "NVIDIA-H100-80GB-HBM3") != a
    assert timing_cache_path(tmp_path, "10.16.1.11", "NVIDIA-L4") != a
    assert timing_cache_path(tmp_path, "10.16.1.11", None) is None  # unknown GPU: no shared cache


def test_timing_cache_is_reused_by_the_next_build(tmp_path: Path) -> None:
    trt = FakeTensorRT()
    cache = tmp_path / "caches" / "h100.cache"
    _, first = build(trt, tmp_path, plan="a.plan", timing_cache=cache)
    assert first.timing_cache == "new" and trt.timing_cache_hits == 0
    _, second = build(trt, tmp_path, plan="b.plan", timing_cache=cache)
    assert second.timing_cache == "reused" and trt.timing_cache_hits == 1
    assert sorted(p.name for p in cache.parent.iterdir()) == ["h100.cache", "h100.cache.lock"]


def test_cache_from_another_gpu_is_logged_and_rebuilt(tmp_path: Path) -> None:
    cache = tmp_path / "shared.cache"
    build(FakeTensorRT(gpu=L4), tmp_path, plan="l4.plan", timing_cache=cache)
    trt = FakeTensorRT(gpu=H100)
    _, report = build(trt, tmp_path, plan="h100.plan", timing_cache=cache)
    assert report.timing_cache == "refused"
    assert any("refused timing cache" in w and "another device" in w for w in report.warnings)
    # set_timing_cache said False for the L4 cache; the build went on with an empty one, which is saved.
    assert [c[1] for c in trt.calls if c[0] == "set_timing_cache"] == [(L4, False), (H100, False)]
    assert json.loads(cache.read_bytes()[len(b"FAKETC") :])["device"] == H100


def test_cache_from_another_tensorrt_is_logged_and_rebuilt(tmp_path: Path) -> None:
    cache = tmp_path / "shared.cache"
    build(FakeTensorRT("10.13.3.9"), tmp_path, plan="old.plan", timing_cache=cache)
    _, report = build(FakeTensorRT("10.16.1.11"), tmp_path, plan="new.plan", timing_cache=cache)
    assert report.timing_cache == "refused"
    assert any("unreadable" in w for w in report.warnings)
    assert json.loads(cache.read_bytes()[len(b"FAKETC") :])["tensorrt"] == "10.16.1.11"


def test_garbage_cache_is_rebuilt(tmp_path: Path) -> None:
    cache = tmp_path / "shared.cache"
    cache.write_bytes(b"\x00 half-written by a killed Job")
    path, report = build(FakeTensorRT(), tmp_path, timing_cache=cache)
    assert path.is_file() and report.timing_cache == "refused"
    assert cache.read_bytes().startswith(b"FAKETC")


def test_no_timing_cache_after_the_build_is_a_warning_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """get_timing_cache() can return None; the plan is already written, so the build still succeeds."""
    trt = FakeTensorRT()
    original = trt.Builder.create_builder_config

    def config_without_cache(self: object) -> object:
        config = original(self)  # type: ignore[arg-type]
        config.get_timing_cache = lambda: None  # type: ignore[method-assign]
        return config

    monkeypatch.setattr(trt.Builder, "create_builder_config", config_without_cache)
    path, report = build(trt, tmp_path, timing_cache=tmp_path / "t.cache")
    assert path.is_file()
    assert any("no timing cache" in w for w in report.warnings)
    assert not (tmp_path / "t.cache").exists()


def test_concurrent_builds_merge_instead_of_overwriting(tmp_path: Path) -> None:
    """Two Jobs started from the same cache: the second to finish keeps the first one's new entries."""
    cache = tmp_path / "shared.cache"
    build(FakeTensorRT(), tmp_path, plan="seed.plan", timing_cache=cache)
    barrier = threading.Barrier(2)
    trt = FakeTensorRT()
    real_build = trt.Builder.build_serialized_network

    def slow_build(self: object, network: object, config: object) -> object:
        barrier.wait(timeout=30)  # both read the seed cache before either writes
        return real_build(self, network, config)  # type: ignore[arg-type]

    trt.Builder.build_serialized_network = slow_build  # type: ignore[method-assign,assignment]
    errors: list[BaseException] = []

    def run(model: str) -> None:
        try:
            build(trt, tmp_path / model, timing_cache=cache)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(m,)) for m in ("job-a", "job-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    entries = json.loads(cache.read_bytes()[len(b"FAKETC") :])["entries"]
    assert {Path(key.split(":")[0]).parent.parent.name for key in entries} == {
        tmp_path.name,
        "job-a",
        "job-b",
    }


def test_atomic_write_leaves_the_old_file_when_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "cache"
    target.write_bytes(b"old")

    def interrupted(self: Path, other: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]
