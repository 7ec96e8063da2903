"""Whether Triton may batch a model: only when dimension 0 of every input and output is one shared batch dim.

Triton with `max_batch_size >= 1` concatenates requests along dimension 0 and splits the outputs along it
again, so a tensor whose first dimension is anything else (a recurrent state `[2, batch, H]`, a rank-0 scalar,
a list of detections) would be cut apart wrongly. The rule is therefore strict: every first dimension must be
dynamic and carry the same dim_param name. ONNX shape inference propagates names through the graph, so an
output derived from the batch keeps its name; an unnamed dynamic dimension is one that nothing ties to the
batch, and a model with one falls back to `max_batch_size: 0` (full shapes, every request served as sent).
"""

from __future__ import annotations

from dataclasses import dataclass

from nimify.model.signature import Signature


@dataclass(frozen=True)
class BatchingDecision:
    batched: bool
    batch_dim: str | None
    reason: str

    def to_json(self) -> dict[str, object]:
        return {"batched": self.batched, "batchDim": self.batch_dim, "reason": self.reason}


def decide_batching(signature: Signature) -> BatchingDecision:
    if not signature.inputs:
        return BatchingDecision(False, None, "the model has no inputs")
    first: dict[str, list[str]] = {}
    for kind, tensor in signature.tensors():
        label = f"{kind} '{tensor.name}'"
        if tensor.rank == 0:
            return BatchingDecision(
                False, None, f"{label} is a scalar (rank 0), so it has no batch dimension"
            )
        head = tensor.dims[0]
        if isinstance(head, int):
            return BatchingDecision(
                False, None, f"{label} has a fixed first dimension ({head}), not a batch dimension"
            )
        if head is None:
            return BatchingDecision(
                False,
                None,
                f"{label} has an unnamed dynamic first dimension that nothing ties to the other tensors' "
                "(name it, e.g. dynamic_axes={0: 'batch'} at export, to enable batching)",
            )
        first.setdefault(head, []).append(label)
    if len(first) > 1:
        spelled = "; ".join(f"'{name}' in {', '.join(labels)}" for name, labels in sorted(first.items()))
        return BatchingDecision(False, None, f"first dimensions differ: {spelled}")
    (name,) = first
    return BatchingDecision(True, name, f"dimension 0 of every input and output is '{name}'")
