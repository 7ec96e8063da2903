"""What the operator hands a pipeline's check Job (engine/pipeline_check.py), and where a member's source
model lives beside its engine. No numpy here: the operator renders it."""

from __future__ import annotations

import json
from dataclasses import dataclass

from nimify.api.spec import PipelineSpec
from nimify.model.signature import Signature, TensorInfo

CHECK = "ensemble"  # ParityStatus.check of the end-to-end check
CONFIG = "config.pbtxt"
SOURCE_DIR = "source"  # beside an engine's repository: the ONNX model a TensorRT engine was built from
SOURCE_NOTE = (
    "# The ONNX model this TensorRT engine was built from: not served, a pipeline's check runs it.\n"
)
MODEL_FILE = "model.onnx"


@dataclass(frozen=True)
class CheckDocument:
    """What the operator hands the check Job (one environment variable, JSON)."""

    name: str
    pipeline: PipelineSpec
    ensemble_config: str
    members: dict[str, tuple[str, str]]
    """Member name → (its config text, its engine folder on the claim: the Triton model directory)."""
    signature: Signature
    max_batch_size: int

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "pipeline": self.pipeline.model_dump(mode="json", by_alias=True, exclude_none=True),
                "ensembleConfig": self.ensemble_config,
                "members": {k: {"config": c, "engine": e} for k, (c, e) in self.members.items()},
                "signature": {
                    "inputs": [t.to_json() for t in self.signature.inputs],
                    "outputs": [t.to_json() for t in self.signature.outputs],
                },
                "maxBatchSize": self.max_batch_size,
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> CheckDocument:
        data = json.loads(text)
        signature = Signature(
            tuple(TensorInfo.from_json(t) for t in data["signature"]["inputs"]),
            tuple(TensorInfo.from_json(t) for t in data["signature"]["outputs"]),
        )
        return cls(
            data["name"],
            PipelineSpec.model_validate(data["pipeline"]),
            data["ensembleConfig"],
            {k: (v["config"], v["engine"]) for k, v in data["members"].items()},
            signature,
            int(data["maxBatchSize"]),
        )
