"""The desired set of one NimService: from its whole spec and what the watches observed, every child kind is
wanted (and applied unless current), kept as it is, or unwanted (and deleted if it is there). Pure.

| child | wanted when | otherwise |
|---|---|---|
| engine claim | the spec uses a claim nimify creates | a dedicated claim goes once nothing mounts it |
| conversion Job | the engine is neither served, reusable nor built | created once, never changed |
| ConfigMap, Deployment | the engine for the spec is ready | kept: the old engine serves meanwhile |
| Service | always | |
| HPA | spec.autoscaling (once a Deployment is there) | deleted |
| PDB | more than one replica may run (same) | deleted |
| Ingress, HTTPRoute | spec.expose.ingress / .httpRoute | deleted |

Paused or invalid specs keep every child as it is. Deletions come first, so that nothing unwanted (an HPA
still scaling the Deployment) acts while the rest is applied; "unwanted" deletes only objects this
NimService controls (its owner reference with controller=true), never a user's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from nimify.api import NimService, NimServiceStatus
from nimify.api.conditions import ConditionReason
from nimify.api.semantics import semantic_errors
from nimify.controller.actions import Action, AddClaimOwner, Apply, Create, Delete, HandOverReplicas, Target
from nimify.controller.children import (
    AUTOSCALER,
    CHILD_BY_KIND,
    CLAIM,
    CONFIG_MAP,
    DEPLOYMENT,
    DISRUPTION_BUDGET,
    HTTP_ROUTE,
    INGRESS,
    ChildKind,
)
from nimify.controller.conditions import EngineState
from nimify.controller.drift import ChildState, child_state, conflicting_elements, owns_replicas
from nimify.controller.engine_step import EngineOutcome, engine_outcome
from nimify.controller.observed import Body, Observed
from nimify.engine.location import EngineLocation, dedicated_claim_name, engine_location
from nimify.render.autoscaler import render_autoscaler
from nimify.render.build_job import render_build_job
from nimify.render.deployment import ServedEngine, render_deployment
from nimify.render.disruption_budget import render_disruption_budget
from nimify.render.engine_claim import render_engine_claim
from nimify.render.identity import owner_reference, server_name, triton_config_name
from nimify.render.routes import render_http_route, render_ingress
from nimify.render.service import render_service
from nimify.render.triton_config import config_hash, render_config_text, render_triton_config
from nimify.settings import OperatorSettings


@dataclass(frozen=True)
class DesiredSet:
    """What one reconcile wants: the writes to send, and what the status reports about the engine."""

    engine: EngineState
    invalid_spec: str | None = None
    outcome: EngineOutcome | None = None  # None for an invalid spec
    location: EngineLocation | None = None
    config_hash: str | None = None  # of the Triton config the current engine is served with
    actions: list[Action] = field(default_factory=list)
    routes: tuple[str, ...] = ()  # kinds of route the spec asks for (Ingress / HTTPRoute)


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

    def live(self, child: ChildKind, name: str) -> Body | None:
        return self.observed.get(child.kind, self.namespace, name)

    def apply(self, desired: dict[str, Any], requires: tuple[Target, ...] = ()) -> None:
        child = CHILD_BY_KIND[desired["kind"]]
        live = self.live(child, desired["metadata"]["name"])
        state = child_state(desired, live, drift=child.drift)
        if state is ChildState.CURRENT:
            return
        remove = tuple(conflicting_elements(desired, live)) if state is ChildState.DRIFTED else ()
        self.writes.append(Apply(desired, state, remove, requires))

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


def desired_set(nim: NimService, observed: Observed, settings: OperatorSettings) -> DesiredSet:
    errors = semantic_errors(nim.spec)
    if errors:
        invalid = "; ".join(str(error) for error in errors)
        return DesiredSet(
            EngineState(False, ConditionReason.INVALID_SPEC.value, invalid, failed=True), invalid_spec=invalid
        )
    location = engine_location(nim, settings)
    outcome = engine_outcome(nim, location, observed)
    record = outcome.engine_status  # the engine to serve, once it is ready
    config_text = _config_text(nim, record) if record is not None else None
    digest = config_hash(config_text) if config_text is not None else None
    expose = nim.spec.expose
    routes = tuple(
        kind
        for kind, route in ((INGRESS.kind, expose.ingress), (HTTP_ROUTE.kind, expose.http_route))
        if route is not None
    )
    kept = DesiredSet(outcome.state, None, outcome, location, digest, routes=routes)
    if nim.spec.paused:
        return kept  # every child stays as it is

    plan = _Plan(nim, observed)
    claim = _claim(plan, nim, location, settings)
    if outcome.create_job:
        plan.writes.append(
            Create(render_build_job(nim, location, settings), requires=(claim,) if claim else ())
        )

    name = server_name(nim)
    live_deployment = plan.live(DEPLOYMENT, name)
    if record is not None and config_text is not None and digest is not None:
        plan.apply(render_triton_config(nim, config_text))
        deployment = render_deployment(
            nim, ServedEngine(location, digest, record["engine"].get("gpuProduct")), settings
        )
        if "replicas" not in deployment["spec"] and live_deployment and owns_replicas(live_deployment):
            plan.writes.append(HandOverReplicas(name, int(live_deployment["spec"].get("replicas", 1))))
        plan.apply(deployment, requires=((CONFIG_MAP.kind, triton_config_name(nim)),))
    plan.apply(render_service(nim))
    if record is not None or live_deployment is not None:  # an HPA or PDB needs a Deployment to act on
        plan.want(AUTOSCALER, name, render_autoscaler(nim))
        plan.want(DISRUPTION_BUDGET, name, render_disruption_budget(nim))
    plan.want(INGRESS, name, render_ingress(nim))
    plan.want(HTTP_ROUTE, name, render_http_route(nim))
    _retire_dedicated_claim(plan, nim, location)
    return replace(kept, actions=plan.actions)


def _config_text(nim: NimService, record: dict[str, Any]) -> str:
    signature = NimServiceStatus.model_validate({"signature": record["signature"]}).signature
    assert signature is not None, "a ready engine always comes with its signature"
    return render_config_text(nim, signature, int(record["engine"].get("maxBatchSize") or 0))


def _claim(
    plan: _Plan, nim: NimService, location: EngineLocation, settings: OperatorSettings
) -> Target | None:
    """The engine claim's action, if any; its target when there is one (the Job needs the claim)."""
    desired = render_engine_claim(nim, location.claim, settings)
    if desired is None:
        return None  # the user's existing claim
    target = (CLAIM.kind, location.claim)
    live = plan.live(CLAIM, location.claim)
    if nim.spec.storage is not None or live is None:
        plan.apply(desired)
        return target
    # The shared claim: every NimService using it becomes one of its owners, without rewriting the others.
    if nim.metadata.uid not in {ref.get("uid") for ref in live["metadata"].get("ownerReferences") or []}:
        plan.writes.append(AddClaimOwner(location.claim, owner_reference(nim, controller=False)))
        return target
    return None


def _retire_dedicated_claim(plan: _Plan, nim: NimService, location: EngineLocation) -> None:
    """A claim nimify made for this NimService's engines goes once the spec uses another claim and the
    Deployment no longer mounts it (its replicas may still serve from it while a new engine builds)."""
    name = dedicated_claim_name(nim)
    if location.claim == name:
        return
    deployment = plan.live(DEPLOYMENT, server_name(nim))
    volumes = (deployment or {}).get("spec", {}).get("template", {}).get("spec", {}).get("volumes") or []
    if any((volume.get("persistentVolumeClaim") or {}).get("claimName") == name for volume in volumes):
        return
    plan.want(CLAIM, name, None)
