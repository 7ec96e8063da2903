"""A pipeline run the way its members' reference runs them: one ONNX Runtime session per member, chained in
the steps' order in one process. What the served ensemble must answer, and the floor of its latency."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy.typing as npt

from nimify.api.spec import PIPELINE_INPUT, PipelineSpec
from nimify.api.spec.pipeline import ref_step, ref_tensor
from nimify.engine.reference import OnnxRuntimeModel

Arrays = dict[str, npt.NDArray[Any]]


class ChainedOnnxRuntime:
    """The pipeline's members as ONNX Runtime sessions (their ONNX files by member name), run in order."""

    def __init__(self, pipeline: PipelineSpec, models: Mapping[str, Path]) -> None:
        self.pipeline = pipeline
        self.sessions = {step.member: OnnxRuntimeModel(models[step.member]) for step in pipeline.steps}

    def run(self, feeds: Mapping[str, npt.NDArray[Any]]) -> Arrays:
        """The pipeline's outputs for `feeds` (its inputs by name)."""
        produced: dict[str, Arrays] = {PIPELINE_INPUT: dict(feeds)}
        for step in self.pipeline.steps:
            inputs = {t.name: produced[ref_step(t.source)][ref_tensor(t.source)] for t in step.inputs}
            produced[step.member] = self.sessions[step.member].run(inputs)
        return {o.name: produced[ref_step(o.source)][ref_tensor(o.source)] for o in self.pipeline.outputs}
