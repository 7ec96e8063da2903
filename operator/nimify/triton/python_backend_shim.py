"""An in-process stand-in for `triton_python_backend_utils`, to run a generated model.py without Triton.

The conversion pipeline uses it to check the python backend's exported repository: the real `execute` path of
the real model.py runs on the reference inputs, so parity covers the generated code and not just ONNX Runtime.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt


class TritonError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Tensor:
    def __init__(self, name: str, array: npt.NDArray[Any]) -> None:
        self._name = name
        self._array = np.asarray(array)

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> npt.NDArray[Any]:
        return self._array


class InferenceRequest:
    def __init__(self, inputs: list[Tensor]) -> None:
        self.inputs = {tensor.name(): tensor for tensor in inputs}


class InferenceResponse:
    def __init__(self, output_tensors: list[Tensor] | None = None, error: TritonError | None = None) -> None:
        self.output_tensors = output_tensors or []
        self.error = error

    def outputs(self) -> dict[str, npt.NDArray[Any]]:
        if self.error is not None:
            raise RuntimeError(self.error.message)
        return {tensor.name(): tensor.as_numpy() for tensor in self.output_tensors}


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    return request.inputs.get(name)


def _module() -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = Tensor  # type: ignore[attr-defined]
    module.InferenceRequest = InferenceRequest  # type: ignore[attr-defined]
    module.InferenceResponse = InferenceResponse  # type: ignore[attr-defined]
    module.TritonError = TritonError  # type: ignore[attr-defined]
    module.get_input_tensor_by_name = get_input_tensor_by_name  # type: ignore[attr-defined]
    return module


class LoadedPythonModel:
    """A repository's model.py, initialized as Triton would and callable with numpy inputs.

    `source` loads another model.py for the model instead (a Python-based backend's, e.g. `onnxruntime`),
    and `config` is the model's config as Triton hands it over (`args["model_config"]`, JSON).
    """

    def __init__(
        self,
        repository: Path,
        name: str,
        version: str = "1",
        *,
        source: Path | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        source = source or repository / name / version / "model.py"
        previous = sys.modules.get("triton_python_backend_utils")
        sys.modules["triton_python_backend_utils"] = _module()
        try:
            spec = importlib.util.spec_from_file_location(f"nimify_generated_{name}", source)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {source}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        finally:
            if previous is None:
                sys.modules.pop("triton_python_backend_utils", None)
            else:
                sys.modules["triton_python_backend_utils"] = previous
        self.model = module.TritonPythonModel()
        args = {
            "model_repository": str(repository / name),
            "model_version": version,
            "model_instance_kind": "CPU",
        }
        if config is not None:
            args["model_config"] = json.dumps(config)
        self.model.initialize(args)

    def infer(self, *requests: dict[str, npt.NDArray[Any]]) -> list[dict[str, npt.NDArray[Any]]]:
        """One `execute` call with several requests (as Triton's dynamic batcher delivers them)."""
        built = [
            InferenceRequest([Tensor(name, array) for name, array in feeds.items()]) for feeds in requests
        ]
        responses: list[InferenceResponse] = self.model.execute(built)
        return [response.outputs() for response in responses]

    def close(self) -> None:
        self.model.finalize()
