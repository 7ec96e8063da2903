"""Part 1 of the chaos suite: the operator SIGKILLed at random points while a seeded script creates, updates
and deletes NimServices; afterwards every NimService converges to its spec with nothing duplicated or left.

The operator is `nimify run` as a process (as the e2e tests run it), the conversion pods are run for real on
this machine by the BuildPodKubelet, Triton replicas are kwok's (they only need to become Ready). The script
and the kill points come from one seed (printed, NIMIFY_CHAOS_SEED replays a run); each kill lands a random
delay after its script step, so it hits whatever the operator is doing then: starting up, listing,
reconciling a burst, writing a status, creating a Job.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nimify.settings import OperatorSettings
from nimify_devcluster.build_runner import BuildPodKubelet
from tests.chaos.convergence import (
    duplicate_job_creates,
    job_creates,
    not_converged,
    wait_for_garbage_collection,
)
from tests.chaos.report import ChaosReport, Figure
from tests.chaos.scale import scaled
from tests.chaos.workload import Model, apply_specs, cpu_spec, store_models
from tests.conftest import own_kwok_cluster
from tests.controller.conftest import OperatorProcess
from tests.kube import ExistingCluster, fresh_namespace

pytestmark = [pytest.mark.chaos, pytest.mark.cluster, pytest.mark.own_cluster, pytest.mark.timeout(900)]

OPERATIONS = scaled(ci=100, full=300)
KILLS = scaled(ci=10, full=30)
NAMES = scaled(ci=12, full=24)
CONVERGE_SECONDS = scaled(ci=300, full=600)
SEED = int(os.environ.get("NIMIFY_CHAOS_SEED", "14"))
DELAYS = (100, 500, 2000)  # Triton queue delays (µs) an update picks from
BATCHES = (4, 8)  # max batch sizes: with the two models, four engines to build
#: How far the script may run ahead of a kill that is due (the kill lands near its step).
LEAD = 3


@dataclass(frozen=True)
class Step:
    verb: str  # create, update or delete
    name: str
    spec: dict[str, Any] | None  # the whole spec applied (None for a delete)


# A hundred operations and ten kills need no real node (the duplicate check reads the audit log).
cluster, nimservice_crd = own_kwok_cluster("chaos-kills")


def script(rng: random.Random, models: dict[str, Model]) -> list[Step]:
    """OPERATIONS steps over a pool of NAMES NimServices: a create where one is absent, else mostly updates
    (replicas, Triton's queue delay, the model or its batch size: a new engine to build) and some deletes."""
    live: dict[str, dict[str, Any]] = {}
    steps = []
    for _ in range(OPERATIONS):
        name = f"kill-{rng.randrange(NAMES):02d}"
        if name not in live:
            model = models[rng.choice(sorted(models))]
            live[name] = spec = cpu_spec(model, rng.choice(BATCHES), rng.randint(1, 2), rng.choice(DELAYS))
            steps.append(Step("create", name, spec))
            continue
        if rng.random() < 0.25:
            del live[name]
            steps.append(Step("delete", name, None))
            continue
        old = live[name]
        model, batch = old["model"], old["engine"]["maxBatchSize"]
        replicas = old["replicas"]
        delay = old["triton"]["dynamicBatching"]["maxQueueDelayMicroseconds"]
        change = rng.choice(("replicas", "delay", "model", "batch"))
        if change == "model":
            model = next(m for _, m in sorted(models.items()) if m != old["model"])
        elif change == "batch":
            batch = next(b for b in BATCHES if b != batch)
        elif change == "replicas":
            replicas = rng.randint(1, 3)
        else:
            delay = rng.choice(DELAYS)
        live[name] = spec = cpu_spec(model, batch, replicas, delay)
        steps.append(Step("update", name, spec))
    return steps


def expected_state(steps: list[Step]) -> dict[str, dict[str, Any]]:
    state: dict[str, dict[str, Any]] = {}
    for step in steps:
        if step.spec is None:
            state.pop(step.name, None)
        else:
            state[step.name] = step.spec
    return state


@dataclass
class Killer:
    """SIGKILLs the operator a random delay after each kill point of the script, then restarts it after a
    random downtime; records when each kill landed."""

    operator: OperatorProcess
    points: list[int]  # script steps after which a kill comes
    rng: random.Random
    started: float = field(default_factory=time.monotonic)
    step: int = 0
    done: int = 0  # kills done
    kills: list[str] = field(default_factory=list)
    last_restart: float = 0.0
    error: BaseException | None = None
    advanced: threading.Condition = field(default_factory=threading.Condition)

    def at(self, step: int) -> None:
        """The script finished `step`; returns once no kill due more than LEAD steps ago is still to come."""
        with self.advanced:
            self.step = step
            self.advanced.notify_all()
            self.advanced.wait_for(
                lambda: (
                    self.error is not None
                    or self.done == len(self.points)
                    or self.points[self.done] > step - LEAD
                )
            )

    def run(self) -> None:
        try:
            for point in self.points:
                with self.advanced:
                    self.advanced.wait_for(lambda point=point: self.step >= point)  # type: ignore[misc]
                time.sleep(self.rng.uniform(0, 1.5))
                assert self.operator.process is not None
                pid = self.operator.process.pid
                self.operator.stop(signal.SIGKILL)
                self.kills.append(
                    f"kill {len(self.kills) + 1}: pid {pid} after step {self.step}, "
                    f"t={time.monotonic() - self.started:.1f}s"
                )
                time.sleep(self.rng.uniform(0, 3))  # down for a while: events pile up meanwhile
                self.operator.start()
                self.last_restart = time.monotonic()
                with self.advanced:
                    self.done += 1
                    self.advanced.notify_all()
        except BaseException as error:  # the test fails with it
            with self.advanced:
                self.error = error
                self.advanced.notify_all()


@pytest.fixture
def kill_namespace(cluster: ExistingCluster, nimservice_crd: str) -> Iterator[str]:
    wait_for_garbage_collection(cluster)
    with fresh_namespace(cluster, "e2e-chaos-kill") as namespace:
        yield namespace


def test_operator_killed_at_random_points_converges_with_nothing_duplicated_or_left(
    cluster: ExistingCluster,
    kill_namespace: str,
    build_pods: BuildPodKubelet,
    chaos_report: ChaosReport,
    tmp_path: Path,
) -> None:
    assert cluster.audit_log is not None, "needs the local cluster's audit log"
    namespace = kill_namespace
    models = store_models(cluster, namespace)

    rng = random.Random(SEED)
    steps = script(rng, models)
    points = sorted(rng.sample(range(1, OPERATIONS - 5), KILLS))
    print(f"\nseed {SEED}: {OPERATIONS} steps, kills after steps {points}")

    operator = OperatorProcess(cluster.operator_kubeconfig or cluster.kubeconfig, tmp_path / "operator.log")
    operator.start()
    killer = Killer(operator, points, random.Random(rng.random()))
    thread = threading.Thread(target=killer.run, name="operator-killer", daemon=True)
    thread.start()
    try:
        for index, step in enumerate(steps, start=1):
            if step.spec is None:
                cluster.kubectl("delete", "nimservice", step.name, "-n", namespace, "--wait=false")
            else:
                apply_specs(cluster, namespace, {step.name: step.spec})
            killer.at(index)
            time.sleep(rng.uniform(0, 0.3))
        killer.at(len(steps))
        thread.join(timeout=KILLS * 40)
        assert not thread.is_alive(), "the killer did not finish its kills"
        if killer.error is not None:
            raise killer.error
        print("\n".join(killer.kills))

        expected = expected_state(steps)
        settings = OperatorSettings()
        deadline = killer.last_restart + CONVERGE_SECONDS
        problems = ["not checked yet"]
        while problems and time.monotonic() < deadline:
            time.sleep(2)
            try:
                problems = not_converged(cluster, namespace, expected, settings)
            except Exception as error:  # a slow apiserver answer is not a verdict
                problems = [repr(error)]
        converge = time.monotonic() - killer.last_restart
        log = (tmp_path / "operator.log").read_text(errors="replace")
        assert not problems, (
            f"not converged {converge:.0f}s after the last kill:\n" + "\n".join(problems)
            + "\n--- operator log (tail)\n" + log[-4000:]
        )  # fmt: skip
        duplicates = duplicate_job_creates(cluster.audit_log, namespace)
        assert not duplicates, "\n".join(duplicates)
        assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]
    finally:
        operator.stop()
    builds = job_creates(cluster.audit_log, namespace)
    print(
        f"converged {converge:.1f}s after the last kill; {len(expected)} NimServices at the end, "
        f"{len({s.name for s in steps})} touched, {builds} conversion Jobs created"
    )
    chaos_report.add(
        Figure(
            f"operator SIGKILLed during {OPERATIONS} creates/updates/deletes (seed {SEED})",
            len(killer.kills),
            len({s.name for s in steps}),
            "converged (spec, observedGeneration, no duplicate Job, no orphan)",
            converge,
        )
    )
