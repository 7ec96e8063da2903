"""Whether Triton may batch a model: only when dimension 0 of every input and output is one shared batch dim.

Triton with `max_batch_size >= 1` concatenates requests along dimension 0 and splits the outputs along it
again, so a tensor whose first dimension is anything else (a recurrent state `[2, batch, H]`, a rank-0 scalar,
a list of detections) would be cut apart wrongly. The rule is therefore strict: every first dimension must be
dynamic and carry the same dim_param name. ONNX shape inference propagates names through the graph, so an
output derived from the batch keeps its name; an unnamed dynamic dimension is one that nothing ties to the
batch, and a model with one falls back to `max_batch_size: 0` (full shapes, every request served as sent).

Many exporters name no dims at all (skl2onnx, PaddlePaddle's -1), or give each tensor's dims names of its
own (tf2onnx's unk__N, paddle2onnx's DynamicDimension.N), so a model whose first dims are all dynamic, unnamed
or named apart, may be batched when the user asks for it (engine.maxBatchSize): names cannot decide it, the
runtime does. The conversion's check runs batched requests and compares them with each request run alone
(the onnxruntime backend's served-config check; the engine against ONNX Runtime on batches for TensorRT), and
refuses with what it measured. A fixed first dim or a scalar rules batching out whatever is asked.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from nimify.model.signature import Signature


@dataclass(frozen=True)
class BatchingDecision:
    batched: bool
    batch_dim: str | None
    reason: str
    assumable: bool = False  # not batched by default, but batching may be assumed if asked for
    assumed: bool = False  # batched because engine.maxBatchSize asked, on the assumption above

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"batched": self.batched, "batchDim": self.batch_dim, "reason": self.reason}
        if self.assumed:
            data["assumed"] = True
        return data


def decide_batching(signature: Signature) -> BatchingDecision:
    if not signature.inputs:
        return BatchingDecision(False, None, "the model has no inputs")
    first: dict[str, list[str]] = {}
    unnamed: list[str] = []
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
            unnamed.append(label)
        else:
            first.setdefault(head, []).append(label)
    if len(first) > 1:
        # Every first dim is dynamic, only their names differ: what exporters' placeholders do (tf2onnx's
        # unk__N, paddle2onnx's DynamicDimension.N name each tensor's dims apart). Names cannot settle it, the
        # runtime can: batching may be assumed when asked, and the conversion's check then compares batched
        # requests with each request run alone.
        spelled = "; ".join(f"'{name}' in {', '.join(labels)}" for name, labels in sorted(first.items()))
        return BatchingDecision(
            False,
            None,
            f"first dimensions differ: {spelled} (if these are an exporter's placeholders for one batch, set "
            "engine.maxBatchSize: the conversion then checks batched requests against each one alone)",
            assumable=True,
        )
    if unnamed:
        return BatchingDecision(
            False,
            None,
            f"{unnamed[0]} has an unnamed dynamic first dimension that nothing ties to the other tensors' "
            "(name it, e.g. dynamic_axes={0: 'batch'} at export, to enable batching; or set "
            "engine.maxBatchSize to assume dimension 0 is the batch everywhere)",
            assumable=True,
        )
    (name,) = first
    return BatchingDecision(True, name, f"dimension 0 of every input and output is '{name}'")


def assume_batching(decision: BatchingDecision, max_batch_size: int) -> BatchingDecision:
    """The decision once engine.maxBatchSize asked to batch a model whose first dims are merely unnamed."""
    if decision.batched or not decision.assumable or max_batch_size <= 0:
        return decision
    return replace(
        decision,
        batched=True,
        assumed=True,
        reason=f"assumed because engine.maxBatchSize is {max_batch_size}: dimension 0 of every input and "
        "output is taken as the batch (every first dimension is dynamic; the conversion's check compares "
        "batched requests with each run alone)",
    )
