"""Reads the facts the fake copies off the real `tensorrt` bindings, and runs nimify's TensorRT code on them.

Run in a fresh interpreter (one TensorRT major per process): `python tensorrt_contract_probe.py DIR`, where
DIR is a directory hack/ensure-tensorrt-bindings.sh prepared (the real `tensorrt_bindings` package and stub
libraries standing in for libnvinfer & co., which answer NULL/0 like TensorRT without a usable GPU). Prints
one JSON object; test_tensorrt_contract.py compares it with the fake.
"""

from __future__ import annotations

import ctypes
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ENUMS = (
    "DataType",
    "NetworkDefinitionCreationFlag",
    "BuilderFlag",
    "TensorIOMode",
    "MemoryPoolType",
    "TensorLocation",
)
# (class, attribute) pairs nimify or the fake use; for methods, the return annotation of every overload.
API = {
    "Builder": [
        "create_network",
        "create_builder_config",
        "create_optimization_profile",
        "build_serialized_network",
    ],
    "IBuilderConfig": [
        "set_flag",
        "clear_flag",
        "set_memory_pool_limit",
        "add_optimization_profile",
        "create_timing_cache",
        "set_timing_cache",
        "get_timing_cache",
    ],
    "ITimingCache": ["serialize", "combine"],
    "IOptimizationProfile": ["set_shape"],
    "INetworkDefinition": ["num_inputs", "get_input"],
    "ITensor": ["name", "shape", "is_shape_tensor"],
    "OnnxParser": ["parse_from_file", "get_error", "num_errors"],
    "ParserError": ["desc", "node"],
    "Runtime": ["deserialize_cuda_engine"],
    "ICudaEngine": [
        "num_io_tensors",
        "get_tensor_name",
        "get_tensor_mode",
        "get_tensor_dtype",
        "get_tensor_shape",
        "is_shape_inference_io",
        "get_tensor_profile_shape",
        "create_execution_context",
    ],
    "IExecutionContext": [
        "set_input_shape",
        "get_tensor_shape",
        "set_tensor_address",
        "set_output_allocator",
        "infer_shapes",
        "execute_async_v3",
    ],
}


def _returns(member: Any) -> list[str] | str:
    """The return annotations of a pybind11 method's overloads, or the kind of a non-method attribute."""
    if isinstance(member, property):
        return "property"
    doc = getattr(member, "__doc__", None) or ""
    returns = []
    for line in doc.splitlines():
        line = line.strip()
        if "(" in line and ") -> " in line and (line.split("(", 1)[0].split(". ")[-1] == member.__name__):
            returns.append(line.rsplit(") -> ", 1)[1].replace("tensorrt_bindings.tensorrt.", ""))
    return returns


def _error(call: Any) -> dict[str, str] | None:
    try:
        call()
    except Exception as error:
        return {"type": type(error).__name__, "reason": getattr(error, "reason", ""), "message": str(error)}
    return None


def main(directory: Path) -> dict[str, Any]:
    major = (directory / "major").read_text().strip()
    for lib in ("nvinfer", "nvinfer_plugin", "nvonnxparser"):
        # Preloaded by soname, so the bindings' own dlopen of libnvinfer.so.N finds these.
        ctypes.CDLL(str(directory / "stub" / f"lib{lib}.so.{major}"), mode=ctypes.RTLD_GLOBAL)
    sys.path.insert(0, str(directory))
    import tensorrt_bindings as trt

    sys.modules["tensorrt"] = trt  # what nimify's import_tensorrt() imports

    facts: dict[str, Any] = {"version": trt.__version__}
    facts["enums"] = {name: {k: int(v) for k, v in getattr(trt, name).__members__.items()} for name in ENUMS}
    facts["severities"] = {k: int(v) for k, v in trt.ILogger.Severity.__members__.items()}
    facts["logger_levels"] = sorted(a for a in facts["severities"] if hasattr(trt.Logger, a))
    facts["aliases"] = {
        alias: getattr(trt, alias).name
        for alias in (
            "float32",
            "float16",
            "bfloat16",
            "int8",
            "int32",
            "int64",
            "bool",
            "uint8",
            "fp8",
            "int4",
            "fp4",
        )
    }
    nptype: dict[str, str] = {}
    for name, member in trt.DataType.__members__.items():
        try:
            nptype[name] = trt.nptype(member).__name__
        except TypeError:
            nptype[name] = "TypeError"
    facts["nptype"] = nptype
    facts["api"] = {
        cls: {attr: _returns(getattr(getattr(trt, cls), attr)) if hasattr(getattr(trt, cls), attr) else None
              for attr in attrs}
        for cls, attrs in API.items()
    }  # fmt: skip
    facts["init_libnvinfer_plugins"] = _returns(trt.init_libnvinfer_plugins)
    facts["builder_without_gpu"] = _error(lambda: trt.Builder(trt.Logger(trt.Logger.ERROR)))
    facts["runtime_without_gpu"] = _error(lambda: trt.Runtime(trt.Logger(trt.Logger.ERROR)))
    facts.update(_nimify_on_the_real_bindings(trt))
    return facts


def _nimify_on_the_real_bindings(trt: Any) -> dict[str, Any]:
    """nimify's own TensorRT code against the real bindings: its logger and output allocator subclasses,
    the plugin call, and a build and an engine load where the library cannot create a builder or runtime."""
    from nimify.engine.tensorrt_build import BuildSettings, build_engine, capturing_logger, init_plugins
    from nimify.engine.tensorrt_runner import TensorRTModel, _allocator
    from nimify.model.samples import write_sample
    from tests.engine.fake_tensorrt import FakeCudaRuntime

    logger = capturing_logger(trt)
    logger.log(trt.ILogger.Severity.ERROR, "probe")
    allocator = _allocator(trt, lambda size: 0x1000)
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path = write_sample("mlp", Path(scratch))
        build = _error(lambda: build_engine(onnx_path, Path(scratch) / "m.plan", BuildSettings()))
    return {
        "logger_errors": logger.errors(),
        "plugins_warning": init_plugins(trt, logger),
        "allocator": {
            "is_output_allocator": isinstance(allocator, trt.IOutputAllocator),
            "reallocate": allocator.reallocate_output_async("y", 0, 64, 256, 0),
        },
        "nimify_build": build,
        "nimify_runtime": _error(lambda: TensorRTModel(b"plan", trt, FakeCudaRuntime())),
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
