"""Start and stop a local control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok.

Each cluster lives in one directory (certificates, etcd data, logs, kubeconfig, `state.json` with the
process ids), listens only on 127.0.0.1 on ports picked free at start, so clusters can run side by side.
"""

from __future__ import annotations

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

from nimify.devcluster.pki import Pki, create_pki
from nimify.devcluster.topology import (
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
STATE_FILE = "state.json"


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

    @property
    def operator_kubeconfig(self) -> Path:
        return self.directory / "operator.kubeconfig"

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


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1."""
    # Hold all sockets open until every port is chosen so the same port is never handed out twice.
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


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

    def start(self, name: str, args: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.cluster.directory / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        with log.open("wb") as out:
            # A session of its own: Ctrl-C in the terminal that ran `up` must not take the cluster down.
            process = subprocess.Popen(
                [self.binaries[name], *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.processes[name] = process
        self.cluster.pids[name] = process.pid
        self.cluster.save()
        return process, log


def start_cluster(
    name: str,
    bin_path: str,
    directory: Path | None = None,
    pools: tuple[NodePool, ...] = DEFAULT_POOLS,
    timeout: float = 120,
) -> LocalCluster:
    """Start a cluster and return once its nodes are Ready and pods can be admitted."""
    binaries = resolve_binaries(bin_path)
    directory = (directory or default_cluster_root() / name).resolve()
    if (directory / STATE_FILE).exists():
        raise ClusterError(f"cluster {name!r} already exists in {directory}; stop it first")
    directory.mkdir(parents=True, exist_ok=True)
    pki = create_pki(directory / "pki", SERVICE_IP)
    etcd_client, etcd_peer, apiserver, kcm, scheduler, kwok = free_ports(6)
    server = f"https://127.0.0.1:{apiserver}"
    cluster = LocalCluster(
        name=name,
        directory=directory,
        kubeconfig=directory / "kubeconfig",
        server=server,
        bin_path=bin_path,
        audit_log=directory / "logs" / "audit.log",
    )
    for client in ("admin", "controller-manager", "scheduler", "kwok", "operator"):
        path = directory / ("kubeconfig" if client == "admin" else f"{client}.kubeconfig")
        path.write_text(yaml.safe_dump(_kubeconfig(server, pki, client)))
        path.chmod(0o600)
    (directory / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))
    launcher = _Launcher(cluster, binaries)
    try:
        _start_components(
            cluster, launcher, pki, (etcd_client, etcd_peer, apiserver, kcm, scheduler, kwok), timeout
        )
        _bootstrap(cluster, pools, timeout)
    except BaseException:
        stop_cluster(directory, remove=False)
        raise
    return cluster


def _start_components(
    cluster: LocalCluster, launcher: _Launcher, pki: Pki, ports: tuple[int, ...], timeout: float
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

    process, log = launcher.start(
        "kube-apiserver",
        [
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={apiserver_port}",
            # Endpoints may not point at loopback, so the `kubernetes` Service gets none (nothing needs it).
            "--endpoint-reconciler-type=none",
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
        ],
    )
    _wait("kube-apiserver", lambda: _https_ok(f"{cluster.server}/readyz", pki), timeout, log, process)

    common = ["--leader-elect=false", "--bind-address=127.0.0.1"]
    kcm_kubeconfig = str(d / "controller-manager.kubeconfig")
    process, kcm_log = launcher.start(
        "kube-controller-manager",
        [
            *common,
            f"--secure-port={kcm_port}",
            f"--kubeconfig={kcm_kubeconfig}",
            f"--authentication-kubeconfig={kcm_kubeconfig}",
            f"--authorization-kubeconfig={kcm_kubeconfig}",
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--root-ca-file={pki.ca_cert}",
            "--use-service-account-credentials=false",
            "--enable-hostpath-provisioner=true",
            # A loaded 2-core machine can delay kwok's lease renewals; a dead node is not what tests simulate.
            "--node-monitor-grace-period=120s",
            f"--cluster-cidr={POD_CIDR}",
        ],
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
            "--node-ip=10.240.0.1",
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
    """Stop every process of the cluster in `directory` (newest first) and, by default, delete its files."""
    state = directory / STATE_FILE
    if state.exists():
        pids = LocalCluster.load(directory).pids
        for pid in reversed(list(pids.values())):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for pid in reversed(list(pids.values())):
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        state.unlink()
    if remove:
        shutil.rmtree(directory, ignore_errors=True)


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
    name: str, bin_path: str, directory: Path | None = None, pools: tuple[NodePool, ...] = DEFAULT_POOLS
) -> Iterator[LocalCluster]:
    cluster = start_cluster(name, bin_path, directory, pools)
    try:
        yield cluster
    finally:
        stop_cluster(cluster.directory)
