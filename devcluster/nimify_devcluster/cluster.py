"""Start and stop a local control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok.

Each cluster lives in one directory (certificates, etcd data, logs, kubeconfig, `state.json` with the
process ids), listens only on 127.0.0.1 on ports picked free at start, so clusters can run side by side.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from nimify.ports import free_ports
from nimify.render.pod_security import RUN_AS
from nimify_devcluster.aggregation import front_proxy_apiserver_args
from nimify_devcluster.node_config import HOST_IP, KUBELET_HEALTHZ_PORT, RUN_DIR
from nimify_devcluster.pki import CLIENTS, Pki, create_pki
from nimify_devcluster.real_node import (
    ENVIRONMENT,
    NODE_CLIENTS,
    RealNodeError,
    RealNodeInfo,
    RealNodeMode,
    acquire_lock,
    clear_stale_node,
    held_for_another,
    prepare_network,
    remove_node_network,
    start_real_node,
    stop_real_node,
    unavailable_reason,
)
from nimify_devcluster.topology import (
    DEFAULT_POOLS,
    KWOK_NODE_ANNOTATION,
    NodePool,
    bootstrap_manifests,
    kwok_pod_stages,
)

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok")
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
POD_CIDR = "10.244.0.0/16"
KWOK_NODE_IP = "10.240.0.1"
#: Addresses kwok hands out to simulated nodes and pods: routed nowhere while a real node runs, so a Service
#: backed by simulated pods never sends a packet off this machine.
KWOK_BLACKHOLES = [POD_CIDR, f"{KWOK_NODE_IP}/32"]
STATE_FILE = "state.json"
#: Where kube-controller-manager's hostPath provisioner creates volumes (fixed in its code).
HOSTPATH_ROOT = Path("/tmp/hostpath_pv")


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call whose message carries kubectl's own error output."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{(self.stderr or '').strip()}"


class ClusterError(RuntimeError):
    """The local cluster could not be started; the message says which component and where its log is."""


@dataclass
class LocalCluster:
    name: str
    directory: Path
    kubeconfig: Path
    server: str
    bin_path: str
    audit_log: Path
    pids: dict[str, int] = field(default_factory=dict)
    #: How each component was started (binary, arguments, user): what `start_component` starts it again with.
    commands: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The real node (state of `nimify_devcluster.real_node.RealNodeInfo`), when the cluster has one.
    real_node: dict[str, Any] | None = None
    #: Why the cluster has no real node (root, packages, NIMIFY_REAL_NODE=off), when it has none.
    real_node_absent: str | None = None

    @property
    def operator_kubeconfig(self) -> Path:
        return self.directory / "operator.kubeconfig"

    @property
    def node(self) -> RealNodeInfo | None:
        return RealNodeInfo(**self.real_node) if self.real_node else None

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return run_kubectl(
            self.kubeconfig, *args, input=input, check=check, timeout=timeout, bin_path=self.bin_path
        )

    def adopt(self, name: str, process: subprocess.Popen[bytes]) -> None:
        """Track a helper process (operator, build runner) so that stopping the cluster stops it too."""
        self.pids[name] = process.pid
        self.save()

    def save(self) -> None:
        state = asdict(self) | {
            "directory": str(self.directory),
            "kubeconfig": str(self.kubeconfig),
            "audit_log": str(self.audit_log),
        }
        (self.directory / STATE_FILE).write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, directory: Path) -> LocalCluster:
        state = json.loads((directory / STATE_FILE).read_text())
        return cls(
            **state
            | {
                "directory": Path(state["directory"]),
                "kubeconfig": Path(state["kubeconfig"]),
                "audit_log": Path(state["audit_log"]),
            }
        )


def run_kubectl(
    kubeconfig: Path,
    *args: str,
    input: str | None = None,
    check: bool = True,
    timeout: float = 120,
    bin_path: str | None = None,
) -> subprocess.CompletedProcess[str]:
    kubectl = shutil.which("kubectl", path=bin_path) if bin_path else shutil.which("kubectl")
    if kubectl is None:
        raise ClusterError("kubectl not found; run hack/ensure-binaries.sh and pass its output as bin_path")
    result = subprocess.run(
        [kubectl, f"--kubeconfig={kubeconfig}", *args],
        input=input,
        text=True,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise KubectlError(result.returncode, result.args, result.stdout, result.stderr)
    return result


class Kubectl(Protocol):
    """Anything that runs kubectl against one cluster."""

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]: ...


@dataclass(frozen=True)
class KubectlClient:
    """kubectl bound to a kubeconfig (a cluster this process did not start)."""

    kubeconfig: Path
    bin_path: str | None = None

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return run_kubectl(
            self.kubeconfig, *args, input=input, check=check, timeout=timeout, bin_path=self.bin_path
        )


def wait_established(cluster: Kubectl, crd: str, timeout: float = 60) -> None:
    """Wait until the CustomResourceDefinition `crd` (its full name) is Established. `kubectl wait` exits at
    once with ".status.conditions accessor error" while a just-created CRD has no conditions yet (seen on a
    loaded machine), so it is asked again until the deadline instead of trusted with the whole wait."""
    deadline = time.monotonic() + timeout
    while True:
        left = max(int(deadline - time.monotonic()), 1)
        result = cluster.kubectl(
            "wait", "--for=condition=Established", f"crd/{crd}", f"--timeout={left}s", check=False
        )
        if result.returncode == 0:
            return
        if time.monotonic() >= deadline:
            raise ClusterError(
                f"CustomResourceDefinition {crd} not Established in {timeout:.0f}s: {result.stderr}"
            )
        time.sleep(0.5)


def get_json(cluster: Kubectl, *args: str) -> Any:
    """`kubectl get -o json ARGS`, parsed."""
    return json.loads(cluster.kubectl("get", "-o", "json", *args).stdout)


def default_cluster_root() -> Path:
    cache = os.environ.get("NIMIFY_CACHE_DIR") or str(
        Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "nimify"
    )
    return Path(cache) / "clusters"


def resolve_binaries(bin_path: str) -> dict[str, str]:
    found = {name: shutil.which(name, path=bin_path) for name in BINARIES}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise ClusterError(
            f"binaries not found on {bin_path!r}: {', '.join(missing)} "
            "(run hack/ensure-binaries.sh, which prints the path to use)"
        )
    return {name: path for name, path in found.items() if path is not None}


def _kubeconfig(server: str, pki: Pki, client: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "nimify-local", "cluster": {"server": server, "certificate-authority": str(pki.ca_cert)}}
        ],
        "users": [
            {
                "name": client,
                "user": {
                    "client-certificate": str(pki.client_cert(client)),
                    "client-key": str(pki.client_key(client)),
                },
            }
        ],
        "contexts": [{"name": "nimify-local", "context": {"cluster": "nimify-local", "user": client}}],
        "current-context": "nimify-local",
    }


# Writes, and every request of the operator: enough to count who changes what (a steady-state operator must
# send no write) and what the operator asks for (hack/bench-scale), cheap to keep.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "users": ["nimify-operator"]},
        {"level": "Metadata", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
        {"level": "None"},
    ],
}


def _wait(
    what: str,
    probe: Callable[[], bool],
    timeout: float,
    log: Path | None,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ClusterError(f"{what} exited with code {process.returncode}; see {log}:\n{_tail(log)}")
        with contextlib.suppress(Exception):
            if probe():
                return
        time.sleep(0.2)
    raise ClusterError(f"{what} not ready after {timeout:.0f}s; see {log}:\n{_tail(log)}")


def _tail(log: Path | None, lines: int = 15) -> str:
    if log is None or not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _https_ok(url: str, pki: Pki, client: str = "admin") -> bool:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.client_cert(client)), str(pki.client_key(client)))
    with urllib.request.urlopen(url, context=context, timeout=2) as response:
        return bool(response.status == 200)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)


class _Launcher:
    def __init__(self, cluster: LocalCluster, binaries: dict[str, str]) -> None:
        self.cluster = cluster
        self.binaries = binaries
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.pass_fds: tuple[int, ...] = ()

    def start(
        self,
        name: str,
        args: list[str],
        *,
        binary: str | None = None,
        user: int | None = None,
        append: bool = False,
    ) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.cluster.directory / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        executable = binary or self.binaries[name]
        command = {"binary": executable, "args": list(args), "user": user}
        pass_fds = self.pass_fds
        opened = None
        if user is not None:
            # The binary's directory (under root's home) is closed to `user`: exec the file through a
            # descriptor opened here, which needs only the file's own execute bit.
            opened = os.open(executable, os.O_RDONLY)
            executable, pass_fds = f"/proc/self/fd/{opened}", (*pass_fds, opened)
        with log.open("ab" if append else "wb") as out:
            # A session of its own: Ctrl-C in the terminal that ran `up` must not take the cluster down.
            try:
                process = subprocess.Popen(
                    [executable, *args],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    # The real node's lock: every process of the cluster holds it while it lives.
                    pass_fds=pass_fds,
                    user=user,
                    group=user,
                    extra_groups=[] if user is not None else None,
                    cwd="/" if user is not None else None,
                )
            finally:
                if opened is not None:
                    os.close(opened)
        self.processes[name] = process
        self.cluster.pids[name] = process.pid
        self.cluster.commands.setdefault(name, command)
        self.cluster.save()
        return process, log


def stop_component(cluster: LocalCluster, name: str, sig: int = signal.SIGTERM, grace: float = 30) -> None:
    """Stop one process of a running cluster (`sig`, SIGKILL after `grace` seconds), as a crash or an
    operator's restart would: the rest of the cluster keeps running. Fault tests use it (tests/chaos)."""
    pid = cluster.pids.get(name)
    if pid is None or name not in cluster.commands:
        raise ClusterError(f"cluster {cluster.name!r} has no component {name!r} to stop")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def start_component(
    cluster: LocalCluster, name: str, extra_args: tuple[str, ...] = (), timeout: float = 120
) -> subprocess.Popen[bytes]:
    """Start a component stopped by `stop_component` again: the same binary, arguments and user as at the
    cluster's start (plus `extra_args`, which later flags of the same name override), its log appended to.
    Returns once it answers its health check (etcd, kube-apiserver, kubelet) or, for the others, has not
    exited for a second."""
    command = cluster.commands.get(name)
    if command is None:
        raise ClusterError(f"cluster {cluster.name!r} has no component {name!r} to start")
    if _alive(cluster.pids.get(name, -1)):
        raise ClusterError(f"{name} of cluster {cluster.name!r} is running; stop it first")
    launcher = _Launcher(cluster, {})
    args = [*command["args"], *extra_args]
    process, log = launcher.start(name, args, binary=command["binary"], user=command["user"], append=True)
    _wait(name, _health_probe(cluster, name, process), timeout, log, process)
    return process


def _health_probe(cluster: LocalCluster, name: str, process: subprocess.Popen[bytes]) -> Callable[[], bool]:
    args = cluster.commands[name]["args"]
    if name == "etcd":
        url = next(a.split("=", 1)[1] for a in args if a.startswith("--listen-client-urls="))
        return lambda: _http_ok(f"{url}/health")
    if name == "kube-apiserver":
        pki = Pki(cluster.directory / "pki")
        return lambda: _https_ok(f"{cluster.server}/readyz", pki)
    if name == "kubelet":
        return lambda: _http_ok(f"http://127.0.0.1:{KUBELET_HEALTHZ_PORT}/healthz")
    since = time.monotonic()
    return lambda: process.poll() is None and time.monotonic() - since > 1


def start_cluster(
    name: str,
    bin_path: str,
    directory: Path | None = None,
    pools: tuple[NodePool, ...] = DEFAULT_POOLS,
    timeout: float = 120,
    real_node: RealNodeMode = RealNodeMode.OFF,
    log: Callable[[str], None] = lambda _: None,
) -> LocalCluster:
    """Start a cluster and return once its nodes are Ready and pods can be admitted.

    `real_node`: `auto` adds the real node where this machine can run it (else `real_node_absent` says
    why), `on` fails without it, `off` (the default for code; the CLI and tests read NIMIFY_REAL_NODE)
    starts kwok only.
    """
    binaries = resolve_binaries(bin_path)
    directory = (directory or default_cluster_root() / name).resolve()
    if (directory / STATE_FILE).exists():
        raise ClusterError(f"cluster {name!r} already exists in {directory}; stop it first")
    if real_node is RealNodeMode.OFF:
        absent: str | None = f"kwok-only cluster ({ENVIRONMENT}=off)"
    else:
        absent = unavailable_reason(bin_path)
        if absent is not None and real_node is RealNodeMode.ON:
            raise ClusterError(f"{ENVIRONMENT}=on, but this machine cannot run the real node: {absent}")
    with_node = absent is None
    host = HOST_IP if with_node else "127.0.0.1"
    directory.mkdir(parents=True, exist_ok=True)
    etcd_client, etcd_peer, kcm, scheduler, kwok = free_ports(5)
    cluster = LocalCluster(
        name=name,
        directory=directory,
        kubeconfig=directory / "kubeconfig",
        server="",
        bin_path=bin_path,
        audit_log=directory / "logs" / "audit.log",
        real_node_absent=absent,
    )
    launcher = _Launcher(cluster, binaries)
    lock: int | None = None
    try:
        if with_node:
            try:
                lock, previous = acquire_lock(
                    {"cluster": name, "directory": str(directory), "pid": os.getpid()}
                )
                clear_stale_node(previous, SERVICE_CIDR, KWOK_BLACKHOLES, log)
            except RealNodeError as error:
                raise ClusterError(str(error)) from None
            launcher.pass_fds = (lock,)
            cluster.save()
            # Before the apiserver: it listens on the bridge's host address, where pods reach it.
            prepare_network(directory, SERVICE_CIDR, KWOK_BLACKHOLES)
        pki = create_pki(
            directory / "pki",
            SERVICE_IP,
            server_ips=[HOST_IP] if with_node else [],
            clients=CLIENTS | NODE_CLIENTS if with_node else CLIENTS,
        )
        apiserver = free_ports(1, host)[0]
        cluster.server = f"https://{host}:{apiserver}"
        for client in ("admin", "controller-manager", "scheduler", "kwok", "operator", *
                       (NODE_CLIENTS if with_node else ())):  # fmt: skip
            path = directory / ("kubeconfig" if client == "admin" else f"{client}.kubeconfig")
            path.write_text(yaml.safe_dump(_kubeconfig(cluster.server, pki, client)))
            path.chmod(0o600)
        (directory / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))
        cluster.save()
        ports = (etcd_client, etcd_peer, apiserver, kcm, scheduler, kwok)
        _start_components(cluster, launcher, pki, ports, timeout, host=host, real_node=with_node)
        _bootstrap(cluster, pools, timeout)
        if with_node:
            log("starting the real node (images, containerd, kubelet, kube-proxy)")
            info = start_real_node(
                directory,
                cluster,
                lambda name, binary, args: launcher.start(name, args, binary=binary),
                _wait,
                bin_path=bin_path,
                ca_cert=pki.ca_cert,
                service_cidr=SERVICE_CIDR,
                log=log,
                timeout=timeout,
            )
            cluster.real_node = asdict(info)
            cluster.save()
    except BaseException:
        stop_cluster(directory, remove=False)
        raise
    finally:
        if lock is not None:
            os.close(lock)
    return cluster


def _start_components(
    cluster: LocalCluster,
    launcher: _Launcher,
    pki: Pki,
    ports: tuple[int, ...],
    timeout: float,
    *,
    host: str = "127.0.0.1",
    real_node: bool = False,
) -> None:
    etcd_client, etcd_peer, apiserver_port, kcm_port, scheduler_port, kwok_port = ports
    d = cluster.directory
    etcd_url, peer_url = f"http://127.0.0.1:{etcd_client}", f"http://127.0.0.1:{etcd_peer}"
    process, log = launcher.start(
        "etcd",
        [
            "--name=etcd",
            f"--data-dir={d / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=etcd={peer_url}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
    )
    _wait("etcd", lambda: _http_ok(f"{etcd_url}/health"), timeout, log, process)

    if real_node:
        # Pods reach the apiserver through the `kubernetes` Service, whose endpoint is the advertised address
        # (kept by the default lease reconciler); the kubelet is called with a client certificate of its own
        # and by its InternalIP (the node name resolves nowhere).
        reachability = [
            f"--kubelet-client-certificate={pki.client_cert('apiserver-kubelet-client')}",
            f"--kubelet-client-key={pki.client_key('apiserver-kubelet-client')}",
            "--kubelet-preferred-address-types=InternalIP",
        ]
    else:
        # Endpoints may not point at loopback, so the `kubernetes` Service gets none (nothing needs it).
        reachability = ["--endpoint-reconciler-type=none"]
    process, log = launcher.start(
        "kube-apiserver",
        [
            f"--etcd-servers={etcd_url}",
            f"--bind-address={host}",
            f"--advertise-address={host}",
            f"--secure-port={apiserver_port}",
            *reachability,
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            f"--audit-policy-file={d / 'audit-policy.yaml'}",
            f"--audit-log-path={cluster.audit_log}",
            "--audit-log-format=json",
            "--audit-log-maxsize=200",
            "--profiling=false",
            # Aggregated APIs (metrics.k8s.io, external.metrics.k8s.io) authenticate requests through these.
            *front_proxy_apiserver_args(d / "pki"),
        ],
    )
    _wait("kube-apiserver", lambda: _https_ok(f"{cluster.server}/readyz", pki), timeout, log, process)

    common = ["--leader-elect=false", "--bind-address=127.0.0.1"]
    kcm_kubeconfig, sa_key, root_ca = (
        d / "controller-manager.kubeconfig",
        pki.service_account_key,
        pki.ca_cert,
    )
    kcm_user = None
    if real_node:
        # Real pods run as RUN_AS and hostPath volumes get no fsGroup: the provisioner (in the controller
        # manager) creates their directories, so it runs as that user and they belong to it, as a volume
        # that honours fsGroup would.
        kcm_user = RUN_AS
        kcm_kubeconfig, sa_key, root_ca = _files_for_user(
            RUN_DIR / "controller-manager", RUN_AS, kcm_kubeconfig, sa_key, root_ca, pki
        )
        HOSTPATH_ROOT.mkdir(exist_ok=True)
        HOSTPATH_ROOT.chmod(0o1777)  # shared with kwok-only clusters, whose provisioner runs as root
    process, kcm_log = launcher.start(
        "kube-controller-manager",
        [
            *common,
            f"--secure-port={kcm_port}",
            f"--kubeconfig={kcm_kubeconfig}",
            f"--authentication-kubeconfig={kcm_kubeconfig}",
            f"--authorization-kubeconfig={kcm_kubeconfig}",
            f"--service-account-private-key-file={sa_key}",
            f"--root-ca-file={root_ca}",
            "--use-service-account-credentials=false",
            "--enable-hostpath-provisioner=true",
            # A loaded 2-core machine can delay kwok's lease renewals; a dead node is not what tests simulate.
            "--node-monitor-grace-period=120s",
            f"--cluster-cidr={POD_CIDR}",
        ],
        user=kcm_user,
    )
    kcm_process = process
    scheduler_kubeconfig = str(d / "scheduler.kubeconfig")
    scheduler_process, scheduler_log = launcher.start(
        "kube-scheduler",
        [
            *common,
            f"--secure-port={scheduler_port}",
            f"--kubeconfig={scheduler_kubeconfig}",
            f"--authentication-kubeconfig={scheduler_kubeconfig}",
            f"--authorization-kubeconfig={scheduler_kubeconfig}",
        ],
    )
    kwok_process, kwok_log = launcher.start(
        "kwok",
        [
            f"--kubeconfig={d / 'kwok.kubeconfig'}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={'='.join(KWOK_NODE_ANNOTATION)}",
            f"--config={_write_kwok_config(d, launcher.binaries['kwok'])}",
            f"--cidr={POD_CIDR}",
            f"--node-ip={KWOK_NODE_IP}",
            f"--server-address=127.0.0.1:{kwok_port}",
            # Leases, renewed every few seconds, are what keeps the nodes Ready; without them kwok only
            # refreshes node status every 20-45 s, past the node-lifecycle controller's grace period.
            "--node-lease-duration-seconds=40",
        ],
    )
    # Both serve self-signed certificates, so an open port is the readiness signal we can check cheaply.
    _wait("kube-controller-manager", lambda: _tcp_open(kcm_port), timeout, kcm_log, kcm_process)
    _wait("kube-scheduler", lambda: _tcp_open(scheduler_port), timeout, scheduler_log, scheduler_process)
    _wait(
        "kwok", lambda: kwok_process.poll() is None and _tcp_open(kwok_port), timeout, kwok_log, kwok_process
    )


def _files_for_user(
    directory: Path, user: int, kubeconfig: Path, sa_key: Path, ca_cert: Path, pki: Pki
) -> tuple[Path, Path, Path]:
    """Copies of the controller manager's credentials that `user` can read (the cluster directory may sit
    under a root-only temporary directory); the kubeconfig carries its certificates inline."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, mode=0o700)
    config = yaml.safe_load(kubeconfig.read_text())
    config["clusters"][0]["cluster"] = {
        "server": config["clusters"][0]["cluster"]["server"],
        "certificate-authority-data": base64.b64encode(ca_cert.read_bytes()).decode(),
    }
    config["users"][0]["user"] = {
        "client-certificate-data": base64.b64encode(
            pki.client_cert("controller-manager").read_bytes()
        ).decode(),
        "client-key-data": base64.b64encode(pki.client_key("controller-manager").read_bytes()).decode(),
    }
    copies = (directory / "kubeconfig", directory / "sa.key", directory / "ca.crt")
    copies[0].write_text(yaml.safe_dump(config))
    shutil.copyfile(sa_key, copies[1])
    shutil.copyfile(ca_cert, copies[2])
    for path in (directory, *copies):
        os.chown(path, user, user)
    for path in copies:
        path.chmod(0o600)
    return copies


def _write_kwok_config(directory: Path, kwok_binary: str) -> Path:
    # hack/ensure-binaries.sh keeps kwok's published default stages next to the binary.
    stage_files = sorted((Path(kwok_binary).parent / "stages" / "pod").glob("*.yaml"))
    if not stage_files:
        raise ClusterError(f"kwok's default pod stages are missing next to {kwok_binary}; rebuild kwok")
    defaults = [yaml.safe_load(path.read_text()) for path in stage_files]
    path = directory / "kwok.yaml"
    path.write_text(yaml.safe_dump_all(kwok_pod_stages(defaults)))
    return path


def _tcp_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def _bootstrap(cluster: LocalCluster, pools: tuple[NodePool, ...], timeout: float) -> None:
    manifests = yaml.safe_dump_all(bootstrap_manifests(pools))
    cluster.kubectl("apply", "--server-side", "--field-manager=nimify-devcluster", "-f", "-", input=manifests)
    node_count = sum(pool.count for pool in pools)
    log = cluster.directory / "logs" / "kwok.log"

    def nodes_ready() -> bool:
        out = cluster.kubectl(
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.status.conditions[?(@.type=='Ready')].status}{'\\n'}{end}",
            check=False,
        ).stdout.split()
        return out.count("True") == node_count

    _wait(f"{node_count} kwok nodes Ready", nodes_ready, timeout, log)
    # Pods are admitted only once the controller-manager has created the namespace's default ServiceAccount.
    _wait(
        "default ServiceAccount",
        lambda: cluster.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
        timeout,
        cluster.directory / "logs" / "kube-controller-manager.log",
    )


def stop_cluster(directory: Path, remove: bool = True, grace: float = 10) -> None:
    """Stop every process of the cluster in `directory` (newest first) and, by default, delete its files.

    A real node goes first (drained, stopped, every trace removed); then the control plane, etcd last, so the
    apiserver stops while etcd still answers (it may hang on SIGTERM once etcd is gone).
    """
    state = directory / STATE_FILE
    cluster = LocalCluster.load(directory) if state.exists() else None
    pids = dict(cluster.pids) if cluster else {}
    apiserver_up = cluster is not None and _alive(pids.get("kube-apiserver", -1))
    volumes = _hostpath_volumes(cluster) if cluster is not None and apiserver_up else []
    # A real node's teardown is machine-wide (its processes, mounts, cgroups, rules, bridge): skipped when
    # this cluster's node is gone and another cluster's runs now.
    has_node = (directory / "node").exists() and not held_for_another(directory)
    if has_node:
        stop_real_node(directory, pids, cluster if apiserver_up else None)
    etcd = pids.pop("etcd", None)
    terminate(list(pids.values()), grace)
    terminate([etcd] if etcd is not None else [], grace)
    if has_node:
        remove_node_network(directory)
    for volume in volumes:
        shutil.rmtree(volume, ignore_errors=True)
    state.unlink(missing_ok=True)
    if remove:
        shutil.rmtree(directory, ignore_errors=True)


def terminate(pids: list[int], grace: float) -> None:
    """SIGTERM to all, SIGKILL to whoever is still there after `grace` seconds."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for pid in pids:
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _hostpath_volumes(cluster: LocalCluster) -> list[Path]:
    """Directories the hostPath provisioner made for this cluster's volumes (they outlive its processes)."""
    out = cluster.kubectl(
        "get", "pv", "-o", "jsonpath={range .items[*]}{.spec.hostPath.path}{'\\n'}{end}",
        check=False, timeout=10,
    ).stdout  # fmt: skip
    return [Path(p) for p in out.split() if p.startswith(f"{HOSTPATH_ROOT}/")]


def _alive(pid: int) -> bool:
    try:
        # Reap it if it is our child, so a zombie does not look alive.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def running_cluster(
    name: str,
    bin_path: str,
    directory: Path | None = None,
    pools: tuple[NodePool, ...] = DEFAULT_POOLS,
    real_node: RealNodeMode = RealNodeMode.OFF,
    log: Callable[[str], None] = lambda _: None,
) -> Iterator[LocalCluster]:
    cluster = start_cluster(name, bin_path, directory, pools, real_node=real_node, log=log)
    try:
        yield cluster
    finally:
        stop_cluster(cluster.directory)
