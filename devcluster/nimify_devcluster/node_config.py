"""The real node's configuration files and Kubernetes objects, as pure functions of where its files live.

One real node per machine (it needs root, the kubelet's fixed ports and the single `kubepods` cgroup), so its
names, addresses and runtime paths are constants; each cluster keeps the node's other files in its own
directory. The values follow `shared/notes/real-node.md`, which explains each one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nimify_devcluster.topology import GPU_PRODUCT_LABEL, GPU_RESOURCE, POOL_LABEL

NODE_NAME = "nimify-real-node"
#: A GPU product of its own: NimServices asking for it (or for the RuntimeClass) run on this node only.
GPU_PRODUCT = "NIMIFY-REAL-CPU"
#: nvidia.com/gpu the node advertises; pods get no device (there is none), they run on CPU.
GPU_COUNT = 8
#: Pods opt in to the real node with this RuntimeClass (handler runc): it selects the node and tolerates its
#: taint, so kwok-simulated workloads never land on it by accident.
RUNTIME_CLASS = "nimify-real-node"
RUNTIME_HANDLER = "runc"
REAL_NODE_LABEL = "nimify.dev/real-node"
REAL_NODE_TAINT = {"key": REAL_NODE_LABEL, "value": "true", "effect": "NoSchedule"}
#: Managed GPU pools taint GPU nodes the same way (and so does the kwok GPU pool here).
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}

BRIDGE = "nimify0"
POD_CIDR = "10.250.0.0/24"
#: The bridge's host address: the node's InternalIP, the pods' gateway, and where the apiserver listens.
HOST_IP = "10.250.0.1"
KUBELET_PORT = 10250
KUBELET_HEALTHZ_PORT = 10248
KUBE_PROXY_HEALTHZ_PORT = 10256
KUBE_PROXY_METRICS_PORT = 10249
#: Machine-wide runtime state: sockets need short paths, and one node per machine owns them.
RUN_DIR = Path("/run/nimify-node")
LOCK_FILE = Path("/run/nimify-real-node.lock")


@dataclass(frozen=True)
class NodeLayout:
    """Where the real node of one cluster keeps its files."""

    directory: Path  # <cluster>/node: configuration, kubelet root, pod logs, CNI state
    containerd_root: Path  # persistent (the image cache): imported images survive the cluster
    run: Path = RUN_DIR

    @property
    def containerd_socket(self) -> Path:
        return self.run / "containerd.sock"

    @property
    def containerd_state(self) -> Path:
        return self.run / "containerd"

    @property
    def runc_root(self) -> Path:
        return self.run / "runc"

    @property
    def cni_conf_dir(self) -> Path:
        return self.directory / "cni"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.directory / "cni-ipam"

    @property
    def kubelet_root(self) -> Path:
        return self.directory / "kubelet"

    @property
    def kubelet_certs(self) -> Path:
        return self.directory / "kubelet-pki"

    @property
    def pod_logs(self) -> Path:
        return self.directory / "pod-logs"

    @property
    def volume_plugins(self) -> Path:
        return self.directory / "volume-plugins"

    @property
    def resolv_conf(self) -> Path:
        return self.directory / "resolv.conf"

    @property
    def registry_hosts_dir(self) -> Path:
        """containerd's registry hosts directory: `<HOST:PORT>/hosts.toml` per registry (registry.py)."""
        return self.directory / "certs.d"

    @property
    def containerd_config(self) -> Path:
        return self.directory / "containerd.toml"

    @property
    def kubelet_config(self) -> Path:
        return self.directory / "kubelet.yaml"

    @property
    def kube_proxy_config(self) -> Path:
        return self.directory / "kube-proxy.yaml"

    @property
    def network_state(self) -> Path:
        return self.directory / "network.json"


def _toml(value: str | bool | int) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)  # a TOML basic string is a JSON string for the characters used here


def containerd_config(layout: NodeLayout, sandbox_image: str) -> str:
    """containerd 1.6 (config version 2): a root, state and socket of its own, so it never meets another
    containerd, and the CRI settings these VMs need."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    runc = f"{cri}.containerd.runtimes.{RUNTIME_HANDLER}"
    lines = [
        "version = 2",
        f"root = {_toml(str(layout.containerd_root))}",
        f"state = {_toml(str(layout.containerd_state))}",
        # Plugins that would write outside our directories (/opt/containerd) or cannot work here.
        'disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs", '
        '"io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", '
        '"io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]',
        "",
        "[grpc]",
        f"  address = {_toml(str(layout.containerd_socket))}",
        "[ttrpc]",
        f"  address = {_toml(str(layout.containerd_socket) + '.ttrpc')}",
        "[metrics]",
        '  address = ""',
        "",
        f"[{cri}]",
        f"  sandbox_image = {_toml(sandbox_image)}",
        # kubelet asks for oom_score_adj -998, which needs CAP_SYS_RESOURCE; without this every sandbox fails
        # with "can't get final child's PID from pipe: EOF" on these VMs.
        "  restrict_oom_score_adj = true",
        "  netns_mounts_under_state_dir = true",
        '  stream_server_address = "127.0.0.1"',
        '  stream_server_port = "0"',
        "  enable_selinux = false",
        f"[{cri}.containerd]",
        '  snapshotter = "overlayfs"',
        f"  default_runtime_name = {_toml(RUNTIME_HANDLER)}",
        f"[{runc}]",
        '  runtime_type = "io.containerd.runc.v2"',
        f"[{runc}.options]",
        "  SystemdCgroup = false",
        f"  Root = {_toml(str(layout.runc_root))}",
        f"[{cri}.cni]",
        '  bin_dir = "/usr/lib/cni"',
        f"  conf_dir = {_toml(str(layout.cni_conf_dir))}",
        "  max_conf_num = 1",
        # Registries by hosts.toml files (the dev cluster's registry, plain HTTP), read on each pull: one
        # written after containerd started applies at once.
        f"[{cri}.registry]",
        f"  config_path = {_toml(str(layout.registry_hosts_dir))}",
        "",
    ]
    return "\n".join(lines)


def cni_config(layout: NodeLayout, service_cidr: str) -> dict[str, Any]:
    """A bridge with the host as gateway for the pod and service ranges only: pods get no default route, and
    nothing is masqueraded out."""
    return {
        "cniVersion": "1.0.0",
        "name": "nimify-real-node",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "isDefaultGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(layout.cni_ipam_dir),
                    "ranges": [[{"subnet": POD_CIDR, "gateway": HOST_IP}]],
                    "routes": [{"dst": service_cidr}],
                },
            },
            {"type": "loopback"},
        ],
    }


def kubelet_config(layout: NodeLayout, ca_cert: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # kubelet refuses a loopback node IP, so it serves on the bridge's host address.
        "address": HOST_IP,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": KUBELET_HEALTHZ_PORT,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        # cgroup v1 on these VMs; 1.34 still accepts it (the default flips in 1.35).
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "imageServiceEndpoint": f"unix://{layout.containerd_socket}",
        # No cluster DNS, and a resolv.conf of its own: pods resolve nothing outside the cluster.
        "clusterDNS": [],
        "clusterDomain": "cluster.local",
        "resolvConf": str(layout.resolv_conf),
        # Images are imported by hand (no registry): the kubelet must never collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # A shared development machine: evict only when really out of resources.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "podLogsDir": str(layout.pod_logs),
        "volumePluginDir": str(layout.volume_plugins),
        "maxPods": 50,
        "serializeImagePulls": False,
        "shutdownGracePeriod": "0s",
        "nodeStatusUpdateFrequency": "5s",
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
    }


def kubelet_args(layout: NodeLayout, kubeconfig: Path, config: Path) -> list[str]:
    labels = {
        "kubernetes.io/hostname": NODE_NAME,
        GPU_PRODUCT_LABEL: GPU_PRODUCT,
        "nvidia.com/gpu.count": str(GPU_COUNT),
        "nvidia.com/gpu.present": "true",
        POOL_LABEL: "real",
        REAL_NODE_LABEL: "true",
    }
    taints = [GPU_TAINT, REAL_NODE_TAINT]
    return [
        f"--config={config}",
        f"--kubeconfig={kubeconfig}",
        f"--root-dir={layout.kubelet_root}",
        f"--cert-dir={layout.kubelet_certs}",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={HOST_IP}",
        "--node-labels=" + ",".join(f"{k}={v}" for k, v in labels.items()),
        "--register-with-taints=" + ",".join(f"{t['key']}={t['value']}:{t['effect']}" for t in taints),
        "--v=1",
    ]


def kube_proxy_config(kubeconfig: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        # Needed for pod -> ClusterIP -> pod on one bridge: replies then come back through the host.
        "iptables": {"masqueradeAll": True},
        "nodePortAddresses": [f"{HOST_IP}/32"],
        "conntrack": {"maxPerCore": 0},
        "metricsBindAddress": f"127.0.0.1:{KUBE_PROXY_METRICS_PORT}",
        "healthzBindAddress": f"127.0.0.1:{KUBE_PROXY_HEALTHZ_PORT}",
    }


def runtime_class_manifest() -> dict[str, Any]:
    """The RuntimeClass that puts a pod on the real node: handler runc, node selector and toleration."""
    return {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": RUNTIME_CLASS, "labels": {REAL_NODE_LABEL: "true"}},
        "handler": RUNTIME_HANDLER,
        "scheduling": {
            "nodeSelector": {REAL_NODE_LABEL: "true"},
            # Both of the node's taints: CPU-only pods (an in-cluster operator) may run there too.
            "tolerations": [
                {"key": t["key"], "operator": "Exists", "effect": t["effect"]}
                for t in (REAL_NODE_TAINT, GPU_TAINT)
            ],
        },
    }


def gpu_capacity_patch() -> list[dict[str, Any]]:
    """JSON patch of the node's status advertising nvidia.com/gpu, the way Kubernetes documents for extended
    resources ("Advertise Extended Resources for a Node"; `~1` escapes the `/`)."""
    return [
        {"op": "add", "path": f"/status/capacity/{GPU_RESOURCE.replace('/', '~1')}", "value": str(GPU_COUNT)}
    ]
