"""`nimify tune` on a local tritonserver, and `nimify tune-job`, the tuning Job's entrypoint, as the operator
runs it: a document in NIMIFY_TUNING, one JSON line out, the result in the termination message."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from nimify.cli.tune import parse_size_groups, spec_fields, termination_message
from nimify.engine.result import TERMINATION_MESSAGE_LIMIT, decode_termination_message
from nimify.model.samples import write_sample
from nimify.ports import free_port
from nimify.triton.local_repository import repository_from_onnx
from nimify.triton.local_server import LocalTriton
from nimify.triton.tuning import Candidate, Measurement, Objective, SearchSpace, TuningResult
from tests.cli.conftest import Cli
from tests.cli.serving import NIMIFY

SMALL_SPACE = ["--instances", "1,2", "--preferred-batch-sizes", "auto;4", "--queue-delays", "0"]


def run_job(document: dict[str, Any], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NIMIFY_TUNING": json.dumps(document)}
    return subprocess.run(
        [NIMIFY, "tune-job", *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def said(output: str) -> str:
    """A usage error's text without rich's box and line breaks."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", output).split())


def test_size_groups() -> None:
    assert parse_size_groups("auto;4;8,16") == ((), (4,), (8, 16))
    assert parse_size_groups("1; 2 ,4;") == ((1,), (2, 4), ())
    with pytest.raises(typer.BadParameter):
        parse_size_groups("4;x")


def test_the_chosen_config_as_a_nimservice_spells_it() -> None:
    from nimify.api import TritonSpec

    fields = spec_fields(Candidate(2, (4, 8), 100))
    triton = TritonSpec.model_validate(fields)
    assert triton.instances_per_gpu == 2
    assert triton.dynamic_batching.preferred_batch_sizes == [4, 8]
    assert triton.dynamic_batching.max_queue_delay_microseconds == 100
    assert "preferredBatchSizes" not in spec_fields(Candidate(1, (), 0))["dynamicBatching"]


def test_arguments_are_checked_before_anything_runs(cli: Cli, tmp_path: Path) -> None:
    model = write_sample("mlp", tmp_path)
    wrong = cli("tune", str(model), "--instances", "1,two")
    assert wrong.exit_code == 2 and "'1,two' is not a comma-separated list of integers" in said(wrong.output)
    mixed = cli("tune", str(model), "--request-rate", "10")
    assert mixed.exit_code == 2 and "applies to --objective min-latency" in said(mixed.output)
    too_large = cli("tune", str(model), "--preferred-batch-sizes", "64")
    assert too_large.exit_code == 1
    assert (
        "InvalidArgument: preferred batch sizes [64] exceed the model's max_batch_size 8" in too_large.stderr
    )


def test_an_unreachable_server_is_a_tuning_failure(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    url = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    document = {
        "url": url,
        "model": "mlp",
        "space": SearchSpace.default_for(8).to_json(),
        "objective": Objective("maxThroughput", p99_budget_ms=10).to_json(),
        "budgetSeconds": 30,
        "trialSeconds": 1,
        "waitSeconds": 1,
    }
    done = run_job(document, "--termination-log", str(log), timeout=60)
    assert done.returncode == 1, done.stderr
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert line == {
        "ok": False,
        "error": {"reason": "TuningFailed", "message": f"the server at {url} was not ready within 1 s"},
    }
    assert json.loads(log.read_text()) == line
    bad = run_job({"url": url, "model": "mlp"})
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["error"] == {
        "reason": "TuningFailed",
        "message": "NIMIFY_TUNING is not a tuning document: lacks 'space'",
    }


def test_a_result_a_job_of_the_same_key_cached_is_reported_without_a_sweep(tmp_path: Path) -> None:
    default, chosen = Candidate(1, (), 0), Candidate(2, (4,), 100)
    runs = [
        Measurement(default, 4, 900, 0, 300.0, 2.0, 9.0, 40.0),
        Measurement(chosen, 4, 1200, 0, 400.0, 2, 8, 60),
    ]
    cached = TuningResult(runs, default, chosen, True, False, 1, 42.0, 400.0, "grid")
    cache_file = tmp_path / "engines" / "abc" / "tuning" / "k1.json"
    cache_file.parent.mkdir(parents=True)
    cache_file.write_text(json.dumps({"key": "k1", "tuning": cached.to_json()}))
    document = {
        "url": f"http://127.0.0.1:{free_port('127.0.0.1')}",  # nothing there: no sweep may run
        "model": "mlp",
        "space": SearchSpace.default_for(8).to_json(),
        "objective": Objective("maxThroughput", p99_budget_ms=10).to_json(),
        "budgetSeconds": 30,
        "waitSeconds": 1,
        "cacheFile": str(cache_file),
        "key": "k1",
    }
    log = tmp_path / "termination-log"
    done = run_job(document, "--termination-log", str(log), timeout=60)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["cached"] is True and TuningResult.from_json(answer["tuning"]) == cached
    assert decode_termination_message(log.read_text()) == answer
    assert json.loads(cache_file.read_text()) == {"key": "k1", "tuning": answer["tuning"]}
    # Another key's figures are not this tuning's: it measures (and here finds no server).
    other = run_job({**document, "key": "k2"}, timeout=60)
    assert other.returncode == 1 and json.loads(other.stdout)["error"]["reason"] == "TuningFailed"


def test_a_result_too_large_for_the_termination_message_keeps_the_default_and_the_chosen() -> None:
    default, chosen = Candidate(1, (), 0), Candidate(2, (4,), 100)
    others = [Candidate(n, (s,), d) for n in (1, 2, 3, 4) for s in (2, 4, 8, 16) for d in range(0, 4000, 200)]
    runs = [
        Measurement(c, level, 1000 + i, 0, 333.3 + i, 1.234 + i / 100, 9.876 + i / 10, 12.5 + i)
        for i, c in enumerate([default, chosen, *others])
        for level in (1, 4, 16, 64)
    ]
    result = TuningResult(runs, default, chosen, True, False, len(others) + 1, 900.0, 400.0, "tpe")
    line = json.dumps({"ok": True, "tuning": result.to_json()}, separators=(",", ":"))
    message = termination_message(result, line)
    assert len(message.encode()) <= TERMINATION_MESSAGE_LIMIT
    decoded = decode_termination_message(message)
    assert decoded is not None and decoded["ok"]
    reduced = TuningResult.from_json(decoded["tuning"])
    assert {m.candidate for m in reduced.measurements} == {default, chosen}
    assert reduced.omitted == len(runs) - 8 and reduced.chosen == chosen and reduced.capacity == 400.0


@pytest.mark.triton
def test_tune_prints_the_table_and_writes_the_result(tmp_path: Path) -> None:
    model = write_sample("mlp", tmp_path)
    output = tmp_path / "tuning.json"
    done = subprocess.run(
        [
            NIMIFY,
            "tune",
            str(model),
            *SMALL_SPACE,
            "--concurrency",
            "1,4",
            "--p99-budget-ms",
            "500",
            "--budget",
            "60",
            "--trial-seconds",
            "0.5",
            "--json",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = TuningResult.from_json(json.loads(output.read_text()))
    assert result.trials >= 1 and result.met and result.chosen is not None
    assert result.default == Candidate(1, (), 0)  # the production config: no preferred sizes
    table = done.stdout
    assert "objective: maximum throughput within p99 500 ms" in table
    for header in ("config", "clients", "infer/s", "p50 ms", "p99 ms", "queue µs"):
        assert header in table
    rows = [line for line in table.splitlines() if line.startswith("│")]
    rounds = 2 if result.confirmed else 1  # a config that beat the default: both measured again
    default_rows = [row for row in rows if "1x, batch auto, 0 µs" in row]
    assert len(default_rows) == 2 * rounds and all("default" in row for row in default_rows), table
    assert sum("again" in row for row in default_rows) == 2 * (rounds - 1), table
    chosen_rows = [row for row in rows if result.chosen.label() in row]
    assert len(chosen_rows) == 2 * rounds and all("chosen" in row for row in chosen_rows), table
    assert f"chosen: {result.chosen.label()}: {result.capacity:.1f} infer/s per replica" in table
    assert ("measured again, back to back" in table) == result.confirmed
    assert "default (1x, batch auto, 0 µs): best" in done.stderr  # the progress, as it goes


@pytest.fixture(scope="module")
def explicit_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTriton]:
    directory = tmp_path_factory.mktemp("tune-job")
    model = write_sample("mlp", directory)
    local, _ = repository_from_onnx(model, directory / "repository", name="mlp")
    with LocalTriton(local.path, extra_args=["--model-control-mode=explicit", "--load-model=mlp"]) as server:
        yield server


@pytest.mark.triton
def test_tune_job_answers_one_line_and_leaves_the_termination_message(
    explicit_triton: LocalTriton, tmp_path: Path
) -> None:
    log = tmp_path / "termination-log"
    cache_file = tmp_path / "engines" / "abc" / "tuning" / "k1.json"  # its folder made by the Job
    document = {
        "url": explicit_triton.endpoints.http,
        "model": "mlp",
        "space": SearchSpace((1, 2), ((), (4,)), (0,), (1, 4)).to_json(),
        "objective": Objective("minLatency", request_rate=10).to_json(),
        "budgetSeconds": 60,
        "trialSeconds": 0.5,
        "waitSeconds": 30,
        "cacheFile": str(cache_file),
        "key": "k1",
    }
    done = run_job(document, "--termination-log", str(log))
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.strip().splitlines()
    answer = json.loads(line)
    assert answer["ok"] is True
    result = TuningResult.from_json(answer["tuning"])
    assert result.trials >= 1 and result.met and result.capacity is not None
    assert decode_termination_message(log.read_text()) == answer
    assert json.loads(cache_file.read_text()) == {"key": "k1", "tuning": answer["tuning"]}
