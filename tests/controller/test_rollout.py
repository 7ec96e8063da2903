"""Canary rollouts: the state machine (rollout.advance) and the Reconciler carrying a rollout through its
steps against the in-memory cluster — the serving Deployment kept, the candidate's Deployment, Service and
weighted route, promotion, rollback, superseding, manual control and a restart that resumes. No control
plane; the e2e test runs a rollout on a real apiserver."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from nimify.api import EngineRecord, NimService, RolloutPhase, RolloutStatus
from nimify.api.conditions import ConditionReason
from nimify.controller.conditions import EngineState
from nimify.controller.engine_step import EngineOutcome
from nimify.controller.observed import Observed, ReadyEngine
from nimify.controller.pods import PodTrouble
from nimify.controller.reconcile import Reconciler
from nimify.controller.rollout import (
    DRAIN_SECONDS,
    ROLLOUT_ANNOTATION,
    Action,
    CandidateFacts,
    advance,
    requested_action,
)
from nimify.engine.location import engine_location
from nimify.render.identity import ENGINE_KEY_ANNOTATION, build_job_name
from tests.controller.test_reconciler import SETTINGS, SIGNATURE, Harness, T, _merge_patch_into
from tests.render.conftest import MODEL_SHA256, NAME, NAMESPACE, merged, nimservice

CANDIDATE = f"{NAME}-canary"
ROUTE = {"httpRoute": {"host": "mlp.example.com", "gatewayRef": {"name": "public"}}}
STEPS = [{"weight": 10, "holdSeconds": 60}, {"weight": 50, "holdSeconds": 120}]
CANARY = {"rollout": {"strategy": "Canary", "steps": STEPS}, "expose": ROUTE}
NEW_SHA256 = "cd" * 32

READY = EngineOutcome(EngineState(True, "EngineBuilt", ""), None)
BUILDING = EngineOutcome(EngineState(False, "BuildingEngine", "Job builds"), None, create_job=True)


def canary_nim(**rollout: Any) -> NimService:
    return nimservice(merged(CANARY, {"rollout": rollout}))


def progressing(**changes: Any) -> RolloutStatus:
    base = RolloutStatus(phase=RolloutPhase.PROGRESSING, candidate="k" * 64, generation=3)
    return base.model_copy(update=changes)


# --- the state machine -------------------------------------------------------------------------------------


def test_steps_hold_then_promote() -> None:
    nim, facts = canary_nim(), CandidateFacts(READY, ready=True)
    first, wake = advance(nim, progressing(), facts, T)
    assert (first.step, first.candidate_weight, first.step_started_at, wake) == (0, 10, T, 60.0)

    held, wake = advance(nim, first, facts, T + timedelta(seconds=45))
    assert held == first and wake == pytest.approx(15.0), "nothing changes while the step holds"

    second, wake = advance(nim, first, facts, T + timedelta(seconds=60))
    assert (second.step, second.candidate_weight, wake) == (1, 50, 120.0)
    assert second.message == "step 2 of 2: 50% of the traffic for 120 s"

    promoting, wake = advance(nim, second, facts, T + timedelta(seconds=180))
    assert promoting.phase == RolloutPhase.PROMOTING and promoting.candidate_weight == 50 and wake is None
    assert advance(nim, promoting, facts, T + timedelta(seconds=999))[0] == promoting, "until it has rolled"

    promoted, _ = advance(nim, promoting, replace(facts, serving_promoted=True), T + timedelta(seconds=200))
    assert promoted.phase == RolloutPhase.PROMOTED and promoted.candidate_weight == 0


def test_no_traffic_until_the_candidate_serves() -> None:
    nim = canary_nim()
    building, wake = advance(nim, progressing(), CandidateFacts(BUILDING, ready=False), T)
    assert building.candidate_weight == 0 and building.step_started_at is None and wake is None
    assert building.message == "the candidate's engine is being built"
    starting, _ = advance(nim, progressing(), CandidateFacts(READY, ready=False), T)
    assert starting.message == "the candidate's replicas are starting"


@pytest.mark.parametrize(
    ("facts", "said"),
    [
        (CandidateFacts(EngineOutcome(EngineState(False, "ParityFailed", "max abs 0.4", failed=True)), False),
         "the candidate's engine failed: ParityFailed: max abs 0.4"),
        (CandidateFacts(READY, True, trouble="pod x: container triton keeps crashing"),
         "the candidate's pods fail: pod x: container triton keeps crashing"),
        (CandidateFacts(READY, True, action=Action.ABORT), "aborted by `nimify rollout abort`"),
    ],
)  # fmt: skip
def test_a_failing_or_aborted_candidate_is_rolled_back_for_good(facts: CandidateFacts, said: str) -> None:
    nim = canary_nim()
    rolled_back, wake = advance(nim, progressing(step=1, candidate_weight=50, step_started_at=T), facts, T)
    assert rolled_back.phase == RolloutPhase.ROLLED_BACK and rolled_back.message == said
    assert rolled_back.candidate_weight == 0 and wake is None
    assert advance(nim, rolled_back, CandidateFacts(READY, True), T)[0] == rolled_back


def test_pause_holds_the_step_and_resuming_restarts_its_clock() -> None:
    facts = CandidateFacts(READY, ready=True)
    running = progressing(step=1, candidate_weight=50, step_started_at=T)
    paused, wake = advance(canary_nim(paused=True), running, facts, T + timedelta(seconds=500))
    assert (paused.phase, paused.step, paused.candidate_weight, wake) == (RolloutPhase.PAUSED, 1, 50, None)
    resumed, wake = advance(canary_nim(), paused, facts, T + timedelta(seconds=900))
    assert resumed.phase == RolloutPhase.PROGRESSING and resumed.step == 1
    assert resumed.step_started_at == T + timedelta(seconds=900) and wake == 120.0


def test_promote_now_skips_the_remaining_steps() -> None:
    promoted, _ = advance(canary_nim(), progressing(), CandidateFacts(READY, True, action=Action.PROMOTE), T)
    assert promoted.phase == RolloutPhase.PROMOTING
    assert promoted.message.startswith("promoted by `nimify rollout promote`")


def test_the_annotation_acts_only_on_the_candidate_it_names() -> None:
    body = canary_nim().model_dump(by_alias=True, exclude_none=True)
    body["metadata"]["annotations"] = {ROLLOUT_ANNOTATION: "promote=abc"}
    nim = NimService.model_validate(body)
    assert requested_action(nim, "abc") is Action.PROMOTE
    assert requested_action(nim, "def") is None, "a stale annotation from an earlier rollout"


# --- the Reconciler carrying a rollout ---------------------------------------------------------------------


class RolloutHarness(Harness):
    """A served NimService with a Canary rollout; the candidate's engine becomes ready when `candidate_built`
    (another NimService serves it: a cache hit), and the clock is the test's."""

    def __init__(self, spec: dict[str, Any] | None = None) -> None:
        super().__init__(CANARY if spec is None else spec)
        self.now = T
        self.candidate_built = False
        self.troubles: list[PodTrouble] = []
        self.events: list[tuple[str, str, str]] = []  # every event posted, (type, reason, message)
        self.reconciler = Reconciler(self.cluster, SETTINGS, clock=lambda: self.now)

    def new_model(self, sha256: str = NEW_SHA256) -> str:
        """The spec asks for another model (a new engine); its cache key."""
        self.body["spec"]["model"]["sha256"] = sha256
        self.body["metadata"]["generation"] += 1
        return engine_location(NimService.model_validate(self.body), SETTINGS).cache_key

    def observed(self) -> Observed:
        observed = self.cluster.observed()
        nim = NimService.model_validate(self.body)
        location = engine_location(nim, SETTINGS)
        engines = {}
        if self.candidate_built:
            record = EngineRecord.model_validate(
                {
                    "engine": {
                        "cacheKey": location.cache_key,
                        "location": f"{location.claim}/{location.repository}",
                        "maxBatchSize": 8,
                    },
                    "signature": SIGNATURE,
                }
            )
            engines = {(NAMESPACE, location.claim, location.cache_key): [ReadyEngine(record, "peer")]}
        return replace(
            observed,
            ready_engines=engines,
            server_pods={(NAMESPACE, NAME): self.troubles} if self.troubles else {},
        )

    async def reconcile(self) -> float | None:
        delay = await self.reconciler.reconcile(copy.deepcopy(self.body), self.observed())
        for patch in self.cluster.status_patches:
            self.body["status"] = _merge_patch_into(self.body.get("status") or {}, patch)
            self.body["metadata"]["resourceVersion"] = str(int(self.body["metadata"]["resourceVersion"]) + 1)
        self.cluster.status_patches.clear()
        return delay

    async def settle(self) -> float | None:
        """Roll out the Deployments there, reconcile; again until a reconcile writes nothing."""
        delay = None
        for _ in range(6):
            for name in (NAME, CANDIDATE):
                if self.cluster.get("Deployment", name) is not None:
                    self.cluster.roll_out(name)
            self.cluster.forget_calls()
            delay = await self.reconcile()
            self.events += self.cluster.events
            if not self.cluster.writes():  # children and the status alike
                return delay
        raise AssertionError(f"still writing: {self.cluster.writes()}")

    @property
    def rollout(self) -> dict[str, Any]:
        return dict(self.body["status"]["rollout"])

    def weights(self) -> list[tuple[str, int | None]]:
        refs = self.cluster.live("HTTPRoute", NAME)["spec"]["rules"][0]["backendRefs"]
        return [(ref["name"], ref.get("weight")) for ref in refs]

    def serving_key(self) -> str:
        template = self.cluster.live("Deployment", NAME)["spec"]["template"]["metadata"]
        return str(template["annotations"][ENGINE_KEY_ANNOTATION])


async def drained(h: RolloutHarness) -> None:
    """The ended rollout's candidate drains, without traffic, then its Deployment and Service go."""
    h.cluster.forget_calls()
    assert await h.reconcile() == pytest.approx(DRAIN_SECONDS), "the reconcile comes back when it ends"
    assert [c for c in h.cluster.writes() if c.kind != "NimService"] == []
    h.now += timedelta(seconds=DRAIN_SECONDS)
    await h.settle()
    assert h.cluster.get("Deployment", CANDIDATE) is None and h.cluster.get("Service", CANDIDATE) is None


async def started_rollout() -> tuple[RolloutHarness, str, str]:
    h = RolloutHarness()
    await h.converge()
    stable = h.serving_key()
    assert h.condition("RolledOut")["reason"] == ConditionReason.SERVING
    key = h.new_model()
    await h.settle()
    return h, stable, key


async def test_a_good_update_goes_through_the_steps_and_is_promoted() -> None:
    h, stable, key = await started_rollout()
    assert h.rollout["phase"] == "Progressing" and h.rollout["candidate"] == key
    assert h.rollout["message"] == "the candidate's engine is being built"
    assert h.serving_key() == stable, "the serving Deployment is kept while the candidate builds"
    location = engine_location(NimService.model_validate(h.body), SETTINGS)
    assert h.cluster.get("Job", build_job_name(location.claim, key, location.conversion_key)) is not None
    assert h.weights() == [(NAME, None)]

    h.candidate_built = True
    delay = await h.settle()
    assert (
        h.cluster.get("Deployment", CANDIDATE) is not None and h.cluster.get("Service", CANDIDATE) is not None
    )
    assert h.rollout["step"] == 0 and h.rollout["candidateWeight"] == 10 and delay == 60.0
    assert h.weights() == [(NAME, 90), (CANDIDATE, 10)]
    assert h.serving_key() == stable
    units = {u["name"]: (u["role"], u["trafficPercent"]) for u in h.body["status"]["units"]}
    assert units == {NAME: ("Serving", 90), CANDIDATE: ("Candidate", 10)}
    assert h.condition("RolledOut")["reason"] == "RolloutProgressing"
    assert h.condition("Ready")["status"] == "True", "the serving engine serves on"

    h.now = T + timedelta(seconds=60)
    assert await h.settle() == 120.0
    assert h.weights() == [(NAME, 50), (CANDIDATE, 50)] and h.rollout["step"] == 1

    h.now = T + timedelta(seconds=180)
    await h.settle()
    assert h.serving_key() == key, "promoted: the serving Deployment rolls to the candidate's engine"
    assert h.rollout["phase"] == "Promoted"
    assert h.weights() == [(NAME, None)], "the route drops the candidate first"
    assert (
        h.cluster.get("Deployment", CANDIDATE) is not None and h.cluster.get("Service", CANDIDATE) is not None
    )
    await drained(h)
    assert h.body["status"]["engine"]["cacheKey"] == key
    assert h.condition("RolledOut")["status"] == "True" and h.condition("RolledOut")["reason"] == "Promoted"
    reasons = [(kind, reason) for kind, reason, _ in h.events]
    assert ("Normal", "Promoted") in reasons
    assert not [event for event in h.events if event[0] == "Warning"]

    h.cluster.forget_calls()
    await h.reconcile()
    assert h.cluster.writes() == [], "a finished rollout writes nothing more"


async def test_a_crashing_candidate_is_rolled_back_and_the_serving_unit_untouched() -> None:
    h, stable, key = await started_rollout()
    h.candidate_built = True
    await h.settle()
    h.troubles = [
        PodTrouble("CrashLoopBackOff", "container triton keeps crashing", f"{CANDIDATE}-5d9c7b-x2x9q")
    ]
    await h.settle()
    assert h.rollout["phase"] == "RolledBack" and "keeps crashing" in h.rollout["message"]
    assert h.serving_key() == stable and h.weights() == [(NAME, None)]
    await drained(h)
    assert h.condition("Ready")["status"] == "True", "the candidate's crash is not the NimService's"
    assert h.condition("RolledOut")["reason"] == "RolledBack"
    assert ("Warning", "RolledBack") in [(kind, reason) for kind, reason, _ in h.events]

    h.troubles = []
    await h.settle()
    assert h.rollout["phase"] == "RolledBack", "the same engine is not tried again"

    h.new_model("ef" * 32)
    await h.settle()
    assert h.rollout["phase"] == "Progressing" and h.rollout["candidate"] != key, "a new spec, a new rollout"


async def test_a_new_engine_mid_rollout_supersedes_the_candidate() -> None:
    h, stable, _ = await started_rollout()
    h.candidate_built = True
    await h.settle()
    assert h.rollout["candidateWeight"] == 10
    h.candidate_built = False
    newer = h.new_model("ef" * 32)
    await h.settle()
    assert h.rollout["candidate"] == newer and h.rollout["step"] == 0 and h.rollout["candidateWeight"] == 0
    assert h.weights() == [(NAME, None)], "no traffic to the old candidate"
    assert h.serving_key() == stable
    # The old candidate runs until the new engine takes its Deployment over, and keeps its Service: a gateway
    # applies the route's change a moment later and would answer errors for a Service gone meanwhile.
    assert (
        h.cluster.get("Deployment", CANDIDATE) is not None and h.cluster.get("Service", CANDIDATE) is not None
    )


async def test_an_operator_restart_resumes_at_the_same_step() -> None:
    h, _, _ = await started_rollout()
    h.candidate_built = True
    await h.settle()
    h.now = T + timedelta(seconds=60)
    await h.settle()
    assert h.rollout["step"] == 1
    h.reconciler = Reconciler(h.cluster, SETTINGS, clock=lambda: h.now)  # a new process: only the cluster
    h.now = T + timedelta(seconds=100)
    h.cluster.forget_calls()
    assert await h.reconcile() == pytest.approx(80.0)
    assert h.rollout["step"] == 1 and h.weights() == [(NAME, 50), (CANDIDATE, 50)]
    assert [c for c in h.cluster.writes() if c.kind != "NimService"] == []


async def test_going_back_to_the_serving_engine_ends_the_rollout() -> None:
    h, stable, _ = await started_rollout()
    h.candidate_built = True
    await h.settle()
    h.new_model(MODEL_SHA256)
    await h.settle()
    assert h.rollout["phase"] == "RolledBack" and h.rollout["message"].startswith("superseded")
    await drained(h)
    assert h.serving_key() == stable


async def test_replace_rolls_at_once_as_before() -> None:
    h = Harness({"expose": ROUTE})
    await h.converge()
    h.body["spec"]["model"]["sha256"] = NEW_SHA256
    h.body["metadata"]["generation"] += 1
    await h.reconcile()
    assert "rollout" not in h.body["status"]
    assert all(c["type"] != "RolledOut" for c in h.body["status"]["conditions"])
    assert h.cluster.get("Deployment", CANDIDATE) is None


async def test_a_rolled_back_candidate_is_tried_again_once_the_spec_changes() -> None:
    h, _, key = await started_rollout()
    h.candidate_built = True
    await h.settle()
    h.troubles = [PodTrouble("OOMKilled", "container triton was OOM-killed", f"{CANDIDATE}-5d9c7b-x2x9q")]
    await h.settle()
    assert h.rollout["phase"] == "RolledBack" and h.rollout["generation"] == h.body["metadata"]["generation"]
    h.troubles = []
    h.body["spec"]["resources"]["memory"] = "4Gi"  # more memory: the same engine
    h.body["metadata"]["generation"] += 1
    await h.settle()
    assert h.rollout["phase"] == "Progressing" and h.rollout["candidate"] == key
    assert h.rollout["candidateWeight"] == 10


async def test_the_spec_back_on_the_serving_engine_is_rolled_out() -> None:
    h, _, _ = await started_rollout()
    h.new_model(MODEL_SHA256)
    await h.settle()
    assert h.rollout["phase"] == "RolledBack"
    assert h.condition("RolledOut")["status"] == "True", "the spec's engine serves all the traffic"


async def test_an_abort_while_promoting_changes_nothing() -> None:
    h, _, key = await started_rollout()
    h.candidate_built = True
    await h.settle()
    h.body["metadata"]["annotations"] = {ROLLOUT_ANNOTATION: f"promote={key}"}
    await h.reconcile()
    assert h.rollout["phase"] == "Promoting"
    h.body["metadata"]["annotations"] = {ROLLOUT_ANNOTATION: f"abort={key}"}
    await h.settle()
    assert h.rollout["phase"] == "Promoted" and h.serving_key() == key


async def test_without_a_gateway_the_candidate_takes_its_share_of_the_replicas() -> None:
    steps = [{"weight": 25, "holdSeconds": 60}, {"weight": 50, "holdSeconds": 60}]
    h = RolloutHarness({"rollout": {"strategy": "Canary", "steps": steps}, "replicas": 3})
    await h.converge()
    selector = h.cluster.live("Service", NAME)["spec"]["selector"]
    assert selector["app.kubernetes.io/instance"] == NAME
    key = h.new_model()
    h.candidate_built = True
    await h.settle()
    assert h.rollout["traffic"] == "Replicas" and h.rollout["candidateWeight"] == 25
    assert h.cluster.live("Deployment", CANDIDATE)["spec"]["replicas"] == 1, "a quarter of 3 + 1 pods"
    assert h.cluster.live("Deployment", NAME)["spec"]["replicas"] == 3
    both = h.cluster.live("Service", NAME)["spec"]["selector"]
    assert "app.kubernetes.io/instance" not in both and both["nimify.dev/nimservice"] == NAME
    assert h.cluster.get("HTTPRoute", NAME) is None

    h.now = T + timedelta(seconds=60)
    await h.settle()
    assert h.cluster.live("Deployment", CANDIDATE)["spec"]["replicas"] == 3, "half of the pods"

    h.now = T + timedelta(seconds=120)
    await h.settle()
    assert h.rollout["phase"] == "Promoted" and h.serving_key() == key
    assert h.cluster.live("Service", NAME)["spec"]["selector"] == selector, "the serving unit's pods only"
    await drained(h)


async def test_a_paused_nimservice_holds_its_rollout_where_it_stood() -> None:
    h, _, _ = await started_rollout()
    h.candidate_built = True
    await h.settle()
    h.body["spec"]["paused"] = True
    h.now = T + timedelta(seconds=600)
    await h.settle()
    assert (h.rollout["phase"], h.rollout["step"], h.rollout["candidateWeight"]) == ("Progressing", 0, 10)
    assert h.weights() == [(NAME, 90), (CANDIDATE, 10)]


async def test_with_an_autoscaler_the_candidate_is_sized_to_its_share_of_what_it_runs() -> None:
    autoscaling = {"minReplicas": 1, "maxReplicas": 4, "targetGpuUtilization": 70}
    h = RolloutHarness(merged(CANARY, {"autoscaling": autoscaling}))
    await h.converge()
    h.cluster.live("Deployment", NAME)["spec"]["replicas"] = 3  # what the HPA runs now
    h.new_model()
    h.candidate_built = True
    await h.settle()
    assert h.rollout["candidateWeight"] == 10
    assert h.cluster.live("Deployment", CANDIDATE)["spec"]["replicas"] == 1, "10 % of the load of 3 + 1"
    assert h.cluster.get("HorizontalPodAutoscaler", NAME) is not None, "the serving unit still scales"

    h.now = T + timedelta(seconds=60)
    await h.settle()
    assert h.rollout["candidateWeight"] == 50
    assert h.cluster.live("Deployment", CANDIDATE)["spec"]["replicas"] == 3, "as many as the serving unit"
    h.cluster.live("Deployment", NAME)["spec"]["replicas"] = 4  # the HPA scaled up
    await h.settle()
    assert h.cluster.live("Deployment", CANDIDATE)["spec"]["replicas"] == 4, "it follows, up to maxReplicas"
