"""A real node next to the kwok pools: containerd, kubelet and kube-proxy on this machine, running real pods.

Started by default where it can (`NIMIFY_REAL_NODE=auto`: as root, with the Debian packages and the node
binaries present); `on` insists (the cluster fails to start without it), `off` keeps the cluster kwok-only.
One real node per machine: a machine-wide lock (flock on LOCK_FILE) is held by the node's own processes for
as long as any of them lives, so a second cluster asking for a real node fails at once with a message that
names the cluster holding it. Teardown leaves nothing: no process, mount, cgroup, veth, route or rule.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from nimify_devcluster.images import NODE_IMAGES, BuiltImage, build_images, buildah_for, cache_root
from nimify_devcluster.node_config import (
    GPU_COUNT,
    GPU_PRODUCT,
    KUBE_PROXY_HEALTHZ_PORT,
    LOCK_FILE,
    NODE_NAME,
    RUN_DIR,
    RUNTIME_CLASS,
    NodeLayout,
    cni_config,
    containerd_config,
    gpu_capacity_patch,
    kube_proxy_config,
    kubelet_args,
    kubelet_config,
    runtime_class_manifest,
)
from nimify_devcluster.node_network import leftovers as network_leftovers
from nimify_devcluster.node_network import remove_stale_network, setup_network, teardown_network
from nimify_devcluster.topology import GPU_RESOURCE

if TYPE_CHECKING:
    from nimify_devcluster.cluster import Kubectl

ENVIRONMENT = "NIMIFY_REAL_NODE"
COMMANDS = ("containerd", "ctr", "runc", "iptables", "iptables-save", "ip6tables", "ip", "buildah",
            "mmdebstrap", "gcc")  # fmt: skip
CNI_PLUGINS = ("bridge", "host-local", "loopback")
#: Client identities the real node's components use (pki file stem -> common name, organisation).
NODE_CLIENTS: dict[str, tuple[str, str | None]] = {
    "node": (f"system:node:{NODE_NAME}", "system:nodes"),
    "kube-proxy": ("system:kube-proxy", None),
    # The apiserver's identity toward the kubelet (logs, exec, port-forward), authorised by the kubelet's
    # webhook like any other client.
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters"),
}
#: Taint that drains the node before teardown (plain pod deletes race with controllers and leave mounts).
DRAIN_TAINT = "nimify.dev/teardown=true:NoExecute"

Log = Callable[[str], None]


class RealNodeError(RuntimeError):
    """The real node could not start (or another one holds this machine); the message says why."""


class RealNodeMode(StrEnum):
    AUTO = "auto"
    ON = "on"
    OFF = "off"


def mode_from_environment() -> RealNodeMode:
    value = (os.environ.get(ENVIRONMENT) or "auto").strip().lower()
    try:
        return RealNodeMode(value)
    except ValueError:
        raise RealNodeError(f"{ENVIRONMENT}={value!r}: use auto, on or off") from None


def unavailable_reason(bin_path: str) -> str | None:
    """Why this machine cannot run a real node, or None when it can."""
    if os.geteuid() != 0:
        return "not running as root (containerd, the kubelet and the network guard need root)"
    missing = [command for command in COMMANDS if shutil.which(command) is None]
    missing += [f"/usr/lib/cni/{p}" for p in CNI_PLUGINS if not (Path("/usr/lib/cni") / p).exists()]
    if missing:
        return f"missing {', '.join(missing)} (bash hack/ensure-packages.sh installs them)"
    for binary in ("kubelet", "kube-proxy"):
        if shutil.which(binary, path=bin_path) is None:
            return (
                f"{binary} is not on the binary path {bin_path!r} (hack/ensure-binaries.sh builds it "
                f"unless {ENVIRONMENT}=off)"
            )
    return None


@dataclass
class RealNodeInfo:
    """What a cluster's state records about its real node."""

    name: str
    gpu_product: str
    runtime_class: str
    images: dict[str, str]  # image name -> reference imported into the node's containerd
    containerd_root: str
    #: Seconds each start-up step took (images, containerd, kubelet Ready, kube-proxy), for the record.
    timings: dict[str, float]
    #: containerd's registry hosts directory (`NodeLayout.registry_hosts_dir`; registry.py writes hosts.toml
    #: files there); empty in the state of a cluster started before it existed.
    registry_hosts_dir: str = ""


def operator_environment(node: RealNodeInfo) -> dict[str, str]:
    """NIMIFY_* settings of an operator whose pods run on the real node: its images were imported by hand
    (no registry), so they are named as imported and never pulled."""
    return {
        "NIMIFY_ONNXRUNTIME_BUILDER_IMAGE": node.images["nimify"],
        "NIMIFY_IMAGE_PULL_POLICY": "Never",
    }


# --- the machine-wide lock ----------------------------------------------------------------------------------


def acquire_lock(owner: dict[str, Any]) -> tuple[int, Path | None]:
    """An inheritable, locked descriptor of LOCK_FILE, and the cluster directory of its previous owner (if
    it said). The node's processes inherit the descriptor and so hold the lock until the last of them exits
    (a crashed cluster leaves no stale lock; what else it left, `clear_stale_node` removes)."""
    fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _owner(os.read(fd, 4096))
        os.close(fd)
        if holder is not None:
            who = f"cluster {holder.get('cluster')!r} ({holder['directory']})"
            hint = f"stop it with `nimify dev-cluster down --dir {holder['directory']}`"
        else:
            who, hint = "another cluster", "stop it first"
        raise RealNodeError(
            f"a real node already runs on this machine, for {who}: only one can (it needs root, the "
            f"kubelet's fixed ports and the kubepods cgroup). {hint}, or start this cluster kwok-only with "
            f"{ENVIRONMENT}=off"
        ) from None
    previous = _owner(os.read(fd, 4096))
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(owner).encode())
    os.set_inheritable(fd, True)
    return fd, Path(previous["directory"]) if previous is not None else None


def _owner(content: bytes) -> dict[str, Any] | None:
    """What the lock file says of its owner (`acquire_lock` writes it); None when it says nothing usable."""
    with contextlib.suppress(ValueError):
        owner = json.loads(content.decode(errors="replace"))
        if isinstance(owner, dict) and isinstance(owner.get("directory"), str):
            return owner
    return None


def lock_holders() -> bool:
    """Whether some process holds the real-node lock now."""
    if not LOCK_FILE.exists():
        return False
    fd = os.open(LOCK_FILE, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def clear_stale_node(
    previous_directory: Path | None, service_cidr: str, blackholes: list[str], log: Log
) -> list[str]:
    """Remove what a real node left whose processes are all gone without a teardown (its cluster's process
    was SIGKILLed with its children, or the machine's processes all died): shims and pods, mounts, pod
    cgroups, KUBE-* rules, the bridge, routes and guard. Only while this process holds the lock (no live
    node then: its processes would hold it). Returns what it found; raises when some of it stays."""
    found = leftovers(held_by_us=True)
    if not found:
        return []
    log(f"removing what a real node whose processes are gone left on this machine ({len(found)} items)")
    # Its cluster directory may be gone: its mounts are found by what only a node mounts.
    _remove_node_traces(lambda: _mounts_under(RUN_DIR) + _node_mounts())
    _drop_kube_chains()
    if previous_directory is not None:  # its state file restores IPv4 forwarding as it was
        teardown_network(layout_for(previous_directory).network_state)
    remove_stale_network(service_cidr, blackholes)
    if left := leftovers(held_by_us=True):
        raise RealNodeError(
            "a real node whose processes are gone left this on the machine, and it could not all be "
            f"removed: {'; '.join(left)}"
        )
    return found


def held_for_another(cluster_directory: Path) -> bool:
    """Whether a live real node of another cluster holds the lock: then the machine-wide parts of a
    teardown (node processes, the run directory, pod cgroups, KUBE-* rules, the bridge) are that node's,
    and stopping this cluster (dead, its own node long gone) must not touch them."""
    if not lock_holders():
        return False
    holder = _owner(LOCK_FILE.read_bytes())
    if holder is None:
        return True  # held, by an unknown owner: not ours to tear down
    return Path(holder["directory"]).resolve() != cluster_directory.resolve()


# --- start --------------------------------------------------------------------------------------------------


def layout_for(cluster_directory: Path) -> NodeLayout:
    return NodeLayout(cluster_directory / "node", cache_root().parent / "real-node" / "containerd")


def prepare_network(cluster_directory: Path, service_cidr: str, blackholes: list[str]) -> None:
    """The bridge, routes and guard; before the apiserver starts (it listens on the bridge's address)."""
    layout = layout_for(cluster_directory)
    layout.directory.mkdir(parents=True, exist_ok=True)
    setup_network(layout.network_state, service_cidr, blackholes)


Start = Callable[[str, str, list[str]], tuple[subprocess.Popen[bytes], Path]]
Wait = Callable[[str, Callable[[], bool], float, Path | None, subprocess.Popen[bytes] | None], None]


def start_real_node(
    cluster_directory: Path,
    kubectl: Kubectl,
    start: Start,
    wait: Wait,
    *,
    bin_path: str,
    ca_cert: Path,
    service_cidr: str,
    log: Log,
    timeout: float = 120,
) -> RealNodeInfo:
    """Images, containerd, kubelet (Ready, GPUs advertised), kube-proxy and the RuntimeClass.

    `start(name, binary, args)` launches a process of the cluster (holding the lock descriptor);
    `wait(what, probe, timeout, log, process)` waits for it.
    """
    layout = layout_for(cluster_directory)
    for path in (layout.cni_conf_dir, layout.kubelet_root, layout.kubelet_certs, layout.pod_logs,
                 layout.volume_plugins, layout.run, layout.containerd_root,
                 layout.registry_hosts_dir):  # fmt: skip
        path.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    started = time.monotonic()
    images = build_images(NODE_IMAGES, log=log)
    timings["images"] = time.monotonic() - started

    layout.containerd_config.write_text(containerd_config(layout, images["pause"].ref))
    (layout.cni_conf_dir / "10-nimify.conflist").write_text(json.dumps(cni_config(layout, service_cidr)))
    # Pods resolve no names (no cluster DNS, no network); with no nameserver at all containerd would give
    # them the host's resolv.conf, so they get their own loopback, where nothing answers.
    layout.resolv_conf.write_text("nameserver 127.0.0.1\n")
    layout.kubelet_config.write_text(yaml.safe_dump(kubelet_config(layout, ca_cert)))
    layout.kube_proxy_config.write_text(
        yaml.safe_dump(kube_proxy_config(cluster_directory / "kube-proxy.kubeconfig"))
    )

    step = time.monotonic()
    containerd = shutil.which("containerd")
    assert containerd is not None
    process, containerd_log = start("containerd", containerd, [f"--config={layout.containerd_config}"])
    wait("containerd", lambda: _ctr(layout, "version").returncode == 0, timeout, containerd_log, process)
    timings["containerd"] = time.monotonic() - step

    step = time.monotonic()
    imported = import_images(layout, images, log)
    timings["image import"] = time.monotonic() - step

    step = time.monotonic()
    kubelet = shutil.which("kubelet", path=bin_path)
    assert kubelet is not None
    args = kubelet_args(layout, cluster_directory / "node.kubeconfig", layout.kubelet_config)
    process, kubelet_log = start("kubelet", kubelet, args)
    wait("real node Ready", lambda: _node_ready(kubectl), timeout, kubelet_log, process)
    timings["kubelet Ready"] = time.monotonic() - step
    kubectl.kubectl(
        "patch", "node", NODE_NAME, "--subresource=status", "--type=json",
        "-p", json.dumps(gpu_capacity_patch()),
    )  # fmt: skip
    wait(
        f"{GPU_RESOURCE} allocatable on the real node",
        lambda: _allocatable_gpus(kubectl) == str(GPU_COUNT),
        timeout,
        kubelet_log,
        process,
    )

    step = time.monotonic()
    kube_proxy = shutil.which("kube-proxy", path=bin_path)
    assert kube_proxy is not None
    process, proxy_log = start("kube-proxy", kube_proxy, [f"--config={layout.kube_proxy_config}", "--v=2"])
    wait(
        "kube-proxy",
        lambda: _http_ok(f"http://127.0.0.1:{KUBE_PROXY_HEALTHZ_PORT}/healthz"),
        timeout,
        proxy_log,
        process,
    )
    timings["kube-proxy"] = time.monotonic() - step
    kubectl.kubectl(
        "apply", "--server-side", "--field-manager=nimify-devcluster", "-f", "-",
        input=yaml.safe_dump(runtime_class_manifest()),
    )  # fmt: skip
    return RealNodeInfo(
        name=NODE_NAME,
        gpu_product=GPU_PRODUCT,
        runtime_class=RUNTIME_CLASS,
        images=imported,
        containerd_root=str(layout.containerd_root),
        timings={k: round(v, 1) for k, v in timings.items()},
        registry_hosts_dir=str(layout.registry_hosts_dir),
    )


def _ctr(layout: NodeLayout, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ctr", f"--address={layout.containerd_socket}", "--namespace=k8s.io", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def import_images(layout: NodeLayout, images: dict[str, BuiltImage], log: Log) -> dict[str, str]:
    """Each image into the node's containerd unless it is there already (its tag is its content hash, so
    a present tag is the same image); older tags of the same images are removed."""
    present = set(_ctr(layout, "images", "list", "--quiet").stdout.split())
    buildah = buildah_for()
    for image in images.values():
        repository = image.ref.rsplit(":", 1)[0]
        if image.ref not in present:
            log(f"importing {image.ref} into the node's containerd")
            with tempfile.TemporaryDirectory(prefix="nimify-import-", dir=cache_root()) as tmp:
                archive = Path(tmp) / "image.tar"
                buildah.export(image.ref, archive)
                result = _ctr(layout, "images", "import", "--snapshotter=overlayfs", str(archive))
            if result.returncode != 0 or image.ref not in _ctr(layout, "images", "list", "--quiet").stdout:
                raise RealNodeError(f"importing {image.ref} into containerd failed: {result.stderr.strip()}")
        stale = [ref for ref in present if ref.rsplit(":", 1)[0] == repository and ref != image.ref]
        if stale:
            _ctr(layout, "images", "remove", *stale)
    return {name: image.ref for name, image in images.items()}


def _node_ready(kubectl: Kubectl) -> bool:
    out = kubectl.kubectl(
        "get", "node", NODE_NAME, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
        check=False,
    ).stdout  # fmt: skip
    return out.strip() == "True"


def _allocatable_gpus(kubectl: Kubectl) -> str:
    path = "{.status.allocatable.nvidia\\.com/gpu}"
    return kubectl.kubectl("get", "node", NODE_NAME, "-o", f"jsonpath={path}", check=False).stdout.strip()


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)


# --- teardown -----------------------------------------------------------------------------------------------


def drain(kubectl: Kubectl, timeout: float = 90) -> None:
    """Evict every pod of the real node through the kubelet (NoExecute taint), so each is stopped in order:
    containers, volumes (tmpfs, bind mounts), the sandbox and its network namespace."""
    if kubectl.kubectl("get", "node", NODE_NAME, check=False, timeout=10).returncode != 0:
        return
    kubectl.kubectl("taint", "node", NODE_NAME, DRAIN_TAINT, "--overwrite", check=False, timeout=10)
    deadline = time.monotonic() + timeout
    forced = False
    while time.monotonic() < deadline:
        pods = kubectl.kubectl(
            "get", "pods", "--all-namespaces", f"--field-selector=spec.nodeName={NODE_NAME}",
            "-o", "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name} {end}",
            check=False, timeout=10,
        ).stdout.split()  # fmt: skip
        if not pods:
            return
        if not forced and time.monotonic() > deadline - timeout / 3:
            forced = True  # pods that ignore SIGTERM past their grace: the kubelet kills them now
            for pod in pods:
                namespace, name = pod.split("/", 1)
                kubectl.kubectl(
                    "delete", "pod", name, "-n", namespace, "--grace-period=1", "--wait=false",
                    check=False, timeout=10,
                )  # fmt: skip
        time.sleep(1)


def stop_real_node(cluster_directory: Path, pids: dict[str, int], kubectl: Kubectl | None) -> None:
    """Stop the node's processes and remove every trace of them but the network (`remove_node_network`);
    tolerant of a half-started node."""
    layout = layout_for(cluster_directory)
    if kubectl is not None and "kubelet" in pids and _alive(pids["kubelet"]):
        with contextlib.suppress(Exception):
            drain(kubectl)
    _stop(pids.pop("kubelet", None))
    _stop(pids.pop("kube-proxy", None))
    _kube_proxy_cleanup(cluster_directory)
    if "containerd" in pids and _alive(pids["containerd"]):
        _remove_containers(layout)
    _stop(pids.pop("containerd", None))
    _remove_node_traces(lambda: _mounts_under(layout.directory, layout.run))


def _remove_node_traces(mounts: Callable[[], list[Path]]) -> None:
    """What outlives a node's stopped (or dead) main processes: shims and pods, the `mounts`, the pod
    cgroups and the run directory."""
    _kill_node_processes()
    _unmount(mounts)
    _remove_pod_cgroups()
    shutil.rmtree(RUN_DIR, ignore_errors=True)


def remove_node_network(cluster_directory: Path) -> None:
    """The bridge, routes and guard; after the control plane has stopped (the apiserver listens on the
    bridge's address: with that address gone, its clients' connections would hang instead of closing)."""
    teardown_network(layout_for(cluster_directory).network_state)


def _stop(pid: int | None, grace: float = 15) -> None:
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie that is not our child still answers kill(0); it is dead for our purposes.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def _kube_proxy_cleanup(cluster_directory: Path) -> None:
    """`kube-proxy --cleanup` removes its rules; the kubelet's own KUBE-* chains (KUBE-FIREWALL, ...) it
    leaves, so every remaining KUBE-* chain goes too, in iptables and ip6tables."""
    bin_path = _bin_path_of(cluster_directory)
    kube_proxy = shutil.which("kube-proxy", path=bin_path) if bin_path else None
    if kube_proxy:
        subprocess.run([kube_proxy, "--cleanup"], capture_output=True, check=False, timeout=60)
    _drop_kube_chains()


def _drop_kube_chains() -> None:
    """Every KUBE-* chain and every jump to one, in iptables and ip6tables."""
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            _drop_kube_chains_of(tool, table)


def _drop_kube_chains_of(tool: str, table: str) -> None:
    saved = subprocess.run([f"{tool}-save", "-t", table], capture_output=True, text=True, check=False).stdout
    chains = [line[1:].split()[0] for line in saved.splitlines() if line.startswith(":KUBE-")]
    for line in saved.splitlines():
        if line.startswith("-A ") and " -j KUBE-" in line and not line.split()[1].startswith("KUBE-"):
            rule = shlex.split(line)[1:]  # "CHAIN spec...": delete by specification (comments are quoted)
            subprocess.run([tool, "-w", "-t", table, "-D", *rule], capture_output=True, check=False)
    for chain in chains:
        subprocess.run([tool, "-w", "-t", table, "-F", chain], capture_output=True, check=False)
    for chain in chains:
        subprocess.run([tool, "-w", "-t", table, "-X", chain], capture_output=True, check=False)


def _bin_path_of(cluster_directory: Path) -> str | None:
    with contextlib.suppress(OSError, ValueError, KeyError):
        return str(json.loads((cluster_directory / "state.json").read_text())["bin_path"])
    return None


def _remove_containers(layout: NodeLayout) -> None:
    """Containers the drain left (kubelet only garbage-collects sandboxes later): the persistent containerd
    root must start the next cluster with images only."""
    for task in _ctr(layout, "tasks", "list", "--quiet").stdout.split():
        _ctr(layout, "tasks", "kill", "--signal=SIGKILL", task)
        _ctr(layout, "tasks", "delete", "--force", task)
    containers = _ctr(layout, "containers", "list", "--quiet").stdout.split()
    if containers:
        _ctr(layout, "containers", "delete", *containers)


def node_processes() -> list[tuple[int, str]]:
    """Processes of a real node on this machine: containerd and its shims on our socket, kubelet,
    kube-proxy, and anything in a pod cgroup."""
    found = []
    socket = str(RUN_DIR / "containerd.sock")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            cgroups = (proc / "cgroup").read_text()
        except OSError:
            continue
        command = " ".join(part.decode(errors="replace") for part in argv if part)
        name = Path(argv[0].decode(errors="replace")).name if argv and argv[0] else ""
        ours = (
            (name.startswith("containerd") and socket in command)
            or (name == "kubelet" and f"--hostname-override={NODE_NAME}" in command)
            or (name == "kube-proxy" and "--config=" in command and "/node/kube-proxy.yaml" in command)
            or "/kubepods" in cgroups
        )
        if ours:
            found.append((int(proc.name), command[:200]))
    return found


def _kill_node_processes() -> None:
    for _ in range(50):
        found = node_processes()
        if not found:
            return
        for pid, _command in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _mounts_under(*roots: Path) -> list[Path]:
    found = []
    prefixes = [str(root.resolve()) for root in roots]
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if any(point == prefix or point.startswith(prefix + "/") for prefix in prefixes):
                found.append(Path(point))
    return found


def _unmount(mounts_now: Callable[[], list[Path]]) -> None:
    """Unmount what `mounts_now` lists, deepest first (lazily where busy), until it lists nothing."""
    for _ in range(5):
        mounts = mounts_now()
        if not mounts:
            return
        for point in sorted(mounts, key=lambda p: len(p.parts), reverse=True):
            if subprocess.run(["umount", str(point)], capture_output=True, check=False).returncode != 0:
                subprocess.run(["umount", "--lazy", str(point)], capture_output=True, check=False)


def _pod_cgroups() -> list[Path]:
    root = Path("/sys/fs/cgroup")
    found: list[Path] = []
    with contextlib.suppress(OSError):
        for controller in root.iterdir():
            for candidate in (controller / "kubepods", controller / "kubepods.slice"):
                if candidate.is_dir():
                    found.append(candidate)
    if (root / "kubepods").is_dir() and (root / "cgroup.controllers").exists():  # cgroup v2
        found.append(root / "kubepods")
    return found


def _remove_pod_cgroups() -> None:
    for top in _pod_cgroups():
        directories = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts))
        for directory in [*reversed(directories), top]:
            with contextlib.suppress(OSError):
                directory.rmdir()


def leftovers(cluster_directory: Path | None = None, *, held_by_us: bool = False) -> list[str]:
    """Everything of a real node that exists on this machine now; empty after a clean teardown.
    `held_by_us`: this process holds the lock (so it is no leftover)."""
    found = [f"process {pid}: {command}" for pid, command in node_processes()]
    roots = [RUN_DIR] + ([layout_for(cluster_directory).directory] if cluster_directory else [])
    found += [f"mount {point}" for point in _mounts_under(*roots)]
    found += [f"mount {point}" for point in _node_mounts() if point not in _mounts_under(*roots)]
    found += [f"cgroup {path}" for path in _pod_cgroups()]
    found += network_leftovers()
    if not held_by_us and lock_holders():
        found.append(f"a process holds {LOCK_FILE}")
    return found


def _node_mounts() -> list[Path]:
    """Mounts that only a real node makes, wherever its cluster directory was: the kubelet's pod volumes and
    containerd's task root filesystems."""
    markers = ("/node/kubelet", "io.containerd.runtime.v2.task", "io.containerd.grpc.v1.cri")
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if any(marker in point for marker in markers):
                found.append(Path(point))
    return found
