"""The part of a canary's judgement that asks the world: the answer gate's requests to a pod of each unit,
and the analysis's queries to Prometheus. What it finds goes into `Observed` for the pure rollout machine
(rollout.py, rollout_analysis.py), which records it in status.rollout.

It asks only when the rollout in the NimService's status needs it: the gate once per candidate (its verdict
is recorded, so the next reconcile does not ask again), the figures while a judged step runs (at most every
analysis.intervalSeconds: the reconcile comes back then).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import httpx

from nimify.api import EngineRecord, NimService, RolloutStatus
from nimify.api.spec.rollout import CANDIDATE_SUFFIX
from nimify.api.status import AnswerGateStatus, GateForm, UnitFigures
from nimify.autoscaling.queries import QUEUE_DURATION_SERIES, REQUEST_SUCCESS_SERIES, deployment_pods_selector
from nimify.controller.children import DEPLOYMENT
from nimify.controller.observed import Observed
from nimify.controller.rollout import deployment_serves, uses_canary
from nimify.controller.rollout_analysis import (
    Figures,
    agreement_output,
    agreement_problem,
    figures_due,
    gate_due,
)
from nimify.engine.location import engine_location
from nimify.render.identity import name_of
from nimify.render.units import selector_of, unit_name
from nimify.settings import OperatorSettings

logger = logging.getLogger(__name__)

PodLister = Callable[[str, dict[str, str]], Awaitable[list[str]]]
"""(namespace, matchLabels) -> the ready pods' addresses."""
Arrays = dict[str, Any]
"""Tensors by name (numpy arrays: the analyst imports numpy only when a gate runs)."""
Asker = Callable[[str, str, Any, Sequence[Arrays]], list[Arrays]]
"""(host:port, Triton model name, Signature, inputs) -> the answers (blocking; run in a thread)."""

FAILURE_SERIES = "nv_inference_request_failure"
DURATION_SERIES = "nv_inference_request_duration_us"
#: Triton's request latency summary (--metrics-config summary_latencies=true, which the Deployment sets).
LATENCY_SUMMARY = "nv_inference_request_summary_us"
#: How often the gate asks again before it gives up (a pod that just turned ready, a connection reset).
GATE_ATTEMPTS = 3
GATE_PAUSE_SECONDS = 2.0
PROMETHEUS_TIMEOUT = 10.0


def ask_triton(address: str, model: str, signature: Any, inputs: Sequence[Arrays]) -> list[Arrays]:
    """Every input to one Triton, with its binary tensor extension (answers compared exactly)."""
    import tritonclient.http as httpclient

    from nimify.engine.pipeline_check import infer_outputs

    client = httpclient.InferenceServerClient(address, connection_timeout=10.0, network_timeout=60.0)
    try:
        return [infer_outputs(client, model, signature, feeds) for feeds in inputs]
    finally:
        client.close()


class RolloutAnalyst:
    """Asks the canary's units for the gate and Prometheus for the figures, when the rollout needs them."""

    def __init__(
        self,
        settings: OperatorSettings,
        pods: PodLister | None = None,
        ask: Asker = ask_triton,
        prometheus_url: str | None = None,
    ) -> None:
        self.settings = settings
        self.pods = pods
        self.ask = ask
        self.prometheus_url = (
            prometheus_url or settings.analysis_prometheus_url or settings.keda_prometheus_url
        )

    async def observe(self, nim: NimService, observed: Observed, now: datetime) -> Observed:
        status = nim.status.rollout if nim.status is not None else None
        if status is None or not uses_canary(nim) or nim.spec.paused:
            return observed
        key = engine_location(nim, self.settings).cache_key
        if status.candidate != key:
            return observed  # a new candidate: the machine starts its rollout first
        stable = nim.status.record() if nim.status is not None else None
        found: dict[str, Any] = {}
        form = gate_due(nim, status, stable)
        if form is not None and stable is not None:
            gate = await self._gate(nim, form, stable, observed, key)
            if gate is not None:
                found["rollout_gate"] = gate
        if figures_due(nim, status):
            found["rollout_figures"] = await self._figures(nim, status, now)
        return replace(observed, **found) if found else observed

    # The answer gate.

    async def _gate(
        self, nim: NimService, form: GateForm, stable: EngineRecord, observed: Observed, key: str
    ) -> AnswerGateStatus | None:
        """The gate's verdict, or None while the candidate is not ready to be asked."""
        namespace = nim.metadata.namespace or ""
        candidate_name = unit_name(nim, CANDIDATE_SUFFIX)
        live = observed.get(DEPLOYMENT.kind, namespace, candidate_name)
        entry = nim.status.unit(candidate_name) if nim.status is not None else None
        record = entry.record() if entry is not None else None
        if live is None or record is None or not deployment_serves(live, key):
            return None
        rollout = nim.spec.rollout
        assert rollout is not None
        gate = rollout.gate
        agreement = gate.agreement if form is GateForm.AGREEMENT else None
        if agreement is not None and agreement_problem(agreement, record.signature) is not None:
            return None  # the machine rolls back with the problem named
        if _inputs(record) != _inputs(stable):
            differ = f"the candidate's inputs differ from the serving unit's: {_inputs(record)} against "
            return self._failed(form, differ + _inputs(stable))
        try:
            answers = await self._ask_both(nim, record, (name_of(nim), candidate_name))
        except GateError as error:
            return self._failed(form, str(error))
        if answers is None:
            return None
        from nimify.engine.answer_gate import agreement_verdict, equivalence_verdict

        served, candidate = answers
        if form is GateForm.EQUIVALENCE:
            parity = nim.spec.engine.parity
            atol = gate.atol if gate.atol is not None else parity.atol
            rtol = gate.rtol if gate.rtol is not None else parity.rtol
            return equivalence_verdict(served, candidate, atol, rtol)
        assert gate.agreement is not None
        output = agreement_output(gate.agreement, record.signature)
        return agreement_verdict(served, candidate, gate.agreement, output)

    def _failed(self, form: GateForm, why: str) -> AnswerGateStatus:
        return AnswerGateStatus(form=form, samples=0, figure=0.0, limit=0.0, passed=False, message=why[:1024])

    async def _ask_both(
        self, nim: NimService, record: EngineRecord, units: tuple[str, str]
    ) -> tuple[list[Arrays], list[Arrays]] | None:
        """Both units' answers (the serving unit's first) to the same inputs, from one ready pod of each;
        None while a unit has no ready pod."""
        from nimify.engine.reference import reference_inputs
        from nimify.model.signature import Signature

        if self.pods is None:
            raise GateError("the operator cannot list pods here: no unit can be asked")
        namespace, port = nim.metadata.namespace or "", nim.spec.expose.http_port
        addresses = []
        for unit in units:
            ips = await self.pods(namespace, selector_of(unit))
            if not ips:
                return None  # no ready pod yet: the next reconcile asks
            addresses.append(f"{ips[0]}:{port}")
        signature = Signature.from_json(record.signature.model_dump(mode="json", by_alias=True))
        rollout = nim.spec.rollout
        assert rollout is not None
        inputs = reference_inputs(
            signature,
            rollout.gate.samples,
            max_batch_size=record.engine.max_batch_size or 0,
            generated=nim.spec.engine.parity.generated or (),
        )
        model = nim.triton_model_name
        last: Exception | None = None
        for attempt in range(GATE_ATTEMPTS):
            if attempt:
                await asyncio.sleep(GATE_PAUSE_SECONDS)
            try:
                served = await asyncio.to_thread(self.ask, addresses[0], model, signature, inputs)
                asked = await asyncio.to_thread(self.ask, addresses[1], model, signature, inputs)
                return served, asked
            except Exception as error:  # the client's errors: refused, reset, timed out, a 4xx/5xx answer
                last = error
                logger.info(
                    "%s/%s: the answer gate's request failed: %s", namespace, nim.metadata.name, error
                )
        raise GateError(f"the units could not be asked ({GATE_ATTEMPTS} attempts): {str(last)[:400]}")

    # The figures.

    async def _figures(self, nim: NimService, status: RolloutStatus, now: datetime) -> Figures:
        assert status.step_started_at is not None
        window = max(int((now - status.step_started_at).total_seconds()), 1)
        namespace, model = nim.metadata.namespace or "", nim.triton_model_name
        try:
            async with httpx.AsyncClient(timeout=PROMETHEUS_TIMEOUT) as client:
                figures = [
                    await self._unit_figures(client, namespace, deployment, model, window)
                    for deployment in (unit_name(nim, CANDIDATE_SUFFIX), name_of(nim))
                ]
        except (httpx.HTTPError, ValueError, KeyError) as error:
            return Figures(status.candidate, status.step, window, error=f"Prometheus: {str(error)[:300]}")
        return Figures(status.candidate, status.step, window, figures[0], figures[1])

    async def _unit_figures(
        self, client: httpx.AsyncClient, namespace: str, deployment: str, model: str, window: int
    ) -> UnitFigures:
        selector = deployment_pods_selector(namespace, deployment) + f',model="{_quoted(model)}"'

        async def total(series: str) -> float:
            value = await self._query(client, f"sum(increase({series}{{{selector}}}[{window}s]))")
            return 0.0 if value is None else max(value, 0.0)

        success, failure = await total(REQUEST_SUCCESS_SERIES), await total(FAILURE_SERIES)
        duration, queue = await total(DURATION_SERIES), await total(QUEUE_DURATION_SERIES)
        p99 = await self._query(
            client, f'max(max_over_time({LATENCY_SUMMARY}{{{selector},quantile="0.99"}}[{window}s]))'
        )
        requests, failures = round(success + failure), round(failure)
        answered = success + failure
        return UnitFigures(
            requests=requests,
            failures=min(failures, requests),
            error_ratio=round(failure / answered, 6) if answered > 0 else None,
            p99_latency_ms=None if p99 is None else round(p99 / 1000, 3),
            mean_latency_ms=round(duration / answered / 1000, 3) if answered > 0 else None,
            mean_queue_ms=round(queue / answered / 1000, 3) if answered > 0 else None,
        )

    async def _query(self, client: httpx.AsyncClient, query: str) -> float | None:
        """An instant query's single value (None: no series, or NaN)."""
        response = await client.get(f"{self.prometheus_url}/api/v1/query", params={"query": query})
        response.raise_for_status()
        body = response.json()
        if body.get("status") != "success":
            raise ValueError(f"query refused: {body.get('error', body)}")
        result = body["data"]["result"]
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) or math.isinf(value) else value


class GateError(Exception):
    """The units could not be asked."""


def _inputs(record: EngineRecord) -> str:
    return ", ".join(f"{t.name} {t.dtype} {t.shape}" for t in record.signature.inputs)


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
