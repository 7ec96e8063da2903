"""Reference inputs for parity checks, and ONNX Runtime's outputs for them.

Inputs are seeded random data of each input's dtype, at shapes that walk the engine's profile (smallest,
tuned, largest) so a parity pass covers the range Triton will send. Dims that share a name get one size per
sample, because the model requires it (a token mask as long as the tokens).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from nimify.api import ShapeProfile
from nimify.engine.profiles import UNBATCHED_BATCH_LIMIT, batch_like_names
from nimify.model.dtypes import numpy_dtype
from nimify.model.errors import ModelError
from nimify.model.onnxruntime_session import open_session, runtime_message
from nimify.model.signature import Signature, TensorInfo

Arrays = dict[str, npt.NDArray[Any]]
DEFAULT_DYNAMIC_SIZE = 8  # a dynamic non-batch dim with no profile (onnxruntime backend): a small real size


def sample_shapes(
    signature: Signature, sample: int, max_batch_size: int, profiles: Sequence[ShapeProfile] = ()
) -> dict[str, tuple[int, ...]]:
    """Concrete shapes for reference sample number `sample`: profile min, opt, max in turn."""
    point = sample % 3  # 0 min, 1 opt, 2 max
    by_input = {p.input: p for p in profiles}
    batch_names = batch_like_names(signature)
    batch_max = max_batch_size or UNBATCHED_BATCH_LIMIT
    named: dict[str, int] = {}
    # Profiles fix named dims first, so every input using a name agrees with the profile that bounds it.
    for tensor in signature.inputs:
        if (profile := by_input.get(tensor.name)) is not None:
            bounds = (profile.min, profile.opt, profile.max)[point]
            for index, dim in enumerate(tensor.dims):
                if isinstance(dim, str):
                    named.setdefault(dim, bounds[index])
    shapes = {}
    for tensor in signature.inputs:
        profile = by_input.get(tensor.name)
        shape = []
        for index, dim in enumerate(tensor.dims):
            if isinstance(dim, int):
                shape.append(dim)
            elif profile is not None:
                shape.append((profile.min, profile.opt, profile.max)[point][index])
            elif isinstance(dim, str):
                default = (1, batch_max, batch_max)[point] if dim in batch_names else DEFAULT_DYNAMIC_SIZE
                shape.append(named.setdefault(dim, default))
            else:
                shape.append((1, batch_max, batch_max)[point] if index == 0 else DEFAULT_DYNAMIC_SIZE)
        shapes[tensor.name] = tuple(shape)
    return shapes


def random_tensor(tensor: TensorInfo, shape: tuple[int, ...], rng: np.random.Generator) -> npt.NDArray[Any]:
    dtype = tensor.dtype
    if dtype in ("FLOAT", "FLOAT16", "DOUBLE", "BFLOAT16"):
        return rng.standard_normal(shape).astype(numpy_dtype(dtype))
    if dtype == "BOOL":
        return rng.integers(0, 2, shape).astype(np.bool_)
    if dtype == "STRING":
        words = np.array(["alpha", "beta", "gamma", "delta"], dtype=object)
        picked: npt.NDArray[Any] = words[rng.integers(0, len(words), shape)]
        return picked
    # Small non-negative integers: valid indices for the embedding tables and gathers integer inputs feed.
    values: npt.NDArray[Any] = rng.integers(0, 8, shape).astype(numpy_dtype(dtype))
    return values


def reference_inputs(
    signature: Signature,
    samples: int,
    *,
    max_batch_size: int,
    profiles: Sequence[ShapeProfile] = (),
    seed: int = 0,
) -> list[Arrays]:
    rng = np.random.default_rng(seed)
    batches = []
    for sample in range(samples):
        shapes = sample_shapes(signature, sample, max_batch_size, profiles)
        batches.append({t.name: random_tensor(t, shapes[t.name], rng) for t in signature.inputs})
    return batches


class OnnxRuntimeModel:
    """An ONNX Runtime CPU session on a model file, run on numpy inputs."""

    def __init__(self, path: Path) -> None:
        self.session = open_session(path)
        self.output_names = [output.name for output in self.session.get_outputs()]

    def run(self, feeds: Mapping[str, npt.NDArray[Any]]) -> Arrays:
        try:
            values = self.session.run(self.output_names, dict(feeds))
        except Exception as error:
            shapes = ", ".join(f"{name} {list(array.shape)}" for name, array in feeds.items())
            raise ModelError(
                "OnnxRuntimeRunFailed", f"ONNX Runtime failed on inputs {shapes}: {runtime_message(error)}"
            ) from None
        return {name: np.asarray(value) for name, value in zip(self.output_names, values, strict=True)}
