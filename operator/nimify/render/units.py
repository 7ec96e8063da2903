"""Serving units: the engines a NimService serves, each in a Triton Deployment of its own. Pure.

A unit is an engine (a model with engine settings, its cache key and where it lives) plus the Deployment and
Triton config that serve it, a role and the share of the NimService's traffic it gets. A NimService with a
model has one unit, the serving one, named after the NimService: its children keep the names they always had.
A pipeline has one unit per member (an engine only, no Deployment of its own) and a serving unit over them,
whose Deployment serves every member's engine and the ensemble. A canary rollout will add a candidate beside
the serving unit. Each role decides its units here, from the spec and what the cluster holds, and everything
downstream (the conversion Jobs, the Deployments, the indexes, the status) iterates units.

Names: the serving unit's Deployment is the NimService's; another unit's is `<nimservice>-<suffix>`. A unit's
Deployment and pods carry the unit's name as `app.kubernetes.io/instance`, so the selectors of two units never
overlap (the serving unit's is the one it always had, and its Service's).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from nimify.api import NimService, NimServiceSpec, UnitRole
from nimify.engine.location import EngineLocation, engine_claim, engine_location
from nimify.render.identity import (
    APP_NAME,
    COMPONENT_SERVER,
    labels,
    name_of,
)
from nimify.settings import OperatorSettings

#: A unit's name is a label value (app.kubernetes.io/instance) and a Deployment's name.
MAX_UNIT_NAME = 63


@dataclass(frozen=True)
class ServingUnit:
    """One engine a NimService serves, and how."""

    name: str
    """Its Deployment's name; the NimService's own for the serving unit."""
    role: UnitRole
    nimservice: NimService
    """The NimService as this unit serves it: the NimService's metadata, the unit's spec (its model and
    engine); renderers read the spec from here and identity and ownership from the NimService itself."""
    location: EngineLocation
    traffic_percent: int = 100
    members: tuple[ServingUnit, ...] = ()
    """A pipeline's serving unit: the member units whose engines its Triton serves (with the ensemble); its
    own location is the pipeline's, keyed by the members' engines. A member has no Deployment of its own."""

    def __post_init__(self) -> None:
        if len(self.name) > MAX_UNIT_NAME:
            raise ValueError(f"serving unit name {self.name!r} is longer than {MAX_UNIT_NAME} characters")

    @property
    def spec(self) -> NimServiceSpec:
        return self.nimservice.spec

    @property
    def config_map_name(self) -> str:
        """The ConfigMap with the unit's Triton config."""
        return f"{self.name}-triton-config"  # the serving unit's: identity.triton_config_name

    @property
    def model_name(self) -> str:
        """The model's name inside Triton."""
        return self.nimservice.triton_model_name


def unit_selector(unit: ServingUnit) -> dict[str, str]:
    """The unit's Deployment selector: immutable, so only labels that never change for one unit."""
    return selector_of(unit.name)


def selector_of(unit: str) -> dict[str, str]:
    """The Deployment selector of the unit named `unit`."""
    return {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": unit,
        "app.kubernetes.io/component": COMPONENT_SERVER,
    }


def unit_labels(nim: NimService, unit: ServingUnit) -> dict[str, str]:
    """Labels of a unit's Deployment and pods: the NimService's, with the unit as the instance."""
    return labels(nim, COMPONENT_SERVER) | {"app.kubernetes.io/instance": unit.name}


def unit_name(nim: NimService, suffix: str) -> str:
    """The deterministic name of a unit other than the serving one."""
    return f"{name_of(nim)}-{suffix}"


def serving_unit(nim: NimService, settings: OperatorSettings) -> ServingUnit:
    """The unit that serves the NimService's spec as it stands."""
    return ServingUnit(name_of(nim), UnitRole.SERVING, nim, engine_location(nim, settings))


def serving_units(nim: NimService, settings: OperatorSettings) -> tuple[ServingUnit, ...]:
    """Every unit the NimService's spec asks for, the serving one first (a pipeline's, then its members)."""
    if nim.spec.pipeline is not None:
        members = pipeline_members(nim, settings)
        return (pipeline_unit(nim, members, settings), *members)
    return (serving_unit(nim, settings),)


def pipeline_members(nim: NimService, settings: OperatorSettings) -> tuple[ServingUnit, ...]:
    """One unit per pipeline member, `<nimservice>-<member>`: its engine built and checked like a model's."""
    assert nim.spec.pipeline is not None
    return tuple(
        extra_unit(nim, member.name, UnitRole.PIPELINE_MEMBER, nim.spec.member_spec(member), settings)
        for member in nim.spec.pipeline.members
    )


def pipeline_unit(
    nim: NimService, members: tuple[ServingUnit, ...], settings: OperatorSettings
) -> ServingUnit:
    """The unit serving a pipeline: one Triton with every member's engine and the ensemble over them. Its
    key names the members' engines, so a change to any rolls its Deployment."""
    keys = ",".join(f"{m.model_name}={m.location.cache_key}" for m in members)
    key = "pipeline-" + hashlib.sha256(keys.encode()).hexdigest()[:32]
    location = EngineLocation(cache_key=key, claim=engine_claim(nim, settings))
    return ServingUnit(name_of(nim), UnitRole.SERVING, nim, location, members=members)


def extra_unit(
    nim: NimService,
    suffix: str,
    role: UnitRole,
    spec: NimServiceSpec,
    settings: OperatorSettings,
    traffic_percent: int = 0,
) -> ServingUnit:
    """A unit beside the serving one, serving `spec` (the NimService's spec with its own model or engine)."""
    view = nim.model_copy(update={"spec": spec})
    return ServingUnit(
        unit_name(nim, suffix), role, view, engine_location(view, settings), traffic_percent=traffic_percent
    )
