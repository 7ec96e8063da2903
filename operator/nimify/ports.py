"""Free TCP ports for processes we start (a local Triton, a dev cluster's components), safe side by side.

Asking the kernel for port 0 and handing the number to a child races twice: the kernel hands the same range
out as the source port of every outgoing connection (an apiserver's connections to etcd take a few a second),
and another process asking for port 0 may get the number back before our child binds it. Both were seen: a
kube-controller-manager that found its port taken while four test processes started clusters beside each
other. So ports come from outside the kernel's ephemeral range, where nothing is assigned behind our back,
and every number handed out is reserved machine-wide (a small table under a file lock) for `RESERVED_SECONDS`,
long enough for the child that gets it to bind it; a bind test skips ports that something else already holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

#: How long a handed-out port stays reserved for the process that asked for it.
RESERVED_SECONDS = 600.0
#: Never below this: the well-known and commonly configured ports.
LOWEST = 10000
HIGHEST = 65535
#: Below this many ports outside the ephemeral range, the whole range above `LOWEST` is used.
FEWEST = 2000


def ephemeral_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> tuple[int, int]:
    """The kernel's range for port 0 and outgoing connections (Linux's default where it cannot be read)."""
    try:
        low, high = (int(part) for part in path.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def candidate_ports(ephemeral: tuple[int, int]) -> list[int]:
    """Ports the kernel never assigns on its own, or every port above `LOWEST` where those are too few."""
    low, high = ephemeral
    outside = [port for port in range(LOWEST, HIGHEST + 1) if not low <= port <= high]
    return outside if len(outside) >= FEWEST else list(range(LOWEST, HIGHEST + 1))


def _table_path() -> Path:
    return Path(tempfile.gettempdir()) / f"nimify-ports-{os.getuid()}.json"


@contextlib.contextmanager
def _locked_table(path: Path) -> Iterator[dict[str, float]]:
    """The reservation table (port -> expiry in epoch seconds), held under an exclusive lock, written back."""
    with path.with_suffix(".lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            table: dict[str, float] = {}
            with contextlib.suppress(OSError, ValueError):
                loaded = json.loads(path.read_text())
                if isinstance(loaded, dict):
                    table = {str(key): float(value) for key, value in loaded.items()}
            yield table
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps(table))
            partial.replace(path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _bindable(sock: socket.socket, host: str, port: int) -> bool:
    try:
        sock.bind((host, port))
    except OSError:
        return False
    return True


def free_ports(count: int, host: str = "127.0.0.1", *, table: Path | None = None) -> list[int]:
    """`count` distinct TCP ports on `host`, free now and reserved on this machine for `RESERVED_SECONDS`."""
    now = time.time()
    candidates = candidate_ports(ephemeral_range())
    with _locked_table(table or _table_path()) as reserved, contextlib.ExitStack() as stack:
        for expired in [key for key, expiry in reserved.items() if expiry <= now]:
            del reserved[expired]
        chosen: list[int] = []
        for port in random.sample(candidates, len(candidates)):
            if str(port) in reserved:
                continue
            # Held open until every port is chosen, so one call never tests the same port twice.
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            if not _bindable(sock, host, port):
                continue
            chosen.append(port)
            reserved[str(port)] = now + RESERVED_SECONDS
            if len(chosen) == count:
                return chosen
    raise OSError(f"no {count} free TCP ports on {host} outside the kernel's ephemeral range")


def free_port(host: str = "127.0.0.1") -> int:
    """One port as `free_ports` chooses them."""
    return free_ports(1, host)[0]
