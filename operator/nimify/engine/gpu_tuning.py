"""`hack/gpu-check --tune`: the tuning sweep (nimify.triton.tuning, what a NimService's tuning Job runs) on
the TensorRT engines gpu-check built, served by a real tritonserver with its TensorRT backend on the GPU: the
default config against the tuned one, so the first run on a GPU measures the real gain.

That tritonserver is the serving image's (`tritonserver` on PATH, backends in /opt/tritonserver/backends): run
gpu-check inside `nvcr.io/nvidia/tritonserver:YY.MM-py3` with the TensorRT of that release (`hack/gpu-check
--tensorrt VERSION --tune`). The CPU tests drive the same code with the nvidia-pytriton wheel's server and an
ONNX model (`binary`, `extra_args` and `env` say which server).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from nimify.model.errors import ModelError
from nimify.ports import free_ports
from nimify.triton.config_reader import read_model_config
from nimify.triton.tuning import Candidate, Objective, SearchSpace, TuningResult, meets, run_sweep

#: Up to this long for Triton to start and load a model (TensorRT engines deserialize in seconds).
START_SECONDS = 300.0


@dataclass(frozen=True)
class Tuned:
    model: str
    objective: Objective
    result: TuningResult | None = None
    error: str = ""

    def figures(self) -> tuple[float | None, float | None]:
        """The best throughput that meets the objective with the default config, and with the chosen one."""
        result = self.result
        if result is None:
            return None, None

        def best(candidate: Candidate) -> float | None:
            rows = [m for m in result.of(candidate) if meets(m, self.objective)]
            return max((m.throughput for m in rows), default=None)

        chosen = result.chosen if result.met else None
        return best(result.default), None if chosen is None else best(chosen)


@contextmanager
def tritonserver(
    repository: Path,
    model: str,
    log: Path,
    *,
    binary: str | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """A tritonserver in explicit model-control mode with `model` loaded from `repository`; its HTTP URL."""
    from nimify.cli.tune import wait_until_ready

    server = binary or shutil.which("tritonserver")
    if server is None:
        raise ModelError(
            "TritonNotInstalled",
            "--tune runs the serving image's tritonserver: run gpu-check inside nvcr.io/nvidia/tritonserver",
        )
    http, grpc, metrics = free_ports(3)
    command = [
        server,
        f"--model-repository={repository}",
        "--model-control-mode=explicit",
        f"--load-model={model}",
        "--strict-readiness=true",
        "--http-address=127.0.0.1",
        f"--http-port={http}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={grpc}",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={metrics}",
        *extra_args,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=dict(env or os.environ))
    url = f"http://127.0.0.1:{http}"
    try:
        wait_until_ready(url, model, START_SECONDS)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tune_model(
    repository: Path,
    model: str,
    objective: Objective,
    *,
    budget_seconds: float,
    trial_seconds: float,
    binary: str | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Tuned:
    """The sweep on one model of `repository`, its search space the defaults for its max_batch_size."""
    config = read_model_config((repository / model / "config.pbtxt").read_text())
    space = SearchSpace.default_for(config.max_batch_size)
    try:
        with tritonserver(
            repository, model, repository.parent / f"{model}.tritonserver.log",
            binary=binary, extra_args=extra_args, env=env,
        ) as url:  # fmt: skip
            result = run_sweep(
                url, model, space, objective, budget_seconds=budget_seconds, trial_seconds=trial_seconds
            )
    except (ModelError, RuntimeError, OSError) as error:
        return Tuned(model, objective, error=str(error)[:300])
    return Tuned(model, objective, result)


def render_tuning(rows: Sequence[Tuned], objective: Objective) -> str:
    lines = [
        f"Tuning ({objective.describe()}): the default config against the tuned one, on this GPU",
        "",
        "| engine | default infer/s | tuned infer/s | chosen config | trials | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row.result is None:
            lines.append(f"| {row.model} | - | - | FAILED: {row.error.replace('|', '/')} | - | - |")
            continue
        default, tuned = row.figures()
        chosen = (
            row.result.chosen.label() if row.result.met and row.result.chosen else "none met the objective"
        )
        lines.append(
            f"| {row.model} | {'-' if default is None else f'{default:.1f}'}"
            f" | {'-' if tuned is None else f'{tuned:.1f}'} | {chosen} | {row.result.trials}"
            f" | {row.result.seconds:.0f} |"
        )
    return "\n".join(lines) + "\n"
