"""Scale benchmark: N NimServices on a fresh local cluster, against the floor the cluster itself sets.

Scenarios (each on a fresh kwok cluster of the same shape, `bench_pools(N)`):
- shared: N NimServices sharing one small ONNX model, so one conversion Job serves them all;
- distinct: N NimServices with N distinct models, so N conversion Jobs run;
- floor: N plain Deployments + Services created by this script: what kube-controller-manager's client rate
  limits allow on this cluster, the time no operator can beat.

For a NimService scenario it reports the time from the first create until every NimService is Ready,
per-object create→Ready percentiles, when the Job(s) completed, the operator's requests by verb and resource
(from the apiserver's audit log), its writes and events per NimService, error answers, reconcile errors (its
metric and its log), its peak RSS and CPU seconds, and its writes during an idle window after convergence.

`hack/bench-scale` runs it (`--help` for the options); the figures are measurements, never assertions: the
CI smoke test (tests/benchmarks) asserts only that everything got Ready with no reconcile error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx2
from lightkube import AsyncClient, KubeConfig
from lightkube.codecs import from_dict

from benchmarks.console import load, say
from nimify.api.crd import nimservice_crd
from nimify.controller.kube import NimServiceResource
from nimify.model.digest import file_sha256
from nimify.model.samples import build_mlp, write_model
from nimify.ports import free_ports
from nimify_devcluster.build_runner import BuildPodKubelet, create_local_claim, operator_environment
from nimify_devcluster.cluster import LocalCluster, running_cluster
from nimify_devcluster.topology import NodePool

NAMESPACE = "bench"
OPERATOR_USER = "nimify-operator"  # the operator's identity in the local cluster's PKI
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
CREATE_CONCURRENCY = 16
PODS_PER_NODE = 100  # kwok nodes take 110 pods; leave room for conversion pods


def bench_pools(count: int) -> tuple[NodePool, ...]:
    """CPU nodes enough for `count` single-replica servers: the same shape for every scenario of one N."""
    return (NodePool("cpu", count // PODS_PER_NODE + 2, cpu="64", memory="512Gi"),)


# --- what a scenario creates ------------------------------------------------------------------------------


def nimservice(name: str, uri: str, sha256: str) -> dict[str, Any]:
    return {
        "apiVersion": "nimify.dev/v1alpha1",
        "kind": "NimService",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "model": {"uri": uri, "sha256": sha256},
            "engine": {"backend": "onnxruntime"},
            "resources": {"gpus": 0},
        },
    }


def plain_server(name: str) -> list[dict[str, Any]]:
    """The floor's unit: a Deployment and a Service with Triton's three ports, and nothing else."""
    labels = {"app": name}
    ports = [("http", 8000), ("grpc", 8001), ("metrics", 8002)]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "server",
                            "image": "registry.invalid/server:1",
                            "ports": [{"name": n, "containerPort": p} for n, p in ports],
                        }
                    ]
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "selector": labels,
            "ports": [{"name": n, "port": p, "targetPort": n} for n, p in ports],
        },
    }
    return [deployment, service]


def store_models(cluster: LocalCluster, count: int, distinct: bool) -> list[tuple[str, str]]:
    """(uri, sha256) per NimService: one model for all, or one of its own each (distinct weights)."""
    root = create_local_claim(cluster, NAMESPACE, "models")
    models = []
    for index in range(count if distinct else 1):
        path = write_model(build_mlp(hidden=8 + index), root / f"mlp-{index}.onnx")
        models.append((f"pvc://models/{path.name}", file_sha256(path)))
    return [models[i % len(models)] for i in range(count)]


# --- watching and creating --------------------------------------------------------------------------------


class Watch:
    """`kubectl get --watch` of one kind, recording when each object first shows `wanted` (in Go, so the
    watcher costs this process next to nothing)."""

    def __init__(self, cluster: LocalCluster, resource: str, jsonpath: str, wanted: str) -> None:
        self.wanted = wanted
        self.first: dict[str, float] = {}
        self._process = subprocess.Popen(
            [
                *_kubectl(cluster),
                "get",
                resource,
                "-n",
                NAMESPACE,
                "--watch",
                "-o",
                f"jsonpath={{.metadata.name}}{{' '}}{jsonpath}{{'\\n'}}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            name, _, value = line.strip().partition(" ")
            if name and value.strip() == self.wanted and name not in self.first:
                self.first[name] = time.time()

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)


def _kubectl(cluster: LocalCluster) -> list[str]:
    kubectl = next(
        str(Path(path) / "kubectl")
        for path in cluster.bin_path.split(":")
        if (Path(path) / "kubectl").exists()
    )
    return [kubectl, f"--kubeconfig={cluster.kubeconfig}"]


async def create_all(kubeconfig: Path, objects: list[dict[str, Any]]) -> dict[str, float]:
    """Create every object, CREATE_CONCURRENCY at a time; when each create returned, by object name."""
    NimServiceResource  # noqa: B018  - imported for its registration with lightkube's codecs
    created: dict[str, float] = {}
    client = AsyncClient(config=KubeConfig.from_file(kubeconfig), timeout=httpx2.Timeout(120))
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for item in objects:
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            item = queue.get_nowait()
            for attempt in range(10):
                try:
                    await client.create(from_dict(item))
                    break
                except httpx2.TransportError:
                    await asyncio.sleep(1 + attempt)
            created.setdefault(item["metadata"]["name"], time.time())

    try:
        await asyncio.gather(*(worker() for _ in range(CREATE_CONCURRENCY)))
    finally:
        await client.close()
    return created


def wait_for(watch: Watch, names: set[str], timeout: float, what: str) -> None:
    deadline, last = time.monotonic() + timeout, 0.0
    while time.monotonic() < deadline:
        done = len(names & watch.first.keys())
        if done == len(names):
            return
        if time.monotonic() - last > 15:
            say(f"{what}: {done}/{len(names)} (load {load()})")
            last = time.monotonic()
        time.sleep(0.5)
    raise TimeoutError(f"{what}: only {len(names & watch.first.keys())}/{len(names)} after {timeout:.0f}s")


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": math.nan, "p95": math.nan}
    if len(values) == 1:
        return {"p50": values[0], "p95": values[0]}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(cuts[49], 1), "p95": round(cuts[94], 1)}


# --- the operator and what it says about itself ------------------------------------------------------------


@dataclass
class OperatorProcess:
    cluster: LocalCluster
    log: Path
    profile: Path | None = None
    metrics_port: int = field(default_factory=lambda: free_ports(1)[0])
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = os.environ | operator_environment(self.cluster.operator_kubeconfig, self.metrics_port)
        env |= {"NIMIFY_REAL_NODE": "off"}
        command = [str(Path(sys.executable).parent / "nimify"), "run", "--namespace", NAMESPACE]
        if self.profile is not None:  # cProfile of the whole run, written when the operator stops
            command = [sys.executable, "-m", "cProfile", "-o", str(self.profile), *command]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"operator exited: {self.log.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                self.metrics()
                return
            time.sleep(0.3)
        raise RuntimeError("operator metrics endpoint did not come up")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def metrics(self) -> dict[str, float]:
        """The operator's Prometheus samples, `name{labels}` -> value."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def usage(self) -> dict[str, float]:
        """Peak and current resident memory (MiB) and CPU seconds so far, from /proc."""
        assert self.process is not None
        pid = self.process.pid
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
        )
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return {
            "rss_peak_mib": round(int(status["VmHWM"].split()[0]) / 1024, 1),
            "rss_mib": round(int(status["VmRSS"].split()[0]) / 1024, 1),
            "cpu_seconds": round((int(stat[11]) + int(stat[12])) / ticks, 1),
        }


def metric_sum(samples: dict[str, float], name: str) -> float:
    return sum(value for key, value in samples.items() if key == name or key.startswith(name + "{"))


def metric_by_label(samples: dict[str, float], name: str) -> dict[str, float]:
    return {key[len(name) :]: value for key, value in samples.items() if key.startswith(name + "{")}


def log_problems(log: Path) -> dict[str, Any]:
    """ERROR lines of the operator's log (kopf's and ours), and a few distinct examples."""
    errors, warnings = [], 0
    for line in log.read_text(errors="replace").splitlines():
        if "[ERROR" in line or line.startswith("Traceback"):
            errors.append(line)
        elif "[WARNING" in line:
            warnings += 1
    examples = sorted({line.split("] ", 2)[-1][:200] for line in errors})[:5]
    return {"error_lines": len(errors), "warning_lines": warnings, "examples": examples}


# --- the audit log ---------------------------------------------------------------------------------------


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def audit_entries(cluster: LocalCluster, user: str) -> list[dict[str, Any]]:
    """One entry per request `user` sent (watches are logged when their answer starts)."""
    entries: dict[str, dict[str, Any]] = {}
    for path in sorted(cluster.audit_log.parent.glob(cluster.audit_log.name + "*")):
        with path.open() as lines:
            for line in lines:
                if f'"{user}"' not in line:
                    continue
                event = json.loads(line)
                if event.get("user", {}).get("username") != user:
                    continue
                if event["auditID"] in entries and event.get("stage") != "ResponseComplete":
                    continue
                ref = event.get("objectRef") or {}
                resource = ref.get("resource", "?") + (
                    f"/{ref['subresource']}" if ref.get("subresource") else ""
                )
                entries[event["auditID"]] = {
                    "verb": event["verb"],
                    "resource": resource,
                    "name": ref.get("name", ""),
                    "code": (event.get("responseStatus") or {}).get("code", 0),
                    "at": _stamp(event["requestReceivedTimestamp"]),
                }
    return sorted(entries.values(), key=lambda entry: entry["at"])


def job_timeline(cluster: LocalCluster, started: float) -> list[str]:
    """What happened to the first conversion Job and its pod, by whom, in seconds after the first create:
    where the Job's time goes (the writes of every component are in the audit log)."""
    rows: list[tuple[float, str]] = []
    job = None
    for path in sorted(cluster.audit_log.parent.glob(cluster.audit_log.name + "*")):
        with path.open() as lines:
            for line in lines:
                if '"nimify-engine-' not in line:
                    continue
                event = json.loads(line)
                ref = event.get("objectRef") or {}
                name = ref.get("name", "")
                if event.get("stage") != "ResponseComplete" or not name.startswith("nimify-engine-"):
                    continue
                if job is None and ref.get("resource") == "jobs" and event["verb"] == "create":
                    job = name
                if job is None or not name.startswith(job):
                    continue
                resource = ref.get("resource", "?") + (
                    f"/{ref['subresource']}" if ref.get("subresource") else ""
                )
                user = event["user"]["username"].removeprefix("system:")
                code = (event.get("responseStatus") or {}).get("code", 0)
                at = _stamp(event["requestReceivedTimestamp"])
                rows.append((at, f"{at - started:7.2f}s {user} {event['verb']} {resource} {code}"))
    return [text for _, text in sorted(rows)]


def request_figures(entries: list[dict[str, Any]], since: float, until: float, count: int) -> dict[str, Any]:
    window = [e for e in entries if since <= e["at"] <= until]
    writes = [e for e in window if e["verb"] in WRITE_VERBS]
    events = [e for e in writes if e["resource"] == "events"]
    by_verb = Counter(f"{e['verb']} {e['resource']}" for e in window)
    answers = Counter(str(e["code"]) for e in window if e["code"] >= 400)
    status = Counter(e["name"] for e in writes if e["resource"] == "nimservices/status")
    return {
        "requests": len(window),
        "status_patches_per_nimservice": dict(sorted(Counter(status.values()).items())),
        "writes": len(writes),
        "writes_without_events": len(writes) - len(events),
        "events": len(events),
        "writes_per_nimservice": round((len(writes) - len(events)) / count, 2),
        "events_per_nimservice": round(len(events) / count, 2),
        "error_answers": dict(answers),
        "by_verb_resource": dict(by_verb.most_common()),
    }


# --- scenarios --------------------------------------------------------------------------------------------


@dataclass
class Options:
    bin_path: str
    workdir: Path
    idle_seconds: float = 120
    settle_seconds: float = 15
    timeout: float = 3600
    keep_logs: bool = False
    profile_operator: bool = False


@contextlib.contextmanager
def _fresh_cluster(name: str, count: int, options: Options) -> Iterator[LocalCluster]:
    directory = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=options.workdir))
    with running_cluster(f"bench-{name}", options.bin_path, directory, bench_pools(count)) as cluster:
        try:
            yield cluster
        finally:
            if options.keep_logs:
                shutil.copytree(
                    directory / "logs", options.workdir / f"{name}-cluster-logs", dirs_exist_ok=True
                )


def _prepare(cluster: LocalCluster) -> None:
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(nimservice_crd()))
    cluster.kubectl("create", "namespace", NAMESPACE)
    # Until the CRD is Established and its storage initialized, a list fails (404, then 429).
    deadline = time.monotonic() + 60
    while cluster.kubectl("get", "nimservices", "-n", NAMESPACE, check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise TimeoutError("the NimService API did not start answering")
        time.sleep(0.5)
    cluster.kubectl(
        "wait",
        "--for=jsonpath={.metadata.name}=default",
        "serviceaccount/default",
        "-n",
        NAMESPACE,
        "--timeout=60s",
    )


def run_nimservices(name: str, count: int, distinct: bool, options: Options) -> dict[str, Any]:
    """N NimServices from first create to all Ready, then an idle window; figures as a dict."""
    say(f"{name}: fresh cluster for {count} NimServices ({'distinct models' if distinct else 'one model'})")
    with _fresh_cluster(name, count, options) as cluster:
        _prepare(cluster)
        models = store_models(cluster, count, distinct)
        services = [nimservice(f"svc-{i:04d}", *models[i]) for i in range(count)]
        names = {s["metadata"]["name"] for s in services}
        profile = options.workdir / f"{name}-operator.prof" if options.profile_operator else None
        operator = OperatorProcess(cluster, options.workdir / f"{name}-operator.log", profile)
        with BuildPodKubelet(cluster) as builds:
            operator.start()
            ready = Watch(cluster, "nimservices", '{.status.conditions[?(@.type=="Ready")].status}', "True")
            jobs = Watch(cluster, "jobs", '{.status.conditions[?(@.type=="Complete")].status}', "True")
            try:
                load_before = load()
                say(f"{name}: creating {count} NimServices (load {load_before})")
                started = time.time()
                created = asyncio.run(create_all(cluster.kubeconfig, services))
                say(f"{name}: created in {time.time() - started:.1f}s")
                wait_for(ready, names, options.timeout, f"{name}: Ready")
                converged = max(ready.first[n] for n in names)
                load_converged = load()
                say(f"{name}: all Ready after {converged - started:.1f}s (load {load_converged})")
                time.sleep(options.settle_seconds)
                settled, usage_converged, samples = time.time(), operator.usage(), operator.metrics()
                time.sleep(options.idle_seconds)
                idle_end, usage_idle = time.time(), operator.usage()
                samples_idle = operator.metrics()
            finally:
                ready.stop()
                jobs.stop()
                operator.stop()
            failed_builds = [r for r in builds.handled.values() if r.get("returncode") != 0]
        entries = audit_entries(cluster, OPERATOR_USER)
        figures = {
            "scenario": name,
            "nimservices": count,
            "jobs": len(jobs.first),
            "failed_builds": len(failed_builds),
            "load_at_start": load_before,
            "load_at_ready": load_converged,
            "time_to_ready_s": round(converged - started, 1),
            "create_s": round(max(created.values()) - started, 1),
            "jobs_done_s": round(max(jobs.first.values()) - started, 1) if jobs.first else None,
            "first_job_done_s": round(min(jobs.first.values()) - started, 1) if jobs.first else None,
            "create_to_ready_s": percentiles(sorted(ready.first[n] - created[n] for n in names)),
            "first_deployment_s": _first(entries, "deployments", started),
            "convergence": request_figures(entries, started - 5, settled, count),
            "idle": {
                "seconds": round(idle_end - settled),
                "writes": sum(
                    1 for e in entries if settled < e["at"] <= idle_end and e["verb"] in WRITE_VERBS
                ),
                "writes_counted": metric_sum(samples_idle, "nimify_api_write_requests_total")
                - metric_sum(samples, "nimify_api_write_requests_total"),
                "cpu_seconds": round(usage_idle["cpu_seconds"] - usage_converged["cpu_seconds"], 1),
            },
            "operator": usage_converged | {"rss_peak_mib_after_idle": usage_idle["rss_peak_mib"]},
            "reconcile_errors": metric_sum(samples_idle, "nimify_reconcile_errors_total"),
            "reconcile_errors_by_reason": metric_by_label(samples_idle, "nimify_reconcile_errors_total"),
            "reconciles": metric_sum(samples_idle, "nimify_reconcile_duration_seconds_count"),
            "operator_log": log_problems(operator.log),
            "job_timeline": job_timeline(cluster, started),
        }
    return figures


def _first(entries: list[dict[str, Any]], resource: str, started: float) -> float | None:
    at = next((e["at"] for e in entries if e["resource"] == resource and e["verb"] in WRITE_VERBS), None)
    return None if at is None else round(at - started, 1)


def run_floor(count: int, options: Options) -> dict[str, Any]:
    """N plain Deployments + Services created by this script: the time the cluster itself needs."""
    say(f"floor: fresh cluster for {count} Deployments + Services")
    with _fresh_cluster("floor", count, options) as cluster:
        _prepare(cluster)
        ready = Watch(cluster, "deployments", "{.status.readyReplicas}", "1")
        try:
            objects = [o for i in range(count) for o in plain_server(f"svc-{i:04d}")]
            load_before = load()
            say(f"floor: creating {count} Deployments + Services (load {load_before})")
            started = time.time()
            created = asyncio.run(create_all(cluster.kubeconfig, objects))
            names = {f"svc-{i:04d}" for i in range(count)}
            wait_for(ready, names, options.timeout, "floor: Deployments ready")
        finally:
            ready.stop()
        converged = max(ready.first[n] for n in names)
        say(f"floor: all ready after {converged - started:.1f}s (load {load()})")
        return {
            "scenario": "floor",
            "deployments": count,
            "load_at_start": load_before,
            "load_at_ready": load(),
            "time_to_ready_s": round(converged - started, 1),
            "create_s": round(max(created.values()) - started, 1),
            "create_to_ready_s": percentiles(sorted(ready.first[n] - created[n] for n in names)),
        }


# --- the report -------------------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    """The figures as a Markdown table: one column per scenario, and the Nimify/floor ratio."""
    runs = [r for r in results["runs"] if r["scenario"] != "floor"]
    floor = next((r for r in results["runs"] if r["scenario"] == "floor"), None)
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, get: Any) -> None:
        values = []
        for run in runs:
            try:
                values.append(str(get(run)))
            except (KeyError, TypeError):
                values.append("-")
        rows.append((label, values))

    row("NimServices", lambda r: r["nimservices"])
    row("conversion Jobs", lambda r: r["jobs"])
    row("load average at start / at Ready", lambda r: f"{r['load_at_start']} / {r['load_at_ready']}")
    row("time to all Ready (s)", lambda r: r["time_to_ready_s"])
    if floor is not None:
        row(
            f"floor: {floor['deployments']} Deployments + Services (s)",
            lambda r: floor["time_to_ready_s"] if floor["deployments"] == r["nimservices"] else "-",
        )
        row(
            "Nimify / floor",
            lambda r: (
                f"{r['time_to_ready_s'] / floor['time_to_ready_s']:.2f}"
                if floor["deployments"] == r["nimservices"]
                else "-"
            ),
        )
    row(
        "create→Ready p50 / p95 (s)",
        lambda r: f"{r['create_to_ready_s']['p50']} / {r['create_to_ready_s']['p95']}",
    )
    row("first / last Job complete at (s)", lambda r: f"{r['first_job_done_s']} / {r['jobs_done_s']}")
    row("first Deployment write at (s)", lambda r: r["first_deployment_s"])
    row("operator requests", lambda r: r["convergence"]["requests"])
    row("writes per NimService (without events)", lambda r: r["convergence"]["writes_per_nimservice"])
    row(
        "status patches per NimService (patches: NimServices)",
        lambda r: (
            ", ".join(f"{k}: {v}" for k, v in r["convergence"]["status_patches_per_nimservice"].items())
            or "-"
        ),
    )
    row("events per NimService", lambda r: r["convergence"]["events_per_nimservice"])
    row("error answers (code: count)", lambda r: r["convergence"]["error_answers"] or 0)
    row(
        "reconcile errors (metric / log ERROR lines)",
        lambda r: f"{r['reconcile_errors']:.0f} / {r['operator_log']['error_lines']}",
    )
    row("operator peak RSS (MiB)", lambda r: r["operator"]["rss_peak_mib"])
    row("operator CPU seconds (to Ready + settle)", lambda r: r["operator"]["cpu_seconds"])
    row("writes in the idle window", lambda r: f"{r['idle']['writes']} in {r['idle']['seconds']}s")
    header = "| figure | " + " | ".join(f"{r['scenario']} (N={r['nimservices']})" for r in runs) + " |"
    lines = [header, "|---|" + "---|" * len(runs)]
    lines += [f"| {label} | " + " | ".join(values) + " |" for label, values in rows]
    if floor is not None:
        spread = floor["create_to_ready_s"]
        lines.append(
            f"\nfloor: {floor['deployments']} Deployments + Services ready after {floor['time_to_ready_s']} s"
            f" (create→ready p50 / p95 {spread['p50']} / {spread['p95']} s,"
            f" load {floor['load_at_start']} → {floor['load_at_ready']})"
        )
    return "\n".join(lines)


def by_verb_table(results: dict[str, Any]) -> str:
    lines = []
    for run in results["runs"]:
        if run["scenario"] == "floor":
            continue
        lines.append(f"\n{run['scenario']} (N={run['nimservices']}): operator requests by verb and resource")
        for key, value in run["convergence"]["by_verb_resource"].items():
            lines.append(f"  {value:7d}  {key}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/bench-scale", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--count", "-n", type=int, default=1000, help="NimServices sharing one model (0: skip)"
    )
    parser.add_argument(
        "--distinct", type=int, default=100, help="NimServices with distinct models (0: skip)"
    )
    parser.add_argument("--no-floor", action="store_true", help="skip the floor run")
    parser.add_argument("--idle-seconds", type=float, default=120, help="idle window after convergence")
    parser.add_argument("--output", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--workdir", type=Path, help="clusters and operator logs (default: a temporary dir)")
    parser.add_argument("--keep-logs", action="store_true", help="keep each cluster's logs (audit log too)")
    parser.add_argument("--profile-operator", action="store_true", help="run the operator under cProfile")
    args = parser.parse_args(argv)
    bin_path = os.environ.get("NIMIFY_BIN_PATH")
    if not bin_path:
        parser.error("NIMIFY_BIN_PATH is not set (hack/bench-scale sets it)")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="nimify-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    options = Options(
        bin_path,
        workdir,
        idle_seconds=args.idle_seconds,
        keep_logs=args.keep_logs,
        profile_operator=args.profile_operator,
    )
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpus": os.cpu_count(),
        "runs": [],
    }
    if args.count:
        results["runs"].append(run_nimservices("shared", args.count, False, options))
        if not args.no_floor:
            results["runs"].append(run_floor(args.count, options))
    if args.distinct:
        results["runs"].append(run_nimservices("distinct", args.distinct, True, options))
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))
    print(table(results))
    print(by_verb_table(results))
    print(f"\noperator logs and figures: {workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
