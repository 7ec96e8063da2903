"""Reference inputs for parity checks, and ONNX Runtime's outputs for them.

Inputs are what the user gave (an .npz, `engine.parity.inputs`), else seeded random data of each input's
dtype, at shapes that walk the profile (smallest, tuned, largest) so a parity pass covers the range Triton
will send. Dims that share a name get one size per sample, because the model requires it (a token mask as long
as the tokens, audio and its length): a size fixed anywhere (a given array, a generated shape, a profile) is
the size of that name everywhere. `engine.parity.generated` fixes shapes and values where random data is
not valid for the model (a sample rate, a window longer than 8 samples).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from nimify.api import GeneratedInput, ShapeProfile
from nimify.engine.profiles import UNBATCHED_BATCH_LIMIT, batch_like_names
from nimify.model.dtypes import numpy_dtype
from nimify.model.errors import ModelError
from nimify.model.onnxruntime_session import open_session, runtime_message
from nimify.model.signature import Signature, TensorInfo

Arrays = dict[str, npt.NDArray[Any]]
DEFAULT_DYNAMIC_SIZE = 8  # a dynamic non-batch dim with no profile and no given size: a small real size


def _batch_sizes(max_batch_size: int) -> tuple[int, int, int]:
    """Batch sizes at min, opt and max: 1, half and all of the limit, so two requests can share a batch."""
    limit = max_batch_size or UNBATCHED_BATCH_LIMIT
    return 1, max(1, math.ceil(limit / 2)), limit


def _check_generated(signature: Signature, generated: Sequence[GeneratedInput]) -> dict[str, GeneratedInput]:
    names = {t.name for t in signature.inputs}
    by_input = {g.input: g for g in generated}
    if unknown := sorted(set(by_input) - names):
        raise ModelError(
            "InvalidParityInputs",
            f"engine.parity.generated names inputs the model lacks: {', '.join(unknown)}",
        )
    for tensor in signature.inputs:
        entry = by_input.get(tensor.name)
        if entry is None or entry.shape is None:
            continue
        label = f"engine.parity.generated[{tensor.name}].shape {entry.shape}"
        _check_shape(tensor, tuple(entry.shape), label)
        if entry.value is not None and tensor.dtype == "STRING":
            raise ModelError(
                "InvalidParityInputs", f"{label}: a value cannot fill STRING input '{tensor.name}'"
            )
    return by_input


def _check_shape(tensor: TensorInfo, shape: tuple[int, ...], label: str) -> None:
    if len(shape) != tensor.rank:
        raise ModelError(
            "InvalidParityInputs",
            f"{label} has rank {len(shape)}, input '{tensor.name}' has rank {tensor.rank}",
        )
    for index, (dim, size) in enumerate(zip(tensor.dims, shape, strict=True)):
        if isinstance(dim, int) and dim != size:
            raise ModelError(
                "InvalidParityInputs",
                f"{label}: dimension {index} of '{tensor.name}' is fixed at {dim} in the model",
            )


def sample_shapes(
    signature: Signature,
    sample: int,
    max_batch_size: int,
    profiles: Sequence[ShapeProfile] = (),
    generated: Sequence[GeneratedInput] = (),
    given: Mapping[str, npt.NDArray[Any]] | None = None,
) -> dict[str, tuple[int, ...]]:
    """Concrete shapes for reference sample number `sample`: profile min, opt, max in turn.

    Sizes are settled in order of authority: arrays the user gave, generated shapes, profiles, then the
    defaults (batch-like dims 1, half, all of max_batch_size; others 8).
    """
    point = sample % 3  # 0 min, 1 opt, 2 max
    given = given or {}
    by_profile = {p.input: p for p in profiles}
    by_generated = {g.input: g for g in generated}
    batch_names = batch_like_names(signature)
    batches = _batch_sizes(max_batch_size)

    fixed: dict[str, tuple[int, ...]] = {name: tuple(array.shape) for name, array in given.items()}
    for tensor in signature.inputs:
        entry = by_generated.get(tensor.name)
        if tensor.name not in fixed and entry is not None and entry.shape is not None:
            fixed[tensor.name] = tuple(entry.shape)
    for tensor in signature.inputs:
        profile = by_profile.get(tensor.name)
        if tensor.name not in fixed and profile is not None:
            fixed[tensor.name] = tuple((profile.min, profile.opt, profile.max)[point])

    named: dict[str, int] = {}
    for tensor in signature.inputs:
        if (pinned := fixed.get(tensor.name)) is not None:
            for dim, size in zip(tensor.dims, pinned, strict=False):
                if isinstance(dim, str):
                    named.setdefault(dim, size)
    shapes = {}
    for tensor in signature.inputs:
        if (known := fixed.get(tensor.name)) is not None:
            shapes[tensor.name] = known
            continue
        shape = []
        for index, dim in enumerate(tensor.dims):
            if isinstance(dim, int):
                shape.append(dim)
            elif isinstance(dim, str):
                default = batches[point] if dim in batch_names else DEFAULT_DYNAMIC_SIZE
                shape.append(named.setdefault(dim, default))
            else:
                shape.append(batches[point] if index == 0 else DEFAULT_DYNAMIC_SIZE)
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
    generated: Sequence[GeneratedInput] = (),
    given: Sequence[Mapping[str, npt.NDArray[Any]]] = (),
    seed: int = 0,
) -> list[Arrays]:
    """One feed per sample: the given samples (their missing inputs generated to fit), else `samples` made up
    ones."""
    by_generated = _check_generated(signature, generated)
    rng = np.random.default_rng(seed)
    batches = []
    for sample in range(len(given) if given else samples):
        provided = given[sample] if given else {}
        shapes = sample_shapes(signature, sample, max_batch_size, profiles, generated, provided)
        feeds: Arrays = {}
        for tensor in signature.inputs:
            if tensor.name in provided:
                feeds[tensor.name] = np.asarray(provided[tensor.name])
            elif (entry := by_generated.get(tensor.name)) is not None and entry.value is not None:
                feeds[tensor.name] = np.full(shapes[tensor.name], entry.value).astype(
                    numpy_dtype(tensor.dtype)
                )
            else:
                feeds[tensor.name] = random_tensor(tensor, shapes[tensor.name], rng)
        batches.append(feeds)
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
