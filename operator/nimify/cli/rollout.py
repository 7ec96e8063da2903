"""`nimify rollout status|promote|abort`: where a NimService's canary rollout stands, and the manual promotion
or rollback of its candidate.

The commands read the NimService and write one annotation (`nimify.dev/rollout: promote=<candidate>` or
`abort=<candidate>`); the operator acts on it (controller/rollout.py). What they show and whether they may ask
are plain functions of the typed NimService, so tests need no cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nimify.api import CanaryStep, ConditionType, NimService, RolloutPhase, RolloutStrategy
from nimify.api.status import RolloutAnalysisStatus
from nimify.cli import app
from nimify.cli.failures import fail, reported_failures

if TYPE_CHECKING:
    from lightkube import AsyncClient

    from nimify.controller.rollout import Action

#: Who writes the annotation, in the NimService's managedFields.
FIELD_MANAGER = "nimify-cli"
#: A status write between our read and our patch fails the patch (resourceVersion); we read again this often.
PATCH_ATTEMPTS = 5
#: The phases in which a candidate still waits for its verdict: before them none exists, after them the
#: serving Deployment already rolls to it (Promoting) or the rollout is over.
UNDECIDED = (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED)
#: How long the commands wait for the apiserver, all requests together.
TIMEOUT_SECONDS = 30
#: How many characters of an engine's cache key name it to a person (as the operator's messages do).
SHORT_KEY = 12

rollout_commands = typer.Typer(
    name="rollout",
    help="Follow a NimService's canary rollout (spec.rollout Canary), promote its candidate or roll it back.",
    no_args_is_help=True,
)
app.add_typer(rollout_commands)

NameArgument = Annotated[str, typer.Argument(help="The NimService.")]
NamespaceOption = Annotated[
    str | None,
    typer.Option("--namespace", "-n", help="Default: the kubeconfig context's namespace."),
]
KubeconfigOption = Annotated[
    Path | None, typer.Option("--kubeconfig", help="Default: $KUBECONFIG or ~/.kube/config.")
]
ContextOption = Annotated[str | None, typer.Option("--context")]
T = TypeVar("T")


class RolloutRefusedError(Exception):
    """A promote or abort that would not do what it says: no rollout waits for a verdict."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class RolloutReport:
    """What `nimify rollout status` shows."""

    note: str | None
    """Why there is no canary rollout to show (or none yet)."""
    rows: list[tuple[str, str]]
    """The rollout, field by field; empty when none was recorded."""
    units: list[tuple[str, str, str]]
    """The serving units: name, role, share of the traffic."""


# --- what the commands decide -------------------------------------------------------------------------------


def rollout_report(nim: NimService) -> RolloutReport:
    """What `nimify rollout status` shows of the NimService (its spec for the steps, its status for the
    rest)."""
    status = nim.status
    rollout = status.rollout if status is not None else None
    rows: list[tuple[str, str]] = []
    if rollout is not None:
        steps = (nim.spec.rollout.steps if nim.spec.rollout is not None else None) or []
        rows += [
            ("phase", rollout.phase.value),
            ("step", step_text(rollout.step, steps)),
            ("candidate weight", f"{rollout.candidate_weight}%"),
            ("candidate engine", rollout.candidate[:SHORT_KEY]),
            ("traffic", rollout.traffic.value if rollout.traffic is not None else "-"),
            ("message", rollout.message or "-"),
        ]
        if rollout.step_started_at is not None:
            rows.append(("step started", rollout.step_started_at.isoformat()))
        rows.append(("generation", str(rollout.generation)))
        if rollout.gate is not None:
            verdict = "passed" if rollout.gate.passed else "failed"
            rows.append(("answer gate", f"{rollout.gate.form.value} {verdict}: {rollout.gate.message}"))
        if rollout.analysis is not None:
            rows.append(("analysis", analysis_text(rollout.analysis)))
    if nim.spec.rollout is not None and nim.spec.rollout.paused:
        rows.append(("paused", "yes (spec.rollout.paused)"))
    condition = status.condition(ConditionType.ROLLED_OUT) if status is not None else None
    if condition is not None:
        text = f"{condition.status.value} ({condition.reason})"
        rows.append(
            (ConditionType.ROLLED_OUT.value, f"{text}: {condition.message}" if condition.message else text)
        )
    units = [
        (u.name, u.role.value, f"{u.traffic_percent}%") for u in (status.units if status else None) or []
    ]
    return RolloutReport(note=absence(nim), rows=rows, units=units)


def analysis_text(analysis: RolloutAnalysisStatus) -> str:
    """The last analysis in a line: each unit's requests, each limit's verdict."""
    units = [("candidate", analysis.candidate), ("serving", analysis.serving)]
    figures = ", ".join(
        f"{who} {f.requests} requests ({f.failures} failed"
        + (f", p99 {f.p99_latency_ms:g} ms" if f.p99_latency_ms is not None else "")
        + ")"
        for who, f in units
        if f is not None
    )
    verdicts = ", ".join(
        f"{v.metric} {v.value:g} {'<=' if v.passed else '>'} {v.limit:g}"
        if v.metric != "requests"
        else f"requests {v.value:g} of {v.limit:g}"
        for v in analysis.verdicts
    )
    return f"step {analysis.step + 1}, {analysis.window_seconds} s: {figures}" + (
        f"; {verdicts}" if verdicts else ""
    )


def step_text(step: int, steps: list[CanaryStep]) -> str:
    """`step 2 of 3: 25% for 120 s` (status.rollout.step counts from 0; it is the number of steps once all
    have passed)."""
    if not steps:  # the spec no longer has the steps the rollout ran
        return f"step {step + 1}"
    if step >= len(steps):
        return f"all {len(steps)} steps passed"
    return f"step {step + 1} of {len(steps)}: {steps[step].weight}% for {steps[step].hold_seconds} s"


def absence(nim: NimService) -> str | None:
    """Why the NimService has no canary rollout to show or steer, if it has none."""
    name = nim.metadata.name
    spec = nim.spec.rollout
    if spec is None or spec.strategy != RolloutStrategy.CANARY:
        why = "spec.rollout is absent" if spec is None else f"spec.rollout.strategy is {spec.strategy.value}"
        return f"{name} has no Canary rollout ({why}): a new engine replaces the serving one at once"
    if nim.status is None or nim.status.rollout is None:
        return (
            f"{name} has had no rollout yet: one starts when the spec asks for an engine other than the"
            " serving one"
        )
    return None


def annotation_value(nim: NimService, action: Action) -> str:
    """The rollout annotation's value asking `action` of the NimService's candidate; RolloutRefusedError
    when no candidate waits for a verdict."""
    from nimify.controller.rollout import Action

    name = nim.metadata.name
    if (why := absence(nim)) is not None:
        raise RolloutRefusedError("NoRollout", f"nothing to {action.value}: {why}")
    assert nim.status is not None and nim.status.rollout is not None  # absence() said so
    rollout = nim.status.rollout
    engine = rollout.candidate[:SHORT_KEY]
    if rollout.phase == RolloutPhase.PROMOTING:
        if action is Action.PROMOTE:
            raise RolloutRefusedError(
                "RolloutPromoting",
                f"{name}'s rollout is already Promoting engine {engine}: {rollout.message}",
            )
        raise RolloutRefusedError(
            "RolloutPromoting",
            f"{name}'s rollout is Promoting: the serving Deployment already rolls to engine {engine}, which"
            " abort cannot undo; to go back, put the previous model or engine settings back in the spec"
            " (a new rollout)",
        )
    if rollout.phase not in UNDECIDED:
        raise RolloutRefusedError(
            "RolloutEnded",
            f"{name}'s last rollout (engine {engine}) is over, {rollout.phase.value}: nothing to"
            f" {action.value} ({rollout.message})",
        )
    return f"{action.value}={rollout.candidate}"


# --- what they print ----------------------------------------------------------------------------------------


def render_report(namespace: str, name: str, report: RolloutReport) -> list[str | Table]:
    printed: list[str | Table] = [f"NimService {escape(namespace)}/{escape(name)}"]
    if report.note is not None:
        printed.append(escape(report.note))
    if report.rows:
        table = Table(show_header=False, box=None)
        for field, value in report.rows:
            table.add_row(escape(field), escape(value))
        printed.append(table)
    if report.units:
        printed.append("")
        units = Table(box=None)
        for column in ("UNIT", "ROLE", "TRAFFIC"):
            units.add_column(column)
        for row in report.units:
            units.add_row(*(escape(cell) for cell in row))
        printed.append(units)
    return printed


# --- the cluster --------------------------------------------------------------------------------------------


async def _read(client: AsyncClient, name: str, namespace: str) -> NimService:
    from lightkube import ApiError

    from nimify.controller.kube import NimServiceResource

    try:
        found = await client.get(NimServiceResource, name=name, namespace=namespace)
    except ApiError as error:
        if error.status.code == 404:
            raise fail("NotFound", f"no NimService {namespace}/{name}") from None
        raise fail("ApiError", f"reading NimService {namespace}/{name}: {error.status.message}") from None
    return NimService.model_validate(dict(found))  # a generic resource is the JSON document itself


async def _ask(client: AsyncClient, name: str, namespace: str, action: Action) -> NimService:
    """Write the annotation asking `action`, decided on the NimService as it is when the write lands."""
    from lightkube import ApiError
    from lightkube.types import PatchType

    from nimify.controller.kube import NimServiceResource
    from nimify.controller.rollout import ROLLOUT_ANNOTATION

    for _ in range(PATCH_ATTEMPTS):
        nim = await _read(client, name, namespace)
        try:
            value = annotation_value(nim, action)
        except RolloutRefusedError as refused:
            raise fail(refused.reason, refused.message) from None
        # The resourceVersion makes the write fail if the rollout moved on since we read it (to Promoting,
        # where an abort would roll back a promotion under way).
        patch = {
            "metadata": {
                "resourceVersion": nim.metadata.resource_version,
                "annotations": {ROLLOUT_ANNOTATION: value},
            }
        }
        try:
            await client.patch(
                NimServiceResource,
                name,
                patch,
                namespace=namespace,
                patch_type=PatchType.MERGE,
                field_manager=FIELD_MANAGER,
            )
        except ApiError as error:
            if error.status.code == 409:
                continue
            raise fail(
                "ApiError", f"annotating NimService {namespace}/{name}: {error.status.message}"
            ) from None
        return nim
    raise fail("Conflict", f"NimService {namespace}/{name} kept changing; try again")


def _run(kubeconfig: Path | None, context: str | None, work: Callable[[AsyncClient], Awaitable[T]]) -> T:
    """`work(client)` with a lightkube client for the kubeconfig and context, closed afterwards."""
    import httpx2

    from nimify.cli.doctor import LightkubeCluster

    async def run() -> T:
        try:
            cluster = LightkubeCluster(kubeconfig, context)
        except Exception as error:
            raise fail("NoKubeconfig", f"no usable kubeconfig: {type(error).__name__}: {error}") from None
        try:
            return await asyncio.wait_for(work(cluster.client), timeout=TIMEOUT_SECONDS)
        except TimeoutError:  # before OSError, which it is
            raise fail(
                "Unreachable", f"the cluster's API gave no answer within {TIMEOUT_SECONDS} s"
            ) from None
        except (httpx2.TransportError, OSError) as error:
            raise fail("Unreachable", f"the cluster's API: {type(error).__name__}: {error}") from None
        finally:
            await cluster.close()

    return asyncio.run(run())


def _request(
    action: Action, name: str, namespace: str | None, kubeconfig: Path | None, context: str | None
) -> None:
    async def ask(client: AsyncClient) -> tuple[str, NimService]:
        chosen = namespace or client.namespace
        return chosen, await _ask(client, name, chosen, action)

    with reported_failures():
        chosen, nim = _run(kubeconfig, context, ask)
    assert nim.status is not None and nim.status.rollout is not None  # annotation_value() said so
    rollout = nim.status.rollout
    steps = (nim.spec.rollout.steps if nim.spec.rollout is not None else None) or []
    Console(highlight=False).print(
        f"asked the operator to {action.value} engine {rollout.candidate[:SHORT_KEY]} of NimService"
        f" {escape(chosen)}/{escape(name)} ({rollout.phase.value}, {step_text(rollout.step, steps)});"
        f" follow it with `nimify rollout status {escape(name)} -n {escape(chosen)}`"
    )


# --- the commands -------------------------------------------------------------------------------------------


@rollout_commands.command("status")
def status_command(
    name: NameArgument,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """Show NAME's rollout: phase, step, the candidate's weight and engine, how the traffic is split, the
    serving units' shares and the RolledOut condition."""

    async def read(client: AsyncClient) -> tuple[str, NimService]:
        chosen = namespace or client.namespace
        return chosen, await _read(client, name, chosen)

    with reported_failures():
        chosen, nim = _run(kubeconfig, context, read)
    console = Console(highlight=False)
    for printed in render_report(chosen, name, rollout_report(nim)):
        console.print(printed)


@rollout_commands.command("promote")
def promote_command(
    name: NameArgument,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """Promote NAME's candidate now, skipping the steps left: the serving Deployment rolls to its engine.
    Only while the rollout is Progressing or Paused."""
    from nimify.controller.rollout import Action

    _request(Action.PROMOTE, name, namespace, kubeconfig, context)


@rollout_commands.command("abort")
def abort_command(
    name: NameArgument,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """Roll NAME's candidate back: it goes, the serving engine keeps all the traffic, and the spec's engine is
    not tried again until the spec changes. Only while the rollout is Progressing or Paused."""
    from nimify.controller.rollout import Action

    _request(Action.ABORT, name, namespace, kubeconfig, context)
