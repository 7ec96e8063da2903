"""Representative parity inputs from a NumPy .npz file (`engine.parity.inputs`), checked against the model.

An .npz is a zip of .npy arrays. It is read with pickles refused: an object array would run arbitrary code on
load, so strings must be saved as NumPy string arrays (`np.array(["a", "b"])`), which need no pickle. Arrays
named after the model's inputs form one sample; `N/INPUT` names form sample N (0, 1, ...). A sample may leave
inputs out: those are generated to fit the ones given.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from nimify.model.dtypes import numpy_dtype
from nimify.model.errors import ModelError
from nimify.model.signature import Signature, TensorInfo

Arrays = dict[str, npt.NDArray[Any]]
MAX_SAMPLES = 1024
_SAMPLE_KEY = re.compile(r"(?P<index>\d+)/(?P<name>.+)")


def load_parity_inputs(path: Path, signature: Signature, source: str) -> list[Arrays]:
    """The samples the file holds, each a mapping of input name to an array of the input's dtype."""
    if not zipfile.is_zipfile(path):
        raise ModelError("InvalidParityInputs", f"{source} is not a NumPy .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            raw = {key: archive[key] for key in archive.files}
    except ValueError as error:  # numpy refuses object arrays without pickle
        raise ModelError(
            "InvalidParityInputs",
            f"{source}: {error} (save strings as NumPy string arrays, not Python objects)",
        ) from None
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise ModelError("InvalidParityInputs", f"{source} is not a NumPy .npz file: {error}") from None
    if not raw:
        raise ModelError("InvalidParityInputs", f"{source} holds no arrays")
    inputs = {t.name: t for t in signature.inputs}
    samples: dict[int, Arrays] = {}
    for key, array in raw.items():
        if key in inputs:
            index, name = 0, key
        elif (match := _SAMPLE_KEY.fullmatch(key)) is not None and match["name"] in inputs:
            index, name = int(match["index"]), match["name"]
        else:
            raise ModelError(
                "InvalidParityInputs",
                f"{source}: array '{key}' names no input of the model (inputs: {', '.join(inputs)}; "
                "name arrays INPUT, or N/INPUT for sample N)",
            )
        if index >= MAX_SAMPLES:
            raise ModelError("InvalidParityInputs", f"{source}: sample {index} is beyond {MAX_SAMPLES - 1}")
        samples.setdefault(index, {})[name] = _converted(inputs[name], array, f"{source}: array '{key}'")
    if sorted(samples) != list(range(len(samples))):
        raise ModelError(
            "InvalidParityInputs",
            f"{source}: samples must be numbered 0 to N without gaps, found {sorted(samples)}",
        )
    return [samples[index] for index in range(len(samples))]


def _converted(tensor: TensorInfo, array: npt.NDArray[Any], label: str) -> npt.NDArray[Any]:
    if array.ndim != tensor.rank:
        raise ModelError(
            "InvalidParityInputs",
            f"{label} has shape {list(array.shape)}, input '{tensor.name}' has rank {tensor.rank} "
            f"{tensor.describe_dims()}",
        )
    for index, (dim, size) in enumerate(zip(tensor.dims, array.shape, strict=True)):
        if isinstance(dim, int) and dim != size:
            raise ModelError(
                "InvalidParityInputs",
                f"{label} has shape {list(array.shape)}, but dimension {index} of '{tensor.name}' is {dim}",
            )
    if tensor.dtype == "STRING":
        if array.dtype.kind not in "US":
            raise ModelError(
                "InvalidParityInputs", f"{label} is {array.dtype}, input '{tensor.name}' is STRING"
            )
        text: npt.NDArray[Any] = np.vectorize(
            lambda v: v.decode() if isinstance(v, bytes) else str(v), otypes=[object]
        )(array)
        return text
    target = numpy_dtype(tensor.dtype)
    if not np.can_cast(array.dtype, target, casting="same_kind"):
        raise ModelError(
            "InvalidParityInputs",
            f"{label} is {array.dtype}, which does not cast to {tensor.dtype} (input '{tensor.name}')",
        )
    return array.astype(target, copy=False)
