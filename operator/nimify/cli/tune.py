"""`nimify tune`: the serving config of a model chosen from profiles measured on a local tritonserver (as
`nimify serve` starts one); `nimify tune-job`, hidden, is the same sweep as the operator's tuning Job runs it,
beside the Triton it measures.

Both run nimify.triton.tuning's sweep; this module only builds what it measures and reports what it chose.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from nimify.cli import app
from nimify.triton.tuning import DEFAULT_MIN_GAIN  # the module imports nothing heavy until a sweep runs

if TYPE_CHECKING:
    from rich.table import Table

    from nimify.triton.tuning import Candidate, Objective, SearchSpace, TuningResult

DOCUMENT_ENV = "NIMIFY_TUNING"
DEFAULT_TERMINATION_LOG = Path("/dev/termination-log")
DEFAULT_WAIT_SECONDS = 600.0  # the Triton beside the Job loads the model first
FAILURE_REASON = "TuningFailed"

# serve's option (cli/pipeline_file.py) in its own words: importing that module brings numpy and onnx into
# the tuning Job's start-up, which needs neither before its first measurement.
MaxBatchSizeOption = Annotated[
    int | None,
    typer.Option(
        "--max-batch-size", min=0, help="Triton's max_batch_size (default: 8 where the model batches)."
    ),
]
Backend = Literal["onnxruntime", "python"]
ObjectiveOption = Literal["max-throughput", "min-latency"]


# --- the option parsers -------------------------------------------------------------------------------------


def parse_ints(text: str, option: str) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4)."""
    try:
        values = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a comma-separated list of integers", param_hint=option
        ) from None
    if not values:
        raise typer.BadParameter("needs at least one value", param_hint=option)
    return values


def parse_size_groups(text: str) -> tuple[tuple[int, ...], ...]:
    """'auto;4;8,16' -> ((), (4,), (8, 16)): groups of preferred batch sizes, 'auto' (or nothing) for none."""
    groups = []
    for group in text.split(";"):
        group = group.strip()
        groups.append(() if group in ("", "auto") else parse_ints(group, "--preferred-batch-sizes"))
    return tuple(groups)


# --- nimify tune --------------------------------------------------------------------------------------------


def write_repository(
    model: Path, target: Path, name: str, backend: Backend, max_batch_size: int | None
) -> int:
    """The model's folder in `target` as the cluster would serve it (onnxruntime: the production config, run
    here by the Python-based onnxruntime backend) or as `nimify serve` does (python); its max_batch_size."""
    from nimify.api import EngineSpec, TritonSpec
    from nimify.model.validation import validate_model
    from nimify.triton.local_repository import repository_from_onnx
    from nimify.triton.model_config import render_model_config, resolve_max_batch_size
    from nimify.triton.repository import write_model_directory

    engine = EngineSpec(backend="onnxruntime", max_batch_size=max_batch_size)
    if backend == "python":
        _, report = repository_from_onnx(model, target, name=name, engine=engine)
        return resolve_max_batch_size(engine, report.batching)
    report = validate_model(model, backend="onnxruntime")
    resolved = resolve_max_batch_size(engine, report.batching)
    config = render_model_config(
        name, report.signature, "onnxruntime_onnx", max_batch_size=resolved, triton=TritonSpec(), gpus=0
    )
    root = model.parent.resolve()
    files: dict[str, Path | str] = {"model.onnx": model}
    files.update({relative: root / relative for relative in report.external_data})
    write_model_directory(target, name, config, files)
    return resolved


def _objective(
    objective: ObjectiveOption, p99_budget_ms: float | None, request_rate: float | None
) -> Objective:
    from nimify.triton.tuning import Objective

    if objective == "max-throughput":
        if request_rate is not None:
            raise typer.BadParameter("applies to --objective min-latency", param_hint="--request-rate")
        return Objective("maxThroughput", p99_budget_ms=p99_budget_ms)
    if p99_budget_ms is not None:
        raise typer.BadParameter("applies to --objective max-throughput", param_hint="--p99-budget-ms")
    return Objective("minLatency", request_rate=request_rate)


def result_table(result: TuningResult, objective: Objective) -> Table:
    """Every measurement, the default's rows and the chosen config's (the closest, when none met the
    objective) marked, in the order measured; a config's second round (the confirmation) marked too."""
    from rich.table import Table

    from nimify.triton.tuning import meets

    table = Table(title=f"objective: {objective.describe()}", title_justify="left")
    table.add_column("config")
    table.add_column("clients", justify="right")
    table.add_column("infer/s", justify="right")
    table.add_column("p50 ms", justify="right")
    table.add_column("p99 ms", justify="right")
    table.add_column("queue µs", justify="right")
    table.add_column("meets", justify="center")
    table.add_column("")
    seen: set[tuple[Candidate, int]] = set()
    for m in result.measurements:
        chosen = "chosen" if result.met else "closest"
        marks = [w for w, c in (("default", result.default), (chosen, result.chosen)) if m.candidate == c]
        if (m.candidate, m.concurrency) in seen:
            marks.append("again")
        seen.add((m.candidate, m.concurrency))
        table.add_row(
            m.candidate.label(),
            str(m.concurrency),
            f"{m.throughput:.1f}",
            f"{m.p50_ms:.2f}",
            f"{m.p99_ms:.2f}",
            f"{m.queue_us:.0f}",
            "yes" if meets(m, objective) else ("failed" if m.failed else "no"),
            ", ".join(marks),
            style="bold" if m.candidate == result.chosen else None,
        )
    return table


def choice_lines(result: TuningResult, objective: Objective, space: SearchSpace) -> list[str]:
    from nimify.triton.tuning import choose

    _, default_met, default_capacity = choose(result.of(result.default), objective, result.default)
    lines = []
    if result.chosen is None:
        lines.append("no config answered every request")
    elif result.met:
        assert result.capacity is not None
        if result.chosen == result.default:
            versus = " (the default: no candidate beat it by the minimum gain)"
        elif default_met and default_capacity:
            versus = f", {(result.capacity / default_capacity - 1) * 100:+.0f}% on the default's"
            versus += f" {default_capacity:.1f}"
        else:
            versus = ", where the default misses the objective"
        lines.append(f"chosen: {result.chosen.label()}: {result.capacity:.1f} infer/s per replica{versus}")
        if result.chosen != result.default:
            lines.append(f"as a NimService's spec.triton: {json.dumps(spec_fields(result.chosen))}")
    else:
        lines.append(
            f"no config meets the objective: the closest is {result.chosen.label()}; the default config stays"
        )
    if result.confirmed:
        lines.append(
            "the choice and the default were measured again, back to back: each counts its worse runs"
        )
    covered = result.trials + (1 if result.default in space.candidates() else 0)
    ended = "the budget ran out (partial)" if result.partial else "the space was covered"
    sampler = f" ({result.sampler})" if result.sampler else ""
    lines.append(
        f"{result.trials} trials{sampler} after the default: {covered} of the space's {space.size} candidates"
        f" in {result.seconds:.0f} s; {ended}"
    )
    lines.extend(f"failed trial: {error}" for error in result.errors)
    return lines


def spec_fields(candidate: Candidate) -> dict[str, Any]:
    """The NimService fields (spec.triton) that serve the candidate."""
    batching: dict[str, Any] = {"maxQueueDelayMicroseconds": candidate.max_queue_delay_us}
    if candidate.preferred_batch_sizes:
        batching["preferredBatchSizes"] = list(candidate.preferred_batch_sizes)
    return {"instancesPerGpu": candidate.instances, "dynamicBatching": batching}


@app.command("tune")
def tune_command(
    model: Annotated[Path, typer.Argument(help="An ONNX file.", exists=True, dir_okay=False)],
    name: Annotated[str | None, typer.Option("--name", help="Triton model name (default: the stem).")] = None,
    backend: Annotated[
        Backend,
        typer.Option(
            "--backend",
            help="onnxruntime: the config the cluster serves (platform onnxruntime_onnx); python: as nimify"
            " serve writes it.",
        ),
    ] = "onnxruntime",
    max_batch_size: MaxBatchSizeOption = None,
    objective: Annotated[ObjectiveOption, typer.Option("--objective")] = "max-throughput",
    p99_budget_ms: Annotated[
        float | None, typer.Option("--p99-budget-ms", min=0.001, help="max-throughput: the p99 allowed.")
    ] = None,
    request_rate: Annotated[
        float | None,
        typer.Option("--request-rate", min=0.001, help="min-latency: infer/s the config must reach."),
    ] = None,
    instances: Annotated[str | None, typer.Option("--instances", help="e.g. 1,2,4")] = None,
    preferred_batch_sizes: Annotated[
        str | None,
        typer.Option(
            "--preferred-batch-sizes", help="groups split by ';', 'auto' for none: e.g. 'auto;4;8,16'"
        ),
    ] = None,
    queue_delays: Annotated[
        str | None, typer.Option("--queue-delays", help="max queue delays in µs, e.g. 0,100,1000")
    ] = None,
    concurrency: Annotated[str | None, typer.Option("--concurrency", help="e.g. 1,4,16")] = None,
    budget: Annotated[float, typer.Option("--budget", min=1, help="Seconds for the whole sweep.")] = 120.0,
    trial_seconds: Annotated[
        float, typer.Option("--trial-seconds", min=0.1, max=600, help="Seconds per concurrency level.")
    ] = 3.0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    min_gain: Annotated[
        float,
        typer.Option(
            "--min-gain", min=0, max=1, help="Keep the default unless a config beats it by this fraction."
        ),
    ] = DEFAULT_MIN_GAIN,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write the result (TuningResult JSON) here.")
    ] = None,
    ready_timeout: Annotated[float, typer.Option("--ready-timeout")] = 120.0,
) -> None:
    """Choose MODEL's Triton config (instances, preferred batch sizes, queue delay) from profiles measured
    on a local tritonserver: the default config first, then candidates while --budget lasts; prints every
    measurement and the choice. The figures are this machine's: tune on the hardware that serves."""
    import tempfile

    from rich.console import Console
    from rich.markup import escape

    from nimify.cli.failures import fail, reported_failures, stderr
    from nimify.triton.local_repository import model_name_for
    from nimify.triton.local_server import LocalTriton
    from nimify.triton.tuning import run_sweep

    chosen_objective = _objective(objective, p99_budget_ms, request_rate)
    axes = Axes(
        parse_ints(instances, "--instances") if instances else None,
        parse_size_groups(preferred_batch_sizes) if preferred_batch_sizes else None,
        parse_ints(queue_delays, "--queue-delays") if queue_delays else None,
        parse_ints(concurrency, "--concurrency") if concurrency else None,
    )
    served = name or model_name_for(model)
    with reported_failures(), tempfile.TemporaryDirectory(prefix="nimify-tune-") as scratch:
        repository = Path(scratch) / "repository"
        resolved = write_repository(model, repository, served, backend, max_batch_size)
        try:
            space = axes.space(resolved)
        except ValueError as error:
            raise fail("InvalidArgument", str(error)) from None
        server = LocalTriton(
            repository, extra_args=["--model-control-mode=explicit", f"--load-model={served}"]
        )
        server.start()
        try:
            with stderr.status("starting tritonserver"):
                server.wait_ready(ready_timeout)
            stderr.print(
                f"[dim]tuning {escape(served)} (max_batch_size {resolved}): {space.size} candidates,"
                f" concurrency {', '.join(map(str, space.concurrency))}, {trial_seconds:g} s each,"
                f" budget {budget:g} s[/]"
            )
            try:
                result = run_sweep(
                    server.endpoints.http,
                    served,
                    space,
                    chosen_objective,
                    budget_seconds=budget,
                    trial_seconds=trial_seconds,
                    seed=seed,
                    log=lambda line: stderr.print(f"[dim]{escape(line)}[/]"),
                    min_gain=min_gain,
                )
            except ValueError as error:
                raise fail("InvalidArgument", str(error)) from None
        finally:
            server.stop()
    # A log or a pipe gets the table whole, not folded into 80 columns.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 132)
    console.print(result_table(result, chosen_objective))
    for line in choice_lines(result, chosen_objective, space):
        console.print(escape(line))
    if json_file is not None:
        json_file.write_text(json.dumps(result.to_json(), indent=2) + "\n")


@dataclass(frozen=True)
class Axes:
    """The search space's axes given on the command line; None keeps SearchSpace.default_for's."""

    instances: tuple[int, ...] | None
    preferred_batch_sizes: tuple[tuple[int, ...], ...] | None
    max_queue_delays_us: tuple[int, ...] | None
    concurrency: tuple[int, ...] | None

    def space(self, max_batch_size: int) -> SearchSpace:
        """ValueError where the model's max_batch_size rules a value out."""
        from nimify.triton.tuning import SearchSpace, check_space

        default = SearchSpace.default_for(max_batch_size)
        space = SearchSpace(
            self.instances or default.instances,
            self.preferred_batch_sizes or default.preferred_batch_sizes,
            self.max_queue_delays_us or default.max_queue_delays_us,
            self.concurrency or default.concurrency,
        )
        check_space(space, max_batch_size)
        return space


# --- nimify tune-job ----------------------------------------------------------------------------------------


def wait_until_ready(url: str, model: str, seconds: float) -> None:
    """Until Triton at `url` is ready and has `model` ready; RuntimeError naming which was not."""
    import httpx

    deadline = time.monotonic() + seconds
    waiting = "the server"
    with httpx.Client(base_url=url.rstrip("/"), timeout=5.0) as client:
        while True:
            try:
                if client.get("/v2/health/live").status_code == 200:
                    waiting = f"model {model}"
                    if client.get(f"/v2/models/{model}/ready").status_code == 200:
                        return
            except httpx.HTTPError:
                pass
            if time.monotonic() >= deadline:
                raise RuntimeError(f"{waiting} at {url} was not ready within {seconds:g} s")
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def termination_message(result: TuningResult | None, line: str) -> str:
    """The line as the operator reads it (engine/result.py's encoding): whole, compressed, or with only the
    default's and the chosen config's measurements; never a cut JSON text. (A failure's line always fits:
    its message is cut to 2000 characters.)"""
    from nimify.engine.result import fitted_message

    if (fitted := fitted_message(line)) is not None or result is None:
        return fitted or line
    payload = json.loads(line)
    payload["tuning"] = result.essentials().to_json()
    if (fitted := fitted_message(json.dumps(payload, separators=(",", ":")))) is not None:
        return fitted
    payload["tuning"] |= {"measurements": [], "omitted": len(result.measurements)}
    return json.dumps(payload, separators=(",", ":"))


@dataclass(frozen=True)
class JobDocument:
    """NIMIFY_TUNING: what to tune and how; `cache_file`, where a Job of the same `key` leaves its result
    for the next (the engine cache), is optional."""

    url: str
    model: str
    space: SearchSpace
    objective: Objective
    budget_seconds: float
    trial_seconds: float
    wait_seconds: float
    seed: int
    min_gain: float
    cache_file: Path | None
    key: str | None

    @classmethod
    def from_env(cls, text: str | None) -> JobDocument:
        """ValueError for a document that is not one."""
        from nimify.triton.tuning import Objective, SearchSpace

        if text is None:
            raise ValueError(f"{DOCUMENT_ENV} is not set")
        try:
            document = json.loads(text)
            cache_file, key = document.get("cacheFile"), document.get("key")
            return cls(
                url=str(document["url"]),
                model=str(document["model"]),
                space=SearchSpace.from_json(document["space"]),
                objective=Objective.from_json(document["objective"]),
                budget_seconds=float(document["budgetSeconds"]),
                trial_seconds=float(document.get("trialSeconds", 3.0)),
                wait_seconds=float(document.get("waitSeconds", DEFAULT_WAIT_SECONDS)),
                seed=int(document.get("seed", 0)),
                min_gain=float(document.get("minGain", DEFAULT_MIN_GAIN)),
                cache_file=None if cache_file is None else Path(cache_file),
                key=None if key is None else str(key),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            detail = f"lacks {error}" if isinstance(error, KeyError) else str(error)
            raise ValueError(f"{DOCUMENT_ENV} is not a tuning document: {detail}") from None


def cached_result(document: JobDocument) -> TuningResult | None:
    """The result a Job of the same key left in the cache file; None when there is none that reads."""
    from nimify.triton.tuning import TuningResult

    if document.cache_file is None:
        return None
    try:
        stored = json.loads(document.cache_file.read_text())
        if stored.get("key") != document.key:
            return None
        return TuningResult.from_json(stored["tuning"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def store_result(document: JobDocument, result: TuningResult) -> None:
    """The result in the cache file (written aside, then renamed: a reader never sees half of it). A cache
    that cannot be written costs the next Job a sweep, not this one its result."""
    if document.cache_file is None:
        return
    path = document.cache_file
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging.write_text(json.dumps({"key": document.key, "tuning": result.to_json()}))
        staging.replace(path)
    except OSError as error:
        print(f"the result was not cached in {path}: {error}", file=sys.stderr, flush=True)
        staging.unlink(missing_ok=True)


def run_job(document: JobDocument) -> TuningResult:
    """The sweep the document asks for, once the server and the model are ready."""
    from nimify.triton.tuning import run_sweep

    wait_until_ready(document.url, document.model, document.wait_seconds)
    result = run_sweep(
        document.url,
        document.model,
        document.space,
        document.objective,
        budget_seconds=document.budget_seconds,
        trial_seconds=document.trial_seconds,
        seed=document.seed,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        min_gain=document.min_gain,
    )
    store_result(document, result)
    return result


@app.command("tune-job", hidden=True)
def tune_job_command(
    termination_log: Annotated[
        Path | None,
        typer.Option(help="Where the result goes too (default: /dev/termination-log where it exists)."),
    ] = None,
) -> None:
    """Tune the model of the Triton beside this Job, as NIMIFY_TUNING says: {"url", "model", "space",
    "objective", "budgetSeconds", "trialSeconds", "waitSeconds", "minGain", "cacheFile", "key"}; or report
    the result a Job of the same key left in the cache file ("cached": true). Prints one JSON line ({"ok":
    true, "tuning": ...} or {"ok": false, "error": {"reason": "TuningFailed", ...}}); exits 1 on failure."""
    result: TuningResult | None = None
    payload: dict[str, Any]
    try:
        document = JobDocument.from_env(os.environ.get(DOCUMENT_ENV))
        if (result := cached_result(document)) is not None:
            payload = {"ok": True, "tuning": result.to_json(), "cached": True}
        else:
            result = run_job(document)
            payload = {"ok": True, "tuning": result.to_json()}
    except Exception as error:  # the Job's one answer: its reason and what went wrong
        known = isinstance(error, ValueError | RuntimeError)  # ours: they say what they are
        message = str(error) if known else f"{type(error).__name__}: {error}"
        payload = {"ok": False, "error": {"reason": FAILURE_REASON, "message": message[:2000]}}
    line = json.dumps(payload, separators=(",", ":"))
    typer.echo(line)
    target = termination_log or (DEFAULT_TERMINATION_LOG if DEFAULT_TERMINATION_LOG.exists() else None)
    if target is not None:
        target.write_text(termination_message(result, line))
    if not payload["ok"]:
        sys.exit(1)
