"""Running the real tritonserver shipped in the nvidia-pytriton wheel, on this machine, on 127.0.0.1.

The wheel carries the server, its libraries (`nvidia_pytriton.libs`), the python backend and one backend stub
per Python version. The stub must sit in the backend folder and match the running Python, so a private backend
folder is assembled per server; the stub embeds Python and finds this environment's packages through the
environment's `bin` on PATH.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from nimify.model.errors import ModelError
from nimify.ports import free_port
from nimify.triton.python_model import render_onnxruntime_backend


@dataclass(frozen=True)
class TritonInstallation:
    server: Path
    libraries: Path
    python_backend: Path
    stub: Path
    caches: Path


@dataclass(frozen=True)
class Endpoints:
    http: str
    grpc: str
    metrics: str


def locate_tritonserver() -> TritonInstallation:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "TritonNotInstalled",
            "nimify serve runs the tritonserver of the nvidia-pytriton wheel: pip install 'nimify[serve]'",
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    root = package / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    found = TritonInstallation(
        server=root / "bin" / "tritonserver",
        libraries=package.parent / "nvidia_pytriton.libs",
        python_backend=root / "backends" / "python",
        stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
        caches=root / "caches",
    )
    for path, what in (
        (found.server, "the tritonserver binary"),
        (found.libraries, "its libraries"),
        (found.python_backend, "the python backend"),
        (found.stub, f"a python backend stub for Python {version}"),
    ):
        if not path.exists():
            raise ModelError("TritonNotInstalled", f"the nvidia-pytriton wheel lacks {what} ({path})")
    return found


def prepare_backends(installation: TritonInstallation, directory: Path) -> Path:
    """A backend folder holding the python backend with the stub for the running Python, and a Python-based
    backend named `onnxruntime` on top of it, so that `onnxruntime_onnx` models load unchanged.

    The triton-cpu image is built with this same folder (images/triton-cpu).
    """
    python = directory / "python"
    python.mkdir(parents=True, exist_ok=True)
    for item in installation.python_backend.iterdir():
        if item.is_file():
            shutil.copy2(item, python / item.name)
    shutil.copy2(installation.stub, python / "triton_python_backend_stub")
    onnxruntime = directory / "onnxruntime"
    onnxruntime.mkdir(exist_ok=True)
    (onnxruntime / "model.py").write_text(render_onnxruntime_backend())
    return directory


def server_environment(
    installation: TritonInstallation, base: dict[str, str] | None = None
) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    libraries = str(installation.libraries)
    env["LD_LIBRARY_PATH"] = (
        f"{libraries}:{env['LD_LIBRARY_PATH']}" if env.get("LD_LIBRARY_PATH") else libraries
    )
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


class LocalTriton:
    """A tritonserver child process; use as a context manager, or start()/stop()."""

    def __init__(
        self,
        repository: Path,
        *,
        host: str = "127.0.0.1",
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        cache_bytes: int | None = None,
        extra_args: Sequence[str] = (),
        work_dir: Path | None = None,
        verbose: bool = False,
    ) -> None:
        self.repository = repository
        self.host = host
        self.ports = (
            http_port or free_port(host),
            grpc_port or free_port(host),
            metrics_port or free_port(host),
        )
        self.cache_bytes = cache_bytes
        self.extra_args = list(extra_args)
        self.verbose = verbose
        self._own_work_dir = work_dir is None
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="nimify-triton-"))
        self.log_path = self.work_dir / "tritonserver.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoints(self) -> Endpoints:
        http, grpc, metrics = self.ports
        return Endpoints(
            f"http://{self.host}:{http}", f"{self.host}:{grpc}", f"http://{self.host}:{metrics}/metrics"
        )

    def command(self, installation: TritonInstallation, backends: Path) -> list[str]:
        http, grpc, metrics = self.ports
        command = [
            str(installation.server),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            f"--cache-directory={installation.caches}",
            f"--http-address={self.host}",
            f"--http-port={http}",
            f"--grpc-address={self.host}",
            f"--grpc-port={grpc}",
            f"--metrics-address={self.host}",
            f"--metrics-port={metrics}",
            "--exit-timeout-secs=10",
            f"--log-verbose={1 if self.verbose else 0}",
        ]
        if self.cache_bytes:
            command.append(f"--cache-config=local,size={self.cache_bytes}")
        return command + self.extra_args

    def start(self) -> Endpoints:
        installation = locate_tritonserver()
        backends = prepare_backends(installation, self.work_dir / "backends")
        with self.log_path.open("wb") as log:
            # A session of its own: Ctrl-C in the terminal reaches nimify, which then stops the server in
            # order.
            self.process = subprocess.Popen(
                self.command(installation, backends),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=server_environment(installation),
                start_new_session=True,
            )
        return self.endpoints

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(
            line for line in text.splitlines()[-lines:] if not line.startswith("+") and line.strip()
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        assert self.process is not None, "start() first"
        deadline = time.monotonic() + timeout
        url = f"{self.endpoints.http}/v2/health/ready"
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise ModelError(
                        "TritonExited",
                        f"tritonserver exited with code {self.process.returncode}:\n{self.log_tail()}",
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(url).status_code == 200:
                        return
                time.sleep(0.25)
        raise ModelError(
            "TritonNotReady", f"tritonserver was not ready within {timeout:.0f}s:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (Triton finishes in-flight requests and unloads models), SIGKILL if it overstays."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        return process.returncode

    def __enter__(self) -> LocalTriton:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
