"""The desired set of one NimService: from its whole spec and what the watches observed, every child is
wanted (and applied unless current), kept as it is, or unwanted (and deleted if it is there). Pure.

It iterates the NimService's serving units (render/units.py): each unit needs an engine (a conversion Job,
an engine claim) and, once its engine is ready, a Triton config and a Deployment; then come the children of
the NimService itself, each rendered by its kind's renderer (children.py).

| child | wanted when | otherwise |
|---|---|---|
| engine claim | a unit uses a claim nimify creates | a dedicated claim goes once nothing mounts it; the |
| | | shared one once no NimService uses it (`unused_shared_claim`) |
| conversion Job | a unit's engine is neither served, reusable nor built | created once, never changed |
| check Job | a pipeline's members are ready and this ensemble is not checked (pipeline.py) | the same |
| ConfigMap, Deployment | the unit's engine is ready | kept while the unit exists: its old engine serves |
| | | meanwhile; deleted once the unit is gone |
| Service | always; a rollout's candidate's while it has a Deployment (rollout.py) | the candidate's deleted |
| HPA | spec.autoscaling with the HPA as its autoscaler (once a Deployment is there) | deleted |
| KEDA ScaledObject | spec.autoscaling with KEDA as its autoscaler (same) | deleted (KEDA removes its HPA) |
| PDB | more than one replica may run (same) | deleted |
| Ingress, HTTPRoute, GRPCRoute | spec.expose.ingress / .httpRoute / .grpcRoute | deleted |

Paused or invalid specs keep every child as it is. Deletions come first, so that nothing unwanted (an HPA
still scaling the Deployment) acts while the rest is applied; "unwanted" deletes only objects this
NimService controls (its owner reference with controller=true), never a user's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from nimify.api import EngineRecord, NimService, RolloutStatus, TrafficSplit, UnitRole
from nimify.api.conditions import ConditionReason
from nimify.api.semantics import semantic_errors
from nimify.api.spec import Autoscaler
from nimify.api.spec.rollout import CANDIDATE_SUFFIX
from nimify.autoscaling.choice import chosen_autoscaler
from nimify.controller.actions import Action, Apply, Create, Delete, HandOverReplicas, Target
from nimify.controller.children import (
    CHILD_BY_KIND,
    CHILD_KINDS,
    CLAIM,
    CONFIG_MAP,
    DEPLOYMENT,
    GRPC_ROUTE,
    HTTP_ROUTE,
    SERVICE,
    ChildKind,
    Scope,
)
from nimify.controller.conditions import EngineState
from nimify.controller.drift import ChildState, child_state, conflicting_elements, owns_replicas
from nimify.controller.engine_step import EngineOutcome, engine_outcome, served_reason
from nimify.controller.observed import Body, Observed
from nimify.controller.pipeline import pipeline_outcome
from nimify.controller.rollout import Canary, plan_rollout
from nimify.controller.tuning import TuningOutcome, tuning_outcome
from nimify.engine.location import EngineLocation, dedicated_claim_name
from nimify.render.build_job import render_build_job
from nimify.render.deployment import ServedEngine, render_deployment
from nimify.render.engine_claim import render_engine_claim
from nimify.render.identity import CONFIG_HASH_ANNOTATION, server_name
from nimify.render.routes import render_grpc_route, render_http_route
from nimify.render.service import render_service, render_unit_service
from nimify.render.triton_config import (
    CONFIG_KEY,
    DEFAULT_CONFIG_KEY,
    config_hash,
    config_text,
    render_triton_config,
)
from nimify.render.tuning_job import render_tuning_job
from nimify.render.units import ServingUnit, serving_units, unit_name
from nimify.settings import OperatorSettings

Units = Callable[[NimService, OperatorSettings], tuple[ServingUnit, ...]]
"""A NimService's serving units, the serving one first (render/units.py: serving_units)."""


@dataclass(frozen=True)
class UnitPlan:
    """One serving unit in this reconcile: where its engine stands and what serves it."""

    unit: ServingUnit
    outcome: EngineOutcome
    config_hash: str | None = None  # of the Triton config its ready engine is served with
    config: dict[str, str] | None = None  # that config, as its ConfigMap holds it (a pipeline's: several)
    job: Body | None = None  # the Job its engine needs when not a conversion (a pipeline's check)
    deployment: Body | None = None  # the Deployment wanted for it (applied now or already current)
    deployment_changed: bool = False  # applied now: what the watch shows of it predates this change
    tuning: TuningOutcome | None = None  # the serving unit's tuning (spec.triton.tuning)
    kept: bool = False  # its Deployment and config stay as they are (the serving unit during a rollout)

    @property
    def record(self) -> EngineRecord | None:
        return self.outcome.record


@dataclass(frozen=True)
class DesiredSet:
    """What one reconcile wants: the writes to send, and the facts the status reports."""

    engine: EngineState  # the serving unit's
    invalid_spec: str | None = None
    units: tuple[UnitPlan, ...] = ()  # the serving unit's first; none for an invalid spec
    actions: list[Action] = field(default_factory=list)
    rendered: frozenset[Target] = frozenset()  # children wanted as rendered this pass (applied or current)
    routes: tuple[str, ...] = ()  # kinds of route the spec asks for (Ingress / HTTPRoute / GRPCRoute)
    autoscaler: Autoscaler | None = None  # what owns the replica count (spec.autoscaling, else None)
    rollout: RolloutStatus | None = None  # the canary rollout after this reconcile (status.rollout)
    wake_in: float | None = None  # seconds until a rollout's step ends: reconcile again then
    candidate: str | None = None  # a rollout's candidate unit, while it has one (its pods are judged apart)
    rollout_pending: bool = False  # the spec asks for an engine the serving unit does not serve (canary)

    @property
    def serving(self) -> UnitPlan | None:
        return next((plan for plan in self.units if plan.unit.role is UnitRole.SERVING), None)


def controlled_by(live: Body, nim: NimService) -> bool:
    """Whether `live` names this NimService as its controller (so it is this NimService's to delete)."""
    return any(
        ref.get("uid") == nim.metadata.uid and ref.get("controller")
        for ref in live.get("metadata", {}).get("ownerReferences") or []
    )


class _Plan:
    """Collects one reconcile's actions: applies in order, deletions ahead of them."""

    def __init__(self, nim: NimService, observed: Observed) -> None:
        self.nim = nim
        self.namespace = nim.metadata.namespace or ""
        self.observed = observed
        self.deletions: list[Action] = []
        self.writes: list[Action] = []
        self.rendered: set[Target] = set()

    def live(self, child: ChildKind, name: str) -> Body | None:
        return self.observed.get(child.kind, self.namespace, name)

    def apply(self, desired: dict[str, Any], requires: tuple[Target, ...] = ()) -> bool:
        """Apply `desired` unless it is current; whether a write was planned."""
        child = CHILD_BY_KIND[desired["kind"]]
        target = (child.kind, desired["metadata"]["name"])
        if target in self.rendered:
            return False  # two units with one engine claim
        self.rendered.add(target)
        live = self.live(child, target[1])
        state = child_state(desired, live, drift=child.drift)
        if state is ChildState.CURRENT:
            return False
        remove = tuple(conflicting_elements(desired, live)) if state is ChildState.DRIFTED else ()
        self.writes.append(Apply(desired, state, remove, requires))
        return True

    def want(self, child: ChildKind, name: str, desired: dict[str, Any] | None) -> None:
        """`desired`, or nothing: then delete what this NimService controls under that name."""
        if desired is not None:
            self.apply(desired)
            return
        live = self.live(child, name)
        if live is not None and controlled_by(live, self.nim):
            self.deletions.append(Delete(child.kind, name))

    @property
    def actions(self) -> list[Action]:
        return [*self.deletions, *self.writes]


def desired_set(
    nim: NimService,
    observed: Observed,
    settings: OperatorSettings,
    units: Units = serving_units,
    now: datetime | None = None,
) -> DesiredSet:
    """The desired set of `nim`'s serving units (`units` says which; tests give their own) and of the
    NimService itself. `now` moves a canary rollout on (rollout.py); without it the rollout stays where it
    stood."""
    errors = semantic_errors(nim.spec)
    if errors:
        invalid = "; ".join(str(error) for error in errors)
        return DesiredSet(
            EngineState(False, ConditionReason.INVALID_SPEC.value, invalid, failed=True),
            invalid_spec=invalid,
            rollout=nim.status.rollout if nim.status is not None else None,
        )
    spec_units = units(nim, settings)
    # A paused NimService's rollout stands still too: its children are not written.
    rollout = plan_rollout(nim, spec_units[0], observed, settings, None if nim.spec.paused else now)
    plans = _unit_plans(nim, spec_units, observed, settings)
    canary = rollout.canary
    if canary is not None:
        plans = _canary_plans(nim, plans, canary, observed)
    candidate = canary.candidate if canary is not None and canary.has_candidate else None
    # Routes are rendered once: their kinds tell the status which to expect, their bodies are applied below.
    rendered_routes = {
        child.kind: child.render(nim, settings) for child in CHILD_KINDS if child.route and child.render
    }
    overrides: dict[str, dict[str, Any] | None] = {}
    if candidate is not None and canary is not None and canary.weight > 0:
        if canary.status.traffic == TrafficSplit.REPLICAS:  # no Gateway: one Service over both units
            overrides[SERVICE.kind] = render_service(nim, every_unit=True)
        else:
            rendered_routes[HTTP_ROUTE.kind] = render_http_route(nim, (candidate.name, canary.weight))
            rendered_routes[GRPC_ROUTE.kind] = render_grpc_route(nim, (candidate.name, canary.weight))
    routes = tuple(kind for kind, body in rendered_routes.items() if body is not None)
    kept = DesiredSet(
        plans[0].outcome.state,
        units=tuple(plans),
        routes=routes,
        autoscaler=chosen_autoscaler(nim, settings),
        rollout=rollout.status,
        wake_in=rollout.wake_in,
        candidate=candidate.name if candidate is not None else None,
        rollout_pending=rollout.pending,
    )
    if nim.spec.paused:
        return kept  # every child stays as it is

    plan = _Plan(nim, observed)
    plans = _engines_and_servers(plan, nim, plans, settings)
    serving = plans[0]
    _nimservice_children(
        plan, nim, settings, rendered_routes | overrides, server_there=serving.deployment is not None
    )
    _candidate_service(plan, nim, candidate, plans)
    _retire_units(plan, nim, {p.unit.name for p in plans}, {p.unit.config_map_name for p in plans})
    _retire_dedicated_claim(plan, nim, [p.unit for p in plans])
    return replace(kept, units=tuple(plans), actions=plan.actions, rendered=frozenset(plan.rendered))


def _canary_plans(
    nim: NimService, plans: list[UnitPlan], canary: Canary, observed: Observed
) -> list[UnitPlan]:
    """The units during a canary rollout: the serving unit kept as it is (serving the stable engine) until
    promotion, then rolled to the candidate's engine; the candidate beside it while it has one."""
    if canary.draining:  # the candidate as it stands, without traffic, until it goes
        candidate = _kept_candidate(nim, canary.candidate, observed)
    else:
        candidate = _unit_plan(nim, canary.candidate, observed)
    if canary.keeps_serving:
        assert canary.stable is not None
        serving = _kept_plan(nim, canary, observed)
    else:  # promoting: the serving unit takes the candidate's engine, built and checked already
        serving = plans[0]
        if serving.record is None and candidate.record is not None:
            outcome = EngineOutcome(
                EngineState(True, ConditionReason.ENGINE_BUILT.value, "the candidate's engine, promoted"),
                candidate.record,
            )
            serving = _unit_plan(nim, serving.unit, observed, outcome)
    serving = replace(serving, unit=replace(serving.unit, traffic_percent=100 - canary.weight))
    return [serving, candidate] if canary.has_candidate else [serving]


def _kept_plan(nim: NimService, canary: Canary, observed: Observed) -> UnitPlan:
    """The serving unit as it stands: its live Deployment and config, serving the stable engine."""
    stable = canary.stable
    assert stable is not None
    where = stable.engine.location or ""
    image = where if where.startswith("oci://") else None
    location = EngineLocation(
        cache_key=stable.engine.cache_key or "", claim="" if image else where.split("/")[0], model_image=image
    )
    unit = ServingUnit(server_name(nim), UnitRole.SERVING, nim, location)
    state = EngineState(True, served_reason(nim, unit), f"engine {location.cache_key[:12]} serves")
    return _kept(nim, unit, EngineOutcome(state, stable), observed)


def _kept_candidate(nim: NimService, unit: ServingUnit, observed: Observed) -> UnitPlan:
    """A rollout's candidate that drains: its live Deployment and config, nothing applied."""
    before = nim.status.unit(unit.name) if nim.status is not None else None
    state = EngineState(True, ConditionReason.ENGINE_BUILT.value, "the ended rollout's candidate drains")
    return _kept(nim, unit, EngineOutcome(state, before.record() if before else None), observed)


def _kept(nim: NimService, unit: ServingUnit, outcome: EngineOutcome, observed: Observed) -> UnitPlan:
    """A unit whose Deployment and Triton config stay as they are: the live Deployment and the config it
    serves (its template's annotation)."""
    live = observed.get(DEPLOYMENT.kind, nim.metadata.namespace or "", unit.name)
    template = (live or {}).get("spec", {}).get("template", {}).get("metadata", {})
    config = (template.get("annotations") or {}).get(CONFIG_HASH_ANNOTATION)
    return UnitPlan(unit, outcome, config_hash=config, deployment=live, kept=True)


def _candidate_service(
    plan: _Plan, nim: NimService, candidate: ServingUnit | None, plans: list[UnitPlan]
) -> None:
    """A rollout's candidate has a Service of its own (the route's second backend) while it has a
    Deployment, the one it runs now included (a superseded candidate's, until the new engine takes it over:
    the route drops the old one a moment after the write, and a Service deleted under a gateway's route made
    Traefik answer 500 meanwhile); without a candidate there is none."""
    name = unit_name(nim, CANDIDATE_SUFFIX)
    running = plan.live(DEPLOYMENT, name) is not None
    wanted = any(p.unit.name == name and p.deployment is not None for p in plans)
    served = candidate is not None and (wanted or running)
    plan.want(SERVICE, name, render_unit_service(nim, candidate) if served and candidate else None)


def _engines_and_servers(
    plan: _Plan, nim: NimService, plans: list[UnitPlan], settings: OperatorSettings
) -> list[UnitPlan]:
    """Each unit's engine (its claim, and a conversion Job unless the engine is there) and, once the engine is
    ready, its Triton config and Deployment; the plans with the Deployments wanted."""
    jobs: set[str] = set()
    served = []
    for unit_plan in plans:
        if unit_plan.kept:
            served.append(unit_plan)
            continue
        unit, outcome = unit_plan.unit, unit_plan.outcome
        claim = _claim(plan, nim, unit.location, settings)
        if outcome.create_job:
            job = unit_plan.job or render_build_job(nim, unit, settings)
            if job["metadata"]["name"] not in jobs:  # two units with one engine: one Job
                jobs.add(job["metadata"]["name"])
                plan.writes.append(Create(job, requires=(claim,) if claim else ()))
        if outcome.record is not None and unit_plan.config_hash is not None:
            deployment, changed = _serve(plan, nim, unit_plan, settings)
            unit_plan = replace(unit_plan, deployment=deployment, deployment_changed=changed)
            tuning = unit_plan.tuning
            if tuning is not None and tuning.create_job:
                job = render_tuning_job(nim, unit, outcome.record, tuning.key, settings)
                plan.writes.append(Create(job, requires=((CONFIG_MAP.kind, unit.config_map_name),)))
        served.append(unit_plan)
    return served


def _nimservice_children(
    plan: _Plan,
    nim: NimService,
    settings: OperatorSettings,
    rendered: dict[str, dict[str, Any] | None],
    *,
    server_there: bool,
) -> None:
    """The NimService's own children, each rendered by its kind (children.py) unless `rendered` holds it; an
    autoscaler or PDB needs a Deployment to act on: without the serving unit's, they stay as they are."""
    server_there = server_there or plan.live(DEPLOYMENT, server_name(nim)) is not None
    for child in CHILD_KINDS:
        if child.render is None or (child.needs_server and not server_there):
            continue
        body = rendered[child.kind] if child.kind in rendered else child.render(nim, settings)
        if child.prunable:
            plan.want(child, server_name(nim), body)
        elif body is not None:
            plan.apply(body)


def _unit_plans(
    nim: NimService, units: tuple[ServingUnit, ...], observed: Observed, settings: OperatorSettings
) -> list[UnitPlan]:
    """Where each unit's engine stands; a pipeline's from its members' (pipeline.py)."""
    plans = {unit.name: _unit_plan(nim, unit, observed) for unit in units if not unit.members}
    for unit in units:
        if unit.members:
            member_outcomes = [(m, plans[m.name].outcome) for m in unit.members]
            found = pipeline_outcome(nim, unit, member_outcomes, observed, settings)
            plans[unit.name] = UnitPlan(unit, found.outcome, found.config_hash, found.config, job=found.job)
    return [plans[unit.name] for unit in units]


def _unit_plan(
    nim: NimService, unit: ServingUnit, observed: Observed, outcome: EngineOutcome | None = None
) -> UnitPlan:
    outcome = outcome or engine_outcome(nim, unit, observed)
    if outcome.record is None or unit.role is UnitRole.PIPELINE_MEMBER:
        return UnitPlan(unit, outcome)  # a member is served by its pipeline's unit
    if unit.spec.triton.tuning is None or unit.role is not UnitRole.SERVING:
        text = config_text(unit, outcome.record)
        return UnitPlan(unit, outcome, config_hash(text), {CONFIG_KEY: text})
    # Tuned: the tuning's choice serves once there is one; the default until then, and the tuning Job starts
    # from the default (its own key of the ConfigMap).
    tuning = tuning_outcome(nim, unit, outcome.record, observed)
    text = config_text(unit, outcome.record, tuning.tuned)
    data = {CONFIG_KEY: text, DEFAULT_CONFIG_KEY: config_text(unit, outcome.record)}
    return UnitPlan(unit, outcome, config_hash(text), data, tuning=tuning)


def _serve(
    plan: _Plan, nim: NimService, unit_plan: UnitPlan, settings: OperatorSettings
) -> tuple[Body, bool]:
    """Apply the unit's Triton config and Deployment; the Deployment wanted, and whether it is written now."""
    unit, record, config = unit_plan.unit, unit_plan.record, unit_plan.config
    assert record is not None and unit_plan.config_hash is not None and config, (
        "only a unit with a ready engine"
    )
    plan.apply(render_triton_config(nim, unit, config))
    deployment = render_deployment(
        nim,
        unit,
        ServedEngine(
            unit_plan.config_hash,
            record.engine.gpu_product,
            model_image=record.engine.location if unit.location.model_image else None,
        ),
        settings,
    )
    live = plan.live(DEPLOYMENT, unit.name)
    if "replicas" not in deployment["spec"] and live and owns_replicas(live):
        plan.writes.append(HandOverReplicas(unit.name, int(live["spec"].get("replicas", 1))))
    changed = plan.apply(deployment, requires=((CONFIG_MAP.kind, unit.config_map_name),))
    return deployment, changed


def _retire_units(plan: _Plan, nim: NimService, deployments: set[str], configs: set[str]) -> None:
    """Children of units the NimService no longer has: their Deployments and Triton configs."""
    namespace, name = plan.namespace, nim.metadata.name or ""
    for child in CHILD_KINDS:
        if child.scope is Scope.UNIT:
            wanted = deployments if child is DEPLOYMENT else configs
            for retired in sorted(plan.observed.unit_children(child.kind, namespace, name) - wanted):
                plan.want(child, retired, None)


def _claim(
    plan: _Plan, nim: NimService, location: EngineLocation, settings: OperatorSettings
) -> Target | None:
    """The engine claim's action, if any; its target when there is one (the Job needs the claim). A model
    image's engine lives on no claim."""
    if location.model_image is not None:
        return None
    desired = render_engine_claim(nim, location.claim, settings)
    if desired is None:
        return None  # the user's existing claim
    plan.apply(desired)
    return CLAIM.kind, location.claim


def unused_shared_claim(
    namespace: str, observed: Observed, users: int, settings: OperatorSettings
) -> str | None:
    """The namespace's shared engine claim, when it exists and none of the namespace's `users` NimServices
    uses it any more: it has no owner for garbage collection to follow, so the operator deletes it."""
    name = settings.engine_cache_claim
    live = observed.get(CLAIM.kind, namespace, name)
    if live is None or users or live.get("metadata", {}).get("deletionTimestamp"):
        return None
    if any(ref.get("controller") for ref in live["metadata"].get("ownerReferences") or []):
        return None  # someone's dedicated claim under that name: its owner's business
    return name


def _retire_dedicated_claim(plan: _Plan, nim: NimService, units: list[ServingUnit]) -> None:
    """A claim nimify made for this NimService's engines goes once no unit uses it and no Deployment of the
    NimService mounts it (its replicas may still serve from it while a new engine builds)."""
    name = dedicated_claim_name(nim)
    if any(unit.location.claim == name for unit in units):
        return
    deployments = plan.observed.unit_children(DEPLOYMENT.kind, plan.namespace, nim.metadata.name or "")
    for deployment in (plan.live(DEPLOYMENT, d) for d in deployments | {server_name(nim)}):
        volumes = (deployment or {}).get("spec", {}).get("template", {}).get("spec", {}).get("volumes") or []
        if any((volume.get("persistentVolumeClaim") or {}).get("claimName") == name for volume in volumes):
            return
    plan.want(CLAIM, name, None)
