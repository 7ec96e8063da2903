"""The real node's network, kept on this machine: traffic goes only to loopback and to the cluster's pods.

- the pod bridge with the host address (created before the apiserver, which listens on it);
- pods get no default route (the CNI config routes only the pod and service ranges);
- nothing is masqueraded out (`ipMasq: false`; kube-proxy masquerades only service traffic to endpoints);
- a guard drops anything forwarded between the bridge and any other interface: a chain at the top of the
  mangle table's FORWARD, ahead of every ACCEPT kube-proxy adds to the filter table;
- blackhole routes for kwok's simulated node and pod addresses, so a Service backed by simulated pods never
  sends a packet toward them; the service range routed onto the bridge, never the default route;
- IPv4 forwarding on (pod -> ClusterIP -> pod is routed through the host), restored on teardown.

Everything set up is recorded in a state file first and removed on teardown, even after a partial setup.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nimify_devcluster.node_config import BRIDGE, HOST_IP, POD_CIDR

GUARD_CHAIN = "NIMIFY-GUARD"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


class NetworkError(RuntimeError):
    """A step of the network setup failed; the message has the command and its output."""


@dataclass
class NetworkState:
    service_cidr: str
    blackholes: list[str]
    ip_forward_before: str | None = None
    done: list[str] = field(default_factory=list)  # steps taken, in order

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> NetworkState:
        return cls(**json.loads(path.read_text()))


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NetworkError(f"{' '.join(command)} failed: {(result.stderr or result.stdout).strip()}")
    return result


def guard_rules() -> list[list[str]]:
    """The guard chain's rules (mangle table): drop forwarding that enters or leaves through the bridge
    from or to another interface."""
    return [
        ["-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP"],
        ["!", "-i", BRIDGE, "-o", BRIDGE, "-j", "DROP"],
    ]


def setup_network(state_file: Path, service_cidr: str, blackholes: list[str]) -> NetworkState:
    state = NetworkState(service_cidr=service_cidr, blackholes=blackholes)

    def step(name: str, *command: str) -> None:
        state.done.append(name)  # recorded before it runs: teardown removes what may half exist
        state.save(state_file)
        _run(*command)

    if _run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
        raise NetworkError(
            f"the bridge {BRIDGE} already exists: another real node runs, or a previous one was not torn "
            "down (`nimify dev-cluster down` of that cluster removes it)"
        )
    step("bridge", "ip", "link", "add", BRIDGE, "type", "bridge")
    _run("ip", "addr", "add", f"{HOST_IP}/{POD_CIDR.split('/')[1]}", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    # Nothing of the pod bridge speaks IPv6: no link-local addresses, no router solicitations.
    _run("sysctl", "-q", "-w", f"net.ipv6.conf.{BRIDGE}.disable_ipv6=1", check=False)
    step("guard", "iptables", "-w", "-t", "mangle", "-N", GUARD_CHAIN)
    for rule in guard_rules():
        _run("iptables", "-w", "-t", "mangle", "-A", GUARD_CHAIN, *rule)
    step("guard-jump", "iptables", "-w", "-t", "mangle", "-I", "FORWARD", "1", "-j", GUARD_CHAIN)
    for cidr in blackholes:
        step(f"blackhole {cidr}", "ip", "route", "add", "blackhole", cidr)
    step("service-route", "ip", "route", "add", service_cidr, "dev", BRIDGE, "src", HOST_IP)
    state.ip_forward_before = IP_FORWARD.read_text().strip()
    state.done.append("ip_forward")
    state.save(state_file)
    IP_FORWARD.write_text("1\n")
    return state


def teardown_network(state_file: Path) -> None:
    """Undo what `setup_network` recorded, newest first; a step that is already gone is skipped."""
    if not state_file.exists():
        return
    _undo(NetworkState.load(state_file))
    state_file.unlink()


def remove_stale_network(service_cidr: str, blackholes: list[str]) -> None:
    """Remove, by name, everything `setup_network` makes: for a real node whose processes died without a
    teardown and whose state file is gone with its cluster directory. IPv4 forwarding stays as it is (what it
    was before is not known)."""
    steps = ["bridge", "guard", "guard-jump", *(f"blackhole {cidr}" for cidr in blackholes), "service-route"]
    _undo(NetworkState(service_cidr=service_cidr, blackholes=blackholes, done=steps))


def _undo(state: NetworkState) -> None:
    for name in reversed(state.done):
        with contextlib.suppress(NetworkError, OSError):
            if name == "ip_forward" and state.ip_forward_before is not None:
                IP_FORWARD.write_text(state.ip_forward_before + "\n")
            elif name == "service-route":
                _run("ip", "route", "del", state.service_cidr, "dev", BRIDGE, check=False)
            elif name.startswith("blackhole "):
                _run("ip", "route", "del", "blackhole", name.split(" ", 1)[1], check=False)
            elif name == "guard-jump":
                while _run("iptables", "-w", "-t", "mangle", "-D", "FORWARD", "-j", GUARD_CHAIN, check=False)\
                        .returncode == 0:  # fmt: skip
                    pass
            elif name == "guard":
                _run("iptables", "-w", "-t", "mangle", "-F", GUARD_CHAIN, check=False)
                _run("iptables", "-w", "-t", "mangle", "-X", GUARD_CHAIN, check=False)
            elif name == "bridge":
                for veth in bridge_ports():
                    _run("ip", "link", "del", veth, check=False)
                _run("ip", "link", "del", BRIDGE, check=False)


def bridge_ports() -> list[str]:
    """Interfaces attached to the pod bridge (the host ends of pod veths)."""
    result = _run("ip", "-j", "link", "show", "master", BRIDGE, check=False)
    if result.returncode != 0 or not result.stdout.strip():
        return []
    return [str(link["ifname"]) for link in json.loads(result.stdout)]


def leftovers() -> list[str]:
    """What of a real node's network exists on this machine now (empty after a clean teardown)."""
    found = []
    if _run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
        found.append(f"bridge {BRIDGE}")
    veths = _run("ip", "-j", "link", "show", "type", "veth", check=False)
    if veths.returncode == 0 and veths.stdout.strip():
        # The CNI bridge plugin names the host end of each pod's pair veth<8 hex digits>.
        found += [f"veth {v['ifname']}" for v in json.loads(veths.stdout) if v["ifname"].startswith("veth")]
    routes = _run("ip", "route", "show", check=False).stdout
    found += [f"route {line}" for line in routes.splitlines() if BRIDGE in line or "blackhole" in line]
    for table in ("mangle", "filter", "nat"):
        rules = _run("iptables-save", "-t", table, check=False).stdout
        found += [f"iptables -t {table}: {line}" for line in rules.splitlines() if _ours(line)]
        rules6 = _run("ip6tables-save", "-t", table, check=False).stdout
        found += [f"ip6tables -t {table}: {line}" for line in rules6.splitlines() if _ours(line)]
    return found


def _ours(line: str) -> bool:
    """An iptables-save line of the guard, kube-proxy or the kubelet (their chains are KUBE-*)."""
    return not line.startswith(("#", "*", "COMMIT")) and (GUARD_CHAIN in line or "KUBE-" in line)
