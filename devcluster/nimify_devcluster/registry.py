"""The development cluster's OCI registry: the CNCF distribution registry as a host process, like the control
plane itself, over plain HTTP (it is only on this machine), storing on the filesystem under its directory.

Anonymous pull and push, or htpasswd users (bcrypt; distribution v3.1.2 accepts them without TLS, its docs
only warn). Next to a cluster with a real node it listens on the bridge's host address, where pods reach it,
and the node's containerd pulls from it through a hosts.toml in its registry hosts directory (read on each
pull). Binary: `hack/ensure-registry.sh` prints its directory. Next to a cluster, the process is adopted by
the cluster, so `stop_cluster` stops it too.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from nimify.ports import free_ports
from nimify_devcluster.cluster import ClusterError, LocalCluster, terminate
from nimify_devcluster.node_config import HOST_IP
from nimify_devcluster.real_node import layout_for

STATE_FILE = "registry.json"
#: Where a cluster's registry keeps its storage and configuration, under the cluster's directory.
CLUSTER_REGISTRY_DIR = "registry"
#: The name a cluster adopts the registry's process by.
PROCESS_NAME = "registry"
REALM = "nimify-dev-registry"


class RegistryError(ClusterError):
    """The registry could not start; the message has the end of its log."""


@dataclass
class LocalRegistry:
    """A running registry: where clients reach it, its directory and its users (name -> password)."""

    address: str  # HOST:PORT
    root: Path
    pid: int
    #: Empty: anonymous pull and push.
    users: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def log(self) -> Path:
        return self.root / "registry.log"

    @property
    def config(self) -> Path:
        return self.root / "config.yml"

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    def save(self) -> None:
        """Its state (passwords included, so readable by its owner only) in `root`."""
        path = self.root / STATE_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(self) | {"root": str(self.root)}, out)

    @classmethod
    def load(cls, root: Path) -> LocalRegistry:
        state = json.loads((root / STATE_FILE).read_text())
        return cls(**state | {"root": Path(state["root"])})


def registry_binary(bin_path: str) -> str:
    found = shutil.which("registry", path=bin_path)
    if found is None:
        raise RegistryError(f"registry not found in {bin_path!r}; run hack/ensure-registry.sh")
    return found


def htpasswd(users: Mapping[str, str]) -> str:
    """An htpasswd file of bcrypt hashes, the only kind the registry accepts (passwords up to 72 bytes); cost
    10, not 12: the registry checks the hash on every request, and this one stays on this machine."""
    for name in users:
        if not name or ":" in name or "\n" in name:
            raise ValueError(f"user name {name!r}: not empty, without ':' or a newline")
    hashes = {
        name: bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
        for name, password in users.items()
    }
    return "".join(f"{name}:{hashed}\n" for name, hashed in hashes.items())


def registry_config(root: Path, address: str, htpasswd_path: Path | None = None) -> dict[str, Any]:
    """The registry's configuration: filesystem storage under `root`, deletes allowed, plain HTTP on
    `address`, a storage health check (the API answers 503 while it fails), htpasswd auth when given."""
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": str(root / "storage")},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {
            "addr": address,
            # Signs upload state between requests; random, as the registry would pick (with a warning).
            "secret": secrets.token_hex(16),
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
        "health": {"storagedriver": {"enabled": True, "interval": "10s", "threshold": 3}},
    }
    if htpasswd_path is not None:
        config["auth"] = {"htpasswd": {"realm": REALM, "path": str(htpasswd_path)}}
    return config


def _environment() -> dict[str, str]:
    """This process's environment without REGISTRY_* (they override the configuration file) and with no
    trace exporter (the default sends to an OTLP collector on localhost)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    return environment | {"OTEL_TRACES_EXPORTER": "none"}


def start_registry(
    root: Path,
    bin_path: str,
    *,
    host: str = "127.0.0.1",
    users: Mapping[str, str] | None = None,
    timeout: float = 30,
) -> LocalRegistry:
    """Start a registry on a free port of `host` storing under `root`, and return once `GET /v2/` answers
    (200; 401 with `users`). A registry that does not answer in time is stopped again."""
    binary = registry_binary(bin_path)
    root.mkdir(parents=True, exist_ok=True)
    users = dict(users or {})
    htpasswd_path = None
    if users:
        htpasswd_path = root / "htpasswd"
        htpasswd_path.touch(mode=0o600)
        htpasswd_path.write_text(htpasswd(users))
    address = f"{host}:{free_ports(1, host)[0]}"
    config = root / "config.yml"
    config.touch(mode=0o600)  # its upload secret
    config.write_text(yaml.safe_dump(registry_config(root, address, htpasswd_path), sort_keys=False))
    with (root / "registry.log").open("ab") as log:
        process = subprocess.Popen(
            [binary, "serve", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_environment(),
        )
    registry = LocalRegistry(address, root, process.pid, users)
    try:
        registry.save()
        _wait_ready(registry, process, 401 if users else 200, timeout)
    except BaseException:
        terminate([process.pid], 5)
        raise
    return registry


def _wait_ready(
    registry: LocalRegistry, process: subprocess.Popen[bytes], expected: int, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RegistryError(f"the registry exited: {_tail(registry.log)}")
        if _status(f"{registry.url}/v2/") == expected:
            return
        time.sleep(0.2)
    raise RegistryError(
        f"the registry did not answer {expected} on {registry.url}/v2/ in {timeout:.0f}s: "
        f"{_tail(registry.log)}"
    )


def _status(url: str) -> int | None:
    """The HTTP status `url` answers a GET with, None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return None


def _tail(log: Path, characters: int = 2000) -> str:
    with contextlib.suppress(OSError):
        return log.read_text(errors="replace")[-characters:]
    return "(no log)"


def _running(registry: LocalRegistry) -> bool:
    """Whether `registry`'s process still runs (a process with its pid and its configuration file)."""
    try:
        argv = Path(f"/proc/{registry.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(registry.config).encode() in argv


def stop_registry(registry: LocalRegistry, grace: float = 10) -> None:
    """Stop the registry's process (its storage stays under `root`)."""
    terminate([registry.pid], grace)


def node_hosts_config(hosts_dir: Path, registry: LocalRegistry) -> Path:
    """containerd's hosts.toml for `registry` in `hosts_dir` (the CRI plugin's `registry.config_path`):
    pulls of HOST:PORT/... go to it over plain HTTP. Returns the file's path."""
    directory = hosts_dir / registry.address
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "hosts.toml"
    path.write_text(
        f"server = {json.dumps(registry.url)}\n"
        "\n"
        f"[host.{json.dumps(registry.url)}]\n"
        '  capabilities = ["pull", "resolve"]\n'
    )
    return path


def start_cluster_registry(
    cluster: LocalCluster, bin_path: str, *, users: Mapping[str, str] | None = None, timeout: float = 30
) -> tuple[LocalRegistry, Path | None]:
    """A registry next to `cluster`, adopted by it (`stop_cluster` stops it). With a real node it listens on
    the bridge's host address, where pods reach it, and the node's containerd pulls from it: returns the
    hosts.toml written for it too (None without a real node)."""
    node = cluster.node
    host = HOST_IP if node is not None else "127.0.0.1"
    root = cluster.directory / CLUSTER_REGISTRY_DIR
    if (root / STATE_FILE).exists() and _running(running := LocalRegistry.load(root)):
        raise RegistryError(f"a registry of this cluster runs already, at {running.url} (pid {running.pid})")
    registry = start_registry(root, bin_path, host=host, users=users, timeout=timeout)
    cluster.pids[PROCESS_NAME] = registry.pid
    cluster.save()
    if node is None:
        return registry, None
    hosts_dir = Path(node.registry_hosts_dir or layout_for(cluster.directory).registry_hosts_dir)
    return registry, node_hosts_config(hosts_dir, registry)
