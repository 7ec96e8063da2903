"""A real node whose processes all died without a teardown (its cluster's process SIGKILLed with its
children, or every process of the machine gone) leaves a bridge, routes, rules, mounts and shims behind; the
next `dev-cluster up` removes them once it holds the machine's lock instead of refusing to start.

Run for real, as root, in namespaces of their own (network, mounts, process IDs; /run and the cgroup root
private tmpfs), so the session cluster's real node, which may run at the same time, is neither seen nor
touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from nimify_devcluster.node_config import BRIDGE

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network, mount and PID namespaces need root")

#: Makes what a dead node leaves, acquires the lock and clears it; prints what it saw as JSON.
SCRIPT = textwrap.dedent(
    """
    import json, os, subprocess, sys, time
    from pathlib import Path
    # The namespace starts with private copies of the host's mounts, a running real node's among them:
    # unmounting the copies leaves the host's alone (propagation is private).
    # A copy may also vanish by itself meanwhile (the host removed its mount point), so its umount may fail.
    markers = ("/node/kubelet", "io.containerd.", "/run/nimify-node")

    def copies():
        points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        return sorted((p for p in points if any(m in p for m in markers)), key=len, reverse=True)

    for _ in range(10):
        if not (found := copies()):
            break
        for point in found:
            subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
    assert not copies(), copies()
    for point in ("/run", "/sys/fs/cgroup"):
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", point], check=True)
    from nimify_devcluster.cluster import KWOK_BLACKHOLES, SERVICE_CIDR
    from nimify_devcluster.node_config import LOCK_FILE, NODE_NAME
    from nimify_devcluster.node_network import IP_FORWARD, setup_network
    from nimify_devcluster.real_node import (
        acquire_lock, clear_stale_node, layout_for, leftovers, node_processes,
    )

    dead = Path(sys.argv[1])
    keep_state = sys.argv[2] == "state"
    IP_FORWARD.write_text("0\\n")
    layout = layout_for(dead)
    layout.directory.mkdir(parents=True)
    setup_network(layout.network_state, SERVICE_CIDR, KWOK_BLACKHOLES)
    # The kubelet's own chain, as kubelet leaves it.
    subprocess.run(["iptables", "-w", "-t", "filter", "-N", "KUBE-FIREWALL"], check=True)
    subprocess.run(["iptables", "-w", "-t", "filter", "-I", "INPUT", "-j", "KUBE-FIREWALL"], check=True)
    # And one of kube-proxy's, with a comment (iptables-save quotes it).
    subprocess.run(["iptables", "-w", "-t", "nat", "-N", "KUBE-SERVICES"], check=True)
    subprocess.run(["iptables", "-w", "-t", "nat", "-I", "PREROUTING", "-m", "comment", "--comment",
                    "kubernetes service portals", "-j", "KUBE-SERVICES"], check=True)  # fmt: skip
    volume = layout.directory / "kubelet" / "pods" / "uid" / "volumes" / "model"
    volume.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(volume)], check=True)
    Path("/sys/fs/cgroup/cgroup.controllers").write_text("cpu memory\\n")
    Path("/sys/fs/cgroup/kubepods/besteffort/pod-uid").mkdir(parents=True)
    # A process that looks like the node's kubelet (and holds no lock: its cluster is gone).
    kubelet = subprocess.Popen(
        ["kubelet", "-c", "import time; time.sleep(300)", f"--hostname-override={NODE_NAME}"],
        executable=sys.executable,
    )
    deadline = time.monotonic() + 10
    while not any("--hostname-override" in command for _, command in node_processes()):
        assert time.monotonic() < deadline, "the fake kubelet never showed in /proc"
        time.sleep(0.05)
    LOCK_FILE.write_text(json.dumps({"cluster": "dead", "directory": str(dead), "pid": 1}))
    if not keep_state:
        layout.network_state.unlink()
    before = leftovers()
    lock, previous = acquire_lock({"cluster": "next", "directory": "/nowhere", "pid": os.getpid()})
    found = clear_stale_node(previous, SERVICE_CIDR, KWOK_BLACKHOLES, lambda line: None)
    kubelet.wait(timeout=10)
    print(json.dumps({
        "before": before,
        "previous": str(previous),
        "found": found,
        "after": leftovers(held_by_us=True),
        "ip_forward": IP_FORWARD.read_text().strip(),
        "kubelet": kubelet.returncode,
        "owner": json.loads(LOCK_FILE.read_text()),
        "again": clear_stale_node(previous, SERVICE_CIDR, KWOK_BLACKHOLES, lambda line: None),
    }))
    """
)


def _clear(tmp_path: Path, keep_state: bool) -> dict[str, Any]:
    host_bridge = Path(f"/sys/class/net/{BRIDGE}").exists()
    result = subprocess.run(
        ["unshare", "--net", "--mount", "--propagation=private", "--pid", "--fork", "--mount-proc",
         sys.executable, "-c", SCRIPT, str(tmp_path / "dead"), "state" if keep_state else "lost"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # The host saw none of it: a real node running beside (the session's) keeps its bridge.
    assert Path(f"/sys/class/net/{BRIDGE}").exists() == host_bridge
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("keep_state", [True, False], ids=["with its state file", "state file gone"])
def test_what_a_dead_real_node_left_is_removed_when_the_next_one_takes_the_lock(
    tmp_path: Path, keep_state: bool
) -> None:
    seen = _clear(tmp_path, keep_state)
    before = "\n".join(seen["before"])
    for part in ("bridge nimify0", "NIMIFY-GUARD", "KUBE-FIREWALL", "route blackhole", "/node/kubelet/pods",
                 '"kubernetes service portals" -j KUBE-SERVICES',
                 "cgroup /sys/fs/cgroup/kubepods", "--hostname-override"):  # fmt: skip
        assert part in before
    assert "holds" not in before  # nothing holds the lock: the node's processes are gone
    assert seen["previous"] == str(tmp_path / "dead")
    assert seen["found"] == seen["before"]
    assert seen["after"] == []
    assert seen["again"] == []  # nothing left, nothing done
    assert seen["kubelet"] == -9
    assert seen["owner"]["cluster"] == "next"
    # IPv4 forwarding: restored from the dead node's state file; without it, left on (unknown before).
    assert seen["ip_forward"] == ("0" if keep_state else "1")
