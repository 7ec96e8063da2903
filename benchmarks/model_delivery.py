"""Model delivery benchmark: apply → first inference on the real node, for one model served from `pvc://`
(a conversion Job fetches, validates and checks it, then Triton loads it from the engine claim) and from
`oci://` (a model image `nimify build` pushed to the dev cluster's registry: no Job; each replica's init
container pulls it), cold and warm, for a small model and one of a few hundred MB.

- cold: the first NimService serving that model in the namespace (pvc: the Job runs; oci: the first pull);
- warm: a second NimService with the same model (pvc: the engine cache hit, no Job; oci: the same pull again,
  since the init container writes to an emptyDir: nothing is kept on the node between replicas).

`https://` is not measured: a conversion Job trusts only its image's CA roots, and no server on this
machine has a certificate they hold (tests/engine/test_fetch.py runs the https fetcher against a local TLS
server). Every NimService's first answer is compared with ONNX Runtime's. `nimify build`'s own time
(convert, check and push) is printed beside it. Needs root (the real node) and the machine to itself.
`hack/bench-model-delivery` runs it (`--help`); the figures are measurements, never assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tests.controller.test_real_model_images import build
from tests.controller.test_real_pods import INPUT, HostOperator, apply, infer, service_url, wait_ready
from tests.kube import ExistingCluster, eventually

from benchmarks.console import say
from nimify.engine.reference import OnnxRuntimeModel
from nimify.model.digest import file_sha256
from nimify.model.samples import build_mlp, write_model
from nimify_devcluster.build_runner import create_local_claim
from nimify_devcluster.cluster import start_cluster, stop_cluster, wait_established
from nimify_devcluster.node_config import HOST_IP
from nimify_devcluster.real_node import RealNodeInfo, RealNodeMode
from nimify_devcluster.registry import node_hosts_config, start_registry, stop_registry

ROOT = Path(__file__).resolve().parents[1]
#: Bytes per hidden unit of build_mlp's 16 → hidden → 4 layers (float32 weights and biases).
BYTES_PER_HIDDEN = (16 + 1 + 4) * 4


@dataclass(frozen=True)
class Timing:
    model: str
    size_mb: float
    source: str
    start: str
    seconds: float
    engine_reason: str


def _binary_dir(variable: str, script: str) -> str:
    if found := os.environ.get(variable):
        return found
    done = subprocess.run(["bash", str(ROOT / "hack" / script)], capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


@contextmanager
def real_cluster(directory: Path) -> Iterator[tuple[ExistingCluster, RealNodeInfo]]:
    bin_path = _binary_dir("NIMIFY_BIN_PATH", "ensure-binaries.sh")
    say("starting a cluster with the real node (images built first if need be)")
    local = start_cluster(
        "bench-delivery", bin_path, directory / "cluster", real_node=RealNodeMode.ON, log=say
    )
    try:
        assert local.node is not None
        cluster = ExistingCluster(local.kubeconfig, bin_path, local.operator_kubeconfig, local.audit_log)
        cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        wait_established(cluster, "nimservices.nimify.dev")
        yield cluster, local.node
    finally:
        say("stopping the cluster")
        stop_cluster(local.directory)


def nimservice(name: str, model: dict[str, Any], node: RealNodeInfo, memory: str) -> dict[str, Any]:
    return {
        "apiVersion": "nimify.dev/v1alpha1",
        "kind": "NimService",
        "metadata": {"name": name},
        "spec": {
            "model": model,
            "engine": {"backend": "onnxruntime"},
            "triton": {"image": node.images["triton-cpu"]},
            "resources": {"gpus": 0, "cpu": "500m", "memory": memory},
            "placement": {"runtimeClassName": node.runtime_class},
        },
    }


def first_inference(
    cluster: ExistingCluster, namespace: str, body: dict[str, Any], expected: np.ndarray[Any, Any]
) -> tuple[float, str]:
    """Seconds from `kubectl apply` to the first answer through the Service (checked), and the EngineReady
    reason."""
    name = body["metadata"]["name"]
    started = time.monotonic()
    apply(cluster, namespace, body)
    nim = wait_ready(cluster, namespace, name, timeout=900)
    url = service_url(cluster, namespace, name)
    (answer,) = eventually(lambda: [infer(url, name, INPUT)], timeout=60, interval=0.1)
    seconds = time.monotonic() - started
    np.testing.assert_allclose(answer, expected, rtol=1e-4, atol=1e-5)
    reason = next(c["reason"] for c in nim["status"]["conditions"] if c["type"] == "EngineReady")
    return seconds, reason


def measure(args: argparse.Namespace, workdir: Path) -> tuple[list[Timing], dict[str, float]]:
    timings: list[Timing] = []
    builds: dict[str, float] = {}
    with real_cluster(workdir) as (cluster, node):
        registry = start_registry(
            workdir / "registry", _binary_dir("NIMIFY_REGISTRY_BIN_PATH", "ensure-registry.sh"), host=HOST_IP
        )
        hosts = node_hosts_config(Path(node.registry_hosts_dir), registry)
        operator = HostOperator(
            cluster.operator_kubeconfig or cluster.kubeconfig,
            node,
            workdir / "operator.log",
            namespaces="bench-*",
            settings={"NIMIFY_INSECURE_REGISTRIES": json.dumps([registry.address])},
        )
        operator.start()
        try:
            for label, hidden in (
                ("small", 32),
                ("large", max(32, int(args.large_mb * 1e6 / BYTES_PER_HIDDEN))),
            ):
                namespace = f"bench-{label}"
                cluster.kubectl("create", "namespace", namespace)
                root = create_local_claim(cluster, namespace, "models", size="4Gi")
                path = write_model(build_mlp(hidden=hidden), root / "mlp.onnx")
                size_mb = path.stat().st_size / 1e6
                expected = np.asarray(OnnxRuntimeModel(path).run({"input": INPUT})["logits"])
                memory = "1Gi" if size_mb < 50 else f"{int(size_mb * 6 / 1000) + 2}Gi"
                say(f"{label}: {size_mb:.1f} MB; nimify build and push")
                started = time.monotonic()
                pinned = build(path, f"{registry.address}/bench/{label}:v1")
                builds[label] = time.monotonic() - started
                pvc = {"uri": "pvc://models/mlp.onnx", "sha256": file_sha256(path)}
                oci = {"uri": pinned}
                for source, model in (("pvc", pvc), ("oci", oci)):
                    for start in ("cold", "warm"):
                        name = f"{source}-{start}"
                        say(f"{label}: {name}")
                        seconds, reason = first_inference(
                            cluster, namespace, nimservice(name, model, node, memory), expected
                        )
                        timings.append(Timing(label, size_mb, f"{source}://", start, seconds, reason))
                        say(f"{label}: {name} answered after {seconds:.1f} s ({reason})")
                cluster.kubectl("delete", "namespace", namespace, "--wait=false")
        finally:
            operator.stop()
            stop_registry(registry)
            hosts.unlink(missing_ok=True)
    return timings, builds


def table(timings: list[Timing], builds: dict[str, float]) -> str:
    lines = [
        "| model | size | source | start | apply → first inference | engine |",
        "|---|---|---|---|---|---|",
    ]
    for t in timings:
        lines.append(
            f"| {t.model} | {t.size_mb:.3g} MB | {t.source} | {t.start} | {t.seconds:.1f} s"
            f" | {t.engine_reason} |"
        )
    lines.append("")
    lines += [
        f"nimify build (convert, check, push) of the {label} model: {s:.1f} s" for label, s in builds.items()
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/bench-model-delivery", description=__doc__.split("\n\n")[0])
    parser.add_argument("--large-mb", type=float, default=300, help="Size of the large model (MB).")
    parser.add_argument("--output", type=Path, help="Also write the table here.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nimify-bench-delivery-") as scratch:
        timings, builds = measure(args, Path(scratch))
    text = table(timings, builds)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
