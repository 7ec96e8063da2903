"""Stand-ins for `tensorrt` and cuda-python's runtime bindings, to drive the builder and runner without a GPU.

The fake records every builder call. Its "engine" is a JSON record of the build; running it runs the ONNX
model with ONNX Runtime, rounding outputs through float16 when the FP16 flag was set (as reduced precision
would), so parity figures come out non-zero exactly when they should.
"""

from __future__ import annotations

import ctypes
import json
from enum import IntEnum
from typing import Any

import numpy as np
import onnxruntime

_ORT_TYPES = {
    "tensor(float)": "FLOAT",
    "tensor(float16)": "HALF",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(int8)": "INT8",
}
_NUMPY = {"FLOAT": np.float32, "HALF": np.float16, "INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_,
          "UINT8": np.uint8, "INT8": np.int8}  # fmt: skip


class Severity(IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger:
    Severity = Severity

    def __init__(self) -> None:
        pass

    def log(self, severity: int, msg: str) -> None:
        """TensorRT's loggers are subclasses that override this."""


class Logger(ILogger):
    ERROR = Severity.ERROR
    WARNING = Severity.WARNING

    def __init__(self, level: Severity = Severity.WARNING) -> None:
        super().__init__()


class DataType(IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    INT64 = 8


class TensorIOMode(IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class MemoryPoolType(IntEnum):
    WORKSPACE = 0


class ParserError:
    def __init__(self, node: int, text: str) -> None:
        self._node, self._text = node, text

    def desc(self) -> str:
        return self._text

    def node(self) -> int:
        return self._node


class FakeTensorRT:
    """`tensorrt` as seen by nimify, for major version 10 (weak typing flags) or 11 (strongly typed only)."""

    def __init__(
        self, version: str = "10.13.0.35", *, fail_parse: bool = False, fail_build: bool = False
    ) -> None:
        self.__version__ = version
        major = int(version.split(".")[0])
        self.calls: list[tuple[str, Any]] = []
        self.fail_parse, self.fail_build = fail_parse, fail_build
        self.ILogger, self.Logger = ILogger, Logger
        self.DataType, self.TensorIOMode, self.MemoryPoolType = DataType, TensorIOMode, MemoryPoolType
        network_flags = (
            {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1} if major == 10 else {"PREFER_AOT_PYTHON_PLUGINS": 2}
        )
        self.NetworkDefinitionCreationFlag = IntEnum("NetworkDefinitionCreationFlag", network_flags)  # type: ignore[misc]
        builder_flags = ["TF32", "REFIT", "DIRECT_IO"] + (
            ["FP16", "BF16", "INT8", "FP8"] if major == 10 else []
        )
        self.BuilderFlag = IntEnum("BuilderFlag", builder_flags)  # type: ignore[misc]
        fake = self

        class Builder:
            def __init__(self, logger: ILogger) -> None:
                fake.calls.append(("Builder", None))
                self.logger = logger

            def create_network(self, flags: int) -> dict[str, Any]:
                fake.calls.append(("create_network", flags))
                return {"flags": flags}

            def create_builder_config(self) -> BuilderConfig:
                return BuilderConfig()

            def create_optimization_profile(self) -> OptimizationProfile:
                return OptimizationProfile()

            def build_serialized_network(
                self, network: dict[str, Any], config: BuilderConfig
            ) -> bytes | None:
                fake.calls.append(("build_serialized_network", None))
                if fake.fail_build:
                    self.logger.log(Severity.ERROR, "out of memory building tactic for node Gemm_0")
                    return None
                self.logger.log(Severity.WARNING, "fake warning")
                record = {
                    "onnx": network["onnx"],
                    "network_flags": network["flags"],
                    "builder_flags": sorted(config.flags),
                    "profiles": config.profiles,
                }
                return b"FAKEPLAN" + json.dumps(record).encode()

        class BuilderConfig:
            def __init__(self) -> None:
                self.flags: set[str] = set()
                self.profiles: list[dict[str, Any]] = []
                self.cache = b""

            def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
                fake.calls.append(("set_memory_pool_limit", (pool.name, size)))

            def set_flag(self, flag: IntEnum) -> None:
                fake.calls.append(("set_flag", flag.name))
                self.flags.add(flag.name)

            def clear_flag(self, flag: IntEnum) -> None:
                fake.calls.append(("clear_flag", flag.name))
                self.flags.discard(flag.name)

            def add_optimization_profile(self, profile: OptimizationProfile) -> int:
                self.profiles.append(profile.shapes)
                return len(self.profiles) - 1

            def create_timing_cache(self, data: bytes) -> bytes:
                fake.calls.append(("create_timing_cache", bytes(data)))
                return bytes(data)

            def set_timing_cache(self, cache: bytes, ignore_mismatch: bool) -> bool:
                self.cache = cache + b"+tuned"
                return True

            def get_timing_cache(self) -> Any:
                cache = self.cache

                class Cache:
                    def serialize(self) -> bytes:
                        return cache

                return Cache()

        class OptimizationProfile:
            def __init__(self) -> None:
                self.shapes: dict[str, list[list[int]]] = {}

            def set_shape(
                self, name: str, low: tuple[int, ...], best: tuple[int, ...], high: tuple[int, ...]
            ) -> None:
                fake.calls.append(("set_shape", (name, low, best, high)))
                self.shapes[name] = [list(low), list(best), list(high)]

        class OnnxParser:
            def __init__(self, network: dict[str, Any], logger: ILogger) -> None:
                self.network = network
                self.num_errors = 0

            def parse_from_file(self, path: str) -> bool:
                fake.calls.append(("parse_from_file", path))
                if fake.fail_parse:
                    self.num_errors = 1
                    return False
                self.network["onnx"] = path
                return True

            def get_error(self, index: int) -> ParserError:
                return ParserError(3, "Assertion failed: unsupported attribute")

        self.Builder, self.OnnxParser = Builder, OnnxParser
        self.Runtime = Runtime

    @staticmethod
    def nptype(dtype: DataType) -> type:
        return _NUMPY[dtype.name]


class Runtime:
    def __init__(self, logger: ILogger) -> None:
        pass

    def deserialize_cuda_engine(self, plan: bytes) -> Engine | None:
        if not plan.startswith(b"FAKEPLAN"):
            return None
        return Engine(json.loads(plan[len(b"FAKEPLAN") :]))


class Engine:
    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record
        self.session = onnxruntime.InferenceSession(record["onnx"], providers=["CPUExecutionProvider"])
        self.tensors = {t.name: (TensorIOMode.INPUT, t) for t in self.session.get_inputs()}
        self.tensors.update({t.name: (TensorIOMode.OUTPUT, t) for t in self.session.get_outputs()})
        self.names = list(self.tensors)
        self.num_io_tensors = len(self.names)

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return self.tensors[name][0]

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType[_ORT_TYPES[self.tensors[name][1].type]]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else -1 for d in self.tensors[name][1].shape)

    def create_execution_context(self) -> ExecutionContext:
        return ExecutionContext(self)


class ExecutionContext:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = address
        return True

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [t.name for t in self.engine.session.get_outputs()]
        outputs = dict(zip(names, self.engine.session.run(names, feeds), strict=True))
        if "FP16" in self.engine.record["builder_flags"]:
            outputs = {
                k: v.astype(np.float16).astype(v.dtype) if v.dtype == np.float32 else v
                for k, v in outputs.items()
            }
        return outputs

    def _dtype(self, name: str) -> Any:
        return _NUMPY[self.engine.get_tensor_dtype(name).name]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if self.engine.get_tensor_mode(name) == TensorIOMode.INPUT:
            return self.shapes[name]
        zeros = {n: np.zeros(s, self._dtype(n)) for n, s in self.shapes.items()}
        return tuple(self._run(zeros)[name].shape)

    def execute_async_v3(self, stream: int) -> bool:
        feeds = {}
        for name, shape in self.shapes.items():
            dtype = np.dtype(self._dtype(name))
            size = int(np.prod(shape)) * dtype.itemsize
            feeds[name] = np.frombuffer(bytes(_device().memory[self.addresses[name]][:size]), dtype).reshape(
                shape
            )
        for name, value in self._run(feeds).items():
            data = np.ascontiguousarray(value).tobytes()
            _device().memory[self.addresses[name]][: len(data)] = data
        return True


class _MemcpyKind(IntEnum):
    cudaMemcpyHostToDevice = 1  # noqa: N815 - cuda-python's names
    cudaMemcpyDeviceToHost = 2  # noqa: N815


class FakeCudaRuntime:
    """cuda-python's `cuda.bindings.runtime` calls the runner makes, over host memory."""

    cudaMemcpyKind = _MemcpyKind  # noqa: N815

    def __init__(self) -> None:
        global _CURRENT
        self.memory: dict[int, bytearray] = {}
        self.next_pointer = 0x1000
        self.freed = 0
        _CURRENT = self  # the fake engine reads and writes the most recently created fake device

    def cudaStreamCreate(self) -> tuple[int, int]:  # noqa: N802 - cuda-python's names
        return 0, 7

    def cudaStreamDestroy(self, stream: int) -> tuple[int]:  # noqa: N802
        return (0,)

    def cudaStreamSynchronize(self, stream: int) -> tuple[int]:  # noqa: N802
        return (0,)

    def cudaMalloc(self, size: int) -> tuple[int, int]:  # noqa: N802
        pointer = self.next_pointer
        self.next_pointer += size + 256
        self.memory[pointer] = bytearray(size)
        return 0, pointer

    def cudaFree(self, pointer: int) -> tuple[int]:  # noqa: N802
        del self.memory[pointer]
        self.freed += 1
        return (0,)

    def cudaMemcpy(self, dst: int, src: int, count: int, kind: _MemcpyKind) -> tuple[int]:  # noqa: N802
        if kind == _MemcpyKind.cudaMemcpyHostToDevice:
            self.memory[dst][:count] = ctypes.string_at(src, count)
        else:
            ctypes.memmove(dst, bytes(self.memory[src][:count]), count)
        return (0,)


_CURRENT: FakeCudaRuntime | None = None


def _device() -> FakeCudaRuntime:
    assert _CURRENT is not None, "create a FakeCudaRuntime first"
    return _CURRENT
