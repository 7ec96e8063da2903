"""Nimify's container images, built on this machine from the repository's `images/` directory.

No registry is reachable and no Docker engine runs here, so images are built with buildah from a Debian base
made by mmdebstrap, without network: Python packages come as wheels that pip collects on the host (the
versions installed in the project's virtualenv, so images run what the tests run), put into each build's
context. Each image is tagged with a content hash of its inputs; an image whose tag already exists is not
built again. Inside an image, buildah's layer cache rebuilds only the layers whose inputs changed: a change
of Nimify's own code rebuilds the last layer only.

Images: `debian-base` (internal), `pause` (the node's sandbox image), `nimify` (operator, CLI, onnxruntime
conversion), `triton-cpu` (tritonserver with the `onnxruntime` Python-based backend), `nimify-builder`
(TensorRT conversion; built on request, it is large).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

REGISTRY = "localhost/nimify"
#: The images a real node needs (the builder is built on request).
NODE_IMAGES = ("pause", "nimify", "triton-cpu")
ALL_IMAGES = ("debian-base", *NODE_IMAGES, "nimify-builder")
#: Debian release of the base; its Python (3.11) must be the one the wheels and backend stub are for.
DEBIAN_SUITE = "bookworm"
DEBIAN_PYTHON = (3, 11)
DEBIAN_SOURCES = (
    f"deb http://deb.debian.org/debian {DEBIAN_SUITE} main",
    f"deb http://deb.debian.org/debian {DEBIAN_SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {DEBIAN_SUITE}-security main",
)
#: Triton container release of the tritonserver in each nvidia-pytriton wheel (the release notes' table).
#: The triton-cpu tag starts with it, so the operator reads the right release from `spec.triton.image`.
PYTRITON_TRITON_RELEASE = {"0.7.0": "24.10"}
#: The Triton release the nimify-builder image builds engines for (images/nimify-builder/requirements.txt).
BUILDER_TRITON_RELEASE = "25.10"
#: Where TensorRT's library wheels live (PyPI has placeholders that point there).
NVIDIA_INDEX = "https://pypi.nvidia.com"

Log = Callable[[str], None]


class ImageBuildError(RuntimeError):
    """An image could not be built; the message says which step failed and why."""


@dataclass(frozen=True)
class BuiltImage:
    name: str
    ref: str
    #: Seconds this call spent building it (0 when it was already built).
    seconds: float
    size_bytes: int

    @property
    def cached(self) -> bool:
        return self.seconds == 0


def cache_root() -> Path:
    cache = os.environ.get("NIMIFY_CACHE_DIR") or str(
        Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "nimify"
    )
    return Path(cache) / "images"


def source_root() -> Path:
    """The repository this package is installed from (editable install of devcluster/), which holds `images/`
    and the operator's sources."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "images").is_dir():
        raise ImageBuildError(f"no images/ directory next to {root / 'devcluster'}: build from a checkout")
    return root


# --- what goes into an image, and its content hash ----------------------------------------------------------


def installed_closure(requirements: Iterable[str]) -> dict[str, str]:
    """Each distribution these requirements pull in, at the version installed here: {name: version}.

    pip has no command for "the installed dependency closure of X", so this walks the installed metadata
    (markers evaluated for this interpreter, extras followed). Every requirement must be installed.
    """
    found: dict[str, str] = {}
    pending = [(Requirement(text), frozenset(Requirement(text).extras)) for text in requirements]
    while pending:
        requirement, extras = pending.pop()
        name = canonicalize_name(requirement.name)
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise ImageBuildError(
                f"{requirement.name} is not installed in {sys.prefix}; run hack/setup-venv.sh"
            ) from None
        first_visit = name not in found
        found[name] = distribution.version
        for text in distribution.requires or []:
            dependency = Requirement(text)
            if dependency.marker is not None and not any(
                dependency.marker.evaluate({"extra": extra}) for extra in {"", *extras}
            ):
                continue
            if first_visit or dependency.extras:
                pending.append((dependency, frozenset(dependency.extras)))
    return dict(sorted(found.items()))


def nimify_requirements() -> list[str]:
    """Nimify's own runtime dependencies (no extras)."""
    requires = importlib.metadata.requires("nimify") or []
    return [text for text in requires if Requirement(text).marker is None]


#: Nimify's extra for the builder image (pyproject.toml): TensorRT, the CUDA runtime and cuda-python's
#: bindings, all of the image's CUDA major.
BUILDER_EXTRA = "tensorrt-cu13"


def builder_requirements(pinned: Path) -> list[str]:
    """What the builder image adds: Nimify's `tensorrt-cu13` extra, plus the exact TensorRT of the Triton
    release it builds for (images/nimify-builder/requirements.txt)."""
    extra = [
        str(Requirement(text)).split(";", 1)[0].strip()
        for text in importlib.metadata.requires("nimify") or []
        if (marker := Requirement(text).marker) is not None and marker.evaluate({"extra": BUILDER_EXTRA})
    ]
    lines = [line.strip() for line in pinned.read_text().splitlines()]
    return extra + [line for line in lines if line and not line.startswith("#")]


def lock_text(pins: dict[str, str]) -> str:
    return "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


def digest(*parts: bytes | str | Path) -> str:
    """sha256 over the parts; a Path contributes its relative layout and content (a tree, or one file)."""
    hasher = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            files = [part] if part.is_file() else sorted(p for p in part.rglob("*") if p.is_file())
            for path in files:
                if "__pycache__" in path.parts or path.suffix == ".pyc":
                    continue
                relative = path.name if path == part else str(path.relative_to(part))
                hasher.update(f"\0file {relative}\0".encode())
                hasher.update(path.read_bytes())
        else:
            hasher.update(b"\0part\0")
            hasher.update(part.encode() if isinstance(part, str) else part)
    return hasher.hexdigest()


def source_digest(root: Path) -> str:
    """Nimify's own code: the package tree and its metadata."""
    return digest(root / "operator" / "nimify", root / "pyproject.toml")


def build_operator_wheel(root: Path, dist: Path) -> Path:
    """The operator's wheel (distribution `nimify`, what the nimify images install), built from a copy of
    its sources: the package tree, pyproject.toml and the README it names.

    Not built in place: setuptools packages whatever an earlier build left under the checkout's build/lib (it
    copies files there and removes none), so a module moved out of `nimify` (as this package moved out of
    `nimify.devcluster`) would still ride into the image. The copy is also exactly what `source_digest`
    keys the image on (the README is the wheel's description only).
    """
    with tempfile.TemporaryDirectory(prefix="nimify-wheel-") as tmp:
        sources = Path(tmp)
        shutil.copy2(root / "pyproject.toml", sources / "pyproject.toml")
        shutil.copy2(root / "README.md", sources / "README.md")
        shutil.copytree(
            root / "operator" / "nimify",
            sources / "operator" / "nimify",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        _run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist),
             str(sources)],
            "building Nimify's wheel",
        )  # fmt: skip
    wheels = sorted(dist.glob("nimify-*.whl"))
    if len(wheels) != 1:
        raise ImageBuildError(f"building Nimify's wheel left {len(wheels)} nimify wheels in {dist}")
    return wheels[0]


# --- buildah ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Buildah:
    """buildah with a storage of its own under the cache (never the machine's default store)."""

    root: Path
    runroot: Path

    def command(self, *args: str) -> list[str]:
        return [
            "buildah",
            f"--root={self.root}",
            f"--runroot={self.runroot}",
            "--storage-driver=overlay",
            *args,
        ]

    def run(self, *args: str, log: Log | None = None) -> str:
        process = subprocess.Popen(
            self.command(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_build_environment(),
        )
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if log is not None and (line.startswith("STEP ") or "Using cache" in line):
                log(line.rstrip("\n")[:160])
        if process.wait() != 0:
            tail = "\n".join(lines[-30:])
            raise ImageBuildError(f"buildah {args[0]} failed (exit {process.returncode}):\n{tail}")
        return "\n".join(lines)

    def exists(self, ref: str) -> bool:
        result = subprocess.run(
            self.command("images", "--quiet", ref), capture_output=True, text=True, check=False
        )
        return result.returncode == 0 and bool(result.stdout.strip())

    def size(self, ref: str) -> int:
        out = subprocess.run(
            self.command("inspect", "--type=image", ref), capture_output=True, text=True, check=True
        ).stdout
        manifest = json.loads(json.loads(out)["Manifest"])
        return int(sum(layer.get("size", 0) for layer in manifest.get("layers", [])))

    def tags(self, repository: str) -> list[str]:
        out = subprocess.run(
            self.command("images", "--format", "{{.Name}}:{{.Tag}}"),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return [line for line in out.split() if line.rsplit(":", 1)[0] == repository]

    def prune_older(self, ref: str) -> None:
        """Drop the other tags of the same image and the layers only they used (the cache keeps growing
        otherwise); layers the new image shares stay."""
        repository = ref.rsplit(":", 1)[0]
        old = [tag for tag in self.tags(repository) if tag != ref]
        if old:
            subprocess.run(self.command("rmi", *old), capture_output=True, check=False)
        subprocess.run(self.command("rmi", "--prune"), capture_output=True, check=False)

    def export(self, ref: str, archive: Path) -> None:
        """A docker-archive: containerd imports it (an oci-archive import silently imports nothing)."""
        archive.unlink(missing_ok=True)
        self.run("push", "--quiet", ref, f"docker-archive:{archive}:{ref}")


def _build_environment() -> dict[str, str]:
    # The host's certificate variables point at files the build containers do not have; the builds need no
    # network anyway (everything arrives in the context).
    drop = {"REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR", "PIP_CERT", "PIP_FIND_LINKS"}
    return {k: v for k, v in os.environ.items() if k not in drop}


# --- the recipes --------------------------------------------------------------------------------------------


@dataclass
class _Builder:
    source: Path
    cache: Path
    buildah: Buildah
    log: Log

    @property
    def images(self) -> Path:
        return self.source / "images"

    def ref(self, name: str, key: str, prefix: str = "", suffix: str = "") -> str:
        return f"{REGISTRY}/{name}:{prefix}{key[:16]}{suffix}"

    # Each recipe returns (ref, fill): `fill(context)` writes the build context, called on a cache miss only.

    def debian_base(self) -> tuple[str, Callable[[Path], None]]:
        directory = self.images / "debian-base"
        key = digest(directory, *DEBIAN_SOURCES, *_MMDEBSTRAP_OPTIONS)
        ref = self.ref("debian-base", key)

        def fill(context: Path) -> None:
            tarball = self.cache / f"debian-base-{key[:16]}.tar"
            if not tarball.exists():
                self._mmdebstrap(directory / "packages.txt", tarball)
            os.link(tarball, context / "rootfs.tar")

        return ref, fill

    def pause(self) -> tuple[str, Callable[[Path], None]]:
        directory = self.images / "pause"
        ref = self.ref("pause", digest(directory))

        def fill(context: Path) -> None:
            _run(
                ["gcc", "-Os", "-static", "-Wall", "-Werror", "-o", str(context / "pause"),
                 str(directory / "pause.c")],
                "compiling the pause program",
            )  # fmt: skip
            _run(["strip", str(context / "pause")], "stripping the pause program")

        return ref, fill

    def nimify(self, base: str, builder: bool = False) -> tuple[str, Callable[[Path], None]]:
        name = "nimify-builder" if builder else "nimify"
        directory = self.images / name
        pins = installed_closure(nimify_requirements())
        tensorrt = builder_requirements(directory / "requirements.txt") if builder else None
        key = digest(directory / "Containerfile", base, lock_text(pins), source_digest(self.source))
        if tensorrt is not None:
            key = digest(key, *tensorrt)
        suffix = f"-trt{BUILDER_TRITON_RELEASE}" if builder else ""
        ref = self.ref(name, key, suffix=suffix)

        def fill(context: Path) -> None:
            self._wheels(context, pins)
            if tensorrt is not None:
                self._tensorrt_wheels(context, tensorrt, pins)
            self.log("building Nimify's wheel")
            build_operator_wheel(self.source, context / "dist")

        return ref, fill

    def triton_cpu(self, base: str) -> tuple[str, Callable[[Path], None]]:
        from nimify.triton.local_server import locate_tritonserver, prepare_backends

        directory = self.images / "triton-cpu"
        pytriton = importlib.metadata.version("nvidia-pytriton")
        release = PYTRITON_TRITON_RELEASE.get(pytriton)
        if release is None:
            raise ImageBuildError(
                f"nvidia-pytriton {pytriton}: which Triton release it ships is not known; add it to "
                "PYTRITON_TRITON_RELEASE in devcluster/nimify_devcluster/images.py"
            )
        pins = installed_closure(["numpy", "onnxruntime"]) | {"nvidia-pytriton": pytriton}
        backends = Path(tempfile.mkdtemp(prefix="nimify-backends-"))
        try:
            prepare_backends(locate_tritonserver(), backends / "backends")
            key = digest(directory / "Containerfile", base, lock_text(pins), backends)
        except BaseException:
            shutil.rmtree(backends, ignore_errors=True)
            raise
        ref = self.ref("triton-cpu", key, prefix=f"{release}-")

        def fill(context: Path) -> None:
            self._wheels(context, pins)
            shutil.move(backends / "backends", context / "backends")
            shutil.rmtree(backends, ignore_errors=True)

        return ref, fill

    def build(self, name: str, ref: str, fill: Callable[[Path], None], base: str | None = None) -> BuiltImage:
        if self.buildah.exists(ref):
            return BuiltImage(name, ref, 0, self.buildah.size(ref))
        started = time.monotonic()
        self.log(f"building {ref}")
        with tempfile.TemporaryDirectory(prefix=f"context-{name}-", dir=self.cache) as tmp:
            context = Path(tmp)
            fill(context)
            directory = self.images / ("nimify-builder" if name == "nimify-builder" else name)
            shutil.copy2(directory / "Containerfile", context / "Containerfile")
            args = ["build", "--layers", "--network=none", "--pull-never", f"--tag={ref}"]
            if base is not None:
                args.append(f"--build-arg=BASE_IMAGE={base}")
            self.buildah.run(*args, str(context), log=self.log)
        self.buildah.prune_older(ref)
        seconds = time.monotonic() - started
        size = self.buildah.size(ref)
        self.log(f"built {ref} in {seconds:.0f}s ({size / 2**20:.0f} MiB)")
        return BuiltImage(name, ref, seconds, size)

    # --- inputs ---

    def _mmdebstrap(self, packages_file: Path, tarball: Path) -> None:
        packages = [
            line.strip()
            for line in packages_file.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        self.log(f"mmdebstrap: Debian {DEBIAN_SUITE} with {', '.join(packages)}")
        partial = tarball.with_suffix(".partial.tar")
        _run(
            ["mmdebstrap", *_MMDEBSTRAP_OPTIONS, f"--include={','.join(packages)}", DEBIAN_SUITE,
             str(partial), *DEBIAN_SOURCES],
            "mmdebstrap",
        )  # fmt: skip
        partial.rename(tarball)

    def _wheels(self, context: Path, pins: dict[str, str]) -> None:
        """Hard links to the wheels of exactly these versions (collected once into the cache), plus the
        matching requirements.txt."""
        lock = lock_text(pins)
        store = self.cache / "wheels" / digest(lock)[:16]
        if not (store / ".complete").exists():
            self.log(f"collecting {len(pins)} wheels")
            shutil.rmtree(store, ignore_errors=True)
            store.mkdir(parents=True)
            (store / "requirements.txt").write_text(lock)
            _pip_wheel(store, ["--no-deps", "-r", str(store / "requirements.txt")])
            (store / ".complete").touch()
        _link_wheels(store, context / "wheels")
        shutil.copy2(store / "requirements.txt", context / "requirements.txt")

    def _tensorrt_wheels(self, context: Path, wanted: list[str], pins: dict[str, str]) -> None:
        """TensorRT's wheels and their dependencies, except what the nimify layer already installs."""
        store = self.cache / "wheels" / f"tensorrt-{digest(*wanted, lock_text(pins))[:16]}"
        if not (store / ".complete").exists():
            requirements = store / "requirements.in"
            self.log(f"collecting TensorRT's wheels ({requirements.name}; gigabytes on a cold pip cache)")
            shutil.rmtree(store, ignore_errors=True)
            store.mkdir(parents=True)
            requirements.write_text("".join(f"{line}\n" for line in wanted))
            constraints = store / "constraints.txt"
            constraints.write_text(lock_text(pins))
            try:
                # PyPI's tensorrt-*-libs are placeholder sdists that fetch the real wheel from NVIDIA's index.
                _pip_wheel(
                    store,
                    ["-r", str(requirements), "-c", str(constraints), f"--extra-index-url={NVIDIA_INDEX}"],
                )
            except ImageBuildError as error:
                raise ImageBuildError(
                    f"TensorRT's wheels could not be collected ({requirements}). PyPI carries only "
                    "placeholders for TensorRT's libraries (tensorrt-cu*-libs) that download the real "
                    f"wheels from {NVIDIA_INDEX}; this machine must reach that index to build nimify-builder."
                    f"\n{error}"
                ) from None
            extra = {}
            for wheel in store.glob("*.whl"):
                name, version, _, _ = parse_wheel_filename(wheel.name)
                if name in pins:
                    wheel.unlink()
                else:
                    extra[str(name)] = str(version)
            (store / "requirements.txt").write_text(lock_text(extra))
            (store / ".complete").touch()
        _link_wheels(store, context / "tensorrt-wheels")
        shutil.copy2(store / "requirements.txt", context / "tensorrt-requirements.txt")


_MMDEBSTRAP_OPTIONS = (
    "--variant=essential",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--quiet",
)


def _pip_wheel(store: Path, args: list[str]) -> None:
    _run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--progress-bar=off", "--wheel-dir", str(store),
         *args],
        "pip wheel",
    )  # fmt: skip


def _link_wheels(store: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for wheel in store.glob("*.whl"):
        os.link(wheel, target / wheel.name)


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-30:]
        raise ImageBuildError(f"{what} failed (exit {result.returncode}):\n" + "\n".join(output))


@contextlib.contextmanager
def _build_lock(cache: Path) -> Iterator[None]:
    """One image build at a time on this machine (they share buildah's store and the wheel cache)."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build_images(
    names: Iterable[str] = NODE_IMAGES, log: Log = lambda _: None, cache: Path | None = None
) -> dict[str, BuiltImage]:
    """Build (or find already built) the named images; returns them by name."""
    wanted = set(names)
    unknown = wanted - set(ALL_IMAGES)
    if unknown:
        known = ", ".join(ALL_IMAGES)
        raise ImageBuildError(f"unknown image(s) {', '.join(sorted(unknown))}; known: {known}")
    if sys.version_info[:2] != DEBIAN_PYTHON:
        raise ImageBuildError(
            f"the images run Python {'.'.join(map(str, DEBIAN_PYTHON))} (Debian {DEBIAN_SUITE}); build them "
            f"from a virtualenv of that Python, not {sys.version.split()[0]}"
        )
    for tool in ("buildah", "mmdebstrap", "gcc"):
        if shutil.which(tool) is None:
            raise ImageBuildError(f"{tool} is not installed (hack/ensure-packages.sh installs it)")
    cache = cache or cache_root()
    builder = _Builder(source_root(), cache, buildah_for(cache), log)
    built: dict[str, BuiltImage] = {}
    with _build_lock(cache):
        ref, fill = builder.debian_base()
        base = built["debian-base"] = builder.build("debian-base", ref, fill)
        if "pause" in wanted:
            ref, fill = builder.pause()
            built["pause"] = builder.build("pause", ref, fill)
        if "nimify" in wanted:
            ref, fill = builder.nimify(base.ref)
            built["nimify"] = builder.build("nimify", ref, fill, base.ref)
        if "triton-cpu" in wanted:
            ref, fill = builder.triton_cpu(base.ref)
            built["triton-cpu"] = builder.build("triton-cpu", ref, fill, base.ref)
        if "nimify-builder" in wanted:
            ref, fill = builder.nimify(base.ref, builder=True)
            built["nimify-builder"] = builder.build("nimify-builder", ref, fill, base.ref)
    return {name: image for name, image in built.items() if name in wanted}


def buildah_for(cache: Path | None = None) -> Buildah:
    """buildah on the image cache's store (runtime state on /run when root, so a reboot clears it)."""
    cache = cache or cache_root()
    run_root = Path("/run/nimify/buildah") if os.geteuid() == 0 else cache / "run"
    return Buildah(cache / "storage", run_root)
