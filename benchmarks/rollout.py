"""Canary rollout benchmark on the real node: a small model behind Traefik's Gateway, Prometheus scraping
the Triton pods, requests flowing through the Gateway throughout (one at a time, every `--interval` seconds),
and a Canary rollout of two steps of `--hold` seconds each (30 % then 60 %) judged by the analysis (error
ratio and p99 latency against the serving unit's):

- a good update (another classifier of the same signature): spec change → Promoted, and the client requests
  that failed meanwhile;
- a bad candidate (one that fails every request with an element above 100, which the clients send): spec
  change → RolledBack, the time from the candidate taking traffic to the rollback, and how many requests it
  answered (Triton's counters, as the analysis read them) and how many clients saw fail.

Needs root (the real node) and the machine to itself. `hack/bench-rollout` runs it (`--help`); the figures are
measurements, never assertions.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.controller import canary_models
from tests.controller.test_real_gateway import BIG_INPUT, Case, Traffic, _seconds
from tests.controller.test_real_pods import INPUT, HostOperator
from tests.gateway import gateway_on
from tests.kube import ExistingCluster
from tests.metrics_stack import metrics_stack_on

from benchmarks.console import recorded, say
from benchmarks.model_delivery import _binary_dir
from nimify.model.samples import build_mlp
from nimify_devcluster.build_runner import create_local_claim
from nimify_devcluster.cluster import start_cluster, stop_cluster, wait_established
from nimify_devcluster.metrics_stack import PROMETHEUS
from nimify_devcluster.real_node import RealNodeMode

ROOT = Path(__file__).resolve().parents[1]


def rollout_spec(hold: int) -> dict[str, Any]:
    return {
        "strategy": "Canary",
        "steps": [{"weight": 30, "holdSeconds": hold}, {"weight": 60, "holdSeconds": hold}],
        "analysis": {"maxErrorRatio": 0.05, "maxLatencyRatio": 3, "minRequests": 10, "intervalSeconds": 5},
    }


def run_case(case: Case, hold: int, interval: float, bad: bool) -> dict[str, Any]:
    v1 = case.store("v1", build_mlp())
    candidate = case.store("bad" if bad else "v2", canary_models.erroring() if bad else build_mlp(hidden=24))
    spec = rollout_spec(hold)
    case.start_serving(v1, spec)
    models = {"v1": v1.path} if bad else {"v1": v1.path, "v2": candidate.path}
    with Traffic(case, models, data=BIG_INPUT if bad else INPUT, interval=interval) as traffic:
        started = time.monotonic()
        case.serve(candidate, spec)
        ended = case.wait_phase("RolledBack" if bad else "Promoted", timeout=60 + 6 * hold)
        took = time.monotonic() - started
    result: dict[str, Any] = {
        "case": "bad candidate" if bad else "good update",
        "phase": ended["phase"],
        "spec_change_to_end_s": round(took, 1),
        "client_requests": sum(traffic.answered.values()) + len(traffic.failures),
        "client_failures": len(traffic.failures),
        "message": ended.get("message"),
    }
    if bad and ended.get("stepStartedAt") and ended.get("finishedAt"):
        figures = (ended.get("analysis") or {}).get("candidate") or {}
        result["traffic_to_rollback_s"] = _seconds(ended["stepStartedAt"], ended["finishedAt"])
        result["answered_by_bad_candidate"] = figures.get("requests")
    return result


def measure(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    bin_path = _binary_dir("NIMIFY_BIN_PATH", "ensure-binaries.sh")
    say("starting a cluster with the real node (images built first if need be)")
    local = start_cluster("bench-rollout", bin_path, workdir / "cluster", real_node=RealNodeMode.ON, log=say)
    results = []
    try:
        assert local.node is not None
        cluster = ExistingCluster(
            local.kubeconfig, bin_path, local.operator_kubeconfig, local.audit_log, directory=local.directory
        )
        cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        wait_established(cluster, "nimservices.nimify.dev")
        with gateway_on(cluster) as gateway, metrics_stack_on(cluster, (PROMETHEUS,)) as stack:
            assert stack.prometheus_url is not None
            operator = HostOperator(
                cluster.operator_kubeconfig or cluster.kubeconfig,
                local.node,
                workdir / "operator.log",
                namespaces="bench-*",
                settings={"NIMIFY_ANALYSIS_PROMETHEUS_URL": stack.prometheus_url},
            )
            operator.start()
            try:
                for bad in (False, True):
                    namespace = f"bench-{'bad' if bad else 'good'}"
                    cluster.kubectl("create", "namespace", namespace)
                    root = create_local_claim(cluster, namespace, "models")
                    case = Case(cluster, local.node, gateway, namespace, root, f"{namespace}.bench.test")
                    say(f"{namespace}: serving v1, then the {'bad candidate' if bad else 'new model'}")
                    results.append(run_case(case, args.hold, args.interval, bad))
                    say(f"{namespace}: {json.dumps(results[-1])}")
                    cluster.kubectl("delete", "namespace", namespace, "--wait=false")
            finally:
                operator.stop()
    finally:
        say("stopping the cluster")
        stop_cluster(local.directory)
    return results


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| case | ended | spec change → end | traffic → rollback | answered by the candidate "
        "| client requests (failed) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['case']} | {r['phase']} | {r['spec_change_to_end_s']} s | "
            f"{r.get('traffic_to_rollback_s', '-')} s | {r.get('answered_by_bad_candidate', '-')} | "
            f"{r['client_requests']} ({r['client_failures']}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/bench-rollout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--hold", type=int, default=30, help="Seconds each of the two steps holds.")
    parser.add_argument("--interval", type=float, default=0.1, help="Seconds between client requests.")
    parser.add_argument("--output", type=Path, help="Also write the figures (JSON) here.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nimify-bench-rollout-") as scratch:
        results = recorded(
            {"hold_s": args.hold, "interval_s": args.interval},
            lambda: measure(args, Path(scratch)),
        )
    print(table(results["runs"]))
    print(json.dumps(results, indent=1))
    if args.output:
        args.output.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
