"""The local cluster's Gateway API implementation: Traefik proxy (its kubernetesgateway provider) as a host
process against the apiserver, like the control plane itself, with one GatewayClass and one Gateway.

Traefik reads Gateways, HTTPRoutes and GRPCRoutes (and the EndpointSlices of their backends) through the API
and proxies from an entry point on 127.0.0.1 straight to the pods' addresses: only pods of the real node,
which are on this machine, can be reached (kwok's fake pods have addresses nowhere). A Gateway listener's port
is the entry point's, as Traefik requires. Traefik authenticates with a bearer token only (no client
certificates): a ServiceAccount of its own, bound to the cluster role it documents, and a token requested for
it. Binary: `hack/ensure-gateway.sh` prints its directory. The process is adopted by the cluster, so
`stop_cluster` stops it too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from nimify.ports import free_ports
from nimify_devcluster.cluster import (
    ClusterError,
    Kubectl,
    LocalCluster,
    get_json,
    terminate,
    wait_established,
)

GATEWAY_NAMESPACE = "nimify-gateway"
GATEWAY_CLASS = "traefik"
GATEWAY_NAME = "nimify"
CONTROLLER_NAME = "traefik.io/gateway-controller"
STATE_FILE = "gateway.json"
ACCOUNT = "traefik"
#: What Traefik's kubernetesgateway provider reads and the status it writes (its documented RBAC).
RULES: list[dict[str, Any]] = [
    {
        "apiGroups": [""],
        "resources": ["namespaces", "secrets", "configmaps", "services"],
        "verbs": ["get", "list", "watch"],
    },
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
    {
        "apiGroups": ["gateway.networking.k8s.io"],
        "resources": [
            "gatewayclasses",
            "gateways",
            "httproutes",
            "grpcroutes",
            "referencegrants",
            "backendtlspolicies",
            "tcproutes",
            "tlsroutes",
        ],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": ["gateway.networking.k8s.io"],
        "resources": [
            "gatewayclasses/status",
            "gateways/status",
            "httproutes/status",
            "grpcroutes/status",
            "backendtlspolicies/status",
            "tcproutes/status",
            "tlsroutes/status",
        ],
        "verbs": ["update", "patch"],
    },
]


@dataclass
class LocalGateway:
    """A running gateway: where clients send requests, and which Gateway routes attach to."""

    directory: Path
    port: int
    pid: int
    namespace: str = GATEWAY_NAMESPACE
    name: str = GATEWAY_NAME

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / "traefik.log"

    def save(self) -> None:
        state = asdict(self) | {"directory": str(self.directory)}
        (self.directory / STATE_FILE).write_text(json.dumps(state))


#: The Gateway API kinds the operator and Traefik need served.
GATEWAY_CRDS = ("httproutes", "gateways", "gatewayclasses", "grpcroutes", "referencegrants")


def gateway_api_served(cluster: Kubectl) -> bool:
    resources = cluster.kubectl(
        "api-resources", "--api-group=gateway.networking.k8s.io", "-o", "name", check=False
    )
    return "httproutes.gateway.networking.k8s.io" in resources.stdout


def install_gateway_api(cluster: Kubectl, crds: Path, timeout: float = 60) -> None:
    """The Gateway API's standard CRDs (hack/ensure-gateway-api.sh's directory), installed and served."""
    for path in sorted(crds.glob("*.yaml")):
        documents = [
            d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "CustomResourceDefinition"
        ]
        if documents:
            cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(documents))
    for plural in GATEWAY_CRDS:
        wait_established(cluster, f"{plural}.gateway.networking.k8s.io")
    deadline = time.monotonic() + timeout
    while not gateway_api_served(cluster):  # established, and in the API discovery kubectl reads
        if time.monotonic() > deadline:
            raise ClusterError("the Gateway API's CRDs are established but not served")
        time.sleep(0.5)


def traefik_binary(bin_path: str) -> str:
    found = shutil.which("traefik", path=bin_path)
    if found is None:
        raise ClusterError(f"traefik not found in {bin_path!r}; run hack/ensure-gateway.sh")
    return found


def gateway_objects(port: int, namespace: str = GATEWAY_NAMESPACE) -> list[dict[str, Any]]:
    """Traefik's identity and permissions, the GatewayClass it controls and a Gateway listening on `port`
    for HTTP routes of every namespace."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": ACCOUNT, "namespace": namespace}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "nimify-dev-traefik"},
            "rules": RULES,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "nimify-dev-traefik"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "nimify-dev-traefik",
            },
            "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": namespace}],
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": GATEWAY_CLASS},
            "spec": {"controllerName": CONTROLLER_NAME},
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": GATEWAY_NAME, "namespace": namespace},
            "spec": {
                "gatewayClassName": GATEWAY_CLASS,
                "listeners": [
                    {
                        "name": "http",
                        "protocol": "HTTP",
                        "port": port,
                        "allowedRoutes": {"namespaces": {"from": "All"}},
                    }
                ],
            },
        },
    ]


def traefik_config(server: str, token: Path, ca: Path, port: int, ping_port: int) -> dict[str, Any]:
    """Traefik's static configuration: one entry point per listener port, the kubernetesgateway provider."""
    return {
        "entryPoints": {
            "web": {"address": f"127.0.0.1:{port}"},
            "traefik": {"address": f"127.0.0.1:{ping_port}"},
        },
        "ping": {"entryPoint": "traefik"},
        "providers": {
            "kubernetesGateway": {
                "endpoint": server,
                "token": str(token),  # a file: the token itself stays out of the configuration
                "certAuthFilePath": str(ca),
                "throttleDuration": "1s",
                # Where clients reach the Gateway: written to its status.addresses.
                "statusAddress": {"ip": "127.0.0.1"},
            }
        },
        "log": {"level": "INFO"},
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
    }


def _programmed(cluster: LocalCluster, namespace: str) -> bool:
    gateway = get_json(cluster, f"gateway.gateway.networking.k8s.io/{GATEWAY_NAME}", "-n", namespace)
    conditions = (gateway.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Programmed" and c.get("status") == "True" for c in conditions)


def start_gateway(cluster: LocalCluster, bin_path: str, *, timeout: float = 60) -> LocalGateway:
    """Start Traefik against `cluster` (whose Gateway API CRDs are installed) and return once its Gateway is
    Programmed."""
    binary = traefik_binary(bin_path)
    directory = cluster.directory / "gateway"
    directory.mkdir(exist_ok=True)
    port, ping_port = free_ports(2)
    _wait_namespace_gone_or_active(cluster, GATEWAY_NAMESPACE, timeout=120)
    cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(gateway_objects(port)))
    token = directory / "token"
    created = cluster.kubectl("create", "token", ACCOUNT, "-n", GATEWAY_NAMESPACE, "--duration=24h")
    token.write_text(created.stdout.strip())
    token.chmod(0o600)
    config = directory / "traefik.yaml"
    ca = cluster.directory / "pki" / "ca.crt"
    config.write_text(yaml.safe_dump(traefik_config(cluster.server, token, ca, port, ping_port)))
    config.chmod(0o600)
    with (directory / "traefik.log").open("ab") as log:
        process = subprocess.Popen([binary, f"--configFile={config}"], stdout=log, stderr=subprocess.STDOUT)
    cluster.adopt("traefik", process)
    gateway = LocalGateway(directory, port, process.pid)
    gateway.save()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ClusterError(f"traefik exited: {gateway.log.read_text(errors='replace')[-2000:]}")
        if _pings(ping_port) and _programmed(cluster, GATEWAY_NAMESPACE):
            return gateway
        time.sleep(0.5)
    raise ClusterError(f"the Gateway was not Programmed in {timeout:.0f}s: {gateway.log.read_text()[-2000:]}")


def _wait_namespace_gone_or_active(cluster: LocalCluster, namespace: str, timeout: float) -> None:
    """A gateway stopped a moment ago left its namespace terminating (stop_gateway does not wait), and
    nothing can be created in a terminating namespace: wait until it is gone (or was never stopped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = cluster.kubectl(
            "get", "namespace", namespace, "-o", "jsonpath={.status.phase}", "--ignore-not-found", check=False
        )
        if found.returncode == 0 and found.stdout.strip() != "Terminating":
            return
        time.sleep(1)
    raise ClusterError(f"namespace {namespace} still terminating after {timeout:.0f}s")


def _pings(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def stop_gateway(cluster: LocalCluster, gateway: LocalGateway, grace: float = 10) -> None:
    """Stop Traefik and remove what it made in the cluster, for a cluster that outlives it."""
    terminate([gateway.pid], grace)
    cluster.pids.pop("traefik", None)
    cluster.save()
    objects = gateway_objects(gateway.port, gateway.namespace)
    cluster.kubectl(
        "delete", "--ignore-not-found", "--wait=false", "-f", "-", input=yaml.safe_dump_all(objects[::-1])
    )
