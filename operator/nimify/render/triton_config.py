"""The ConfigMap with the model's config.pbtxt, rendered from the engine's signature and the triton settings.

It lives apart from the engine so that changing triton settings (batching, instances, warmup) rolls the
Deployment without rebuilding the engine.
"""

from __future__ import annotations

import hashlib
from typing import Any

from nimify.api import EngineRecord, ModelSignature, NimService
from nimify.model.signature import Signature, TensorInfo
from nimify.render.identity import COMPONENT_SERVER, object_meta
from nimify.render.units import ServingUnit
from nimify.triton.model_config import platform_for_backend, render_model_config
from nimify.triton.tuning import Candidate

CONFIG_KEY = "config.pbtxt"


def toolkit_signature(signature: ModelSignature) -> Signature:
    def tensor(spec: Any) -> TensorInfo:
        return TensorInfo(spec.name, spec.dtype, tuple(None if d < 0 else d for d in spec.shape))

    return Signature(tuple(tensor(t) for t in signature.inputs), tuple(tensor(t) for t in signature.outputs))


def render_config_text(nim: NimService, signature: ModelSignature, max_batch_size: int) -> str:
    return render_model_config(
        nim.triton_model_name,
        toolkit_signature(signature),
        platform_for_backend(nim.spec.engine.backend.value),
        max_batch_size=max_batch_size,
        triton=nim.spec.triton,
        gpus=nim.spec.resources.gpus,
        profiles=nim.spec.engine.profiles or (),
    )


def config_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def member_config_key(member: ServingUnit) -> str:
    """A pipeline member's config in its pipeline's ConfigMap."""
    return f"{member.model_name}.pbtxt"


#: The unit's default config (spec.triton as written) beside the tuned one: what a tuning Job starts from.
DEFAULT_CONFIG_KEY = "default-config.pbtxt"


def config_text(unit: ServingUnit, record: EngineRecord, tuned: Candidate | None = None) -> str:
    """The Triton config of a unit's ready engine (a pipeline member's too: its unit has its own spec);
    with `tuned`, the config a tuning chose: its instances and dynamic batcher settings."""
    nim = unit.nimservice
    if tuned is not None:
        triton = nim.spec.triton
        batching = triton.dynamic_batching.model_copy(
            update={
                "preferred_batch_sizes": list(tuned.preferred_batch_sizes) or None,
                "max_queue_delay_microseconds": tuned.max_queue_delay_us,
            }
        )
        triton = triton.model_copy(
            update={"instances_per_gpu": tuned.instances, "dynamic_batching": batching}
        )
        nim = nim.model_copy(update={"spec": nim.spec.model_copy(update={"triton": triton})})
    return render_config_text(nim, record.signature, record.engine.max_batch_size or 0)


def render_triton_config(nim: NimService, unit: ServingUnit, data: dict[str, str]) -> dict[str, Any]:
    """The ConfigMap with `unit`'s Triton config under CONFIG_KEY (`config_text`); a pipeline's holds the
    ensemble's there and each member's under member_config_key."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(nim, unit.config_map_name, COMPONENT_SERVER),
        "data": data,
    }
