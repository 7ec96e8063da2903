"""Triton's config.pbtxt for a model, from its signature and the NimService's engine and Triton settings.

Pure and deterministic: the same inputs give byte-identical text, so a changed config always means a changed
spec.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from nimify.api import EngineSpec, ShapeProfile, TritonSpec
from nimify.model.batching import BatchingDecision
from nimify.model.dtypes import by_name
from nimify.model.errors import ModelError
from nimify.model.signature import Signature, TensorInfo
from nimify.triton.pbtxt import Message, Token, render

Platform = Literal["tensorrt_plan", "onnxruntime_onnx", "python"]
PLATFORMS: tuple[Platform, ...] = ("tensorrt_plan", "onnxruntime_onnx", "python")
DEFAULT_MAX_BATCH_SIZE = 8

MODEL_FILENAMES: dict[Platform, str] = {
    "tensorrt_plan": "model.plan",
    "onnxruntime_onnx": "model.onnx",
    "python": "model.py",
}


def platform_for_backend(backend: str) -> Platform:
    """The Triton platform for a NimService backend (`python` is the local stand-in for onnxruntime)."""
    platforms: dict[str, Platform] = {
        "tensorrt": "tensorrt_plan",
        "onnxruntime": "onnxruntime_onnx",
        "python": "python",
    }
    try:
        return platforms[backend]
    except KeyError:
        raise ModelError(
            "UnknownBackend", f"backend {backend!r} is not one of {', '.join(platforms)}"
        ) from None


def resolve_max_batch_size(engine: EngineSpec, batching: BatchingDecision) -> int:
    """engine.maxBatchSize when the model can batch (or may be assumed to: see nimify.model.batching); 8 when
    left out and it can; 0 when it cannot."""
    requested = engine.max_batch_size
    if requested is None:
        return DEFAULT_MAX_BATCH_SIZE if batching.batched else 0
    if requested > 0 and not batching.batched and not batching.assumable:
        raise ModelError(
            "BatchingImpossible",
            f"engine.maxBatchSize is {requested}, but Triton cannot batch this model: {batching.reason}",
        )
    return requested


def config_dims(tensor: TensorInfo, batched: bool) -> tuple[list[int], bool]:
    """Dims as config.pbtxt writes them, and whether a `reshape { shape: [] }` must map them to rank 0.

    Triton has no rank-0 dims: a [batch] tensor, once the batch is implicit, is declared [1] and reshaped to
    [] (allowed with batching). A true scalar of a non-batching model is declared [1] without a reshape,
    which Triton refuses there ("scalar tensors are not supported"); the backends bridge it instead (the ONNX
    Runtime backend feeds rank-0 tensors since 23.10, the generated model.py reshapes).
    """
    shape = tensor.shape[1:] if batched else tensor.shape
    return (shape, False) if shape else ([1], batched)


def tensor_message(tensor: TensorInfo, batched: bool, *, reshape_scalars: bool = True) -> Message:
    """A config input or output. An ensemble's tensors are the members' as Triton sees them outside (a
    [batch] tensor as [1] per request, with no reshape: `reshape_scalars` False)."""
    dims, reshape = config_dims(tensor, batched)
    reshape = reshape and reshape_scalars
    message = Message().add("name", tensor.name).add("data_type", Token(by_name(tensor.dtype).triton))
    message.add("dims", dims)
    if reshape:
        message.add("reshape", Message().add("shape", []))
    return message


def _dynamic_batching(triton: TritonSpec) -> Message | None:
    batching = triton.dynamic_batching
    if not batching.enabled:
        return None
    message = Message()
    if batching.preferred_batch_sizes:
        message.add("preferred_batch_size", sorted(batching.preferred_batch_sizes))
    if batching.max_queue_delay_microseconds is not None:
        message.add("max_queue_delay_microseconds", batching.max_queue_delay_microseconds)
    if batching.priority_levels is not None:
        message.add("priority_levels", batching.priority_levels)
        # Triton needs a default level once levels exist; without one, unlabelled requests get the lowest
        # priority, so clients that set a priority are the ones that gain from it.
        default = batching.default_priority_level or batching.priority_levels
        message.add("default_priority_level", default)
    if batching.max_queue_size:
        message.add("default_queue_policy", Message().add("max_queue_size", batching.max_queue_size))
    return message


def _warmup_dims(
    tensor: TensorInfo, dims: list[int], batched: bool, profiles: Sequence[ShapeProfile]
) -> list[int]:
    profile = next((p for p in profiles if p.input == tensor.name), None)
    offset = 1 if batched else 0
    concrete = []
    for index, size in enumerate(dims):
        if size >= 0:
            concrete.append(size)
        elif profile is not None and index + offset < len(profile.opt):
            concrete.append(profile.opt[index + offset])
        else:
            concrete.append(1)
    return concrete


def _warmups(
    signature: Signature, triton: TritonSpec, max_batch_size: int, profiles: Sequence[ShapeProfile]
) -> list[Message]:
    warmup = triton.warmup
    if warmup is None or not warmup.enabled or not signature.inputs:
        return []
    batched = max_batch_size > 0
    # A model without batching takes each request as one batch of 1: a single warm-up request covers it.
    sizes = sorted(warmup.batch_sizes) if batched else [1]
    entries = []
    for size in sizes:
        if batched and size > max_batch_size:
            raise ModelError(
                "WarmupBatchTooLarge",
                f"triton.warmup.batchSizes has {size}, beyond max_batch_size {max_batch_size}",
            )
        inputs = []
        for tensor in signature.inputs:
            dims, _ = config_dims(tensor, batched)
            value = (
                Message()
                .add("data_type", Token(by_name(tensor.dtype).triton))
                .add("dims", _warmup_dims(tensor, dims, batched, profiles))
                .add("zero_data", True)
            )
            inputs.append(Message().add("key", tensor.name).add("value", value))
        entry = Message().add("name", f"warmup_batch_{size}").add("batch_size", size)
        for item in inputs:
            entry.add("inputs", item)
        entries.append(entry)
    return entries


def _static_beyond_batch(signature: Signature, batched: bool) -> bool:
    return all(size >= 0 for tensor in signature.inputs for size in config_dims(tensor, batched)[0])


def render_model_config(
    name: str,
    signature: Signature,
    platform: Platform,
    *,
    max_batch_size: int,
    triton: TritonSpec,
    gpus: int,
    profiles: Sequence[ShapeProfile] = (),
) -> str:
    """config.pbtxt text. `gpus` 0 places instances on CPU (onnxruntime and python only)."""
    if platform == "tensorrt_plan" and gpus < 1:
        raise ModelError("TensorRTNeedsGpu", "the tensorrt backend needs resources.gpus of at least 1")
    batched = max_batch_size > 0
    config = Message().add("name", name)
    if platform == "python":
        config.add("backend", "python")
    else:
        config.add("platform", platform)
    config.add("max_batch_size", max_batch_size)
    config.add("input", [tensor_message(t, batched) for t in signature.inputs])
    config.add("output", [tensor_message(t, batched) for t in signature.outputs])
    kind = "KIND_GPU" if gpus >= 1 else "KIND_CPU"
    config.add("instance_group", [Message().add("count", triton.instances_per_gpu).add("kind", Token(kind))])
    if batched and (dynamic := _dynamic_batching(triton)) is not None:
        config.add("dynamic_batching", dynamic)
    if triton.response_cache is not None and triton.response_cache.enabled:
        config.add("response_cache", Message().add("enable", True))
    if warmups := _warmups(signature, triton, max_batch_size, profiles):
        config.add("model_warmup", warmups)
    if platform == "tensorrt_plan" and _static_beyond_batch(signature, batched):
        # CUDA graphs are captured per batch size; with other dynamic dims the backend would need a graph_spec
        # for every shape, so they are only switched on when the batch is the only dynamic dimension.
        config.add("optimization", Message().add("cuda", Message().add("graphs", True)))
    return render(config)
