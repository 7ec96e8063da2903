"""The metrics pipeline of the local cluster: metrics-server, Prometheus and KEDA (operator and metrics
adapter) as host processes against its apiserver, like the control plane itself.

- metrics-server serves metrics.k8s.io (CPU for the HPA) from the kubelets of real nodes;
- Prometheus discovers the Triton pods through the Kubernetes API and scrapes their metrics port;
- KEDA turns ScaledObjects into HPAs and serves external.metrics.k8s.io from Prometheus queries.

Everything listens on 127.0.0.1 on free ports. Nothing is ever sent toward kwok's fake nodes and pods (their
addresses are not on this machine): metrics-server selects nodes without the `type=kwok` label, Prometheus
drops pods on such nodes. The processes are adopted by the cluster, so `stop_cluster` stops them too.

The cluster's kube-apiserver must run with `aggregation.front_proxy_apiserver_args` for the two aggregated
APIs to authenticate its requests. Binaries: `hack/ensure-metrics-stack.sh` prints their search path.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nimify.ports import free_ports
from nimify.render.identity import COMPONENT_SERVER, MANAGED_BY
from nimify_devcluster.aggregation import (
    Authority,
    CertPair,
    aggregated_api_manifests,
    create_authority,
    service_dns_names,
)
from nimify_devcluster.cluster import ClusterError, LocalCluster, terminate

METRICS_SERVER = "metrics-server"
PROMETHEUS = "prometheus"
KEDA = "keda"
COMPONENTS = (METRICS_SERVER, PROMETHEUS, KEDA)
BINARIES: dict[str, tuple[str, ...]] = {
    METRICS_SERVER: ("metrics-server",),
    PROMETHEUS: ("prometheus",),
    KEDA: ("keda-operator", "keda-adapter"),
}
KEDA_NAMESPACE = "keda"
#: The aggregated API each component serves (its APIService).
API_SERVICES = {METRICS_SERVER: "v1beta1.metrics.k8s.io", KEDA: "v1beta1.external.metrics.k8s.io"}
#: kwok's fake nodes carry this label (devcluster.topology); real nodes do not.
FAKE_NODE_LABEL = ("type", "kwok")
STATE_FILE = "metrics-stack.json"
#: Component identities, members of system:masters like every component of this development cluster.
MASTERS = "system:masters"


@dataclass
class MetricsStack:
    directory: Path
    components: tuple[str, ...]
    prometheus_url: str | None = None
    ports: dict[str, int] = field(default_factory=dict)

    def save(self) -> None:
        state = asdict(self) | {"directory": str(self.directory), "components": list(self.components)}
        (self.directory / STATE_FILE).write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, directory: Path) -> MetricsStack:
        state = json.loads((directory / STATE_FILE).read_text())
        return cls(
            **state | {"directory": Path(state["directory"]), "components": tuple(state["components"])}
        )


def resolve_metrics_binaries(bin_path: str, components: Sequence[str]) -> dict[str, str]:
    wanted = [binary for component in components for binary in BINARIES[component]]
    found = {name: shutil.which(name, path=bin_path) for name in wanted}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise ClusterError(
            f"binaries not found on {bin_path!r}: {', '.join(missing)} "
            "(run hack/ensure-metrics-stack.sh, which prints the path to use)"
        )
    return {name: path for name, path in found.items() if path is not None}


def prometheus_config(kubeconfig: Path, scrape_interval: str) -> dict[str, Any]:
    """Scrape the metrics port of the Triton pods on real nodes, labelled with namespace and pod (the labels
    the adapter rules and the KEDA queries select on, as a PodMonitor would set them)."""
    selector = f"app.kubernetes.io/managed-by={MANAGED_BY},app.kubernetes.io/component={COMPONENT_SERVER}"
    label, value = FAKE_NODE_LABEL
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {
                "job_name": "nimify-triton",
                "kubernetes_sd_configs": [
                    {
                        "role": "pod",
                        "kubeconfig_file": str(kubeconfig),
                        "selectors": [{"role": "pod", "label": selector}],
                        "attach_metadata": {"node": True},
                    }
                ],
                "relabel_configs": [
                    # kwok pods have addresses that exist nowhere: never scrape toward them.
                    {
                        "source_labels": [f"__meta_kubernetes_node_label_{label}"],
                        "regex": value,
                        "action": "drop",
                    },
                    {"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "Running", "action": "keep"},
                    {
                        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
                        "regex": "true",
                        "action": "keep",
                    },
                    {
                        "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                        "regex": "metrics",
                        "action": "keep",
                    },
                    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                ],
            }
        ],
    }


def _kubeconfig(cluster: LocalCluster, pair: CertPair) -> dict[str, Any]:
    ca = cluster.directory / "pki" / "ca.crt"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "local", "cluster": {"server": cluster.server, "certificate-authority": str(ca)}}
        ],
        "users": [
            {"name": "component", "user": {"client-certificate": str(pair.cert), "client-key": str(pair.key)}}
        ],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "component"}}],
        "current-context": "local",
    }


class _Stack:
    """Starting the components, one after the other, into `directory`."""

    def __init__(
        self, cluster: LocalCluster, binaries: Mapping[str, str], directory: Path, timeout: float
    ) -> None:
        self.cluster, self.binaries, self.directory, self.timeout = cluster, binaries, directory, timeout
        pki = cluster.directory / "pki"
        self.cluster_ca = Authority(CertPair(pki / "ca.crt", pki / "ca.key"))
        # One CA for the serving certificates of the extension API servers (the APIServices' caBundle).
        self.serving_ca = create_authority(directory / "pki", "aggregated-api-ca", "nimify-aggregated-api-ca")

    def kubeconfig(self, component: str) -> Path:
        pair = self.cluster_ca.issue(
            self.directory / "pki",
            f"{component}-client",
            f"system:{component}",
            organisation=MASTERS,
            client=True,
        )
        path = self.directory / f"{component}.kubeconfig"
        path.write_text(yaml.safe_dump(_kubeconfig(self.cluster, pair)))
        path.chmod(0o600)
        return path

    def start(
        self, name: str, args: list[str], env: Mapping[str, str] | None = None
    ) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.directory / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            process = subprocess.Popen(
                [self.binaries[name], *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        self.cluster.adopt(name, process)
        return process, log

    def wait_available(self, api_service: str, log: Path, process: subprocess.Popen[bytes]) -> None:
        def available() -> bool:
            out = self.cluster.kubectl(
                "get",
                "apiservice",
                api_service,
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Available')].status}",
                check=False,
            ).stdout
            return out.strip() == "True"

        _wait(f"APIService {api_service}", available, self.timeout, log, process)

    def apply(self, objects: Sequence[Mapping[str, Any]]) -> None:
        self.cluster.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=nimify-devcluster",
            "-f",
            "-",
            input=yaml.safe_dump_all(list(objects)),
        )

    def metrics_server(self, resolution: str, kubelet_ca: Path | None) -> int:
        namespace, service = "kube-system", "metrics-server"
        (port,) = free_ports(1)
        serving = self.serving_ca.issue(
            self.directory / "pki",
            "metrics-server",
            "metrics-server",
            dns_names=service_dns_names(namespace, service),
            ips=("127.0.0.1",),
            server=True,
        )
        kubeconfig = self.kubeconfig("metrics-server")
        label, value = FAKE_NODE_LABEL
        kubelet_tls = (
            [f"--kubelet-certificate-authority={kubelet_ca}"] if kubelet_ca else ["--kubelet-insecure-tls"]
        )
        process, log = self.start(
            "metrics-server",
            [
                f"--secure-port={port}",
                "--bind-address=127.0.0.1",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--kubelet-preferred-address-types=InternalIP",
                "--kubelet-use-node-status-port",
                *kubelet_tls,
                f"--node-selector={label}!={value}",
                f"--metric-resolution={resolution}",
                # Must stay below the resolution; the kubelet is on this machine.
                "--kubelet-request-timeout=5s",
            ],
        )
        self.apply(
            aggregated_api_manifests(
                group="metrics.k8s.io",
                version="v1beta1",
                namespace=namespace,
                service=service,
                port=port,
                ca_bundle=self.serving_ca.pair.cert,
            )
        )
        self.wait_available(API_SERVICES[METRICS_SERVER], log, process)
        return port

    def prometheus(self, scrape_interval: str) -> int:
        (port,) = free_ports(1)
        config = self.directory / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus_config(self.kubeconfig("prometheus"), scrape_interval)))
        process, log = self.start(
            "prometheus",
            [
                f"--config.file={config}",
                f"--storage.tsdb.path={self.directory / 'prometheus-data'}",
                "--storage.tsdb.retention.time=2h",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
        )
        _wait("prometheus", lambda: _http_ok(f"http://127.0.0.1:{port}/-/ready"), self.timeout, log, process)
        return port

    def keda(self, keda_dir: Path) -> dict[str, int]:
        crds = sorted((keda_dir / "crds").glob("*.yaml"))
        if not crds:
            raise ClusterError(f"KEDA's CRDs are missing next to its binaries in {keda_dir}; rebuild keda")
        if not any(path.name.startswith("eventing.keda.sh_") for path in crds):
            # Its operator watches CloudEventSources too and exits two minutes after start without them.
            raise ClusterError(
                f"KEDA's eventing.keda.sh CRDs are missing in {keda_dir / 'crds'}; "
                "run hack/ensure-metrics-stack.sh, which adds them"
            )
        self.apply([yaml.safe_load(path.read_text()) for path in crds])
        self.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KEDA_NAMESPACE}}])
        operator_metrics, probes, grpc, adapter, adapter_metrics = free_ports(5)
        service = "keda-metrics-apiserver"
        # One pair for the operator's gRPC metrics service and the adapter: KEDA authenticates the two to each
        # other with the certificates in one directory (ca.crt, tls.crt, tls.key), as its Helm chart does.
        certs = self.directory / "keda-certs"
        pair = self.serving_ca.issue(
            certs,
            "tls",
            "keda",
            dns_names=(
                *service_dns_names(KEDA_NAMESPACE, service),
                *service_dns_names(KEDA_NAMESPACE, "keda-operator"),
            ),
            ips=("127.0.0.1",),
            server=True,
            client=True,
        )
        shutil.copyfile(self.serving_ca.pair.cert, certs / "ca.crt")
        kubeconfig = self.kubeconfig("keda")
        env = {
            "KUBECONFIG": str(kubeconfig),
            "WATCH_NAMESPACE": "",
            "KEDA_CLUSTER_OBJECT_NAMESPACE": KEDA_NAMESPACE,
            "POD_NAMESPACE": KEDA_NAMESPACE,
            "POD_NAME": "keda-operator",
        }
        operator, operator_log = self.start(
            "keda-operator",
            [
                "--leader-elect=false",
                f"--metrics-bind-address=127.0.0.1:{operator_metrics}",
                f"--health-probe-bind-address=127.0.0.1:{probes}",
                f"--metrics-service-bind-address=127.0.0.1:{grpc}",
                f"--cert-dir={certs}",
                f"--ca-dir={certs}",
                "--enable-cert-rotation=false",
                "--enable-webhook-patching=false",
                "--enable-apiservice-patching=false",
                "--zap-log-level=info",
            ],
            env,
        )
        _wait(
            "keda-operator",
            lambda: _http_ok(f"http://127.0.0.1:{probes}/readyz"),
            self.timeout,
            operator_log,
            operator,
        )
        adapter_process, adapter_log = self.start(
            "keda-adapter",
            [
                f"--secure-port={adapter}",
                "--bind-address=127.0.0.1",
                f"--cert-dir={certs}",
                f"--tls-cert-file={pair.cert}",
                f"--tls-private-key-file={pair.key}",
                f"--lister-kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--metrics-service-address=127.0.0.1:{grpc}",
                f"--port={adapter_metrics}",
            ],
            env,
        )
        self.apply(
            aggregated_api_manifests(
                group="external.metrics.k8s.io",
                version="v1beta1",
                namespace=KEDA_NAMESPACE,
                service=service,
                port=adapter,
                ca_bundle=self.serving_ca.pair.cert,
            )
        )
        self.wait_available(API_SERVICES[KEDA], adapter_log, adapter_process)
        return {"keda-operator-probes": probes, "keda-grpc": grpc, "keda-adapter": adapter}


# The launcher's wait-and-explain pattern (devcluster.cluster has its own private copy).
def _wait(
    what: str, probe: Callable[[], bool], timeout: float, log: Path, process: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ClusterError(f"{what} exited with code {process.returncode}; see {log}:\n{_tail(log)}")
        with contextlib.suppress(Exception):
            if probe():
                return
        time.sleep(0.5)
    raise ClusterError(f"{what} not ready after {timeout:.0f}s; see {log}:\n{_tail(log)}")


def _tail(log: Path, lines: int = 15) -> str:
    if not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)


def start_metrics_stack(
    cluster: LocalCluster,
    bin_path: str,
    components: Sequence[str] = COMPONENTS,
    *,
    scrape_interval: str = "5s",
    metric_resolution: str = "10s",
    kubelet_ca: Path | None = None,
    timeout: float = 120,
) -> MetricsStack:
    """Start `components` against `cluster` and return once each serves (APIServices Available).

    `kubelet_ca` verifies the kubelets' serving certificates; without it metrics-server skips the check
    (a self-signed kubelet certificate on a development node). Short intervals (5 s scrapes, 10 s
    resolution) let tests see load within seconds; production runs use the charts' defaults.
    """
    unknown = sorted(set(components) - set(COMPONENTS))
    if unknown:
        raise ClusterError(f"unknown metrics components {unknown}; choose from {', '.join(COMPONENTS)}")
    binaries = resolve_metrics_binaries(bin_path, components)
    directory = cluster.directory / "metrics"
    directory.mkdir(exist_ok=True)
    stack = _Stack(cluster, binaries, directory, timeout)
    result = MetricsStack(directory, tuple(components))
    if METRICS_SERVER in components:
        result.ports["metrics-server"] = stack.metrics_server(metric_resolution, kubelet_ca)
    if PROMETHEUS in components:
        port = stack.prometheus(scrape_interval)
        result.ports["prometheus"] = port
        result.prometheus_url = f"http://127.0.0.1:{port}"
    if KEDA in components:
        keda_dir = Path(binaries["keda-operator"]).parent
        result.ports |= stack.keda(keda_dir)
    result.save()
    return result


def stop_metrics_stack(cluster: LocalCluster, stack: MetricsStack, grace: float = 10) -> None:
    """Stop the stack and leave the cluster running as it was before, for a cluster that outlives it (a test
    session's). The order matters:

    1. ScaledObjects are deleted while KEDA still runs: KEDA holds a finalizer on each, so without it they,
       and their namespaces, would never go;
    2. the APIServices go: an aggregated API that does not answer fails discovery, and the namespace
       controller then deletes no namespace anywhere in the cluster;
    3. the processes stop (SIGTERM, SIGKILL after `grace` seconds) and the cluster no longer tracks them.

    KEDA's CRDs, its namespace and the ExternalName Services stay: inert without the processes.
    """
    if KEDA in stack.components:
        cluster.kubectl(
            "delete", "scaledobjects.keda.sh", "--all", "--all-namespaces", "--wait", "--timeout=90s",
            check=False, timeout=120,
        )  # fmt: skip
    api_services = [API_SERVICES[c] for c in stack.components if c in API_SERVICES]
    if api_services:
        cluster.kubectl("delete", "apiservice", "--ignore-not-found", *api_services, check=False)
    # The state on disk is the cluster's record (another LocalCluster instance may have adopted more since).
    current = LocalCluster.load(cluster.directory)
    pids = [current.pids.pop(b) for c in stack.components for b in BINARIES[c] if b in current.pids]
    terminate(pids, grace)
    current.save()
    cluster.pids = current.pids


def metrics_stack_logs(stack: MetricsStack, lines: int = 20) -> str:
    """The last lines of every component's log (for a failing test's message)."""
    parts = []
    for log in sorted((stack.directory / "logs").glob("*.log")):
        with contextlib.suppress(OSError):
            parts.append(f"== {log.name}\n{_tail(log, lines)}")
    return "\n".join(parts)
