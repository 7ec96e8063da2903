"""The TensorRT build path, up to the TensorRT calls, against a fake `tensorrt` of major version 10 and 11."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from nimify.api import ShapeProfile
from nimify.engine.tensorrt_build import BuildSettings, build_engine, precision_plan
from nimify.model.errors import ModelError
from nimify.model.samples import build_mlp, write_sample
from tests.engine.fake_tensorrt import FakeTensorRT

PROFILE = [ShapeProfile(input="input", min=[1, 16], opt=[8, 16], max=[8, 16])]


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
    settings = BuildSettings(
        precision="fp16", profiles=PROFILE, workspace_bytes=2**30, timing_cache=tmp_path / "timing.cache"
    )
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
    assert (tmp_path / "timing.cache").read_bytes() == b"+tuned"
    # The next build starts from the cache the first one left.
    build_engine(onnx_path, tmp_path / "again.plan", settings, trt=trt)
    assert [c for c in trt.calls if c[0] == "create_timing_cache"][-1] == ("create_timing_cache", b"+tuned")


def test_tensorrt_10_auto_is_strongly_typed(tmp_path: Path) -> None:
    trt = FakeTensorRT("10.8.0")
    build_engine(write_sample("mlp", tmp_path), tmp_path / "m.plan", BuildSettings(profiles=PROFILE), trt=trt)
    assert dict(trt.calls)["create_network"] == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert not [c for c in trt.calls if c[0] in ("set_flag", "set_memory_pool_limit")]


def test_tensorrt_11_auto_and_fp32(tmp_path: Path) -> None:
    trt = FakeTensorRT("11.0.0.5")
    path = write_sample("mlp", tmp_path)
    build_engine(path, tmp_path / "a.plan", BuildSettings(precision="auto", profiles=PROFILE), trt=trt)
    build_engine(path, tmp_path / "b.plan", BuildSettings(precision="fp32", profiles=PROFILE), trt=trt)
    assert [c[1] for c in trt.calls if c[0] == "create_network"] == [0, 0]
    assert ("clear_flag", "TF32") in trt.calls
    assert not [c for c in trt.calls if c[0] == "set_flag"]


def test_tensorrt_11_refuses_fp16_before_building(tmp_path: Path) -> None:
    trt = FakeTensorRT("11.0.0.5")
    with pytest.raises(ModelError) as error:
        build_engine(
            write_sample("mlp", tmp_path), tmp_path / "m.plan", BuildSettings(precision="fp16"), trt=trt
        )
    assert error.value.reason == "PrecisionNeedsGraph"
    assert trt.calls == []


def test_parse_failure_is_reported(tmp_path: Path) -> None:
    trt = FakeTensorRT(fail_parse=True)
    with pytest.raises(ModelError) as error:
        build_engine(write_sample("mlp", tmp_path), tmp_path / "m.plan", BuildSettings(), trt=trt)
    assert error.value.reason == "OnnxParseFailed"
    assert "node 3: Assertion failed" in error.value.message


def test_build_failure_carries_the_log(tmp_path: Path) -> None:
    trt = FakeTensorRT(fail_build=True)
    with pytest.raises(ModelError) as error:
        build_engine(
            write_sample("mlp", tmp_path), tmp_path / "m.plan", BuildSettings(profiles=PROFILE), trt=trt
        )
    assert error.value.reason == "EngineBuildFailed"
    assert "out of memory" in error.value.message
    assert not (tmp_path / "m.plan").exists()
