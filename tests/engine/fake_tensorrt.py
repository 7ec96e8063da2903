"""Stand-ins for `tensorrt` 10.x / 11.x and cuda-python's runtime bindings that fail the way the real ones do.

What is copied from the real modules (and checked against them by test_tensorrt_contract.py wherever the
`tensorrt` bindings can be imported): the enums and their values per major version (TensorRT 11 keeps
STRONGLY_TYPED, deprecated and ignored, and drops EXPLICIT_BATCH and the weak-typing builder flags), the data
types including BF16/FP8/INT4/FP4/E8M0, `nptype` (which knows none of those five and raises TypeError), and
which calls return a bool or None instead of raising.

The refusals modelled, each as TensorRT reports it:
- `Builder`/`Runtime` without a usable GPU: TypeError "factory function returned nullptr" (error 35 logged);
- the ONNX parser on an unsupported node, and on a plugin op before `init_libnvinfer_plugins`;
- `set_shape` with inconsistent min/opt/max: RuntimeError; `add_optimization_profile` of an incomplete
  profile: -1; a build with a dynamic input and no profile: logged error, None;
- `create_timing_cache` of another TensorRT version's (or garbage) bytes: logged error, None;
  `set_timing_cache` of another GPU's cache without ignore_mismatch: logged error, False;
  `get_timing_cache` with none set: None;
- a build that fails (`fail_build`): logged error, None;
- `deserialize_cuda_engine` of a plan from another version or GPU: logged error, None;
- `set_input_shape` outside the profile: logged error, False; `execute_async_v3` with an output that has
  neither an address nor an output allocator: logged error, False.

The "engine" is a JSON record of the build; running it runs the ONNX model with ONNX Runtime, rounding
outputs through float16 when the FP16 flag was set (as reduced precision would), so parity figures come out
non-zero exactly when they should. Tensors can be declared to have another TensorRT type than ONNX Runtime's
(bf16, fp8, int4 engine I/O), to be shape tensors, or to have data-dependent shapes.
"""

from __future__ import annotations

import ctypes
import json
from collections.abc import Iterable, Mapping
from enum import IntEnum
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import onnxruntime

# --- Copied from the real bindings (tensorrt-cu12-bindings 10.16.1.11, tensorrt-cu13-bindings 11.4.0.106) ---
DATA_TYPES = {"FLOAT": 0, "HALF": 1, "BF16": 7, "INT8": 2, "INT32": 3, "INT64": 8, "BOOL": 4, "UINT8": 5,
              "FP8": 6, "INT4": 9, "FP4": 10, "E8M0": 11}  # fmt: skip
NETWORK_FLAGS = {
    10: {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1, "PREFER_AOT_PYTHON_PLUGINS": 3,
         "PREFER_JIT_PYTHON_PLUGINS": 2},
    11: {"STRONGLY_TYPED": 0, "PREFER_AOT_PYTHON_PLUGINS": 2, "PREFER_JIT_PYTHON_PLUGINS": 1},
}  # fmt: skip
BUILDER_FLAGS = {
    10: {"FP16": 0, "BF16": 17, "INT8": 1, "DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4,
         "DISABLE_TIMING_CACHE": 5, "EDITABLE_TIMING_CACHE": 27, "TF32": 6, "SPARSE_WEIGHTS": 7,
         "SAFETY_SCOPE": 8, "OBEY_PRECISION_CONSTRAINTS": 9, "PREFER_PRECISION_CONSTRAINTS": 10,
         "DIRECT_IO": 11, "REJECT_EMPTY_ALGORITHMS": 12, "VERSION_COMPATIBLE": 13, "EXCLUDE_LEAN_RUNTIME": 14,
         "FP8": 15, "ERROR_ON_TIMING_CACHE_MISS": 16, "DISABLE_COMPILATION_CACHE": 18, "WEIGHTLESS": 19,
         "STRIP_PLAN": 19, "REFIT_IDENTICAL": 20, "WEIGHT_STREAMING": 21, "INT4": 22, "REFIT_INDIVIDUAL": 23,
         "STRICT_NANS": 24, "MONITOR_MEMORY": 25, "FP4": 26, "DISTRIBUTIVE_INDEPENDENCE": 28},
    11: {"DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "DISABLE_TIMING_CACHE": 5, "EDITABLE_TIMING_CACHE": 26,
         "TF32": 6, "SPARSE_WEIGHTS": 7, "SAFETY_SCOPE": 8, "DIRECT_IO": 11, "VERSION_COMPATIBLE": 12,
         "EXCLUDE_LEAN_RUNTIME": 13, "ERROR_ON_TIMING_CACHE_MISS": 15, "DISABLE_COMPILATION_CACHE": 17,
         "STRIP_PLAN": 18, "REFIT_IDENTICAL": 19, "WEIGHT_STREAMING": 20, "REFIT_INDIVIDUAL": 22,
         "STRICT_NANS": 23, "MONITOR_MEMORY": 24, "DISTRIBUTIVE_INDEPENDENCE": 27},
}  # fmt: skip
TENSOR_IO_MODES = {"NONE": 0, "INPUT": 1, "OUTPUT": 2}
MEMORY_POOL_TYPES = {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1, "DLA_LOCAL_DRAM": 2, "DLA_GLOBAL_DRAM": 3,
                     "TACTIC_DRAM": 4, "TACTIC_SHARED_MEMORY": 5}  # fmt: skip
SEVERITIES = {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3, "VERBOSE": 4}
TENSOR_LOCATIONS = {"DEVICE": 0, "HOST": 1}
# Module-level aliases of DataType members, as `tensorrt` has them.
DTYPE_ALIASES = {"float32": "FLOAT", "float16": "HALF", "bfloat16": "BF16", "int8": "INT8",
                 "int32": "INT32", "int64": "INT64", "bool": "BOOL", "uint8": "UINT8", "fp8": "FP8",
                 "int4": "INT4", "fp4": "FP4"}  # fmt: skip
# `tensorrt.nptype`'s own table: the seven types numpy has; anything else is a TypeError.
NPTYPE = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
          "BOOL": np.bool_, "UINT8": np.uint8}  # fmt: skip
NULLPTR = "pybind11::init(): factory function returned nullptr"


def _enum(name: str, members: dict[str, int]) -> Any:
    """A pybind-like enum from a copied table (Any: its members are data here, not declarations)."""
    return IntEnum(name, members)


DataType: Any = _enum("DataType", DATA_TYPES)
TensorIOMode: Any = _enum("TensorIOMode", TENSOR_IO_MODES)
MemoryPoolType: Any = _enum("MemoryPoolType", MEMORY_POOL_TYPES)
Severity: Any = _enum("Severity", SEVERITIES)
TensorLocation: Any = _enum("TensorLocation", TENSOR_LOCATIONS)

_ORT_TYPES = {
    "tensor(float)": "FLOAT",
    "tensor(float16)": "HALF",
    "tensor(bfloat16)": "BF16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(int8)": "INT8",
}
# How the fake device stores each type (real engines: the same widths; INT4/FP4 are packed, two per byte).
_STORAGE = {"FLOAT": np.float32, "HALF": np.float16, "BF16": ml_dtypes.bfloat16, "INT8": np.int8,
            "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_, "UINT8": np.uint8,
            "FP8": ml_dtypes.float8_e4m3fn}  # fmt: skip
PLUGIN_DOMAIN = "trt.plugins"  # ONNX nodes of this domain need TensorRT's plugin library


class ILogger:
    Severity = Severity

    def __init__(self) -> None:
        pass

    def log(self, severity: Any, msg: str) -> None:
        """TensorRT's loggers are subclasses that override this."""


class Logger(ILogger):
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = (Severity[name] for name in SEVERITIES)

    def __init__(self, min_severity: Any = Severity.WARNING) -> None:
        super().__init__()


class IOutputAllocator:
    def __init__(self) -> None:
        pass


class ParserError:
    def __init__(self, node: int, text: str) -> None:
        self._node, self._text = node, text

    def desc(self) -> str:
        return self._text

    def node(self) -> int:
        return self._node


class HostMemory:
    """IHostMemory: a buffer (bytes(...) and memoryview work on it)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __bytes__(self) -> bytes:
        return self._data

    @property
    def nbytes(self) -> int:
        return len(self._data)


def _version_major(version: str) -> int:
    return int(version.split(".", 1)[0])


class FakeTensorRT:
    """`tensorrt` as nimify sees it, for `version` 10.x (weak typing flags) or 11.x (strongly typed only)."""

    # Set from DTYPE_ALIASES in __init__.
    float32: Any
    float16: Any
    bfloat16: Any
    int8: Any
    int32: Any
    int64: Any
    bool: Any
    uint8: Any
    fp8: Any
    int4: Any
    fp4: Any

    def __init__(
        self,
        version: str = "10.16.1.11",
        *,
        gpu: str = "NVIDIA H100 80GB HBM3",
        usable_gpu: bool = True,
        fail_parse: bool = False,
        fail_build: bool = False,
        tensor_types: Mapping[str, str] | None = None,
        shape_tensors: Iterable[str] = (),
        data_dependent: Iterable[str] = (),
    ) -> None:
        self.__version__ = version
        major = _version_major(version)
        if major not in NETWORK_FLAGS:
            raise ValueError(f"the fake models TensorRT 10 and 11, not {version}")
        self.major, self.gpu, self.usable_gpu = major, gpu, usable_gpu
        self.fail_parse, self.fail_build = fail_parse, fail_build
        self.tensor_types = dict(tensor_types or {})  # tensor name → DataType name, overriding ONNX Runtime's
        self.shape_tensors, self.data_dependent = set(shape_tensors), set(data_dependent)
        self.calls: list[tuple[str, Any]] = []
        self.plugins_initialized = False
        self.timing_cache_hits = 0
        self.ILogger, self.Logger, self.IOutputAllocator = ILogger, Logger, IOutputAllocator
        self.DataType, self.TensorIOMode, self.MemoryPoolType = DataType, TensorIOMode, MemoryPoolType
        self.TensorLocation = TensorLocation
        self.NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", NETWORK_FLAGS[major])
        self.BuilderFlag = _enum("BuilderFlag", BUILDER_FLAGS[major])
        for alias, member in DTYPE_ALIASES.items():
            setattr(self, alias, DataType[member])
        fake = self

        def refuse_without_gpu(logger: ILogger) -> None:
            if not fake.usable_gpu:
                logger.log(Severity.ERROR, "CUDA initialization failure with error: 35")
                raise TypeError(NULLPTR)

        class TimingCache:
            def __init__(self, device: str, entries: dict[str, str]) -> None:
                self.device, self.entries = device, entries

            def serialize(self) -> HostMemory:
                header = {"tensorrt": fake.__version__, "device": self.device, "entries": self.entries}
                return HostMemory(b"FAKETC" + json.dumps(header).encode())

            def combine(self, other: TimingCache, ignore_mismatch: bool) -> bool:
                if other.device != self.device and not ignore_mismatch:
                    return False
                self.entries.update(other.entries)
                return True

        class Tensor:
            def __init__(self, name: str, shape: list[int]) -> None:
                self.name, self.shape = name, tuple(shape)
                self.is_shape_tensor = name in fake.shape_tensors

        class Network:
            def __init__(self, flags: int) -> None:
                self.flags = flags
                self.onnx: str | None = None
                self.inputs: dict[str, list[int]] = {}

            @property
            def num_inputs(self) -> int:
                return len(self.inputs)

            def get_input(self, index: int) -> Tensor:
                name = list(self.inputs)[index]
                return Tensor(name, self.inputs[name])

        class OptimizationProfile:
            def __init__(self) -> None:
                self.shapes: dict[str, list[list[int]]] = {}

            def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
                fake.calls.append(("set_shape", (input, tuple(min), tuple(opt), tuple(max))))
                low, best, high = (list(map(int, dims)) for dims in (min, opt, max))
                if len(low) != len(best) or len(best) != len(high):
                    raise RuntimeError("Shape provided for opt is inconsistent with other shapes.")
                if any(d < 0 for d in low) or any(a > b for a, b in zip(low, best, strict=True)):
                    raise RuntimeError("Shape provided for min is inconsistent with other shapes.")
                if any(a > b for a, b in zip(best, high, strict=True)):
                    raise RuntimeError("Shape provided for max is inconsistent with other shapes.")
                self.shapes[input] = [low, best, high]

        class BuilderConfig:
            def __init__(self) -> None:
                self.flags: set[str] = set()
                self.profiles: list[dict[str, list[list[int]]]] = []
                self.cache: TimingCache | None = None

            def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
                if not isinstance(pool, MemoryPoolType):
                    raise TypeError("set_memory_pool_limit(): incompatible function arguments")
                fake.calls.append(("set_memory_pool_limit", (pool.name, pool_size)))

            def set_flag(self, flag: Any) -> None:
                if not isinstance(flag, fake.BuilderFlag):
                    raise TypeError("set_flag(): incompatible function arguments")
                fake.calls.append(("set_flag", flag.name))
                self.flags.add(flag.name)

            def clear_flag(self, flag: Any) -> None:
                if not isinstance(flag, fake.BuilderFlag):
                    raise TypeError("clear_flag(): incompatible function arguments")
                fake.calls.append(("clear_flag", flag.name))
                self.flags.discard(flag.name)

            def add_optimization_profile(self, profile: OptimizationProfile) -> int:
                if not profile.shapes:
                    return -1  # an empty (invalid) profile
                self.profiles.append(profile.shapes)
                return len(self.profiles) - 1

            def create_timing_cache(self, serialized_timing_cache: Any) -> TimingCache | None:
                data = bytes(serialized_timing_cache)
                fake.calls.append(("create_timing_cache", data))
                if not data:
                    return TimingCache(fake.gpu, {})
                try:
                    assert data.startswith(b"FAKETC")
                    header = json.loads(data[len(b"FAKETC") :])
                    assert header["tensorrt"] == fake.__version__
                except (AssertionError, ValueError, KeyError):
                    builder_logger.log(
                        Severity.ERROR, "Timing cache: blob is from another TensorRT or corrupt"
                    )
                    return None
                return TimingCache(header["device"], dict(header["entries"]))

            def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
                if not isinstance(cache, TimingCache):
                    raise TypeError("set_timing_cache(): incompatible function arguments")
                fake.calls.append(("set_timing_cache", (cache.device, ignore_mismatch)))
                if cache.device != fake.gpu and not ignore_mismatch:
                    builder_logger.log(
                        Severity.ERROR,
                        f"Timing cache: device property mismatch ({cache.device} != {fake.gpu})",
                    )
                    return False
                self.cache = cache
                return True

            def get_timing_cache(self) -> TimingCache | None:
                return self.cache

        builder_logger: ILogger = ILogger()

        class Builder:
            def __init__(self, logger: ILogger) -> None:
                nonlocal builder_logger
                refuse_without_gpu(logger)
                fake.calls.append(("Builder", None))
                self.logger = builder_logger = logger

            def create_network(self, flags: int = 0) -> Network:
                fake.calls.append(("create_network", flags))
                return Network(flags)

            def create_builder_config(self) -> BuilderConfig:
                return BuilderConfig()

            def create_optimization_profile(self) -> OptimizationProfile:
                return OptimizationProfile()

            def build_serialized_network(self, network: Network, config: BuilderConfig) -> HostMemory | None:
                fake.calls.append(("build_serialized_network", None))
                if fake.fail_build:
                    self.logger.log(Severity.ERROR, "out of memory building tactic for node Gemm_0")
                    return None
                profile = config.profiles[0] if config.profiles else {}
                for name, dims in network.inputs.items():
                    if name in profile:
                        low, _, high = profile[name]
                        fits = len(low) == len(dims) and all(
                            d < 0 or lo == hi == d for d, lo, hi in zip(dims, low, high, strict=True)
                        )
                        if not fits:
                            self.logger.log(
                                Severity.ERROR, f"{name}: profile does not match the input's dims"
                            )
                            return None
                    elif any(d < 0 for d in dims) or name in fake.shape_tensors:
                        self.logger.log(
                            Severity.ERROR,
                            "Network has dynamic or shape inputs, but no optimization profile has been"
                            " defined.",
                        )
                        return None
                key = f"{network.onnx}:{sorted(config.flags)}"
                if config.cache is not None:
                    if key in config.cache.entries:
                        fake.timing_cache_hits += 1
                        self.logger.log(Severity.INFO, "timing cache hit")
                    config.cache.entries[key] = "tactic-0"
                self.logger.log(Severity.WARNING, "fake warning")
                record = {
                    "tensorrt": fake.__version__,
                    "device": fake.gpu,
                    "onnx": network.onnx,
                    "network_flags": network.flags,
                    "builder_flags": sorted(config.flags),
                    "profiles": config.profiles,
                }
                return HostMemory(b"FAKEPLAN" + json.dumps(record).encode())

        class OnnxParser:
            def __init__(self, network: Network, logger: ILogger) -> None:
                self.network = network
                self.errors: list[ParserError] = []

            @property
            def num_errors(self) -> int:
                return len(self.errors)

            def parse_from_file(self, model: str) -> bool:
                fake.calls.append(("parse_from_file", model))
                if fake.fail_parse:
                    self.errors.append(ParserError(3, "Assertion failed: unsupported attribute"))
                    return False
                graph = onnx.load(model, load_external_data=False).graph
                for index, node in enumerate(graph.node):
                    if node.domain == PLUGIN_DOMAIN and not fake.plugins_initialized:
                        self.errors.append(
                            ParserError(
                                index, f"No importer registered for op: {node.op_type} (plugin not found)"
                            )
                        )
                if self.errors:
                    return False
                initializers = {t.name for t in graph.initializer}
                for value in graph.input:
                    if value.name not in initializers:
                        shape = value.type.tensor_type.shape
                        self.network.inputs[value.name] = [
                            d.dim_value if d.HasField("dim_value") else -1 for d in shape.dim
                        ]
                self.network.onnx = model
                return True

            def get_error(self, index: int) -> ParserError:
                return self.errors[index]

        class Runtime:
            def __init__(self, logger: ILogger) -> None:
                refuse_without_gpu(logger)
                self.logger = logger

            def deserialize_cuda_engine(self, serialized_engine: Any) -> Engine | None:
                data = bytes(serialized_engine)
                record = json.loads(data[len(b"FAKEPLAN") :]) if data.startswith(b"FAKEPLAN") else None
                if record is None or record["tensorrt"] != fake.__version__ or record["device"] != fake.gpu:
                    self.logger.log(
                        Severity.ERROR,
                        "IRuntime::deserializeCudaEngine: the engine plan file is not compatible with this"
                        " version of TensorRT or this device",
                    )
                    return None
                return Engine(fake, record, self.logger)

        self.Builder, self.OnnxParser, self.Runtime = Builder, OnnxParser, Runtime

    def init_libnvinfer_plugins(self, logger: Any, namespace: str) -> bool:
        self.calls.append(("init_libnvinfer_plugins", namespace))
        self.plugins_initialized = True
        return True

    @staticmethod
    def nptype(trt_type: Any) -> type:
        """`tensorrt.nptype`: numpy's type for the seven TensorRT types numpy has, else TypeError."""
        for name, numpy_type in NPTYPE.items():
            if trt_type == DataType[name]:
                return numpy_type
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")


class Engine:
    def __init__(self, fake: FakeTensorRT, record: dict[str, Any], logger: ILogger) -> None:
        self.fake, self.record, self.logger = fake, record, logger
        self.session = onnxruntime.InferenceSession(record["onnx"], providers=["CPUExecutionProvider"])
        self.tensors = {t.name: (TensorIOMode.INPUT, t) for t in self.session.get_inputs()}
        self.tensors.update({t.name: (TensorIOMode.OUTPUT, t) for t in self.session.get_outputs()})
        self.names = list(self.tensors)
        self.num_io_tensors = len(self.names)
        self.num_optimization_profiles = max(1, len(record["profiles"]))

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> Any:
        return self.tensors[name][0]

    def get_tensor_dtype(self, name: str) -> Any:
        return DataType[self.fake.tensor_types.get(name) or _ORT_TYPES[self.tensors[name][1].type]]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else -1 for d in self.tensors[name][1].shape)

    def is_shape_inference_io(self, name: str) -> bool:
        return name in self.fake.shape_tensors

    def get_tensor_location(self, name: str) -> Any:
        return TensorLocation.HOST if self.is_shape_inference_io(name) else TensorLocation.DEVICE

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
        profiles = self.record["profiles"]
        if profile_index >= len(profiles) or name not in profiles[profile_index]:
            return []
        return [tuple(dims) for dims in profiles[profile_index][name]]

    def create_execution_context(self) -> ExecutionContext:
        return ExecutionContext(self)


class ExecutionContext:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.allocators: dict[str, Any] = {}

    def set_input_shape(self, name: str, shape: Any) -> bool:
        shape = tuple(int(d) for d in shape)
        declared = self.engine.get_tensor_shape(name)
        bounds = self.engine.get_tensor_profile_shape(name, 0)
        low, high = (bounds[0], bounds[2]) if bounds else (declared, declared)
        fits = len(shape) == len(declared) and all(
            lo <= d <= hi for d, lo, hi in zip(shape, low, high, strict=True)
        )
        if not fits:
            self.engine.logger.log(
                Severity.ERROR,
                f"IExecutionContext::setInputShape: Error Code 3: API Usage Error (Given shape {shape} for"
                f" {name} is outside the profile's [{low}, {high}])",
            )
            return False
        self.shapes[name] = shape
        return True

    def set_tensor_address(self, name: str, memory: int) -> bool:
        self.addresses[name] = int(memory)
        return True

    def set_output_allocator(self, name: str, output_allocator: Any) -> bool:
        self.allocators[name] = output_allocator
        return True

    def infer_shapes(self) -> list[str]:
        inputs = [n for n in self.engine.names if self.engine.get_tensor_mode(n) == TensorIOMode.INPUT]
        return [n for n in inputs if n not in self.shapes]

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        onnx_types = {t.name: t.type for t in self.engine.session.get_inputs()}
        feeds = {n: v.astype(_ORT_NUMPY[onnx_types[n]]) for n, v in feeds.items()}
        names = [t.name for t in self.engine.session.get_outputs()]
        outputs = dict(zip(names, self.engine.session.run(names, feeds), strict=True))
        if "FP16" in self.engine.record["builder_flags"]:
            outputs = {
                k: v.astype(np.float16).astype(v.dtype) if v.dtype == np.float32 else v
                for k, v in outputs.items()
            }
        return {k: v.astype(self._dtype(k)) for k, v in outputs.items()}

    def _dtype(self, name: str) -> Any:
        type_name = self.engine.get_tensor_dtype(name).name
        if type_name not in _STORAGE:
            raise AssertionError(f"the fake cannot store {type_name} tensors (nimify must refuse them first)")
        return _STORAGE[type_name]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if self.engine.get_tensor_mode(name) == TensorIOMode.INPUT:
            return self.shapes.get(name, self.engine.get_tensor_shape(name))
        zeros = {n: np.zeros(s, self._dtype(n)) for n, s in self.shapes.items()}
        shape = tuple(self._run(zeros)[name].shape)
        return tuple(-1 for _ in shape) if name in self.engine.fake.data_dependent else shape

    def _read_input(self, name: str) -> np.ndarray:
        shape, dtype = self.shapes[name], np.dtype(self._dtype(name))
        size = int(np.prod(shape)) * dtype.itemsize
        if self.engine.is_shape_inference_io(name):
            data = ctypes.string_at(self.addresses[name], size)  # shape tensors live in host memory
        else:
            data = bytes(_device().memory[self.addresses[name]][:size])
        return np.frombuffer(data, dtype).reshape(shape)

    def execute_async_v3(self, stream_handle: int) -> bool:
        if missing := self.infer_shapes():
            self.engine.logger.log(Severity.ERROR, f"input shapes not set: {missing}")
            return False
        outputs = self._run({name: self._read_input(name) for name in self.shapes})
        for name, value in outputs.items():
            data = np.ascontiguousarray(value).tobytes()
            if name in self.allocators:
                allocator = self.allocators[name]
                address = allocator.reallocate_output_async(name, 0, len(data), 256, stream_handle)
                allocator.notify_shape(name, tuple(value.shape))
            elif name in self.addresses:
                address = self.addresses[name]
            else:
                self.engine.logger.log(Severity.ERROR, f"output '{name}' has no address and no allocator")
                return False
            if self.engine.is_shape_inference_io(name):
                ctypes.memmove(address, data, len(data))  # shape tensors live in host memory
            else:
                _device().memory[address][: len(data)] = data
        return True


_ORT_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(bfloat16)": ml_dtypes.bfloat16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
}


class _CudaError(IntEnum):
    cudaSuccess = 0  # noqa: N815 - cuda-python's names
    cudaErrorInsufficientDriver = 35  # noqa: N815
    cudaErrorNoDevice = 100  # noqa: N815


class _MemcpyKind(IntEnum):
    cudaMemcpyHostToDevice = 1  # noqa: N815 - cuda-python's names
    cudaMemcpyDeviceToHost = 2  # noqa: N815


class _DeviceProperties:
    """The fields of cudaDeviceProp nimify reads (`name` is bytes, as cuda-bindings returns it)."""

    def __init__(self, name: bytes, major: int, minor: int) -> None:
        self.name, self.major, self.minor = name, major, minor


class FakeCudaRuntime:
    """cuda-python's `cuda.bindings.runtime` calls the runner makes, over host memory. `driver` is the CUDA
    version the node's driver supports (e.g. 12080): a runtime of a newer major fails every call with error
    35 (cudaErrorInsufficientDriver), as cuda-bindings 13 does on a CUDA 12 driver."""

    cudaMemcpyKind = _MemcpyKind  # noqa: N815
    cudaError_t = _CudaError  # noqa: N815

    def __init__(
        self,
        runtime: int = 12090,
        driver: int = 12090,
        *,
        name: str = "NVIDIA H100 80GB HBM3",
        capability: tuple[int, int] = (9, 0),
    ) -> None:
        global _CURRENT
        self.runtime, self.driver = runtime, driver
        self.name, self.capability = name, capability
        self.memory: dict[int, bytearray] = {}
        self.next_pointer = 0x1000
        self.freed = 0
        _CURRENT = self  # the fake engine reads and writes the most recently created fake device

    def _status(self) -> _CudaError:
        if self.runtime // 1000 > self.driver // 1000:
            return _CudaError.cudaErrorInsufficientDriver
        return _CudaError.cudaSuccess

    def cudaRuntimeGetVersion(self) -> tuple[_CudaError, int]:  # noqa: N802 - cuda-python's names
        return _CudaError.cudaSuccess, self.runtime

    def cudaDriverGetVersion(self) -> tuple[_CudaError, int]:  # noqa: N802
        return _CudaError.cudaSuccess, self.driver

    def cudaGetDeviceCount(self) -> tuple[_CudaError, int]:  # noqa: N802
        status = self._status()
        return status, 1 if status == _CudaError.cudaSuccess else 0

    def cudaGetDeviceProperties(self, device: int) -> tuple[_CudaError, Any]:  # noqa: N802
        status = self._status()
        if status != _CudaError.cudaSuccess or device != 0:
            return status if device == 0 else _CudaError.cudaErrorNoDevice, None
        return status, _DeviceProperties(self.name.encode(), *self.capability)

    def cudaStreamCreate(self) -> tuple[_CudaError, int]:  # noqa: N802
        return self._status(), 7

    def cudaStreamDestroy(self, stream: int) -> tuple[_CudaError]:  # noqa: N802
        return (self._status(),)

    def cudaStreamSynchronize(self, stream: int) -> tuple[_CudaError]:  # noqa: N802
        return (self._status(),)

    def cudaMalloc(self, size: int) -> tuple[_CudaError, int]:  # noqa: N802
        if (status := self._status()) != _CudaError.cudaSuccess:
            return status, 0
        pointer = self.next_pointer
        self.next_pointer += size + 256
        self.memory[pointer] = bytearray(size)
        return status, pointer

    def cudaFree(self, pointer: int) -> tuple[_CudaError]:  # noqa: N802
        del self.memory[pointer]
        self.freed += 1
        return (_CudaError.cudaSuccess,)

    def cudaMemcpy(self, dst: int, src: int, count: int, kind: _MemcpyKind) -> tuple[_CudaError]:  # noqa: N802
        if kind == _MemcpyKind.cudaMemcpyHostToDevice:
            self.memory[dst][:count] = ctypes.string_at(src, count)
        else:
            ctypes.memmove(dst, bytes(self.memory[src][:count]), count)
        return (_CudaError.cudaSuccess,)


_CURRENT: FakeCudaRuntime | None = None


def _device() -> FakeCudaRuntime:
    assert _CURRENT is not None, "create a FakeCudaRuntime first"
    return _CURRENT
