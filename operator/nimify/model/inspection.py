"""What a model file is: format, signature, batching decision, opset/IR versions, operators, size and digest.

Inspection reads the protobuf and refuses what is unsafe or impossible to describe (external data leaving the
folder, absurd declared sizes); the deeper checks a runtime needs live in `nimify.model.validation`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from onnx import ModelProto

from nimify.model.batching import BatchingDecision, decide_batching
from nimify.model.declared_sizes import check_declared_sizes
from nimify.model.digest import file_sha256
from nimify.model.external_data import check_external_data
from nimify.model.onnx_file import check_model_file, looks_like_plan, read_onnx
from nimify.model.onnx_signature import signature_of
from nimify.model.operators import op_types
from nimify.model.opsets import default_opset, opset_imports
from nimify.model.plan import plan_signature
from nimify.model.signature import Signature

ModelFormat = Literal["onnx", "tensorrt-plan"]


@dataclass(frozen=True)
class ModelReport:
    path: Path
    format: ModelFormat
    sha256: str  # of the model file itself (external data files are covered by their own digests)
    size_bytes: int  # model file plus external data
    signature: Signature
    batching: BatchingDecision
    ir_version: int | None = None
    opset: int | None = None
    opsets: dict[str, int] = field(default_factory=dict)
    op_types: tuple[str, ...] = ()
    external_data: tuple[str, ...] = ()  # paths relative to the model's folder
    producer: str = ""
    signature_source: str = "onnx"
    warnings: tuple[str, ...] = ()  # what validation could not settle and the runtime will (see validation)
    declared: Signature | None = None  # the file's own signature, where the runtime fixes dims it leaves open

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "format": self.format,
            "sha256": self.sha256,
            "sizeBytes": self.size_bytes,
            "irVersion": self.ir_version,
            "opset": self.opset,
            "opsets": dict(sorted(self.opsets.items())),
            "producer": self.producer,
            "opTypes": list(self.op_types),
            "externalData": list(self.external_data),
            "signature": self.signature.to_json(),
            **({"declaredSignature": self.declared.to_json()} if self.declared is not None else {}),
            "signatureSource": self.signature_source,
            "batching": self.batching.to_json(),
            "warnings": list(self.warnings),
        }


def resolve_format(path: Path, declared: str | None = None) -> ModelFormat:
    if declared in ("onnx", "tensorrt-plan"):
        return declared  # type: ignore[return-value]
    return "tensorrt-plan" if looks_like_plan(path) else "onnx"


def inspect_model(
    path: Path, *, model_format: str | None = None, signature_hint: Signature | None = None
) -> ModelReport:
    check_model_file(path)
    if resolve_format(path, model_format) == "tensorrt-plan":
        return inspect_plan(path, signature_hint)
    return inspect_onnx(path)


def inspect_onnx(path: Path, model: ModelProto | None = None) -> ModelReport:
    model = model if model is not None else read_onnx(path)
    check_declared_sizes(model, path.name)
    external = check_external_data(model, path)
    signature = signature_of(model, path.name)
    root = path.parent.resolve()
    return ModelReport(
        path=path,
        format="onnx",
        sha256=file_sha256(path),
        size_bytes=path.stat().st_size + sum(f.stat().st_size for f in external),
        signature=signature,
        batching=decide_batching(signature),
        ir_version=int(model.ir_version),
        opset=default_opset(model),
        opsets=opset_imports(model),
        op_types=tuple(op_types(model)),
        external_data=tuple(str(f.relative_to(root)) for f in external),
        producer=" ".join(p for p in (model.producer_name, model.producer_version) if p),
    )


def inspect_plan(path: Path, signature_hint: Signature | None = None) -> ModelReport:
    signature, source = plan_signature(path, signature_hint)
    return ModelReport(
        path=path,
        format="tensorrt-plan",
        sha256=file_sha256(path),
        size_bytes=path.stat().st_size,
        signature=signature,
        batching=decide_batching(signature),
        signature_source=source,
    )
