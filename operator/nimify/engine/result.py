"""The one JSON line `nimify convert` prints and leaves in the termination-message file.

Field names follow the NimService status (`signature`, `engine`, `parity`) so the operator copies them across
as they are. Kubernetes keeps at most 4096 bytes of a termination message: a result that would not fit is
written there without its signature (flagged `truncated`), while stdout always carries all of it.
"""

from __future__ import annotations

import base64
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nimify.api import EngineStatus, ModelSignature, ParityStatus, TensorSpec
from nimify.model.batching import BatchingDecision
from nimify.model.errors import ModelError
from nimify.model.signature import Signature

if TYPE_CHECKING:  # the operator decodes results and never compares outputs: no numpy for it
    from nimify.engine.parity import ParityReport

TERMINATION_MESSAGE_LIMIT = 4096
COMPRESSED_ENCODING = "gzip+base64"


def decode_termination_message(message: str) -> dict[str, Any] | None:
    """The result a conversion left in its termination message, compressed or not; None if unreadable."""
    try:
        data = json.loads(message.strip().splitlines()[-1])
        if isinstance(data, dict) and data.get("encoding") == COMPRESSED_ENCODING:
            data = json.loads(gzip.decompress(base64.b64decode(data["data"])))
    except (ValueError, IndexError, KeyError, OSError, TypeError):
        return None
    return data if isinstance(data, dict) else None


def fitted_message(line: str) -> str | None:
    """A JSON result line as a termination message: as it is, or compressed (what
    `decode_termination_message` reads), or None when neither fits Kubernetes' 4096 bytes."""
    if len(line.encode()) <= TERMINATION_MESSAGE_LIMIT:
        return line
    # Signatures repeat themselves (past_key_values.0.key, .1.key, ...): compressed, most fit.
    packed = json.dumps(
        {
            "encoding": COMPRESSED_ENCODING,
            "data": base64.b64encode(gzip.compress(line.encode(), mtime=0)).decode(),
        }
    )
    return packed if len(packed) <= TERMINATION_MESSAGE_LIMIT else None


@dataclass
class ConversionResult:
    error: ModelError | None = None
    cache_key: str | None = None
    signature: Signature | None = None
    tensorrt_version: str | None = None
    gpu_product: str | None = None
    build_seconds: float | None = None
    cache_hit: bool | None = None
    parity: ParityReport | None = None
    parity_check: str | None = None  # ParityStatus.check: what the parity stage compared
    parity_inputs: str | None = None  # ParityStatus.inputs: generated, searched, or file
    parity_shapes: list[str] = field(default_factory=list)  # ParityStatus.shapes, when searched
    backend: str | None = None
    model_name: str | None = None
    repository: str | None = None
    max_batch_size: int | None = None
    batching: BatchingDecision | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def signature_status(self) -> ModelSignature | None:
        if self.signature is None:
            return None
        return ModelSignature(
            inputs=[TensorSpec(name=t.name, dtype=t.dtype, shape=t.shape) for t in self.signature.inputs],
            outputs=[TensorSpec(name=t.name, dtype=t.dtype, shape=t.shape) for t in self.signature.outputs],
        )

    def engine_status(self) -> EngineStatus:
        return EngineStatus(
            cache_key=self.cache_key,
            tensorrt_version=self.tensorrt_version,
            gpu_product=self.gpu_product,
            build_seconds=None if self.build_seconds is None else round(self.build_seconds, 3),
            cache_hit=self.cache_hit,
            max_batch_size=self.max_batch_size,
        )

    def parity_status(self) -> ParityStatus | None:
        if self.parity is None:
            return None
        return ParityStatus.model_validate(
            {
                **self.parity.to_status(),
                "check": self.parity_check,
                "inputs": self.parity_inputs,
                "shapes": self.parity_shapes or None,
            }
        )

    def to_json(self, *, with_signature: bool = True) -> dict[str, Any]:
        def dump(model: Any) -> Any:
            return None if model is None else model.model_dump(mode="json", by_alias=True, exclude_none=True)

        data: dict[str, Any] = {"ok": self.ok}
        if self.error is not None:
            data["error"] = self.error.to_json()
        data["cacheKey"] = self.cache_key
        if with_signature:
            data["signature"] = dump(self.signature_status())
        data["engine"] = dump(self.engine_status())
        data["parity"] = dump(self.parity_status())
        if self.parity is not None and self.parity.failures:
            data["parityFailures"] = list(self.parity.failures[:3])
        data["backend"] = self.backend
        data["model"] = self.model_name
        data["repository"] = self.repository
        data["maxBatchSize"] = self.max_batch_size
        if self.batching is not None:
            data["batching"] = self.batching.to_json()
        data["seconds"] = {stage: round(value, 3) for stage, value in self.seconds.items()}
        return data

    def json_line(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"), sort_keys=False)

    def termination_message(self) -> str:
        if (fitted := fitted_message(self.json_line())) is not None:
            return fitted
        reduced = self.to_json(with_signature=False)
        reduced["truncated"] = True
        reduced.pop("parityFailures", None)
        if "error" in reduced:
            reduced["error"]["message"] = reduced["error"]["message"][:1500]
        return json.dumps(reduced, separators=(",", ":"))[:TERMINATION_MESSAGE_LIMIT]

    def write_termination_log(self, path: Path) -> None:
        path.write_text(self.termination_message())
