"""Where the operator's pods may run: one placement for the conversion Job and the Triton replicas.

Both take spec.placement (node selector, tolerations, priority and runtime class) and land on the GPU product
the engine is for. What differs is said here, by the two callers' arguments:

- the GPU product in the node selector: for the Job, the one asked for (resources.gpuProduct or the selector's
  label), where the build runs; for the replicas, the one asked for, else the one the engine was built on;
- the GPU taint: the Job tolerates it always (TensorRT builds on a GPU, and where GPU nodes are all a cluster
  has, an ONNX Runtime conversion must run there too); the replicas when they request GPUs;
- spec.placement.affinity: the Job takes its nodeAffinity only (pod (anti-)affinity terms place replicas
  against each other and other pods, and a Job is not a replica); the replicas take all of it.
"""

from __future__ import annotations

from typing import Any

from nimify.api import GPU_PRODUCT_LABEL, NimServiceSpec
from nimify.render.pod_security import gpu_toleration


def pod_placement(
    spec: NimServiceSpec, *, gpu_product: str | None, tolerate_gpus: bool, node_affinity_only: bool
) -> dict[str, Any]:
    """The pod spec fields that place a pod: nodeSelector, tolerations, affinity, priority and runtime class
    (only those with a value)."""
    placement = spec.placement
    node_selector = dict(placement.node_selector or {}) if placement else {}
    if gpu_product:
        node_selector[GPU_PRODUCT_LABEL] = gpu_product
    tolerations = [gpu_toleration()] if tolerate_gpus else []
    if placement and placement.tolerations:
        tolerations += [
            t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in placement.tolerations
        ]
    fields: dict[str, Any] = {}
    if node_selector:
        fields["nodeSelector"] = node_selector
    if tolerations:
        fields["tolerations"] = tolerations
    if placement is None:
        return fields
    affinity = placement.affinity or {}
    if node_affinity_only:
        affinity = {"nodeAffinity": affinity["nodeAffinity"]} if affinity.get("nodeAffinity") else {}
    if affinity:
        fields["affinity"] = affinity
    if placement.priority_class_name:
        fields["priorityClassName"] = placement.priority_class_name
    if placement.runtime_class_name:
        fields["runtimeClassName"] = placement.runtime_class_name
    return fields
