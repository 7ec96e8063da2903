"""The development cluster's registry (devcluster/registry.py) with the real distribution registry on
loopback: pushes and pulls through the oras SDK, anonymous and with htpasswd users, and the real node's
containerd configuration for it (written, not used: no cluster here)."""

from __future__ import annotations

import base64
import json
import socket
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import oras.provider
import pytest

from nimify_devcluster.node_config import NodeLayout, containerd_config
from nimify_devcluster.registry import LocalRegistry, node_hosts_config
from tests.registry import registry_bin_path, registry_on

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(autouse=True)
def no_docker_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """oras reads ~/.docker/config.json for credentials: this machine's must not take part. The registry's
    binary is found first (hack/ensure-registry.sh's cache is under the real home)."""
    monkeypatch.setenv("NIMIFY_REGISTRY_BIN_PATH", registry_bin_path())
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("ORAS_USER", raising=False)
    monkeypatch.delenv("ORAS_PASS", raising=False)


def _artifact(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not really a model\n" * 64)
    return path


def _manifest_status(registry: LocalRegistry, reference: str, auth: tuple[str, str] | None = None) -> int:
    """The status of a plain GET of a manifest (urllib: oras retries, sleeping, where no password is set)."""
    headers = {"Accept": MANIFEST_TYPE}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    request = urllib.request.Request(f"{registry.url}/v2/{reference}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_an_anonymous_registry_takes_a_push_and_serves_it_back(tmp_path: Path) -> None:
    artifact = _artifact(tmp_path)
    with registry_on(tmp_path / "registry") as registry:
        assert registry.url == f"http://{registry.address}" and registry.address.startswith("127.0.0.1:")
        client = oras.provider.Registry(insecure=True, auth_backend="basic")
        target = f"{registry.address}/models/x:v1"
        pushed = client.push(target=target, files=[str(artifact)], disable_path_validation=True, quiet=True)
        assert pushed.status_code == 201
        manifest = client.get_manifest(target)
        (layer,) = manifest["layers"]
        assert layer["size"] == artifact.stat().st_size
        assert layer["annotations"]["org.opencontainers.image.title"] == "model.onnx"
        (pulled,) = client.pull(target=target, outdir=str(tmp_path / "pulled"))
        assert Path(pulled).read_bytes() == artifact.read_bytes()
        assert _manifest_status(registry, "models/x/manifests/v1") == 200
        assert (registry.storage / "docker" / "registry" / "v2" / "repositories" / "models" / "x").is_dir()


def test_a_registry_with_users_refuses_anonymous_and_wrong_passwords(tmp_path: Path) -> None:
    artifact = _artifact(tmp_path)
    with registry_on(tmp_path / "registry", users={"alice": "secret"}) as registry:
        assert registry.users == {"alice": "secret"}
        htpasswd = (registry.root / "htpasswd").read_text()
        assert htpasswd.startswith("alice:$2") and "secret" not in htpasswd
        assert (registry.root / "htpasswd").stat().st_mode & 0o777 == 0o600
        alice = oras.provider.Registry(insecure=True, auth_backend="basic")
        alice.auth.set_basic_auth("alice", "secret")
        target = f"{registry.address}/models/x:v1"
        alice.push(target=target, files=[str(artifact)], disable_path_validation=True, quiet=True)
        assert alice.get_manifest(target)["layers"][0]["size"] == artifact.stat().st_size

        reference = "models/x/manifests/v1"
        assert _manifest_status(registry, reference) == 401
        assert _manifest_status(registry, reference, ("alice", "secret")) == 200
        assert _manifest_status(registry, reference, ("alice", "wrong")) == 401
        assert _manifest_status(registry, reference, ("bob", "secret")) == 401
        mallory = oras.provider.Registry(insecure=True, auth_backend="basic")
        mallory.auth.set_basic_auth("alice", "wrong")
        with pytest.raises(ValueError, match="Unauthorized"):
            mallory.get_manifest(target)


def test_stopping_the_registry_leaves_no_process_and_no_listener(tmp_path: Path) -> None:
    with registry_on(tmp_path / "registry") as registry:
        assert Path(f"/proc/{registry.pid}").exists()
        host, port = registry.address.rsplit(":", 1)
        state = json.loads((registry.root / "registry.json").read_text())
        assert (state["address"], state["pid"]) == (registry.address, registry.pid)
        assert LocalRegistry.load(registry.root) == registry
    assert not Path(f"/proc/{registry.pid}").exists()
    with socket.socket() as sock:
        assert sock.connect_ex((host, int(port))) != 0
    assert "listening on" in registry.log.read_text()


def test_the_node_s_containerd_pulls_from_the_registry_over_plain_http(tmp_path: Path) -> None:
    layout = NodeLayout(tmp_path / "node", tmp_path / "containerd")
    config = tomllib.loads(containerd_config(layout, "pause:1"))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["registry"] == {"config_path": str(layout.registry_hosts_dir)}
    assert cri["sandbox_image"] == "pause:1"

    registry = LocalRegistry("10.250.0.1:15000", tmp_path / "registry", pid=0)
    path = node_hosts_config(layout.registry_hosts_dir, registry)
    assert path == layout.registry_hosts_dir / "10.250.0.1:15000" / "hosts.toml"
    assert tomllib.loads(path.read_text()) == {
        "server": "http://10.250.0.1:15000",
        "host": {"http://10.250.0.1:15000": {"capabilities": ["pull", "resolve"]}},
    }
