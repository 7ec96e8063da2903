"""Building a TensorRT engine from an ONNX file with TensorRT's Python builder (GPU only).

Precision is where TensorRT 10 and 11 part ways. TensorRT 10 still has weak typing: fp16/bf16/int8/fp8 are
builder flags that allow lower-precision kernels. TensorRT 11 removed them (and weak typing): every network is
strongly typed and reduced precision must already be in the ONNX graph (ModelOpt AutoCast, Q/DQ nodes). The
decision is a pure function (`precision_plan`) so both versions are tested without a GPU; `build_engine` only
carries it out. `tensorrt` is imported lazily and can be passed in, which is how the tests hand in a fake.

This is TensorRT's builder API used directly rather than Polygraphy's loaders (`NetworkFromOnnxPath`,
`CreateConfig`, `EngineFromNetwork`): the build is a dozen calls, and the places Nimify needs to act on
TensorRT's answers (a refused profile, a refused timing cache, a failed build with the logger's reason, the
10/11 flag differences) are exactly the calls those loaders wrap and turn into their own exceptions.

TensorRT reports most failures by return value (None, False, -1) and logs the reason; the rest raise
TypeError or RuntimeError from the bindings (a builder on a node whose driver is too old: "factory function
returned nullptr"). Every one of them becomes a ModelError that names the step and carries the log.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import os
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
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
# What the bindings raise (besides returning None/False): wrong argument types, nullptr factories, refused
# shapes. Turned into ModelError around every stretch of TensorRT calls.
TENSORRT_EXCEPTIONS = (TypeError, RuntimeError, ValueError, OverflowError)


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
    timing_cache: Path | None = None  # one file per (TensorRT version, GPU product): `timing_cache_path`


@dataclass(frozen=True)
class BuildReport:
    tensorrt_version: str
    seconds: float
    plan_bytes: int
    precision: str
    warnings: tuple[str, ...] = field(default_factory=tuple)
    timing_cache: str = "none"  # none, new, reused, refused (rebuilt from empty)


def import_tensorrt() -> Any:
    try:
        return importlib.import_module("tensorrt")
    except (ImportError, OSError) as error:  # OSError: the package is there but a library it loads is not
        raise ModelError(
            "TensorRTUnavailable",
            "the tensorrt backend builds engines with TensorRT's Python package on a GPU; run "
            "`nimify convert` in the nimify-builder image matching the Triton release (pip extra "
            f"nimify[tensorrt-cu12] or nimify[tensorrt-cu13]), or use backend onnxruntime ({error})",
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
    # TensorRT 10 needs STRONGLY_TYPED to build from the graph's types. TensorRT 11 keeps the flag but
    # deprecated and ignored (strong typing is its only mode), so nothing is asked there. (What 11 removed
    # from that enum is EXPLICIT_BATCH, which nimify never sets.)
    strongly_typed = (STRONGLY_TYPED,) if major == 10 else ()
    if precision == "auto":
        return PrecisionPlan(strongly_typed, (), (), "strongly typed (graph types)")
    if precision == "fp32":
        # TF32 is on by default for FP32 matmuls/convolutions; full precision means switching it off.
        return PrecisionPlan(strongly_typed, (), ("TF32",), "fp32 (TF32 off)")
    flag = FLAG_PRECISIONS[precision]
    return PrecisionPlan((), (flag,), (), f"weakly typed, builder flag {flag}")


def _network_flags(trt: Any, names: Sequence[str]) -> int:
    flags = 0
    for name in names:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    return flags


def capturing_logger(trt: Any) -> Any:
    """A TensorRT logger that keeps every message, so failures can quote TensorRT's reason."""

    class CapturingLogger(trt.ILogger):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[tuple[Any, str]] = []

        def log(self, severity: Any, msg: str) -> None:
            self.messages.append((severity, msg))

        def errors(self) -> list[str]:
            bad = {trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR}
            return [message for severity, message in self.messages if severity in bad]

        def warnings(self) -> list[str]:
            return [
                message for severity, message in self.messages if severity == trt.ILogger.Severity.WARNING
            ]

    return CapturingLogger()


def init_plugins(trt: Any, logger: Any) -> str | None:
    """Register TensorRT's plugin library (needed before parsing or deserializing a model that uses its plugin
    ops, as Triton's TensorRT backend does at start-up); a warning when it did not initialize."""
    if trt.init_libnvinfer_plugins(logger, ""):
        return None
    return "TensorRT's plugin library did not initialize: models using its plugin ops will not parse"


def logged_errors(logger: Any) -> str:
    return "; ".join(logger.errors())[:2000] or "TensorRT logged no error"


@contextlib.contextmanager
def tensorrt_calls(step: str, logger: Any | None = None) -> Iterator[None]:
    """Turn an exception from the bindings into a ModelError naming the step (and TensorRT's log)."""
    try:
        yield
    except TENSORRT_EXCEPTIONS as error:
        said = f"; TensorRT logged: {logged_errors(logger)}" if logger is not None and logger.errors() else ""
        raise ModelError(
            "TensorRTError", f"{step} failed: {type(error).__name__}: {str(error)[:500]}{said}"
        ) from None


def _parser_error(error: Any) -> str:
    desc = getattr(error, "desc", None)
    node = getattr(error, "node", None)
    text = str(desc() if callable(desc) else error)
    return f"node {node()}: {text}" if callable(node) and node() >= 0 else text


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "unknown"


def timing_cache_path(cache_dir: Path, tensorrt_version: str, gpu_product: str | None) -> Path | None:
    """The timing cache of one TensorRT version on one GPU product: TensorRT refuses a cache from another
    device (or reads another version's as garbage), so sharing one file across them only thrashes. None
    when the GPU product is unknown: builds then start without a cache rather than mix devices."""
    if not gpu_product:
        return None
    return (
        cache_dir / "timing-caches" / f"tensorrt-{_label(tensorrt_version)}" / f"{_label(gpu_product)}.cache"
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock next to `path`: conversion Jobs of two NimServices share the engine volume.
    (flock works across pods on one node and, through NFSv4 locks, on most ReadWriteMany volumes.)"""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_name(path.name + ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_atomically(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never half of one (a Job killed mid-write included)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _attach_timing_cache(config: Any, path: Path, notes: list[str]) -> str:
    """Start the build from the cache at `path`; a cache TensorRT refuses is logged and replaced by an
    empty one (the build then re-times every tactic and the new cache replaces the refused one)."""
    with _locked(path):
        data = path.read_bytes() if path.is_file() else b""
    state = "reused" if data else "new"
    cache = config.create_timing_cache(data) if data else None
    if data and cache is None:
        notes.append(
            f"timing cache {path} is unreadable (corrupt, or another TensorRT's): starting a new one"
        )
        state = "refused"
    elif cache is not None and not config.set_timing_cache(cache, False):
        notes.append(f"TensorRT refused timing cache {path} (made on another device): starting a new one")
        cache, state = None, "refused"
    if cache is None:
        cache = config.create_timing_cache(b"")
        if cache is None or not config.set_timing_cache(cache, False):
            notes.append("TensorRT would not start an empty timing cache: building without one")
            return "none"
    return state


def _save_timing_cache(trt_config: Any, path: Path, notes: list[str]) -> None:
    """Merge what this build timed into the file (keeping entries other builds saved meanwhile) and write
    it atomically, under the lock. A cache that cannot be saved costs the next build time, not this one."""
    cache = trt_config.get_timing_cache()
    if cache is None:
        notes.append("TensorRT returned no timing cache after the build: nothing saved")
        return
    try:
        with _locked(path):
            if path.is_file() and (current := trt_config.create_timing_cache(path.read_bytes())) is not None:
                cache.combine(current, False)  # False: another device's entries stay out
            write_atomically(path, bytes(cache.serialize()))
    except OSError as error:
        notes.append(f"could not save timing cache {path}: {error}")


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
    logger = capturing_logger(trt)
    notes: list[str] = []
    with tensorrt_calls("starting TensorRT's builder", logger):
        if (warning := init_plugins(trt, logger)) is not None:
            notes.append(warning)
        builder = trt.Builder(logger)
    with tensorrt_calls(f"parsing {onnx_path.name}", logger):
        network = builder.create_network(_network_flags(trt, plan.network_flags))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)] or logger.errors()
            raise ModelError(
                "OnnxParseFailed",
                f"TensorRT's ONNX parser refused {onnx_path.name}: {'; '.join(errors)[:2000]}",
            )
        _refuse_shape_tensor_inputs(network)

    with tensorrt_calls("configuring the build", logger):
        config = builder.create_builder_config()
        if settings.workspace_bytes:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
        for name in plan.builder_flags:
            config.set_flag(getattr(trt.BuilderFlag, name))
        for name in plan.clear_flags:
            config.clear_flag(getattr(trt.BuilderFlag, name))
        if settings.profiles:
            config_profile(builder, config, settings.profiles, logger)
        cache_state = "none"
        if settings.timing_cache is not None:
            cache_state = _attach_timing_cache(config, settings.timing_cache, notes)

    with tensorrt_calls(f"building {onnx_path.name}", logger):
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ModelError(
                "EngineBuildFailed", f"TensorRT could not build {onnx_path.name}: {logged_errors(logger)}"
            )
        data = bytes(serialized)
    write_atomically(plan_path, data)
    if settings.timing_cache is not None and cache_state != "none":
        with tensorrt_calls("saving the timing cache", logger):
            _save_timing_cache(config, settings.timing_cache, notes)
    return BuildReport(
        tensorrt_version=str(trt.__version__),
        seconds=time.monotonic() - started,
        plan_bytes=len(data),
        precision=plan.description,
        warnings=tuple(notes + logger.warnings()[-20:]),
        timing_cache=cache_state,
    )


def _refuse_shape_tensor_inputs(network: Any) -> None:
    """A shape-tensor input (its values become shapes, e.g. Reshape's target) needs value ranges in the
    profile (`set_shape_input`); engine.profiles holds dimensions, so such a model is refused by name."""
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        if tensor.is_shape_tensor:
            raise ModelError(
                "ShapeTensorInput",
                f"input '{tensor.name}' is a shape tensor (its values set other tensors' shapes); TensorRT"
                " needs ranges of its values, which nimify's engine.profiles cannot express: make it a"
                " constant or an initializer in the ONNX graph",
            )


def config_profile(builder: Any, config: Any, profiles: Sequence[ShapeProfile], logger: Any) -> None:
    """One optimization profile holding every dynamic input's min/opt/max; refusals name the input."""
    profile = builder.create_optimization_profile()
    for shape in profiles:
        try:
            profile.set_shape(shape.input, tuple(shape.min), tuple(shape.opt), tuple(shape.max))
        except RuntimeError as error:
            raise ModelError(
                "ProfileRefused",
                f"TensorRT refused engine.profiles[{shape.input}] (min {shape.min}, opt {shape.opt}, max"
                f" {shape.max}): {error}",
            ) from None
    if config.add_optimization_profile(profile) < 0:
        raise ModelError(
            "ProfileRefused",
            f"TensorRT refused the optimization profile of {', '.join(p.input for p in profiles)}:"
            f" {logged_errors(logger)}",
        )
