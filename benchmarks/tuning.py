"""Tuning benchmark: what tuned serving (nimify.triton.tuning) gains over Nimify's default Triton config, for
models of different shapes, on this machine, against the ceiling ONNX Runtime reaches in process.

Models (each with a batch dimension, served with max_batch_size 8):
- `cnn`: SqueezeNet 1.1 from the ONNX backend corpus in the onnx wheel (`light/light_squeezenet`, model-zoo
  graph with generated weights), its fixed batch of 1 renamed to a dynamic `batch` (the graph is fully
  convolutional up to a global pooling, so nothing else fixes it): one [3, 224, 224] image per row;
- `mlp`: nimify.model.samples.build_mlp (16 → 32 → 4): a model whose compute is negligible next to a request;
- `encoder`: a transformer encoder written with onnxscript (the library PyTorch's ONNX exporter emits its
  graphs with): token and position embeddings, then two layers of 4-head self-attention (MatMul, Softmax)
  and a GELU feed-forward block with LayerNormalization; 64 token ids per row, d_model 128, vocabulary 1000.

For each: its production config (platform onnxruntime_onnx, Nimify's default dynamic batching, one
instance; the local tritonserver runs it through the Python-based onnxruntime backend) in a tritonserver in
explicit model-control mode, then
- the sweep: SearchSpace.default_for(8) (36 candidates: instances 1/2/4, preferred size none (Triton then
  prefers 8)/2/4, queue delay 0/100/500/2000 µs; each at concurrency 1, 4 and 16), maximum throughput
  within the model's p99 budget, for `--budget` seconds (the sweep measures its leader and the default
  again itself, judges each by its worse runs and keeps the default unless the leader beats it by 5%); its
  wall time is the "tuning" column;
- the confirmation: the default and the chosen config measured again, back to back, `--confirm-seconds` per
  concurrency level (the chosen config's own sweep figure is the best of many noisy runs: it flatters it).
  "Throughput at the budget" is the highest infer/s among the levels whose p99 is within the budget;
- the ceiling: ONNX Runtime in this process (one session, default threads, one caller), batch sizes 1 to
  64; the best rows/s. Triton's figures count one-row requests sent over HTTP by a client on the same cores.

Client, server and ONNX Runtime share this machine's cores: the figures are only comparable on a quiet
machine (the load average is printed). `hack/bench-tuning` runs it (`--help` for the options); the figures
are measurements, never assertions: the smoke test (tests/benchmarks) only checks that each was measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime
from onnx import numpy_helper
from onnxscript import FLOAT, INT64, script
from onnxscript import opset18 as op
from tests.onnx_corpus import corpus_root

from benchmarks.console import load, recorded, say
from nimify.cli import tune
from nimify.model.inspection import inspect_model
from nimify.model.samples import build_mlp, write_model
from nimify.triton.local_server import LocalTriton
from nimify.triton.tuning import (
    Measurement,
    Objective,
    SearchSpace,
    meets,
    run_sweep,
)

MAX_BATCH_SIZE = 8
CEILING_BATCHES = (1, 2, 4, 8, 16, 32, 64)

# --- the models --------------------------------------------------------------------------------------------

SEQUENCE, WIDTH, HEADS, FEED_FORWARD, VOCABULARY = 64, 128, 4, 512, 1000
HEAD_WIDTH = WIDTH // HEADS


@script()  # type: ignore[untyped-decorator]
def encoder_layer(
    x: FLOAT, wqkv: FLOAT, wo: FLOAT, w1: FLOAT, w2: FLOAT, s1: FLOAT, b1: FLOAT, s2: FLOAT, b2: FLOAT
) -> FLOAT:
    """Post-norm self-attention and feed-forward: [batch, sequence, width] in and out."""
    qkv = op.MatMul(x, wqkv)
    split = op.Reshape(qkv, op.Constant(value_ints=[0, 0, 3, HEADS, HEAD_WIDTH]))
    heads = op.Transpose(split, perm=[2, 0, 3, 1, 4])  # [3, batch, heads, sequence, head width]
    zero = op.Constant(value_ints=[0])
    q = op.Squeeze(op.Slice(heads, zero, op.Constant(value_ints=[1])), zero)
    k = op.Squeeze(op.Slice(heads, op.Constant(value_ints=[1]), op.Constant(value_ints=[2])), zero)
    v = op.Squeeze(op.Slice(heads, op.Constant(value_ints=[2]), op.Constant(value_ints=[3])), zero)
    scale = op.Constant(value_float=float(HEAD_WIDTH) ** 0.5)
    scores = op.Div(op.MatMul(q, op.Transpose(k, perm=[0, 1, 3, 2])), scale)
    context = op.MatMul(op.Softmax(scores, axis=-1), v)
    merged = op.Reshape(op.Transpose(context, perm=[0, 2, 1, 3]), op.Constant(value_ints=[0, 0, WIDTH]))
    attended = op.LayerNormalization(op.Add(x, op.MatMul(merged, wo)), s1, b1, axis=-1)
    up = op.MatMul(attended, w1)
    erf = op.Erf(op.Div(up, op.Constant(value_float=2.0**0.5)))
    gelu = op.Mul(op.Mul(up, op.Constant(value_float=0.5)), op.Add(erf, op.Constant(value_float=1.0)))
    return op.LayerNormalization(op.Add(attended, op.MatMul(gelu, w2)), s2, b2, axis=-1)


@script()  # type: ignore[untyped-decorator]
def encoder(
    input_ids: INT64,
    embeddings: FLOAT,
    positions: FLOAT,
    wqkv0: FLOAT,
    wo0: FLOAT,
    w10: FLOAT,
    w20: FLOAT,
    s10: FLOAT,
    b10: FLOAT,
    s20: FLOAT,
    b20: FLOAT,
    wqkv1: FLOAT,
    wo1: FLOAT,
    w11: FLOAT,
    w21: FLOAT,
    s11: FLOAT,
    b11: FLOAT,
    s21: FLOAT,
    b21: FLOAT,
) -> FLOAT:
    x = op.Add(op.Gather(embeddings, input_ids), positions)
    x = encoder_layer(x, wqkv0, wo0, w10, w20, s10, b10, s20, b20)
    last_hidden_state = encoder_layer(x, wqkv1, wo1, w11, w21, s11, b11, s21, b21)
    return last_hidden_state


def write_encoder(directory: Path) -> Path:
    """The encoder with seeded weights: exported with the weights as inputs, which then become initializers
    (onnxscript traces no Python loop over layers; one layer function called twice keeps it readable)."""
    rng = np.random.default_rng(3)

    def weight(*shape: int, scale: float | None = None) -> npt.NDArray[np.float32]:
        return (rng.standard_normal(shape) * (scale or shape[0] ** -0.5)).astype(np.float32)

    weights = {
        "embeddings": weight(VOCABULARY, WIDTH, scale=1.0),
        "positions": weight(SEQUENCE, WIDTH, scale=0.1),
    }
    for layer in range(2):
        weights |= {
            f"wqkv{layer}": weight(WIDTH, 3 * WIDTH),
            f"wo{layer}": weight(WIDTH, WIDTH),
            f"w1{layer}": weight(WIDTH, FEED_FORWARD),
            f"w2{layer}": weight(FEED_FORWARD, WIDTH),
            f"s1{layer}": np.ones(WIDTH, np.float32),
            f"b1{layer}": np.zeros(WIDTH, np.float32),
            f"s2{layer}": np.ones(WIDTH, np.float32),
            f"b2{layer}": np.zeros(WIDTH, np.float32),
        }
    types = [INT64["batch", SEQUENCE], *(FLOAT[tuple(value.shape)] for value in weights.values())]
    model = encoder.to_model_proto(input_types=types, output_types=[FLOAT["batch", SEQUENCE, WIDTH]])
    inputs = [value for value in model.graph.input if value.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in weights.items())
    onnx.checker.check_model(model)
    path = directory / "encoder.onnx"
    onnx.save(model, str(path))
    return path


def write_cnn(directory: Path) -> Path:
    """SqueezeNet 1.1 of the ONNX corpus with a dynamic batch (its value_info, which fixes 1, dropped)."""
    model = onnx.load(str(corpus_root() / "light" / "light_squeezenet.onnx"))
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del model.graph.value_info[:]
    path = directory / "squeezenet.onnx"
    onnx.save(model, str(path))
    return path


def write_mlp(directory: Path) -> Path:
    return write_model(build_mlp(), directory / "mlp.onnx")


@dataclass(frozen=True)
class BenchModel:
    name: str
    write: Callable[[Path], Path]
    p99_budget_ms: float  # a few times one request's latency here: room for batching to pay off


MODELS = {
    model.name: model
    for model in (
        BenchModel("cnn", write_cnn, 150.0),
        BenchModel("mlp", write_mlp, 10.0),
        BenchModel("encoder", write_encoder, 50.0),
    )
}


# --- measuring ---------------------------------------------------------------------------------------------

_ORT_NUMPY = {"tensor(float)": np.float32, "tensor(int64)": np.int64}


def ceiling(path: Path, seconds: float) -> dict[str, Any]:
    """ONNX Runtime in this process: rows/s at each batch size of CEILING_BATCHES, one caller."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    rows_per_s: dict[int, float] = {}
    for batch in CEILING_BATCHES:
        feeds = {}
        for tensor in session.get_inputs():
            shape = [batch, *(d if isinstance(d, int) else 1 for d in tensor.shape[1:])]
            dtype = _ORT_NUMPY[tensor.type]
            data = rng.integers(0, 8, shape) if dtype is np.int64 else rng.standard_normal(shape)
            feeds[tensor.name] = data.astype(dtype)
        session.run(None, feeds)  # the first run allocates
        runs, started = 0, time.monotonic()
        while time.monotonic() - started < seconds:
            session.run(None, feeds)
            runs += 1
        rows_per_s[batch] = runs * batch / (time.monotonic() - started)
    best = max(rows_per_s, key=lambda b: rows_per_s[b])
    return {"rows_per_s": round(rows_per_s[best], 1), "batch": best, "by_batch": rows_per_s}


def at_budget(measurements: Sequence[Measurement], objective: Objective) -> float | None:
    """The highest throughput among the runs within the objective's p99 budget; None when none is."""
    within = [m.throughput for m in measurements if meets(m, objective)]
    return max(within) if within else None


@dataclass(frozen=True)
class Options:
    workdir: Path
    budget: float = 60.0
    trial_seconds: float = 2.0
    confirm_seconds: float = 3.0
    ceiling_seconds: float = 1.0
    p99_budget_ms: float | None = None


def write_repository(path: Path, repository: Path, name: str) -> str:
    """The production config the onnxruntime backend's conversion writes (max_batch_size 8, defaults), as
    `nimify tune` writes it; the inputs, described."""
    tune.write_repository(path, repository, name, "onnxruntime", MAX_BATCH_SIZE)
    report = inspect_model(path)
    return "; ".join(f"{t.name} {t.dtype.lower()}{list(t.shape[1:])}" for t in report.signature.inputs)


def run_model(bench: BenchModel, options: Options) -> dict[str, Any]:
    work = options.workdir / bench.name
    work.mkdir(parents=True, exist_ok=True)
    path = bench.write(work)
    inputs = write_repository(path, work / "repository", bench.name)
    objective = Objective("maxThroughput", p99_budget_ms=options.p99_budget_ms or bench.p99_budget_ms)
    say(f"{bench.name}: ONNX Runtime in process, batch sizes {CEILING_BATCHES} (load {load()})")
    ort = ceiling(path, options.ceiling_seconds)
    space = SearchSpace.default_for(MAX_BATCH_SIZE)
    explicit = ["--model-control-mode=explicit", f"--load-model={bench.name}"]
    with LocalTriton(work / "repository", work_dir=work / "server", extra_args=explicit) as server:
        url = server.endpoints.http
        say(f"{bench.name}: tuning for {options.budget:g} s, {objective.describe()} (load {load()})")
        tuning = run_sweep(
            url,
            bench.name,
            space,
            objective,
            budget_seconds=options.budget,
            trial_seconds=options.trial_seconds,
            log=lambda line: say(f"{bench.name}: {line}"),
        )
        # What the operator would serve: the chosen config where it meets the objective, else the default.
        served = tuning.chosen if tuning.met and tuning.chosen is not None else tuning.default
        confirm_space = SearchSpace(
            (served.instances,),
            (served.preferred_batch_sizes,),
            (served.max_queue_delay_us,),
            space.concurrency,
        )
        say(f"{bench.name}: confirming the default and {served.label()} (load {load()})")
        confirmation = run_sweep(
            url,
            bench.name,
            confirm_space,
            objective,
            budget_seconds=3600,
            trial_seconds=options.confirm_seconds,
            confirm=False,  # this is the confirmation: one longer run each, back to back
        )
    return {
        "model": bench.name,
        "inputs": inputs,
        "p99_budget_ms": objective.p99_budget_ms,
        "default": tuning.default.label(),
        "tuned": served.label(),
        "default_infer_per_s": at_budget(confirmation.of(confirmation.default), objective),
        "tuned_infer_per_s": at_budget(confirmation.of(served), objective),
        "sweep_capacity": tuning.capacity,
        "met": tuning.met,
        "onnxruntime_rows_per_s": ort["rows_per_s"],
        "onnxruntime_batch": ort["batch"],
        "onnxruntime_by_batch": {str(b): round(v, 1) for b, v in ort["by_batch"].items()},
        "tuning_seconds": round(tuning.seconds, 1),
        "trials": tuning.trials,
        "space_size": space.size,
        "sampler": tuning.sampler,
        "partial": tuning.partial,
        "tuning": tuning.to_json(),
        "confirmation": confirmation.to_json(),
    }


# --- reporting ---------------------------------------------------------------------------------------------


def _figure(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def table(runs: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        "| model | input per row | p99 budget | default infer/s | tuned infer/s | tuned config"
        " | ONNX Runtime in process rows/s (batch) | tuning (trials of space) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        default, tuned = run["default_infer_per_s"], run["tuned_infer_per_s"]
        kept = run["tuned"] == run["default"]
        gain = f" ({(tuned / default - 1) * 100:+.0f}%)" if default and tuned and not kept else ""
        config = f"{run['tuned']} (the default: kept)" if kept else run["tuned"]
        lines.append(
            f"| {run['model']} | {run['inputs']} | {run['p99_budget_ms']:g} ms | {_figure(default)}"
            f" | {_figure(tuned)}{gain} | {config} | {run['onnxruntime_rows_per_s']:.1f}"
            f" ({run['onnxruntime_batch']}) | {run['tuning_seconds']:.0f} s ({run['trials']} of"
            f" {run['space_size']}, {run['sampler'] or 'none'}) |"
        )
    return "\n".join(lines)


def run_all(names: Sequence[str], options: Options) -> dict[str, Any]:
    settings = {
        "budget_s": options.budget,
        "trial_s": options.trial_seconds,
        "confirm_s": options.confirm_seconds,
    }
    return recorded(settings, lambda: [run_model(MODELS[name], options) for name in names])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/bench-tuning", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated: {', '.join(MODELS)}")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of tuning per model (default 60)")
    parser.add_argument("--trial-seconds", type=float, default=2.0, help="per concurrency level in the sweep")
    parser.add_argument("--confirm-seconds", type=float, default=3.0, help="per level in the confirmation")
    parser.add_argument("--ceiling-seconds", type=float, default=1.0, help="per ONNX Runtime batch size")
    parser.add_argument(
        "--p99-budget-ms", type=float, help="one p99 budget for every model (default: each's)"
    )
    parser.add_argument("--output", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--workdir", type=Path, help="models, repositories, server logs (default: temporary)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if unknown := sorted(set(names) - set(MODELS)):
        parser.error(f"unknown models {', '.join(unknown)}: choose from {', '.join(MODELS)}")
    for option in ("budget", "trial_seconds", "confirm_seconds", "ceiling_seconds"):
        if not 0 < getattr(args, option) <= 3600:
            parser.error(f"--{option.replace('_', '-')} must be in (0, 3600] seconds")
    if args.p99_budget_ms is not None and args.p99_budget_ms <= 0:
        parser.error("--p99-budget-ms must be positive")
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="nimify-bench-"))
        )
        options = Options(
            workdir,
            args.budget,
            args.trial_seconds,
            args.confirm_seconds,
            args.ceiling_seconds,
            args.p99_budget_ms,
        )
        results = run_all(names, options)
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))
    print(table(results["runs"]) + "\n")
    print(
        f"{results['cpus']} CPUs; load average at start {results['load_at_start']}, at end"
        f" {results['load_at_end']}; tuning {args.budget:g} s per model, {args.trial_seconds:g} s per level;"
        f" default and tuned confirmed at {args.confirm_seconds:g} s per level (concurrency 1, 4, 16):"
        " infer/s at the budget is the best level whose p99 is within it (— none)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
