"""The onnxruntime backend's check: the model run as its config.pbtxt makes Triton run it.

Comparing ONNX Runtime with itself on the same file proves nothing; what can go wrong in serving an ONNX model
as it is lies in the config: dims, data types, the scalar and `[batch]` bridges, and batching itself. So the
conversion reads back the config.pbtxt it generated and does what Triton does with it. Triton's ONNX Runtime
backend is not in the conversion image, so this follows its documented behaviour:

- at load, every config input and output must be a tensor of the model with the same data type and rank
  (plus the batch dimension when max_batch_size > 0, which the model must leave dynamic), where `reshape` is
  the shape the model sees; a dim the model fixes must be that size in the config;
- at inference, a request must be shaped as the config declares (batch first, at most max_batch_size); the
  dynamic batcher concatenates requests whose other dims agree along dimension 0, the model runs once, and
  the outputs are split back and must fit the config's output dims.

The reference is every request run alone on the file as given. A model that mixes the batch (a norm over
it, a state carried across it) differs here, as it would in production.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from nimify.model.dtypes import numpy_dtype
from nimify.model.errors import ModelError
from nimify.model.onnxruntime_session import runtime_message
from nimify.triton.config_reader import ConfigTensor, ServedConfig

Arrays = dict[str, npt.NDArray[Any]]
MISMATCH = "ServingConfigMismatch"


def _model_dims(shape: Sequence[object]) -> tuple[int | None, ...]:
    """ONNX Runtime's view of a tensor's dims: an int when fixed, None when dynamic (named or not)."""
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in shape)


def _fits(shape: Sequence[int], pattern: Sequence[int]) -> bool:
    return len(shape) == len(pattern) and all(p < 0 or p == s for s, p in zip(shape, pattern, strict=True))


def _check_tensor(tensor: ConfigTensor, arg: Any, kind: str, batched: bool) -> None:
    label = f"config.pbtxt {kind} '{tensor.name}'"
    if arg.type != f"tensor({tensor.dtype.lower()})":
        raise ModelError(MISMATCH, f"{label} is {tensor.dtype}, the model's is {arg.type}")
    model = _model_dims(arg.shape)
    seen = tuple(-1 if d is None else d for d in model)
    if not batched and not model and tensor.reshape is None and tensor.dims == (1,):
        return  # a scalar travels as [1]; the backend feeds it to the model as a rank-0 tensor
    expected = ((-1,) if batched else ()) + tensor.backend_dims
    if len(expected) != len(model):
        raise ModelError(
            MISMATCH, f"{label} has rank {len(expected)} as the backend sees it, the model's is {list(seen)}"
        )
    if batched and model[0] is not None:
        raise ModelError(
            MISMATCH,
            f"{label}: max_batch_size is set but the model fixes dimension 0 at {model[0]}, so Triton "
            "cannot batch it",
        )
    for index, (want, have) in enumerate(zip(expected, model, strict=True)):
        if have is not None and want != have:
            raise ModelError(
                MISMATCH,
                f"{label}: dimension {index} is {want} in the config, the model fixes it at {have} "
                f"(model dims {list(seen)})",
            )


def check_config_against_model(config: ServedConfig, session: Any) -> None:
    """What Triton's ONNX Runtime backend checks when it loads the model; raises ServingConfigMismatch."""
    model_inputs = {arg.name: arg for arg in session.get_inputs()}
    model_outputs = {arg.name: arg for arg in session.get_outputs()}
    declared = {t.name for t in config.inputs}
    if missing := [name for name in model_inputs if name not in declared]:
        raise ModelError(MISMATCH, f"config.pbtxt lacks the model's input(s) {', '.join(missing)}")
    for kind, tensors, model in (
        ("input", config.inputs, model_inputs),
        ("output", config.outputs, model_outputs),
    ):
        for tensor in tensors:
            if tensor.name not in model:
                raise ModelError(
                    MISMATCH, f"config.pbtxt declares {kind} '{tensor.name}', the model has none"
                )
            _check_tensor(tensor, model[tensor.name], kind, config.batched)


def _wire_shape(tensor: ConfigTensor, array: npt.NDArray[Any], batched: bool) -> tuple[int, ...]:
    """The shape a client sends for this array, as the config declares it (its -1s resolved)."""
    body = array.shape[1:] if batched else array.shape
    if tensor.reshape is not None:
        if not _fits(body, tensor.reshape):
            raise ModelError(
                MISMATCH, f"'{tensor.name}' is {list(body)}, config.pbtxt reshapes to {list(tensor.reshape)}"
            )
        known = math.prod(d for d in tensor.dims if d >= 0)
        dims = tuple(d if d >= 0 else math.prod(body) // max(known, 1) for d in tensor.dims)
    elif not batched and not body and tensor.dims == (1,):
        dims = (1,)
    else:
        dims = body
    if not _fits(dims, tensor.dims) or math.prod(dims) != math.prod(body):
        raise ModelError(
            MISMATCH,
            f"'{tensor.name}' shaped {list(body)} does not fit config.pbtxt dims {list(tensor.dims)}",
        )
    return ((array.shape[0],) if batched else ()) + dims


def _to_backend(config: ServedConfig, request: Arrays, index: int) -> Arrays:
    """A request as Triton checks it against the config, then as the backend hands it to the model."""
    feeds: Arrays = {}
    for tensor in config.inputs:
        array = request[tensor.name]
        if array.dtype != numpy_dtype(tensor.dtype):
            raise ModelError(
                MISMATCH, f"request {index}: '{tensor.name}' is {array.dtype}, config says {tensor.dtype}"
            )
        if config.batched and (not array.ndim or array.shape[0] > config.max_batch_size):
            raise ModelError(
                "InvalidParityInputs",
                f"sample {index}: input '{tensor.name}' {list(array.shape)} has a batch beyond "
                f"max_batch_size {config.max_batch_size}, which Triton refuses",
            )
        wire = array.reshape(_wire_shape(tensor, array, config.batched))
        feeds[tensor.name] = wire.reshape(array.shape)  # reshape (or the scalar bridge) undoes the wire shape
    return feeds


def _groups(config: ServedConfig, requests: Sequence[Arrays]) -> list[list[int]]:
    """Requests as the dynamic batcher hands them over: consecutive ones whose non-batch shapes agree, up to
    max_batch_size items per batch; every request alone without batching."""
    if not config.batched:
        return [[index] for index in range(len(requests))]
    groups: list[list[int]] = []
    size = 0
    for index, request in enumerate(requests):
        batch = next(iter(request.values())).shape[0] if request else 1
        if groups and size + batch <= config.max_batch_size and _same_body(requests[groups[-1][0]], request):
            groups[-1].append(index)
            size += batch
        else:
            groups.append([index])
            size = batch
    return groups


def _same_body(first: Arrays, second: Arrays) -> bool:
    return all(first[name].shape[1:] == array.shape[1:] for name, array in second.items())


def serve_requests(config: ServedConfig, session: Any, requests: Sequence[Arrays]) -> list[Arrays]:
    """Each request's outputs as the served model returns them (in the model's own shapes, for comparison)."""
    feeds = [_to_backend(config, request, index) for index, request in enumerate(requests)]
    names = [t.name for t in config.outputs]
    results: list[Arrays] = [{} for _ in requests]
    for group in _groups(config, feeds):
        if config.batched:
            merged = {name: np.concatenate([feeds[i][name] for i in group]) for name in feeds[group[0]]}
        else:
            merged = feeds[group[0]]
        try:
            values = dict(zip(names, session.run(names, merged), strict=True))
        except Exception as error:
            shapes = ", ".join(f"{name} {list(array.shape)}" for name, array in merged.items())
            raise ModelError(
                "OnnxRuntimeRunFailed",
                f"ONNX Runtime failed on a batch Triton would send ({shapes}): {runtime_message(error)}",
            ) from None
        start = 0
        for index in group:
            size = next(iter(feeds[index].values())).shape[0] if config.batched and feeds[index] else 0
            for tensor in config.outputs:
                value = np.asarray(values[tensor.name])
                part = value[start : start + size] if config.batched else value
                _check_output(tensor, part, config.batched, index)
                results[index][tensor.name] = part
            start += size
    return results


def _check_output(tensor: ConfigTensor, value: npt.NDArray[Any], batched: bool, index: int) -> None:
    try:
        _wire_shape(tensor, value, batched)
    except ModelError:
        raise ModelError(
            MISMATCH,
            f"request {index}: the model returned output '{tensor.name}' shaped {list(value.shape)}, which "
            f"does not fit config.pbtxt dims {list(tensor.dims)}" + (" after the batch" if batched else ""),
        ) from None
