"""The TensorRT path on a real GPU, end to end: what CPU tests can only do against a fake (`hack/gpu-check`).

For every sample model and every precision the plan allows on the installed TensorRT (and the GPU's compute
capability), it runs the conversion pipeline (`run_conversion`: validate, build, parity against ONNX Runtime,
publish), deserializes the published plan and checks its tensor names and types against the ONNX signature,
then builds the same model again to show the timing cache being reused, and prints one table row. fp32 is
built with TF32 off, so its parity tolerance is 1e-5.

It is in the package (not only in hack/) so it runs where the builder runs, `python -m
nimify.engine.gpu_check` inside the nimify-builder image on a GPU node. `tensorrt` and the CUDA bindings
can be passed to `check`, which is how the CPU tests drive it with the fakes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx
from onnx import ModelProto, TensorProto, helper

from nimify.api import EngineSpec, ParitySpec, ShapeProfile
from nimify.engine.convert import ConvertRequest, run_conversion
from nimify.engine.gpu_product import cuda_device, detect_gpu_product
from nimify.engine.profiles import derive_profiles
from nimify.engine.tensorrt_build import (
    BuildSettings,
    build_engine,
    import_tensorrt,
    precision_plan,
    tensorrt_major,
    timing_cache_path,
)
from nimify.engine.tensorrt_runner import TensorRTModel, import_cudart
from nimify.model.errors import ModelError
from nimify.model.inspection import inspect_onnx
from nimify.model.samples import SAMPLES, write_model

PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8", "fp8")
# (atol, rtol) by precision: fp32 with TF32 off matches ONNX Runtime to float rounding; auto may use TF32.
TOLERANCES = {
    "fp32": (1e-5, 1e-5),
    "auto": (5e-3, 5e-3),
    "fp16": (1e-2, 1e-2),
    "bf16": (5e-2, 5e-2),
    "int8": (5e-2, 5e-2),
    "fp8": (1e-1, 1e-1),
}
# Lowest compute capability with kernels for each reduced precision (as api/semantics.py has them).
NEEDS_CAPABILITY = {"bf16": (8, 0), "fp8": (8, 9)}
# Profiles for the samples whose dynamic dims are not batch-like (the pipeline asks for them).
PROFILES = {
    "cnn": [ShapeProfile(input="image", min=[1, 3, 8, 8], opt=[4, 3, 16, 16], max=[8, 3, 32, 32])],
    "int_bool": [
        ShapeProfile(input="token_ids", min=[1, 1], opt=[8, 8], max=[8, 16]),
        ShapeProfile(input="mask", min=[1, 1], opt=[8, 8], max=[8, 16]),
    ],
}
# engine tensor types → ONNX names, for the signature check.
ENGINE_TO_ONNX = {"FLOAT": "FLOAT", "HALF": "FLOAT16", "BF16": "BFLOAT16", "FP8": "FLOAT8E4M3FN",
                  "INT8": "INT8", "INT32": "INT32", "INT64": "INT64", "BOOL": "BOOL",
                  "UINT8": "UINT8"}  # fmt: skip


def quantized_mlp(kind: str) -> ModelProto:
    """The mlp sample with Q/DQ on its input and weights: what int8 (opset 17) and fp8 (opset 19) need."""
    base = SAMPLES["mlp"]()
    zero_type, opset = (TensorProto.INT8, 17) if kind == "int8" else (TensorProto.FLOAT8E4M3FN, 19)
    weights = {t.name: t for t in base.graph.initializer}
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "scale_x", "zero"], ["input_q"]),
        helper.make_node("DequantizeLinear", ["input_q", "scale_x", "zero"], ["input_dq"]),
        helper.make_node("QuantizeLinear", ["w1", "scale_w", "zero"], ["w1_q"]),
        helper.make_node("DequantizeLinear", ["w1_q", "scale_w", "zero"], ["w1_dq"]),
        helper.make_node("Gemm", ["input_dq", "w1_dq", "b1"], ["hidden"]),
        helper.make_node("Relu", ["hidden"], ["activated"]),
        helper.make_node("Gemm", ["activated", "w2", "b2"], ["logits"]),
    ]
    initializers = [
        *weights.values(),
        helper.make_tensor("scale_x", TensorProto.FLOAT, [], [0.05]),
        helper.make_tensor("scale_w", TensorProto.FLOAT, [], [0.01]),
        helper.make_tensor("zero", zero_type, [], [0]),
    ]
    graph = helper.make_graph(
        nodes, f"mlp_{kind}", list(base.graph.input), list(base.graph.output), initializers
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
    onnx.checker.check_model(model)
    return model


MODELS: dict[str, Callable[[], ModelProto]] = {
    **SAMPLES,
    "mlp_int8": lambda: quantized_mlp("int8"),
    "mlp_fp8": lambda: quantized_mlp("fp8"),
}
QUANTIZED = {"mlp_int8": "int8", "mlp_fp8": "fp8"}  # a Q/DQ model is built auto or at its own precision


@dataclass
class Row:
    model: str
    precision: str
    ok: bool = False
    build_seconds: float | None = None
    rebuild_seconds: float | None = None
    timing_cache: str = ""
    plan_kib: float | None = None
    io_check: str = ""
    max_abs: float | None = None
    max_rel: float | None = None
    tolerance: tuple[float, float] = (0.0, 0.0)
    error: str = ""


@dataclass
class Report:
    tensorrt: str
    gpu_product: str | None
    capability: tuple[int, int] | None
    rows: list[Row] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # model, precision, why

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(row.ok for row in self.rows)


def planned(
    major: int, capability: tuple[int, int] | None, names: Sequence[str], precisions: Sequence[str]
) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """Which (model, precision) pairs to build on this TensorRT and GPU, and why the others are left out."""
    run: list[tuple[str, str]] = []
    skipped: list[tuple[str, str, str]] = []
    for name in names:
        model = MODELS[name]()
        for precision in precisions:
            quantized = QUANTIZED.get(name)
            if precision in ("int8", "fp8") and quantized != precision:
                skipped.append((name, precision, "needs a model quantized for it"))
                continue
            if quantized and precision not in ("auto", quantized):
                skipped.append((name, precision, f"Q/DQ ({quantized}) models are built auto or {quantized}"))
                continue
            needed = NEEDS_CAPABILITY.get(precision)
            if needed and capability is not None and capability < needed:
                skipped.append((name, precision, f"needs compute capability {needed[0]}.{needed[1]}"))
                continue
            try:
                precision_plan(major, precision, model)
            except ModelError as error:
                skipped.append((name, precision, error.reason))
                continue
            run.append((name, precision))
    return run, skipped


def _io_check(plan: Path, signature: Any, trt: Any, cudart: Any) -> str:
    engine = TensorRTModel(plan.read_bytes(), trt, cudart)
    try:
        found = {
            name: ENGINE_TO_ONNX.get(dtype_name(engine.engine.get_tensor_dtype(name)), "?")
            for name in engine.inputs + engine.outputs
        }
        kinds = {"inputs": engine.inputs, "outputs": engine.outputs}
    finally:
        engine.close()
    expected = {t.name: t.dtype for _, t in signature.tensors()}
    problems = [
        f"{name}: engine {found.get(name, 'missing')}, onnx {dtype}"
        for name, dtype in expected.items()
        if found.get(name) != dtype
    ]
    problems += [f"{name}: not in the ONNX signature" for name in found if name not in expected]
    if [t.name for t in signature.inputs] != kinds["inputs"]:
        problems.append(f"inputs {kinds['inputs']} vs {[t.name for t in signature.inputs]}")
    return "ok" if not problems else "; ".join(problems)


def dtype_name(trt_type: Any) -> str:
    return str(getattr(trt_type, "name", str(trt_type).rsplit(".", 1)[-1]))


def check_one(name: str, precision: str, work: Path, trt: Any, cudart: Any, gpu_product: str | None) -> Row:
    atol, rtol = TOLERANCES[precision]
    row = Row(name, precision, tolerance=(atol, rtol))
    onnx_path = write_model(MODELS[name](), work / "models" / f"{name}.onnx")
    cache_dir = work / "cache"
    engine = EngineSpec(
        precision=precision, profiles=PROFILES.get(name), parity=ParitySpec(atol=atol, rtol=rtol, samples=6)
    )
    label = f"{name}-{precision}".replace("_", "-")
    request = ConvertRequest(
        uri=str(onnx_path),
        name=label,
        repository=work / "repository",
        work_dir=work / "work" / label,
        backend="tensorrt",
        engine=engine,
        gpus=1,
        gpu_product=gpu_product,
        cache_dir=cache_dir,
        trt=trt,
        cudart=cudart,
    )
    result = run_conversion(request)
    row.build_seconds = result.build_seconds
    if result.parity is not None:
        row.max_abs, row.max_rel = result.parity.max_abs_error, result.parity.max_rel_error
    if result.error is not None:
        row.error = f"{result.error.reason}: {result.error.message}"[:300]
        return row
    plan = work / "repository" / label / "1" / "model.plan"
    row.plan_kib = plan.stat().st_size / 1024
    signature = inspect_onnx(onnx_path).signature
    row.io_check = _io_check(plan, signature, trt, cudart)
    # The same build again, from the timing cache the first one left (the engine cache is bypassed).
    profiles = derive_profiles(signature, result.max_batch_size or 0, engine.profiles)
    settings = BuildSettings(
        precision=precision,
        profiles=profiles,
        timing_cache=timing_cache_path(cache_dir, str(trt.__version__), gpu_product),
    )
    started = time.monotonic()
    again = build_engine(
        onnx_path, work / "rebuild" / f"{label}.plan", settings, model=onnx.load(onnx_path), trt=trt
    )
    row.rebuild_seconds = time.monotonic() - started
    row.timing_cache = again.timing_cache
    row.ok = row.io_check == "ok" and again.timing_cache == "reused"
    if again.timing_cache != "reused":
        row.error = (
            f"second build did not reuse the timing cache ({again.timing_cache}): {list(again.warnings)}"
        )
    return row


def check(
    work: Path,
    *,
    models: Sequence[str] = tuple(MODELS),
    precisions: Sequence[str] = PRECISIONS,
    trt: Any | None = None,
    cudart: Any | None = None,
    gpu_product: str | None = None,
) -> Report:
    trt = trt if trt is not None else import_tensorrt()
    cudart = cudart if cudart is not None else import_cudart()
    device = cuda_device(cudart)
    gpu_product = gpu_product or detect_gpu_product(cudart)
    report = Report(str(trt.__version__), gpu_product, device[1] if device else None)
    run, report.skipped = planned(tensorrt_major(trt), report.capability, models, precisions)
    for name, precision in run:
        try:
            report.rows.append(check_one(name, precision, work, trt, cudart, gpu_product))
        except ModelError as error:
            report.rows.append(Row(name, precision, error=f"{error.reason}: {error.message}"[:300]))
    return report


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render_table(report: Report) -> str:
    capability = f"{report.capability[0]}.{report.capability[1]}" if report.capability else "unknown"
    lines = [
        f"TensorRT {report.tensorrt} on {report.gpu_product or 'an unknown GPU'} (compute capability"
        f" {capability})",
        "",
        "| model | precision | build s | rebuild s | timing cache | plan KiB | I/O vs ONNX | max abs"
        " | max rel | atol/rtol | result |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report.rows:
        lines.append(
            f"| {row.model} | {row.precision} | {_number(row.build_seconds, '.2f')}"
            f" | {_number(row.rebuild_seconds, '.2f')} | {row.timing_cache or '-'}"
            f" | {_number(row.plan_kib, '.1f')} | {row.io_check or '-'} | {_number(row.max_abs, '.2e')}"
            f" | {_number(row.max_rel, '.2e')} | {row.tolerance[0]:g}/{row.tolerance[1]:g}"
            f" | {'ok' if row.ok else 'FAILED: ' + row.error.replace('|', '/')} |"
        )
    if report.skipped:
        lines += ["", "Not built (the plan does not allow it here):"]
        reasons: dict[str, list[str]] = {}
        for model, precision, why in report.skipped:
            reasons.setdefault(why, []).append(f"{model} {precision}")
        lines += [f"- {why}: {', '.join(pairs)}" for why, pairs in reasons.items()]
    passed = sum(row.ok for row in report.rows)
    lines += ["", f"{passed} of {len(report.rows)} passed"]
    return "\n".join(lines) + "\n"


def tune_engines(report: Report, work: Path, args: argparse.Namespace) -> str:
    """The sweep on each engine that passed at --tune-precisions, the table of default against tuned."""
    from nimify.engine.gpu_tuning import render_tuning, tune_model
    from nimify.triton.tuning import Objective

    objective = Objective("maxThroughput", p99_budget_ms=args.tune_p99_ms)
    precisions = {p for p in args.tune_precisions.split(",") if p}
    tuned = [
        tune_model(
            work / "repository",
            f"{row.model}-{row.precision}".replace("_", "-"),
            objective,
            budget_seconds=args.tune_budget,
            trial_seconds=args.tune_trial_seconds,
        )
        for row in report.rows
        if row.ok and row.precision in precisions
    ]
    return render_tuning(tuned, objective)


def main(argv: Sequence[str] | None = None, *, trt: Any | None = None, cudart: Any | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu-check", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--models", default=",".join(MODELS), help="comma-separated, of: " + ", ".join(MODELS)
    )
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--work", type=Path, help="keep models, plans and caches here (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON")
    parser.add_argument("--gpu-product", help="override the detected product label")
    parser.add_argument(
        "--tune",
        action="store_true",
        help="then tune each engine built at --tune-precisions on the serving image's tritonserver (on PATH):"
        " the default config against the tuned one (nimify.engine.gpu_tuning)",
    )
    parser.add_argument("--tune-precisions", default="auto", help="the precisions whose engines are tuned")
    parser.add_argument("--tune-p99-ms", type=float, default=50.0, help="the objective's p99 budget")
    parser.add_argument("--tune-budget", type=float, default=180.0, help="seconds of sweep per engine")
    parser.add_argument("--tune-trial-seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    precisions = [p for p in args.precisions.split(",") if p]
    unknown = sorted(set(models) - set(MODELS)) + sorted(set(precisions) - set(PRECISIONS))
    if unknown:
        parser.error(f"unknown model or precision: {', '.join(unknown)}")
    with tempfile.TemporaryDirectory(prefix="nimify-gpu-check-") as scratch:
        work = args.work or Path(scratch)
        try:
            report = check(
                work,
                models=models,
                precisions=precisions,
                trt=trt,
                cudart=cudart,
                gpu_product=args.gpu_product,
            )
        except ModelError as error:
            print(f"gpu-check: {error}", file=sys.stderr)
            return 2
        sys.stdout.write(render_table(report))
        if args.tune:
            sys.stdout.write("\n" + tune_engines(report, work, args))
    if args.json:
        args.json.write_text(json.dumps({**asdict(report), "ok": report.ok}, indent=2) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
