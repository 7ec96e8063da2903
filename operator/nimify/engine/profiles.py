"""TensorRT optimization profiles: the min/opt/max shape of every dynamic input, from the spec or the
signature.

A dynamic dimension is "batch-like" when its name is the first dimension of some input (the batch, also where
a recurrent state carries it at position 1); those get 1..maxBatchSize with TensorRT tuned for the largest
batch, because Triton's dynamic batcher fills batches up. Any other dynamic dimension (image height, sequence
length) has no safe default: it must come from engine.profiles, and the error says which input and dimension.
"""

from __future__ import annotations

from collections.abc import Sequence

from nimify.api import ShapeProfile
from nimify.model.errors import ModelError
from nimify.model.signature import Signature, TensorInfo

UNBATCHED_BATCH_LIMIT = 8  # the batch-like range of a model Triton does not batch (max_batch_size 0)


def batch_like_names(signature: Signature) -> set[str]:
    return {t.dims[0] for t in signature.inputs if t.rank and isinstance(t.dims[0], str)}


def _check_profile(tensor: TensorInfo, profile: ShapeProfile, max_batch_size: int) -> None:
    label = f"engine.profiles[{profile.input}]"
    if len(profile.min) != tensor.rank:
        raise ModelError(
            "ProfileMismatch",
            f"{label} has rank {len(profile.min)}, input '{tensor.name}' has rank {tensor.rank}",
        )
    for index, dim in enumerate(tensor.dims):
        if isinstance(dim, int) and not profile.min[index] == profile.opt[index] == profile.max[index] == dim:
            raise ModelError(
                "ProfileMismatch",
                f"{label}: dimension {index} of '{tensor.name}' is fixed at {dim} in the model",
            )
    if max_batch_size and profile.max[0] < max_batch_size:
        raise ModelError(
            "ProfileMismatch", f"{label}: max[0] is {profile.max[0]}, below max_batch_size {max_batch_size}"
        )


def checked_profiles(
    signature: Signature, max_batch_size: int, given: Sequence[ShapeProfile] | None
) -> list[ShapeProfile]:
    """The given profiles, checked against the signature, none derived (onnxruntime: they only size the
    parity inputs and warm-up, so inputs left out keep the defaults)."""
    given = list(given or ())
    by_name = {t.name: t for t in signature.inputs}
    if unknown := sorted({p.input for p in given} - set(by_name)):
        raise ModelError(
            "ProfileMismatch", f"engine.profiles names inputs the model lacks: {', '.join(unknown)}"
        )
    for profile in given:
        _check_profile(by_name[profile.input], profile, max_batch_size)
    _check_shared_dims(signature, given)
    return given


def derive_profiles(
    signature: Signature, max_batch_size: int, given: Sequence[ShapeProfile] | None = None
) -> list[ShapeProfile]:
    """One profile per input with a dynamic dimension, in signature order; given profiles are checked and
    kept."""
    given_by_name = {p.input: p for p in given or ()}
    names = {t.name for t in signature.inputs}
    if unknown := sorted(set(given_by_name) - names):
        raise ModelError(
            "ProfileMismatch", f"engine.profiles names inputs the model lacks: {', '.join(unknown)}"
        )
    batch_names = batch_like_names(signature)
    batch_max = max_batch_size or UNBATCHED_BATCH_LIMIT
    profiles = []
    for tensor in signature.inputs:
        if not tensor.dynamic:
            continue
        if (profile := given_by_name.get(tensor.name)) is not None:
            _check_profile(tensor, profile, max_batch_size)
            profiles.append(profile)
            continue
        bounds: list[tuple[int, int, int]] = []
        for index, dim in enumerate(tensor.dims):
            if isinstance(dim, int):
                bounds.append((dim, dim, dim))
            elif dim in batch_names or (index == 0 and max_batch_size):
                bounds.append((1, batch_max, batch_max))
            else:
                label = f"'{dim}'" if dim else "unnamed"
                raise ModelError(
                    "ProfileRequired",
                    f"input '{tensor.name}' has a dynamic dimension {index} ({label}) that TensorRT needs "
                    "a range for: "
                    f"add engine.profiles with input '{tensor.name}'",
                )
        low, best, high = ([b[i] for b in bounds] for i in range(3))
        profiles.append(ShapeProfile(input=tensor.name, min=low, opt=best, max=high))
    _check_shared_dims(signature, profiles)
    return profiles


def _check_shared_dims(signature: Signature, profiles: Sequence[ShapeProfile]) -> None:
    """Dims sharing a name get one range everywhere, or TensorRT builds an engine no request satisfies."""
    seen: dict[str, tuple[tuple[int, int, int], str]] = {}
    by_name = {p.input: p for p in profiles}
    for tensor in signature.inputs:
        profile = by_name.get(tensor.name)
        if profile is None:
            continue
        for index, dim in enumerate(tensor.dims):
            if not isinstance(dim, str):
                continue
            bounds = (profile.min[index], profile.opt[index], profile.max[index])
            first = seen.setdefault(dim, (bounds, tensor.name))
            if first[0] != bounds:
                raise ModelError(
                    "ProfileInconsistent",
                    f"dimension '{dim}' gets min/opt/max {list(first[0])} for input '{first[1]}' "
                    f"but {list(bounds)} for '{tensor.name}'",
                )
