"""The opsets a model imports."""

from __future__ import annotations

from onnx import ModelProto


def default_opset(model: ModelProto) -> int | None:
    """The version of the default ONNX domain the model imports, None when it imports none."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return None


def opset_imports(model: ModelProto) -> dict[str, int]:
    return {(entry.domain or "ai.onnx"): int(entry.version) for entry in model.opset_import}
