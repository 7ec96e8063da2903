"""`nimify dev-cluster`: a local control plane with simulated GPU nodes, for trying Nimify and for tests.

The `nimify` command finds this group through the `nimify.cli` entry-point group that this distribution
registers (devcluster/pyproject.toml), so it exists where nimify-devcluster is installed (the development
virtualenv) and not in the operator's image. The commands import their modules when they run: `nimify --help`
loads this module every time.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

#: Added to `nimify` as `dev-cluster` (the entry point's name) by `nimify.cli`.
dev_cluster = typer.Typer(
    help="Local Kubernetes control plane with simulated GPU nodes (development).", no_args_is_help=True
)
console = Console(stderr=True)

NameOption = Annotated[str, typer.Option("--name", help="Cluster name; its files live under the cache.")]
BinPathOption = Annotated[
    str,
    typer.Option(
        "--bin-path",
        envvar="NIMIFY_BIN_PATH",
        help="Search path of the Go-built binaries (the output of hack/ensure-binaries.sh).",
    ),
]
DirOption = Annotated[
    Path | None, typer.Option("--dir", help="Cluster directory (default: cache/clusters/NAME).")
]


RealNodeOption = Annotated[
    str,
    typer.Option(
        "--real-node",
        envvar="NIMIFY_REAL_NODE",
        help="auto: add a real node (containerd + kubelet) where this machine can run one (root, packages); "
        "on: fail without it; off: kwok only. One real node per machine.",
    ),
]


@dev_cluster.command("up")
def up(
    name: NameOption = "nimify",
    bin_path: BinPathOption = "",
    directory: DirOption = None,
    real_node: RealNodeOption = "auto",
) -> None:
    """Start a cluster: etcd, apiserver, controller-manager, scheduler, kwok with GPU node pools, and (where
    it can) a real node that runs pods."""
    from nimify_devcluster.cluster import ClusterError, start_cluster
    from nimify_devcluster.real_node import RealNodeError, RealNodeMode

    if not bin_path:
        console.print(
            "[red]error:[/] no binaries: pass --bin-path or set NIMIFY_BIN_PATH "
            "(hack/ensure-binaries.sh prints it)"
        )
        raise typer.Exit(2)
    started = time.monotonic()
    try:
        mode = RealNodeMode(real_node.strip().lower())
    except ValueError:
        console.print(f"[red]error:[/] --real-node / NIMIFY_REAL_NODE is {real_node!r}: use auto, on or off")
        raise typer.Exit(2) from None
    try:
        with console.status(f"starting cluster {name!r}"):
            cluster = start_cluster(name, bin_path, directory, real_node=mode, log=console.print)
    except (ClusterError, RealNodeError) as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from None
    console.print(f"cluster [bold]{name}[/] is up in {time.monotonic() - started:.1f}s: {cluster.server}")
    if (node := cluster.node) is not None:
        console.print(
            f"real node [bold]{node.name}[/] (GPU product {node.gpu_product}; pods opt in with "
            f"runtimeClassName: {node.runtime_class}); images: {', '.join(node.images.values())}"
        )
    else:
        console.print(f"no real node: {cluster.real_node_absent}")
    typer.echo(str(cluster.kubeconfig))


@dev_cluster.command("down")
def down(name: NameOption = "nimify", directory: DirOption = None) -> None:
    """Stop a cluster and remove its files; a real node is drained first and leaves nothing behind."""
    from nimify_devcluster.cluster import default_cluster_root, stop_cluster
    from nimify_devcluster.node_config import LOCK_FILE
    from nimify_devcluster.real_node import held_for_another, leftovers

    target = directory or default_cluster_root() / name
    if not target.exists():
        console.print(f"cluster {name!r} is not running ({target} does not exist)")
        return
    had_node = (target / "node").exists()
    another = had_node and held_for_another(target)
    stop_cluster(target)
    console.print(f"cluster [bold]{name}[/] stopped and removed")
    if another:
        console.print(
            f"its real node was gone; the one running now belongs to another cluster ({LOCK_FILE} names it) "
            "and was left alone"
        )
    elif had_node and (left := leftovers()):
        console.print("[red]error:[/] the real node left behind:\n  " + "\n  ".join(left))
        raise typer.Exit(1)


@dev_cluster.command("leftovers")
def leftovers_command() -> None:
    """List what of a real node exists on this machine (processes, mounts, cgroups, veths, routes, rules);
    exits 1 when anything does."""
    from nimify_devcluster.real_node import leftovers

    if left := leftovers():
        typer.echo("\n".join(left))
        raise typer.Exit(1)
    typer.echo("nothing of a real node remains: no process, mount, cgroup, veth, route or iptables rule")


@dev_cluster.command("kubeconfig")
def kubeconfig(name: NameOption = "nimify", directory: DirOption = None) -> None:
    """Print the path of a running cluster's kubeconfig."""
    from nimify_devcluster.cluster import default_cluster_root

    path = (directory or default_cluster_root() / name) / "kubeconfig"
    if not path.exists():
        console.print(f"[red]error:[/] cluster {name!r} is not running ({path} does not exist)")
        raise typer.Exit(1)
    typer.echo(os.fspath(path))


@dev_cluster.command("gateway")
def gateway(
    name: NameOption = "nimify",
    directory: DirOption = None,
    gateway_bin_path: Annotated[
        str, typer.Option(envvar="NIMIFY_GATEWAY_BIN_PATH", help="What hack/ensure-gateway.sh prints.")
    ] = "",
    crds: Annotated[
        Path | None,
        typer.Option(envvar="NIMIFY_GATEWAY_API_DIR", help="What hack/ensure-gateway-api.sh prints."),
    ] = None,
) -> None:
    """Install the Gateway API and start Traefik with a Gateway (nimify-gateway/nimify) on a running cluster;
    spec.expose.httpRoute's gatewayRef names it, and clients send requests to the printed address."""
    from nimify_devcluster.cluster import ClusterError, LocalCluster, default_cluster_root
    from nimify_devcluster.gateway import install_gateway_api, start_gateway

    if not gateway_bin_path or crds is None:
        console.print("[red]error:[/] pass --gateway-bin-path and --crds (hack/ensure-gateway*.sh)")
        raise typer.Exit(2)
    cluster = LocalCluster.load(directory or default_cluster_root() / name)
    try:
        install_gateway_api(cluster, crds)
        running = start_gateway(cluster, gateway_bin_path)
    except ClusterError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from None
    console.print(
        f"Gateway [bold]{running.namespace}/{running.name}[/] (Traefik) routes HTTP at {running.url}"
    )
    typer.echo(running.url)


@dev_cluster.command("registry")
def registry(
    name: NameOption = "nimify",
    directory: DirOption = None,
    registry_bin_path: Annotated[
        str, typer.Option(envvar="NIMIFY_REGISTRY_BIN_PATH", help="What hack/ensure-registry.sh prints.")
    ] = "",
    user: Annotated[
        list[str] | None,
        typer.Option("--user", help="NAME:PASSWORD of a user (repeatable); none: anonymous pull and push."),
    ] = None,
) -> None:
    """Start an OCI registry (plain HTTP) next to a running cluster; with a real node it listens on the
    bridge's host address and the node's containerd pulls from it. Prints its address (HOST:PORT)."""
    from nimify_devcluster.cluster import STATE_FILE, ClusterError, LocalCluster, default_cluster_root
    from nimify_devcluster.registry import start_cluster_registry

    if not registry_bin_path:
        console.print(
            "[red]error:[/] pass --registry-bin-path or set NIMIFY_REGISTRY_BIN_PATH "
            "(hack/ensure-registry.sh prints it)"
        )
        raise typer.Exit(2)
    users: dict[str, str] = {}
    for entry in user or []:
        account, colon, password = entry.partition(":")
        if not account or not colon or not password:
            console.print("[red]error:[/] --user takes NAME:PASSWORD (both non-empty)")
            raise typer.Exit(2)
        users[account] = password
    target = directory or default_cluster_root() / name
    if not (target / STATE_FILE).exists():
        console.print(f"[red]error:[/] cluster {name!r} is not running ({target} has no state)")
        raise typer.Exit(1)
    cluster = LocalCluster.load(target)
    try:
        running, hosts = start_cluster_registry(cluster, registry_bin_path, users=users)
    except (ClusterError, ValueError) as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from None
    access = f"users {', '.join(sorted(users))}" if users else "anonymous pull and push"
    console.print(f"registry at [bold]{running.url}[/] ({access}); storage in {running.storage}")
    if hosts is not None:
        console.print(f"the real node's containerd pulls {running.address}/... over HTTP ({hosts})")
    typer.echo(running.address)


@dev_cluster.command("run-builds")
def run_builds(
    kubeconfig: Annotated[Path, typer.Option("--kubeconfig", help="Kubeconfig of the local cluster.")],
    bin_path: BinPathOption = "",
) -> None:
    """Run conversion pods on this machine, playing their kubelet (kwok leaves them to us), until stopped."""
    import signal
    import threading

    from nimify_devcluster.build_runner import BuildPodKubelet
    from nimify_devcluster.cluster import KubectlClient

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with BuildPodKubelet(KubectlClient(kubeconfig, bin_path or None), only_new=False):
        while not stop.wait(1):
            pass


@dev_cluster.command("demo")
def demo(
    name: NameOption = "demo",
    bin_path: BinPathOption = "",
    directory: DirOption = None,
    real_node: RealNodeOption = "auto",
) -> None:
    """Start a cluster, install Nimify (with its Helm chart where the real node runs) and serve a small ONNX
    model through a NimService; on the real node it ends with an inference answer from Triton next to ONNX
    Runtime's."""
    import httpx

    from nimify_devcluster.chart_release import HelmError
    from nimify_devcluster.cluster import ClusterError, start_cluster
    from nimify_devcluster.demo import NAMESPACE, RELEASE_NAMESPACE, SERVICE, run_demo, show_inference
    from nimify_devcluster.real_node import RealNodeError, RealNodeMode

    if not bin_path:
        console.print("[red]error:[/] no binaries: pass --bin-path or set NIMIFY_BIN_PATH")
        raise typer.Exit(2)
    started = time.monotonic()
    say = lambda message: console.print(f"[bold cyan]==>[/] {message}")  # noqa: E731
    try:
        cluster = start_cluster(name, bin_path, directory, real_node=RealNodeMode(real_node), log=say)
        console.print(f"cluster [bold]{name}[/] is up: {cluster.server}")
        run_demo(cluster, say)
    except (
        ClusterError,
        RealNodeError,
        HelmError,
        subprocess.CalledProcessError,
        RuntimeError,
        ValueError,
    ) as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from None
    console.print(f"[green]NimService {NAMESPACE}/{SERVICE} is Ready[/] ({time.monotonic() - started:.0f}s)")
    operator = (("get", "deployments,pods", "-n", RELEASE_NAMESPACE, "-o", "wide"),) if cluster.node else ()
    for args in (
        ("get", "nodes", "-L", "nvidia.com/gpu.product"),
        *operator,
        ("get", "nimservices", "-n", NAMESPACE, "-o", "wide"),
        (
            "get",
            "nimservice",
            SERVICE,
            "-n",
            NAMESPACE,
            "-o",
            'jsonpath={range .status.conditions[*]}{.type}{"\\t"}{.status}{"\\t"}{.reason}'
            '{"\\t"}{.message}{"\\n"}{end}',
        ),
        ("get", "jobs,deployments,pods,services,hpa,configmaps,pvc", "-n", NAMESPACE, "-o", "wide"),
    ):
        console.print(f"\n[bold]$ kubectl {' '.join(args)}[/]")
        typer.echo(cluster.kubectl(*args).stdout)
    if cluster.node is not None:
        console.print("\n[bold]An inference through the Service, next to ONNX Runtime's answer[/]")
        try:
            typer.echo(show_inference(cluster))
        except (httpx.HTTPError, RuntimeError) as error:
            console.print(f"[red]error:[/] the inference failed: {error}")
            raise typer.Exit(1) from None


@dev_cluster.command("images")
def images(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Images to build (default: what the real node runs: pause, nimify, triton-cpu)."),
    ] = None,
) -> None:
    """Build Nimify's container images from images/ (buildah, no network; cached by content hash) and print
    their references as JSON."""
    import json
    import sys

    from nimify_devcluster.images import NODE_IMAGES, ImageBuildError, build_images

    try:
        built = build_images(
            names or NODE_IMAGES, log=lambda line: print(f"[images] {line}", file=sys.stderr, flush=True)
        )
    except ImageBuildError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from None
    for image in built.values():
        how = "cached" if image.cached else f"built in {image.seconds:.0f}s"
        console.print(f"{image.ref}  {image.size_bytes / 2**20:.0f} MiB  ({how})")
    typer.echo(json.dumps({name: image.ref for name, image in built.items()}, indent=2))
