"""`nimify doctor`: is this machine and this cluster ready for Nimify?

The checks are plain functions returning `Check`s; the cluster ones take any client with the two calls they
need, so tests hand in a fake and the command hands in lightkube.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nimify.api import CRD_NAME, GPU_PRODUCT_LABEL
from nimify.cli import app

Status = Literal["ok", "warn", "fail"]
GPU_RESOURCE = "nvidia.com/gpu"

REQUIRED_PACKAGES = (
    "onnx",
    "onnxruntime",
    "numpy",
    "httpx",
    "pydantic",
    "lightkube",
    "kopf",
    "typer",
    "yaml",
)
OPTIONAL_PACKAGES = (
    (
        "tritonclient",
        "nimify serve's and nimify load's clients, repository translation (pip install 'nimify[serve]')",
    ),
    ("pytriton", "nimify serve's tritonserver (pip install 'nimify[serve]')"),
    ("tensorrt", "building TensorRT engines (the conversion Job's image has it)"),
    ("boto3", "s3:// models"),
    ("google.cloud.storage", "gs:// models (pip install google-cloud-storage)"),
)


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str


def _version(module: Any) -> str:
    return str(getattr(module, "__version__", "")) or "installed"


def check_packages() -> list[Check]:
    checks = []
    for name in REQUIRED_PACKAGES:
        try:
            checks.append(Check(f"python: {name}", "ok", _version(importlib.import_module(name))))
        except ImportError as error:
            checks.append(Check(f"python: {name}", "fail", f"missing ({error})"))
    for name, purpose in OPTIONAL_PACKAGES:
        try:
            checks.append(Check(f"python: {name}", "ok", _version(importlib.import_module(name))))
        except ImportError:
            checks.append(Check(f"python: {name}", "warn", f"not installed; needed for {purpose}"))
    return checks


def check_tritonserver() -> Check:
    from nimify.model.errors import ModelError
    from nimify.triton.local_server import locate_tritonserver

    try:
        found = locate_tritonserver()
    except ModelError as error:
        return Check("tritonserver", "warn", error.message)
    return Check("tritonserver", "ok", str(found.server))


class ClusterClient(Protocol):
    async def custom_resource_definition(self, name: str) -> Mapping[str, Any] | None: ...

    async def nodes(self) -> Sequence[Mapping[str, Any]]: ...


async def check_cluster(client: ClusterClient) -> list[Check]:
    try:
        nodes = await client.nodes()
    except Exception as error:
        return [Check("cluster", "fail", f"unreachable: {type(error).__name__}: {error}")]
    checks = [Check("cluster", "ok", f"reachable, {len(nodes)} node(s)")]
    try:
        crd = await client.custom_resource_definition(CRD_NAME)
    except Exception as error:
        checks.append(Check("crd", "fail", f"cannot read {CRD_NAME}: {error}"))
        crd = None
    else:
        if crd is None:
            checks.append(Check("crd", "fail", f"{CRD_NAME} is not installed (install the operator's CRD)"))
        else:
            versions = [
                v.get("name", "?") for v in crd.get("spec", {}).get("versions", []) if v.get("served")
            ]
            checks.append(
                Check("crd", "ok", f"{CRD_NAME} installed, serving {', '.join(versions) or 'no version'}")
            )
    checks.extend(check_gpu_nodes(nodes))
    return checks


def check_gpu_nodes(nodes: Sequence[Mapping[str, Any]]) -> list[Check]:
    products: dict[str, list[str]] = {}
    unlabelled = []
    for node in nodes:
        metadata = node.get("metadata", {})
        labels = metadata.get("labels") or {}
        gpus = (node.get("status", {}).get("allocatable") or {}).get(GPU_RESOURCE)
        if GPU_PRODUCT_LABEL in labels:
            products.setdefault(labels[GPU_PRODUCT_LABEL], []).append(metadata.get("name", "?"))
        elif gpus not in (None, "0"):
            unlabelled.append(metadata.get("name", "?"))
    checks = []
    if products:
        summary = "; ".join(f"{product}: {len(names)} node(s)" for product, names in sorted(products.items()))
        checks.append(Check("gpu nodes", "ok", summary))
    else:
        checks.append(
            Check(
                "gpu nodes",
                "warn",
                f"no node carries {GPU_PRODUCT_LABEL} (install GPU Feature Discovery or the GPU Operator); "
                "onnxruntime on CPU still works",
            )
        )
    if unlabelled:
        checks.append(
            Check(
                "gpu labels",
                "warn",
                f"{', '.join(sorted(unlabelled))} offer {GPU_RESOURCE} without {GPU_PRODUCT_LABEL}",
            )
        )
    return checks


class LightkubeCluster:
    """ClusterClient (and the autoscaling checks' MetricsReader) over lightkube's async client."""

    def __init__(self, kubeconfig: Path | None = None, context: str | None = None) -> None:
        from lightkube import AsyncClient, KubeConfig
        from lightkube.config.client_adapter import AsyncClient as HttpClient
        from lightkube.config.client_adapter import ConnectionParams

        config = KubeConfig.from_file(str(kubeconfig)) if kubeconfig else KubeConfig.from_env()
        self.client = AsyncClient(config.get(context_name=context) if context else config)
        # The metrics APIs have no typed resources (a metric name is a path segment); lightkube's own
        # connection factory gives a client with the same server, credentials and CA for plain GETs.
        self.http = HttpClient(self.client.config, ConnectionParams())

    async def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Mapping[str, Any] | None:
        response = await self.http.get(path, params=dict(params or {}))
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            try:
                message = response.json().get("message") or response.text
            except ValueError:
                message = response.text
            raise RuntimeError(f"HTTP {response.status_code} from {path}: {message.strip()[:500]}")
        found: Mapping[str, Any] = response.json()
        return found

    async def custom_resource_definition(self, name: str) -> Mapping[str, Any] | None:
        from lightkube import ApiError
        from lightkube.resources.apiextensions_v1 import CustomResourceDefinition

        try:
            crd = await self.client.get(CustomResourceDefinition, name=name)
        except ApiError as error:
            if error.status.code == 404:
                return None
            raise
        return dict(crd.to_dict())

    async def nodes(self) -> Sequence[Mapping[str, Any]]:
        from lightkube.resources.core_v1 import Node

        return [node.to_dict() async for node in self.client.list(Node)]

    async def close(self) -> None:
        await self.http.aclose()
        await self.client.close()


async def _cluster_checks(
    kubeconfig: Path | None, context: str | None, autoscaling_namespace: str | None
) -> list[Check]:
    # Imported here: the autoscaling checks build on this module's Check.
    from nimify.cli.autoscaling_checks import check_autoscaling
    from nimify.settings import OperatorSettings

    try:
        cluster = LightkubeCluster(kubeconfig, context)
    except Exception as error:
        return [Check("cluster", "fail", f"no usable kubeconfig: {type(error).__name__}: {error}")]
    try:
        checks = await asyncio.wait_for(check_cluster(cluster), timeout=30)
        if checks[0].status == "fail":
            return checks
        default = OperatorSettings().autoscaler
        return checks + await asyncio.wait_for(
            check_autoscaling(cluster, autoscaling_namespace, default), timeout=60
        )
    except TimeoutError:
        return [Check("cluster", "fail", "no answer within the time limit (30s, autoscaling checks 60s)")]
    finally:
        await cluster.close()


def render_checks(checks: Sequence[Check]) -> Table:
    marks = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[red]fail[/]"}
    table = Table(show_header=False, box=None)
    for check in checks:
        table.add_row(marks[check.status], escape(check.name), escape(check.detail))
    return table


@app.command("doctor")
def doctor_command(
    kubeconfig: Annotated[
        Path | None, typer.Option("--kubeconfig", help="Default: $KUBECONFIG or ~/.kube/config.")
    ] = None,
    context: Annotated[str | None, typer.Option("--context")] = None,
    cluster: Annotated[bool, typer.Option("--cluster/--no-cluster", help="Also check the cluster.")] = True,
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace", "-n", help="Check the autoscaling of the NimServices in this namespace only."
        ),
    ] = None,
) -> None:
    """Check Python dependencies, the local tritonserver, the cluster, the NimService CRD, GPU nodes, and
    for autoscaled NimServices the metrics API their autoscaler needs and their metrics."""
    checks = [*check_packages(), check_tritonserver()]
    if cluster:
        checks.extend(asyncio.run(_cluster_checks(kubeconfig, context, namespace)))
    Console(highlight=False).print(render_checks(checks))
    if any(check.status == "fail" for check in checks):
        raise typer.Exit(1)
