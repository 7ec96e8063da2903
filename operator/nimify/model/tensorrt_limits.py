"""What TensorRT's ONNX parser documents it cannot take, checked before a conversion Job is started.

TensorRT cannot be asked without a GPU, so these are pre-flight checks against what onnx-tensorrt documents in
`docs/operators.md`, not predictions: the parser in the conversion Job stays the authority. What the document
states as a limit (the opset range, operators marked unsupported, the data types TensorRT has) is refused with
that reason and the link; what may still work (an operator from another domain, which a registered plugin can
implement; DOUBLE tensors, which the parser narrows) is a warning.
"""

from __future__ import annotations

from onnx import ModelProto

from nimify.model.errors import ModelError
from nimify.model.operators import qualified, used_ops
from nimify.model.opsets import default_opset
from nimify.model.signature import Signature

OPERATORS_DOC = "https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md"

# TensorRT 11's ONNX parser supports the default domain from opset 9 to 25.
TENSORRT_OPSETS = range(9, 26)

# Marked unsupported (N) in operators.md for TensorRT 10.x and 11.x: sequence and optional types, string
# ops, integer-arithmetic quantization (TensorRT quantizes with Q/DQ pairs instead), sampling and training
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

# The ONNX data types operators.md lists, as they can appear on a served model's inputs and outputs.
TENSORRT_IO_DTYPES = frozenset(
    {"FLOAT", "FLOAT16", "BFLOAT16", "DOUBLE", "INT8", "INT32", "INT64", "UINT8", "BOOL"}
)
NARROWED_DTYPES = frozenset({"DOUBLE"})  # "limited support": the parser casts to FLOAT where it can

DEFAULT_DOMAINS = ("", "ai.onnx")


def check_tensorrt_limits(model: ModelProto, signature: Signature, filename: str) -> list[str]:
    """Raises for what operators.md rules out; returns warnings for what only the parser can decide."""
    opset = default_opset(model)
    if opset is None:
        raise ModelError("OpsetMissing", f"{filename} imports no opset for the default ONNX domain")
    low, high = TENSORRT_OPSETS.start, TENSORRT_OPSETS.stop - 1
    if not low <= opset <= high:
        raise ModelError(
            "OpsetUnsupported",
            f"{filename} uses opset {opset}; TensorRT's ONNX parser supports opsets {low} to {high} "
            f"({OPERATORS_DOC}); re-export at a supported opset or use the onnxruntime backend",
        )
    foreign = [t for _, t in signature.tensors() if t.dtype not in TENSORRT_IO_DTYPES]
    if foreign:
        spelled = ", ".join(f"'{t.name}' ({t.dtype})" for t in foreign)
        raise ModelError(
            "UnsupportedDataType",
            f"{filename}: TensorRT has no such tensor type: {spelled} ({OPERATORS_DOC})",
        )
    ops = used_ops(model)
    unsupported = [
        qualified(d, op) for d, op in ops if d in DEFAULT_DOMAINS and op in TENSORRT_UNSUPPORTED_OPS
    ]
    if unsupported:
        raise ModelError(
            "UnsupportedOperator",
            f"{filename}: TensorRT's ONNX parser does not support {', '.join(unsupported)} "
            f"({OPERATORS_DOC}); use the onnxruntime backend",
        )
    warnings = []
    if plugins := [qualified(d, op) for d, op in ops if d not in DEFAULT_DOMAINS]:
        warnings.append(
            f"operator(s) {', '.join(plugins)} are outside the ONNX domain: TensorRT runs them only "
            "through a plugin of that name, which the conversion Job's parser looks for"
        )
    if narrowed := [t.name for _, t in signature.tensors() if t.dtype in NARROWED_DTYPES]:
        warnings.append(
            f"DOUBLE tensor(s) {', '.join(narrowed)}: TensorRT has limited DOUBLE support and computes in "
            "FLOAT where it can; the parity check shows the difference"
        )
    return warnings
