"""Building a TensorRT engine from an ONNX file with TensorRT's Python builder (GPU only).

Precision is where TensorRT 10 and 11 part ways. TensorRT 10 still has weak typing: fp16/bf16/int8/fp8 are
builder flags that allow lower-precision kernels. TensorRT 11 removed them (and weak typing): every network is
strongly typed and reduced precision must already be in the ONNX graph (ModelOpt AutoCast, Q/DQ nodes). The
decision is a pure function (`precision_plan`) so both versions are tested without a GPU; `build_engine` only
carries it out. `tensorrt` is imported lazily and can be passed in, which is how the tests hand in a fake.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnx import ModelProto

from nimify.api import ShapeProfile
from nimify.model import graph_walk
from nimify.model.errors import ModelError

STRONGLY_TYPED = "STRONGLY_TYPED"
FLAG_PRECISIONS = {"fp16": "FP16", "bf16": "BF16", "int8": "INT8", "fp8": "FP8"}
QUANTIZE_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


@dataclass(frozen=True)
class PrecisionPlan:
    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag names
    builder_flags: tuple[str, ...]  # BuilderFlag names to set
    clear_flags: tuple[str, ...]  # BuilderFlag names to clear
    description: str


@dataclass(frozen=True)
class BuildSettings:
    precision: str = "auto"
    profiles: Sequence[ShapeProfile] = ()
    workspace_bytes: int | None = None
    timing_cache: Path | None = None


@dataclass(frozen=True)
class BuildReport:
    tensorrt_version: str
    seconds: float
    plan_bytes: int
    precision: str
    warnings: tuple[str, ...] = field(default_factory=tuple)


def import_tensorrt() -> Any:
    try:
        return importlib.import_module("tensorrt")
    except ImportError:
        raise ModelError(
            "TensorRTUnavailable",
            "the tensorrt backend builds engines with TensorRT's Python package on a GPU; run "
            "`nimify convert` "
            "in the nvcr.io/nvidia/tensorrt image matching the Triton release, or use backend onnxruntime",
        ) from None


def tensorrt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".", 1)[0])


def has_quantize_nodes(model: ModelProto) -> bool:
    return any(node.op_type in QUANTIZE_OPS for node in graph_walk.nodes(model))


def precision_plan(major: int, precision: str, model: ModelProto | None = None) -> PrecisionPlan:
    """How to ask TensorRT `major` for `precision` (auto, fp32, fp16, bf16, int8, fp8)."""
    if precision not in ("auto", "fp32", *FLAG_PRECISIONS):
        raise ModelError(
            "UnknownPrecision",
            f"engine.precision {precision!r} is not one of auto, fp32, fp16, bf16, int8, fp8",
        )
    if precision in FLAG_PRECISIONS and major >= 11:
        raise ModelError(
            "PrecisionNeedsGraph",
            f"engine.precision {precision}: TensorRT {major} builds strongly typed networks only and has no "
            f"{FLAG_PRECISIONS[precision]} builder flag; put the precision into the ONNX graph "
            "(ModelOpt AutoCast "
            "for fp16/bf16, Q/DQ nodes for int8/fp8) and use precision auto",
        )
    if precision in ("int8", "fp8") and model is not None and not has_quantize_nodes(model):
        raise ModelError(
            "QuantizationMissing",
            f"engine.precision {precision} needs QuantizeLinear/DequantizeLinear nodes in the graph "
            "(nimify does not calibrate); quantize the model with ModelOpt first",
        )
    if precision == "auto":
        # The types the graph declares, on any TensorRT: strongly typed (the only mode TensorRT 11 has).
        return PrecisionPlan((STRONGLY_TYPED,) if major == 10 else (), (), (), "strongly typed (graph types)")
    if precision == "fp32":
        # TF32 is on by default for FP32 matmuls/convolutions; full precision means switching it off.
        network = (STRONGLY_TYPED,) if major == 10 else ()
        return PrecisionPlan(network, (), ("TF32",), "fp32 (TF32 off)")
    flag = FLAG_PRECISIONS[precision]
    return PrecisionPlan((), (flag,), (), f"weakly typed, builder flag {flag}")


def _network_flags(trt: Any, names: Sequence[str]) -> int:
    flags = 0
    for name in names:
        flag = getattr(trt.NetworkDefinitionCreationFlag, name, None)
        if flag is not None:  # TensorRT 11 drops STRONGLY_TYPED from the enum: strong typing is the default
            flags |= 1 << int(flag)
    return flags


def _capturing_logger(trt: Any) -> Any:
    class CapturingLogger(trt.ILogger):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[tuple[Any, str]] = []

        def log(self, severity: Any, message: str) -> None:
            self.messages.append((severity, message))

        def errors(self) -> list[str]:
            bad = {trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR}
            return [message for severity, message in self.messages if severity in bad]

        def warnings(self) -> list[str]:
            return [
                message for severity, message in self.messages if severity == trt.ILogger.Severity.WARNING
            ]

    return CapturingLogger()


def _parser_error(error: Any) -> str:
    desc = getattr(error, "desc", None)
    node = getattr(error, "node", None)
    text = str(desc() if callable(desc) else error)
    return f"node {node()}: {text}" if callable(node) and node() >= 0 else text


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    settings: BuildSettings,
    *,
    model: ModelProto | None = None,
    trt: Any | None = None,
) -> BuildReport:
    """Parse `onnx_path`, build with `settings`, write the serialized engine to `plan_path`."""
    trt = trt if trt is not None else import_tensorrt()
    major = tensorrt_major(trt)
    plan = precision_plan(major, settings.precision, model)
    started = time.monotonic()
    logger = _capturing_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, plan.network_flags))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)] or logger.errors()
        raise ModelError(
            "OnnxParseFailed", f"TensorRT's ONNX parser refused {onnx_path.name}: {'; '.join(errors)[:2000]}"
        )

    config = builder.create_builder_config()
    if settings.workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.clear_flags:
        if (flag := getattr(trt.BuilderFlag, name, None)) is not None:
            config.clear_flag(flag)
    if settings.profiles:
        profile = builder.create_optimization_profile()
        for shape in settings.profiles:
            profile.set_shape(shape.input, tuple(shape.min), tuple(shape.opt), tuple(shape.max))
        config.add_optimization_profile(profile)
    if settings.timing_cache is not None:
        cached = settings.timing_cache.read_bytes() if settings.timing_cache.is_file() else b""
        config.set_timing_cache(config.create_timing_cache(cached), False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(
            "EngineBuildFailed",
            f"TensorRT could not build {onnx_path.name}: {'; '.join(logger.errors())[:2000]}",
        )
    data = bytes(serialized)
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(data)
    if settings.timing_cache is not None:
        settings.timing_cache.parent.mkdir(parents=True, exist_ok=True)
        settings.timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return BuildReport(
        tensorrt_version=str(trt.__version__),
        seconds=time.monotonic() - started,
        plan_bytes=len(data),
        precision=plan.description,
        warnings=tuple(logger.warnings()[-20:]),
    )
