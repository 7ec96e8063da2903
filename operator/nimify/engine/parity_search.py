"""Parity inputs the model accepts, found by asking ONNX Runtime instead of asking the user.

Generated inputs give every dynamic dimension that no profile, shape or file fixes a small size (8). Many real
models refuse it: a convolutional detector whose strides need a multiple of 32, an STFT front-end whose
reflect padding needs a window longer than 64 samples. The runtime is the authority on what a model accepts,
so when it refuses the generated inputs, sizes are searched: every such dimension at 8, 16, ... 4096 in turn
(dims that share a name share the size, as the model requires), then the same with the unnamed ones held at
1 (an unnamed dim that nothing ties to the batch is often a state's batch, as in a recurrent model whose
state is an input); and where the model has generated integer inputs, all of that again with them all 1,
then all 0 (random ids past a small vocabulary, or a shape tensor of random extents, are refused where ones
and zeros are not). The first choice for which every sample runs is used and recorded (`parity.inputs:
searched`, the shapes, and `= N` after an integer input filled with N). The search stops at
`SEARCH_SECONDS` and never makes an array beyond `MAX_ELEMENTS`.

What a size search cannot find, it says: an integer or scalar input filled with random values (a sample
rate, a mode, a token id past the vocabulary) needs a value from the user.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy.typing as npt

from nimify.api import GeneratedInput, ShapeProfile
from nimify.engine.reference import DEFAULT_DYNAMIC_SIZE, INTEGER_DTYPES, Reference, reference_inputs
from nimify.model.errors import ModelError
from nimify.model.signature import Signature

Arrays = dict[str, npt.NDArray[Any]]
SEARCH_SIZES = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
SEARCH_SECONDS = 60.0
MAX_ELEMENTS = 1 << 24  # per array: 64 MiB of float32
#: What a ParityInputsRequired says the user can do.
GIVE_PARITY_INPUTS = (
    "give parity inputs: engine.parity.inputs (an .npz of representative inputs) or engine.parity.generated "
    "(a shape or a fixed value per input); locally `nimify convert --parity-inputs FILE.npz`, "
    "`--parity-shape INPUT=1x16000` or `--parity-value INPUT=16000`"
)


@dataclass(frozen=True)
class ReferenceSet:
    """The inputs of the parity check and ONNX Runtime's outputs for them."""

    inputs: list[Arrays]
    outputs: list[Arrays]
    origin: str  # ParityStatus.inputs: file, generated or searched
    shapes: list[str] = field(default_factory=list)  # the searched samples' shapes, "input: [1, 256]"


def _searchable(signature: Signature, fixed: set[str]) -> tuple[bool, bool]:
    """(whether any generated input has a dynamic dim past the first, whether one of those is unnamed)."""
    dims = [
        dim
        for tensor in signature.inputs
        if tensor.name not in fixed
        for index, dim in enumerate(tensor.dims)
        if index > 0 and not isinstance(dim, int)
    ]
    return bool(dims), any(dim is None for dim in dims)


def _fits(inputs: list[Arrays]) -> bool:
    return all(math.prod(array.shape) <= MAX_ELEMENTS for feeds in inputs for array in feeds.values())


def _shapes(inputs: list[Arrays], filled: set[str], fill: int | None) -> list[str]:
    seen: dict[str, None] = {}
    for feeds in inputs:
        described = (
            f"{name}: {list(array.shape)}" + (f" = {fill}" if fill is not None and name in filled else "")
            for name, array in feeds.items()
        )
        seen[", ".join(described)] = None
    return list(seen)[:8]  # ParityStatus.shapes holds 8


def _as_declared(signature: Signature, outputs: Arrays) -> bool:
    """Whether every output has the rank and the fixed dims the model declares for it."""
    for tensor in signature.outputs:
        array = outputs.get(tensor.name)
        if array is None or array.ndim != tensor.rank:
            return False
        if any(
            isinstance(dim, int) and dim != size for dim, size in zip(tensor.dims, array.shape, strict=True)
        ):
            return False
    return True


def _mode_inputs(signature: Signature, fixed: set[str]) -> list[str]:
    """Generated inputs random values may not suit: integers (a rate, a mode, an id) and scalars."""
    return [
        f"'{t.name}' ({'a scalar ' if t.rank == 0 else ''}{t.dtype})"
        for t in signature.inputs
        if t.name not in fixed and (t.dtype in INTEGER_DTYPES or t.rank == 0)
    ]


def reference_set(
    model: Reference,
    signature: Signature,
    samples: int,
    *,
    max_batch_size: int,
    profiles: Sequence[ShapeProfile] = (),
    generated: Sequence[GeneratedInput] = (),
    given: Sequence[Mapping[str, npt.NDArray[Any]]] = (),
    seed: int = 0,
    advice: str = "",
    clock: Callable[[], float] = time.monotonic,
) -> ReferenceSet:
    """The parity check's inputs (the file's, else generated, else searched) and the reference outputs."""

    def build(
        dynamic_size: int = DEFAULT_DYNAMIC_SIZE, unnamed_size: int | None = None, fill: int | None = None
    ) -> list[Arrays]:
        return reference_inputs(
            signature,
            samples,
            max_batch_size=max_batch_size,
            profiles=profiles,
            generated=generated,
            given=given,
            seed=seed,
            dynamic_size=dynamic_size,
            unnamed_size=unnamed_size,
            integer_fill=fill,
        )

    # What the user chose (a file's arrays, fixed values or shapes, profiles) is not generated or searched.
    chosen = {entry.input for entry in generated if entry.value is not None}
    shaped = chosen | {entry.input for entry in generated if entry.shape is not None}
    shaped |= {profile.input for profile in profiles}
    inputs = build()
    try:
        return ReferenceSet(inputs, [model.run(feeds) for feeds in inputs], "file" if given else "generated")
    except ModelError as error:
        generated_names = sorted(set(inputs[0]) - chosen - (set(given[0]) if given else set()))
        if error.reason != "OnnxRuntimeRunFailed" or not generated_names:
            raise
        first_error = error
    given_names = set(given[0]) if given else set()
    searchable, unnamed = _searchable(signature, shaped | given_names)
    integers = {
        t.name for t in signature.inputs if t.dtype in INTEGER_DTYPES and t.name not in chosen | given_names
    }
    tried = 0
    if (searchable or integers) and not given:
        deadline = clock() + SEARCH_SECONDS
        for fill in (None, 1, 0) if integers else (None,):
            for unnamed_size in (None, 1) if unnamed else (None,):
                for size in SEARCH_SIZES if searchable else (DEFAULT_DYNAMIC_SIZE,):
                    if (size, unnamed_size, fill) == (DEFAULT_DYNAMIC_SIZE, None, None) or clock() > deadline:
                        continue
                    candidate = build(size, unnamed_size, fill)
                    if not _fits(candidate):
                        break
                    tried += 1
                    try:
                        outputs = [model.run(feeds) for feeds in candidate]
                    except ModelError:
                        continue
                    if not all(_as_declared(signature, answer) for answer in outputs):
                        continue  # runs, but not on data like the model's: its answers break its own shapes
                    return ReferenceSet(candidate, outputs, "searched", _shapes(candidate, integers, fill))
    searched = (
        f"; sizes {SEARCH_SIZES[0]} to {SEARCH_SIZES[-1]} of the dynamic dims and integer inputs of ones and"
        f" zeros ({tried} tries) ran none"
        if tried
        else ""
    )
    modes = _mode_inputs(signature, shaped)
    needs = (
        f"; random values may not suit {', '.join(modes)}: a rate, a mode or an id needs a value"
        if modes
        else ""
    )
    raise ModelError(
        "ParityInputsRequired",
        f"could not generate valid inputs for the parity check ({', '.join(generated_names)} generated): "
        f"{first_error.message}{searched}{needs}; {advice}",
    ) from None
