"""Which of a model's operators each runtime can execute.

ONNX Runtime is asked directly: its registry of CPU kernels, plus the ops ONNX defines as functions (ORT
expands those into ops it has kernels for). TensorRT cannot be asked without a GPU, so its side is a
documented list: the ops onnx-tensorrt's `docs/operators.md` marks unsupported for TensorRT 10 and 11, and
every op outside the default domain (those need a TensorRT plugin).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from onnx import ModelProto, defs

from nimify.model import graph_walk

# From onnx-tensorrt docs/operators.md (TensorRT 10.x/11.x): sequence and optional types, string ops,
# integer-arithmetic quantization (TensorRT quantizes with Q/DQ pairs instead), sampling and training-only
# ops.
TENSORRT_UNSUPPORTED_OPS = frozenset(
    {
        "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor",
        "ConcatFromSequence", "ConvInteger", "Det", "DynamicQuantizeLinear", "ImageDecoder",
        "MatMulInteger", "MaxRoiPool", "MaxUnpool", "MelWeightMatrix", "Multinomial",
        "NegativeLogLikelihoodLoss", "Optional", "OptionalGetElement", "OptionalHasElement",
        "QLinearConv", "QLinearMatMul", "RegexFullMatch", "STFT", "SequenceAt", "SequenceConstruct",
        "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength", "SequenceMap",
        "SoftmaxCrossEntropyLoss", "SplitToSequence", "StringConcat", "StringNormalizer", "StringSplit",
        "TfIdfVectorizer", "Unique",
    }
)  # fmt: skip

DEFAULT_DOMAINS = ("", "ai.onnx")


def _domain(domain: str) -> str:
    return "" if domain == "ai.onnx" else domain


def used_ops(model: ModelProto) -> list[tuple[str, str]]:
    """Distinct (domain, op_type) pairs of every node, subgraphs included, sorted; model-local functions
    excluded."""
    local = {(f.domain, f.name) for f in model.functions}
    found = {(_domain(n.domain), n.op_type) for n in graph_walk.nodes(model)}
    return sorted(found - local)


def _opset_versions(model: ModelProto) -> dict[str, int]:
    return {_domain(entry.domain): int(entry.version) for entry in model.opset_import}


@functools.cache
def _ort_kernels() -> dict[tuple[str, str], tuple[tuple[int, int], ...]]:
    from onnxruntime.capi import _pybind_state

    kernels: dict[tuple[str, str], set[tuple[int, int]]] = {}
    for kernel in _pybind_state.get_all_opkernel_def():
        if kernel.provider == "CPUExecutionProvider":
            kernels.setdefault((kernel.domain, kernel.op_name), set()).add(tuple(kernel.version_range))
    return {key: tuple(sorted(ranges)) for key, ranges in kernels.items()}


def _is_onnx_function(op: str, domain: str, version: int) -> bool:
    try:
        schema = defs.get_schema(op, version, domain)
    except defs.SchemaError:
        return False
    # Attribute names of onnx's OpSchema binding (not in its type stubs).
    return bool(
        getattr(schema, "has_function", False) or getattr(schema, "has_context_dependent_function", False)
    )


def unsupported_by_onnxruntime(model: ModelProto) -> list[str]:
    versions = _opset_versions(model)
    kernels = _ort_kernels()
    missing = []
    for domain, op in used_ops(model):
        version = versions.get(domain, 1)
        ranges = kernels.get((domain, op), ())
        if any(low <= version <= high for low, high in ranges):
            continue
        if _is_onnx_function(op, domain, version):
            continue
        missing.append(_qualified(domain, op))
    return missing


def unsupported_by_tensorrt(model: ModelProto) -> list[str]:
    return [
        _qualified(domain, op)
        for domain, op in used_ops(model)
        if domain not in DEFAULT_DOMAINS or op in TENSORRT_UNSUPPORTED_OPS
    ]


def _qualified(domain: str, op: str) -> str:
    return op if domain == "" else f"{domain}::{op}"


def op_types(model: ModelProto) -> list[str]:
    return sorted({_qualified(domain, op) for domain, op in used_ops(model)})


def summarize(ops: Iterable[str]) -> str:
    return ", ".join(sorted(ops))
