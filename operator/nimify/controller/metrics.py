"""The operator's own Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILE_SECONDS = Histogram(
    "nimify_reconcile_duration_seconds",
    "Time spent in one reconcile of a NimService.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RECONCILE_ERRORS = Counter("nimify_reconcile_errors_total", "Reconciles that raised, by reason.", ["reason"])
NIMSERVICES = Gauge("nimify_nimservices", "NimServices by their Ready condition status.", ["ready"])
ENGINE_BUILDS = Counter("nimify_engine_builds_total", "Engine conversion Jobs, by outcome.", ["outcome"])
ENGINE_BUILD_SECONDS = Histogram(
    "nimify_engine_build_duration_seconds",
    "Engine build time reported by conversion Jobs.",
    buckets=(1, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)
API_WRITES = Counter(
    "nimify_api_write_requests_total", "Write requests sent to the Kubernetes API.", ["verb", "kind"]
)
DRIFT_CORRECTIONS = Counter(
    "nimify_drift_corrections_total", "Children re-applied because someone else changed them.", ["kind"]
)
CHILD_REFUSALS = Counter(
    "nimify_child_refusals_total", "Child writes the apiserver refused (admission, quota, ...).", ["kind"]
)


class ReadyTracker:
    """Keeps NIMSERVICES up to date from each NimService's own transitions: never by listing everything."""

    def __init__(self) -> None:
        self._ready: dict[tuple[str, str], str] = {}

    def observe(self, namespace: str, name: str, ready: str) -> None:
        key = (namespace, name)
        previous = self._ready.get(key)
        if previous == ready:
            return
        if previous is not None:
            NIMSERVICES.labels(ready=previous).dec()
        NIMSERVICES.labels(ready=ready).inc()
        self._ready[key] = ready

    def forget(self, namespace: str, name: str) -> None:
        if (previous := self._ready.pop((namespace, name), None)) is not None:
            NIMSERVICES.labels(ready=previous).dec()


READY = ReadyTracker()
