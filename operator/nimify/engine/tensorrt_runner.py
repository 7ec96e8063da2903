"""Running a serialized TensorRT engine on numpy inputs (GPU only), for the parity check after a build.

Device memory goes through cuda-python's runtime bindings (`cuda.bindings.runtime`, cuda-bindings 12.x or
13.x pinned to the image's CUDA major by the nimify[tensorrt-cu12|cu13] extras); both `tensorrt` and the
bindings can be passed in, which is how the tests run this code against fakes.

Why not Polygraphy's TrtRunner: it returns engine outputs through its numpy type table, which has no
bfloat16 or float8 (those need torch there), and it brings a second CUDA wrapper (ctypes on libcudart). What
it does that parity needs is done here too: shape-tensor inputs in host memory, data-dependent output shapes
through an IOutputAllocator, every return value checked. Element types come from our own table rather than
`trt.nptype`, which raises TypeError for bf16/fp8/int4/fp4 in both TensorRT 10 and 11; ml_dtypes (an onnx
dependency) supplies numpy's bfloat16 and float8_e4m3fn.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np
import numpy.typing as npt

from nimify.engine.tensorrt_build import (
    TENSORRT_EXCEPTIONS,
    capturing_logger,
    init_plugins,
    logged_errors,
    tensorrt_calls,
)
from nimify.model.errors import ModelError

Arrays = dict[str, npt.NDArray[Any]]

# tensorrt.DataType member names → the numpy type of one element as the engine stores it.
ENGINE_DTYPES: dict[str, Any] = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "FP8": ml_dtypes.float8_e4m3fn,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "UINT8": np.uint8,
}
# Packed sub-byte types (two per byte, plus block scales for FP4/E8M0): the engine's I/O cannot be read as one
# numpy element per value, and Triton has no such tensor types either.
PACKED_DTYPES = frozenset({"INT4", "FP4", "E8M0"})
INSUFFICIENT_DRIVER = 35  # cudaErrorInsufficientDriver


def import_cudart() -> Any:
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ModelError(
        "CudaPythonUnavailable",
        "running a TensorRT engine for the parity check needs cuda-python's bindings: install nimify with the"
        " extra of the image's CUDA major, nimify[tensorrt-cu12] or nimify[tensorrt-cu13]",
    )


def _version(cudart: Any, call: str) -> str:
    try:
        error, value = getattr(cudart, call)()
        if int(error) == 0:
            # cudaDriverGetVersion says 0 when no NVIDIA driver is loaded at all.
            return f"{int(value) // 1000}.{int(value) % 1000 // 10}" if int(value) else "none (no driver)"
    except (AttributeError, TypeError, ValueError):
        pass
    return "unknown"


def checked(cudart: Any, result: Any, what: str) -> Any:
    """cuda-python returns (error, value...) tuples; turn a failure into a ModelError naming the call."""
    error, *values = result if isinstance(result, tuple) else (result,)
    code = int(error)
    if code == INSUFFICIENT_DRIVER:
        raise ModelError(
            "CudaDriverTooOld",
            f"{what} failed with CUDA error 35 (cudaErrorInsufficientDriver): the CUDA runtime of"
            f" cuda-python is {_version(cudart, 'cudaRuntimeGetVersion')}, the node's driver supports CUDA"
            f" {_version(cudart, 'cudaDriverGetVersion')}; install the nimify extra of the image's CUDA major"
            " (nimify[tensorrt-cu12] or nimify[tensorrt-cu13]) or run on a node with a newer driver",
        )
    if code != 0:
        raise ModelError("CudaError", f"{what} failed with CUDA error {code} ({error})")
    return values[0] if len(values) == 1 else tuple(values)


def engine_dtype(trt_type: Any, tensor: str) -> np.dtype[Any]:
    name = getattr(trt_type, "name", str(trt_type).rsplit(".", 1)[-1])
    if name in ENGINE_DTYPES:
        return np.dtype(ENGINE_DTYPES[name])
    packed = " (packed, two values per byte)" if name in PACKED_DTYPES else ""
    raise ModelError(
        "UnsupportedTensorType",
        f"engine tensor '{tensor}' has TensorRT type {name}{packed}, which the parity check cannot read or"
        " write (and Triton cannot carry): keep the model's inputs and outputs in"
        f" {', '.join(sorted(ENGINE_DTYPES))}",
    )


def _allocator(trt: Any, malloc: Any) -> Any:
    """Device buffers for outputs whose shape TensorRT knows only while running (data-dependent shapes)."""

    class OutputAllocator(trt.IOutputAllocator):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.IOutputAllocator.__init__(self)
            self.buffers: dict[str, tuple[int, int]] = {}  # name → (pointer, size)
            self.shapes: dict[str, tuple[int, ...]] = {}

        def reallocate_output(self, tensor_name: str, memory: int, size: int, alignment: int) -> int:
            pointer, held = self.buffers.get(tensor_name, (0, -1))
            if size > held:
                pointer, held = int(malloc(size)), size
                self.buffers[tensor_name] = (pointer, held)
            return pointer

        def reallocate_output_async(
            self, tensor_name: str, memory: int, size: int, alignment: int, stream: int
        ) -> int:
            return self.reallocate_output(tensor_name, memory, size, alignment)

        def notify_shape(self, tensor_name: str, shape: Any) -> None:
            self.shapes[tensor_name] = tuple(int(d) for d in shape)

    return OutputAllocator()


class TensorRTModel:
    def __init__(self, plan: bytes, trt: Any, cudart: Any) -> None:
        self.trt, self.cudart = trt, cudart
        # The first CUDA call tells a driver too old for cuda-python's runtime apart from everything else.
        checked(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
        self.logger = capturing_logger(trt)
        with tensorrt_calls("loading the engine", self.logger):
            init_plugins(trt, self.logger)
            self.runtime = trt.Runtime(self.logger)
            self.engine = self.runtime.deserialize_cuda_engine(plan)
            if self.engine is None:
                raise ModelError(
                    "PlanUnreadable",
                    f"TensorRT could not deserialize the engine it just built: {logged_errors(self.logger)}",
                )
            self.context = self.engine.create_execution_context()
            if self.context is None:
                raise ModelError(
                    "EngineRunFailed",
                    f"TensorRT could not create an execution context: {logged_errors(self.logger)}",
                )
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            self.outputs = [n for n in names if n not in self.inputs]
            self.dtypes = {n: engine_dtype(self.engine.get_tensor_dtype(n), n) for n in names}
            self.host_tensors = {n for n in names if self.engine.is_shape_inference_io(n)}
        self.stream = checked(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")

    def _malloc(self, size: int, allocations: list[Any]) -> Any:
        pointer = checked(self.cudart, self.cudart.cudaMalloc(max(size, 1)), "cudaMalloc")
        allocations.append(pointer)
        return pointer

    def _profile_range(self, name: str) -> str:
        try:
            bounds = list(self.engine.get_tensor_profile_shape(name, 0))
        except TENSORRT_EXCEPTIONS:  # an input outside every profile (fixed shape)
            bounds = []
        if len(bounds) != 3:
            return f"fixed shape {[int(d) for d in self.engine.get_tensor_shape(name)]}"
        return f"profile [{list(bounds[0])} .. {list(bounds[2])}]"

    def run(self, feeds: Mapping[str, npt.NDArray[Any]]) -> Arrays:
        with tensorrt_calls("running the engine", self.logger):
            return self._run(feeds)

    def _run(self, feeds: Mapping[str, npt.NDArray[Any]]) -> Arrays:
        cudart, context = self.cudart, self.context
        to_device = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        to_host = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        allocations: list[Any] = []
        host_inputs: list[npt.NDArray[Any]] = []  # kept alive until the engine ran
        try:
            for name in self.inputs:
                # np.array, not ascontiguousarray: that one turns a scalar (rank 0) into shape [1].
                array = np.array(feeds[name], dtype=self.dtypes[name], order="C")
                if not context.set_input_shape(name, tuple(array.shape)):
                    raise ModelError(
                        "ShapeOutsideProfile",
                        f"input '{name}' of shape {list(array.shape)} is outside the engine's"
                        f" {self._profile_range(name)}: {logged_errors(self.logger)}",
                    )
                if name in self.host_tensors:
                    # Shape tensors are read by TensorRT on the host, before the launch.
                    host_inputs.append(array)
                    address = int(array.ctypes.data)
                else:
                    address = int(self._malloc(array.nbytes, allocations))
                    copied = cudart.cudaMemcpy(address, array.ctypes.data, array.nbytes, to_device)
                    checked(cudart, copied, "cudaMemcpy")
                if not context.set_tensor_address(name, address):
                    raise ModelError("EngineRunFailed", f"TensorRT refused the buffer of input '{name}'")
            if unresolved := list(context.infer_shapes()):
                raise ModelError(
                    "EngineRunFailed",
                    f"TensorRT cannot infer output shapes; inputs without a shape: {', '.join(unresolved)}",
                )
            outputs = self._bind_outputs(allocations)
            if not context.execute_async_v3(int(self.stream)):
                raise ModelError(
                    "EngineRunFailed", f"TensorRT's execute_async_v3 failed: {logged_errors(self.logger)}"
                )
            checked(cudart, cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
            return self._copy_outputs(outputs, to_host)
        finally:
            for pointer in allocations:
                cudart.cudaFree(pointer)

    def _bind_outputs(self, allocations: list[Any]) -> dict[str, Any]:
        """Each output's (device pointer, shape), its host array (shape tensors), or its output allocator
        where the shape is data-dependent."""
        bound: dict[str, Any] = {}
        allocator = None
        for name in self.outputs:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            if name in self.host_tensors:  # a shape tensor output: TensorRT writes it on the host
                host = np.empty(shape, self.dtypes[name])
                if not self.context.set_tensor_address(name, int(host.ctypes.data)):
                    raise ModelError("EngineRunFailed", f"TensorRT refused the buffer of output '{name}'")
                bound[name] = host
                continue
            if any(d < 0 for d in shape):
                if allocator is None:
                    allocator = _allocator(self.trt, lambda size: self._malloc(size, allocations))
                if not self.context.set_output_allocator(name, allocator):
                    raise ModelError("EngineRunFailed", f"TensorRT refused an output allocator for '{name}'")
                bound[name] = allocator
                continue
            nbytes = int(np.prod(shape, dtype=np.int64)) * self.dtypes[name].itemsize
            pointer = int(self._malloc(nbytes, allocations))
            if not self.context.set_tensor_address(name, pointer):
                raise ModelError("EngineRunFailed", f"TensorRT refused the buffer of output '{name}'")
            bound[name] = (pointer, shape)
        return bound

    def _copy_outputs(self, bound: dict[str, Any], to_host: Any) -> Arrays:
        results: Arrays = {}
        for name, where in bound.items():
            if isinstance(where, np.ndarray):
                results[name] = where
                continue
            if isinstance(where, tuple):
                pointer, shape = where
            else:
                if name not in where.shapes or name not in where.buffers:
                    raise ModelError(
                        "EngineRunFailed", f"TensorRT never sized data-dependent output '{name}'"
                    )
                pointer, shape = where.buffers[name][0], where.shapes[name]
            host = np.empty(shape, self.dtypes[name])
            if host.nbytes:
                copied = self.cudart.cudaMemcpy(host.ctypes.data, pointer, host.nbytes, to_host)
                checked(self.cudart, copied, "cudaMemcpy")
            results[name] = host
        return results

    def close(self) -> None:
        self.cudart.cudaStreamDestroy(self.stream)
