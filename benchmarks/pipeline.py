"""Pipeline benchmark: the latency and throughput of a pipeline (models chained) served three ways here.

Ways, for each pipeline of tests/pipelines.py (`chain`: three batching members; `fan`: a fan-out/fan-in DAG):
- ensemble: every member and the Triton ensemble in one local tritonserver; the client sends one request;
- chained servers: each member in a tritonserver of its own (as separate NimServices would be); the client
  sends each step's request in the spec's order, feeding it the answers it read so far, over HTTP;
- onnxruntime: `ChainedOnnxRuntime`, the members' ONNX Runtime sessions chained in this process: the floor.

Members get the production config (`onnxruntime_onnx`, which the local tritonserver runs through the
Python-based backend, with dynamic batching where they batch) and the ensemble its rendered config. Before
timing, every way answers the same requests and must agree with the others within `TOLERANCE`.

Each way is measured twice, after `WARMUP` requests per client: latency (p50/p90/p99) at concurrency 1, and
throughput (requests/s and rows/s) at `--concurrency` clients, one thread each, all with the same inputs.
Client and servers share this machine's cores, so the figures are only comparable on a quiet machine (the
load average is printed). `hack/bench-pipeline` runs it (`--help` for the options); the figures are
measurements, never assertions: the smoke test (tests/benchmarks) only checks that every way answered.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import tritonclient.http as httpclient
from tests.pipelines import ExportedPipeline, export_chain, export_fan
from tritonclient.utils import np_to_triton_dtype

from benchmarks.console import load, recorded, say
from nimify.api import TritonSpec
from nimify.api.spec import PIPELINE_INPUT, PipelineSpec
from nimify.api.spec.pipeline import ref_step, ref_tensor
from nimify.engine.pipeline_reference import ChainedOnnxRuntime
from nimify.model.inspection import inspect_model
from nimify.triton.ensemble import Member, plan_ensemble, render_ensemble_config
from nimify.triton.load import LoadResult
from nimify.triton.local_server import LocalTriton
from nimify.triton.model_config import render_model_config
from nimify.triton.repository import write_model_directory

Arrays = dict[str, npt.NDArray[Any]]

PIPELINES: dict[str, Callable[[Path], ExportedPipeline]] = {"chain": export_chain, "fan": export_fan}
BATCHING = TritonSpec.model_validate({"dynamicBatching": {"maxQueueDelayMicroseconds": 100}})
TOLERANCE = 1e-5
WARMUP = 20  # requests per client before a measurement
INPUT_POOL = 8  # distinct requests, sent in turn
PERCENTILES = (50, 90, 99)


# --- the three ways ---------------------------------------------------------------------------------------


class Client(Protocol):
    """One client's connection to a way: not shared between threads."""

    def infer(self, feeds: Mapping[str, npt.NDArray[Any]]) -> Arrays: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Way:
    name: str
    connect: Callable[[], Client]


def _triton_infer(client: httpclient.InferenceServerClient, model: str, feeds: Mapping[str, Any]) -> Arrays:
    inputs = []
    for name, array in feeds.items():
        tensor = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer(model, inputs)  # no outputs named: every output, in binary
    return {o["name"]: result.as_numpy(o["name"]) for o in result.get_response()["outputs"]}


def _http_client(url: str) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url.removeprefix("http://"))


class EnsembleClient:
    """The whole pipeline in one request to the ensemble."""

    def __init__(self, url: str, model: str) -> None:
        self.client = _http_client(url)
        self.model = model

    def infer(self, feeds: Mapping[str, npt.NDArray[Any]]) -> Arrays:
        return _triton_infer(self.client, self.model, feeds)

    def close(self) -> None:
        self.client.close()


class ChainedServersClient:
    """One request per step, to the step's own server, in the spec's order (what a caller of separate
    NimServices does): each step's inputs are answers already read."""

    def __init__(self, pipeline: PipelineSpec, urls: Mapping[str, str]) -> None:
        self.pipeline = pipeline
        self.clients = {member: _http_client(url) for member, url in urls.items()}

    def infer(self, feeds: Mapping[str, npt.NDArray[Any]]) -> Arrays:
        produced: dict[str, Arrays] = {PIPELINE_INPUT: dict(feeds)}
        for step in self.pipeline.steps:
            inputs = {t.name: produced[ref_step(t.source)][ref_tensor(t.source)] for t in step.inputs}
            produced[step.member] = _triton_infer(self.clients[step.member], step.member, inputs)
        return {o.name: produced[ref_step(o.source)][ref_tensor(o.source)] for o in self.pipeline.outputs}

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


class InProcessClient:
    """The floor: ONNX Runtime sessions shared by every thread (a session's run is thread-safe)."""

    def __init__(self, reference: ChainedOnnxRuntime) -> None:
        self.reference = reference

    def infer(self, feeds: Mapping[str, npt.NDArray[Any]]) -> Arrays:
        return self.reference.run(feeds)

    def close(self) -> None:
        pass


# --- serving ----------------------------------------------------------------------------------------------


def write_member(repository: Path, name: str, model: Path, max_batch_size: int) -> Member:
    """A member's model directory as the onnxruntime backend's conversion writes it."""
    report = inspect_model(model)
    config = render_model_config(
        name, report.signature, "onnxruntime_onnx", max_batch_size=max_batch_size, triton=BATCHING, gpus=0
    )
    write_model_directory(repository, name, config, {"model.onnx": model})
    return Member(report.signature, max_batch_size)


def write_ensemble_repository(exported: ExportedPipeline, repository: Path) -> None:
    members = {
        name: write_member(repository, name, path, exported.max_batch_size)
        for name, path in exported.models.items()
    }
    ensemble = plan_ensemble(exported.name, exported.pipeline, members)
    (repository / exported.name / "1").mkdir(parents=True)  # an ensemble's version folder stays empty
    (repository / exported.name / "config.pbtxt").write_text(render_ensemble_config(ensemble))


@contextlib.contextmanager
def serving(repositories: Mapping[str, Path], work: Path) -> Iterator[dict[str, str]]:
    """A tritonserver per repository, started side by side; their HTTP endpoints by the same keys."""
    servers: dict[str, LocalTriton] = {}
    try:
        for key, repository in repositories.items():
            servers[key] = LocalTriton(repository, work_dir=work / f"server-{key}")
            servers[key].start()
        for server in servers.values():
            server.wait_ready()
        yield {key: server.endpoints.http for key, server in servers.items()}
    finally:
        # Side by side too: each takes seconds to unload its models.
        stopping = [threading.Thread(target=server.stop) for server in servers.values()]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()


# --- measuring --------------------------------------------------------------------------------------------


def check_agreement(answers: Mapping[str, Arrays], tolerance: float = TOLERANCE) -> None:
    """Every way's answer against the first's; a served tensor may carry a trailing 1 the reference lacks
    (Triton's dims for a rank-1 output of a batching model). Raises AssertionError naming the difference."""
    (first, expected), *others = answers.items()
    for way, got in others:
        if sorted(got) != sorted(expected):
            raise AssertionError(f"{way} answered {sorted(got)}, {first} answered {sorted(expected)}")
        for name, want in expected.items():
            have = got[name]
            if have.size != want.size:
                raise AssertionError(f"{way}: {name} has shape {have.shape}, {first}'s has {want.shape}")
            difference = np.abs(have.reshape(want.shape).astype(np.float64) - want.astype(np.float64))
            if difference.max(initial=0.0) > tolerance:
                raise AssertionError(
                    f"{way} and {first} disagree on {name}: largest difference {difference.max():.3g}"
                    f" > {tolerance:g}"
                )


def measure(
    way: Way, requests: Sequence[Arrays], *, duration: float, concurrency: int, rows: int
) -> LoadResult:
    """`concurrency` clients, one thread each, sending `requests` in turn for `duration` seconds after
    `WARMUP` requests each (connections open and warm before the clock starts). A failed request fails the
    measurement: a benchmark with errors measures the wrong thing."""
    result = LoadResult(duration, concurrency, rows)
    clock: dict[str, float] = {}

    def start_clock() -> None:  # run once, by the last client to reach the barrier
        clock["start"] = time.monotonic()

    started = threading.Barrier(concurrency, action=start_clock)
    errors: list[BaseException] = []

    def client_loop(index: int) -> None:
        client = way.connect()
        try:
            for sent in range(WARMUP):
                client.infer(requests[(index + sent) % len(requests)])
            started.wait()
            deadline = clock["start"] + duration
            sent = index
            while (now := time.monotonic()) < deadline:
                client.infer(requests[sent % len(requests)])
                result.latencies_seconds.append(time.monotonic() - now)
                sent += concurrency
        finally:
            client.close()

    def run(index: int) -> None:
        try:
            client_loop(index)
        except threading.BrokenBarrierError:
            pass  # another client failed before the start, and said why
        except BaseException as error:
            errors.append(error)
            started.abort()

    threads = [threading.Thread(target=run, args=(i,), name=f"{way.name}-{i}") for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{way.name}: a request failed") from errors[0]
    result.duration_seconds = time.monotonic() - clock["start"]
    return result


def figures(latency: LoadResult, throughput: LoadResult) -> dict[str, Any]:
    return {
        "latency_ms": {f"p{q}": round(latency.percentile_ms(q) or 0.0, 3) for q in PERCENTILES},
        "latency_requests": latency.requests,
        "requests_per_s": round(throughput.throughput, 1),
        "rows_per_s": round(throughput.throughput * throughput.batch_size, 1),
        "throughput_requests": throughput.requests,
        "concurrency": throughput.concurrency,
    }


@dataclass(frozen=True)
class Options:
    workdir: Path
    duration: float = 10.0
    concurrency: int = 4


def run_pipeline(name: str, options: Options) -> dict[str, Any]:
    """The three ways of one pipeline: answers checked against each other, then measured one at a time (only
    the way measured has servers running)."""
    work = options.workdir / name
    exported = PIPELINES[name](work / "models")
    pipeline = exported.pipeline
    requests = [exported.features(seed) for seed in range(INPUT_POOL)]
    ensemble_repository = work / "ensemble"
    write_ensemble_repository(exported, ensemble_repository)
    member_repositories = {member: work / f"member-{member}" for member in exported.models}
    for member, repository in member_repositories.items():
        write_member(repository, member, exported.models[member], exported.max_batch_size)
    reference = ChainedOnnxRuntime(pipeline, exported.models)
    floor = Way("onnxruntime in process", lambda: InProcessClient(reference))

    def answer(way: Way) -> list[Arrays]:
        client = way.connect()
        try:
            return [client.infer(request) for request in requests]
        finally:
            client.close()

    answers = {floor.name: answer(floor)}  # every request of the pool, by way
    measured: dict[str, dict[str, Any]] = {}

    def measure_way(way: Way) -> None:
        answers[way.name] = answer(way)
        for index in range(len(requests)):
            check_agreement({w: answered[index] for w, answered in answers.items()})
        say(f"{name}: {way.name}: latency at concurrency 1 for {options.duration:g} s (load {load()})")
        latency = measure(way, requests, duration=options.duration, concurrency=1, rows=exported.batch)
        say(f"{name}: {way.name}: throughput at concurrency {options.concurrency} (load {load()})")
        throughput = measure(
            way, requests, duration=options.duration, concurrency=options.concurrency, rows=exported.batch
        )
        measured[way.name] = figures(latency, throughput)

    say(f"{name}: starting the ensemble's tritonserver")
    with serving({"ensemble": ensemble_repository}, work) as urls:
        measure_way(Way("triton ensemble", lambda: EnsembleClient(urls["ensemble"], exported.name)))
    say(f"{name}: starting {len(member_repositories)} tritonservers, one per member")
    with serving(member_repositories, work) as urls:
        measure_way(Way("chained servers (HTTP)", lambda: ChainedServersClient(pipeline, urls)))
    measure_way(floor)
    return {
        "pipeline": name,
        "members": len(exported.models),
        "rows_per_request": exported.batch,
        "ways": measured,
    }


def table(run: Mapping[str, Any]) -> str:
    concurrency = next(iter(run["ways"].values()))["concurrency"]
    lines = [
        f"{run['pipeline']}: {run['members']} members, {run['rows_per_request']} rows per request",
        f"| way | p50 ms | p90 ms | p99 ms | req/s (c={concurrency}) | rows/s (c={concurrency}) |",
        "|---|---|---|---|---|---|",
    ]
    for way, f in run["ways"].items():
        ms = f["latency_ms"]
        lines.append(
            f"| {way} | {ms['p50']:.2f} | {ms['p90']:.2f} | {ms['p99']:.2f}"
            f" | {f['requests_per_s']:.1f} | {f['rows_per_s']:.1f} |"
        )
    return "\n".join(lines)


def run_all(names: Sequence[str], options: Options) -> dict[str, Any]:
    settings = {"duration_s": options.duration, "concurrency": options.concurrency}
    return recorded(settings, lambda: [run_pipeline(name, options) for name in names])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/bench-pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement (default 10)")
    parser.add_argument("--concurrency", type=int, default=4, help="clients for the throughput measurement")
    parser.add_argument("--pipelines", default="chain,fan", help="comma-separated: chain, fan")
    parser.add_argument("--output", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--workdir", type=Path, help="models, repositories, server logs (default: temporary)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.pipelines.split(",") if n.strip()]
    if unknown := sorted(set(names) - set(PIPELINES)):
        parser.error(f"unknown pipelines {', '.join(unknown)}: choose from {', '.join(PIPELINES)}")
    if not 0 < args.duration <= 600:
        parser.error("--duration must be in (0, 600] seconds")
    if not 1 <= args.concurrency <= 64:
        parser.error("--concurrency must be between 1 and 64")
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="nimify-bench-"))
        )
        results = run_all(names, Options(workdir, args.duration, args.concurrency))
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))
    for run in results["runs"]:
        print(table(run) + "\n")
    print(
        f"{results['cpus']} CPUs; load average at start {results['load_at_start']}, at end"
        f" {results['load_at_end']}; {args.duration:g} s per measurement; latency at concurrency 1,"
        " throughput at the concurrency shown (client and servers share the machine)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
