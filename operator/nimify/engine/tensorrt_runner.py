"""Running a serialized TensorRT engine on numpy inputs (GPU only), for the parity check after a build.

Device memory goes through cuda-python's runtime bindings; both `tensorrt` and the bindings can be passed in,
which is how the tests run this code against fakes.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from nimify.model.errors import ModelError

Arrays = dict[str, npt.NDArray[Any]]


def import_cudart() -> Any:
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ModelError(
        "CudaPythonUnavailable",
        "running a TensorRT engine for the parity check needs cuda-python: pip install cuda-python",
    )


def _checked(result: Any, what: str) -> Any:
    """cuda-python returns (error, value...) tuples; turn a failure into a ModelError naming the call."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise ModelError("CudaError", f"{what} failed with CUDA error {int(error)}")
    return values[0] if len(values) == 1 else tuple(values)


class TensorRTModel:
    def __init__(self, plan: bytes, trt: Any, cudart: Any) -> None:
        self.trt, self.cudart = trt, cudart
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise ModelError("PlanUnreadable", "TensorRT could not deserialize the engine it just built")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.stream = _checked(cudart.cudaStreamCreate(), "cudaStreamCreate")

    def _dtype(self, name: str) -> np.dtype[Any]:
        return np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))

    def _malloc(self, size: int, allocations: list[Any]) -> Any:
        pointer = _checked(self.cudart.cudaMalloc(max(size, 1)), "cudaMalloc")
        allocations.append(pointer)
        return pointer

    def run(self, feeds: Mapping[str, npt.NDArray[Any]]) -> Arrays:
        cudart, context = self.cudart, self.context
        to_device = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        to_host = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        allocations: list[Any] = []
        try:
            for name in self.inputs:
                array = np.ascontiguousarray(np.asarray(feeds[name]).astype(self._dtype(name)))
                context.set_input_shape(name, tuple(array.shape))
                pointer = self._malloc(array.nbytes, allocations)
                _checked(cudart.cudaMemcpy(pointer, array.ctypes.data, array.nbytes, to_device), "cudaMemcpy")
                context.set_tensor_address(name, int(pointer))
            results: Arrays = {}
            for name in self.outputs:
                shape = tuple(int(d) for d in context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise ModelError(
                        "DataDependentShape",
                        f"output '{name}' has a data-dependent shape the parity check cannot size",
                    )
                host = np.empty(shape, self._dtype(name))
                pointer = self._malloc(host.nbytes, allocations)
                context.set_tensor_address(name, int(pointer))
                results[name] = host
            if not context.execute_async_v3(int(self.stream)):
                raise ModelError("EngineRunFailed", "TensorRT's execute_async_v3 reported failure")
            _checked(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
            for name, host in results.items():
                pointer = allocations[len(self.inputs) + self.outputs.index(name)]
                _checked(cudart.cudaMemcpy(host.ctypes.data, pointer, host.nbytes, to_host), "cudaMemcpy")
            return results
        finally:
            for pointer in allocations:
                cudart.cudaFree(pointer)

    def close(self) -> None:
        self.cudart.cudaStreamDestroy(self.stream)
