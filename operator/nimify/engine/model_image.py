"""Model images: a checked engine's Triton model folder as an OCI image, with what a cluster needs to know of
it as labels, pushed to and pulled from an OCI registry (docs/model-images.md).

The image is a plain OCI image (an image config and one gzipped tar layer holding `model/`), so container
runtimes can mount it as an image volume where they support them, and every registry stores it. The registry
protocol, its authentication (token and basic) and uploads are the oras SDK's; nimify adds what it leaves
out: failures that are not retried for minutes (an operator reports and requeues instead), the digests of
what it downloads checked, tar members that would escape refused, and the address policy of model downloads.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import gzip
import hashlib
import io
import json
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nimify.api.spec.model import HOST_PORT, IMAGE_DIGEST, IMAGE_REPOSITORY, IMAGE_TAG
from nimify.engine.address_policy import AddressPolicy
from nimify.model.errors import ModelError

if TYPE_CHECKING:
    from nimify.engine.result import ConversionResult

SCHEME = "oci://"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
#: The folder the layer holds (and an image volume shows): Triton's model folder, config.pbtxt and 1/.
LAYER_ROOT = "model"
#: Manifests larger than this are not read (a model image's is about 2 KB).
MAX_MANIFEST_BYTES = 4 << 20

#: What a model image says of itself, as labels (image config) and annotations (manifest).
PREFIX = "dev.nimify."
FORMAT = f"{PREFIX}image.format"
"""The version of this layout; images without it are not Nimify's."""
FORMAT_VERSION = "1"
CACHE_KEY = f"{PREFIX}engine.cache-key"
BACKEND = f"{PREFIX}engine.backend"
TENSORRT_VERSION = f"{PREFIX}engine.tensorrt-version"
GPU_PRODUCT = f"{PREFIX}engine.gpu-product"
MAX_BATCH_SIZE = f"{PREFIX}engine.max-batch-size"
MODEL_DIGEST = f"{PREFIX}model.sha256"
SIGNATURE = f"{PREFIX}model.signature"
PARITY = f"{PREFIX}parity"

_PARTS = re.compile(
    rf"^oci://(?P<registry>{HOST_PORT})/(?P<repository>{IMAGE_REPOSITORY})"
    rf"(:(?P<tag>{IMAGE_TAG}))?(@(?P<digest>{IMAGE_DIGEST}))?$"
)
"""The parts of an oci:// uri (its form, with a tag or a digest required: api/spec/model.py URI_FORMS)."""


@dataclass(frozen=True)
class ImageReference:
    """oci://REGISTRY/REPOSITORY[:TAG][@DIGEST], parsed."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, uri: str) -> ImageReference:
        text = uri if uri.startswith(SCHEME) else SCHEME + uri
        match = _PARTS.match(text)
        if match is None or not (match["tag"] or match["digest"]):
            raise ModelError(
                "ModelImageInvalid",
                f"{uri!r} is not oci://REGISTRY[:PORT]/REPOSITORY:TAG or ...@sha256:DIGEST",
            )
        return cls(match["registry"], match["repository"], match["tag"], match["digest"])

    @property
    def host(self) -> str:
        return self.registry.rsplit(":", 1)[0] if ":" in self.registry else self.registry

    @property
    def port(self) -> int:
        return int(self.registry.rsplit(":", 1)[1]) if ":" in self.registry else 443

    @property
    def reference(self) -> str:
        """The tag or digest a manifest is asked for by (the digest when both are given)."""
        return self.digest or self.tag or "latest"

    def pinned(self, digest: str) -> ImageReference:
        return ImageReference(self.registry, self.repository, self.tag, digest)

    @property
    def target(self) -> str:
        """REGISTRY/REPOSITORY:TAG@DIGEST, without the scheme (what container tools take)."""
        text = f"{self.registry}/{self.repository}"
        return text + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def __str__(self) -> str:
        return SCHEME + self.target


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def credentials_for(registry: str, documents: Iterable[Mapping[str, Any]]) -> Credentials | None:
    """The first credentials a Docker config document (a kubernetes.io/dockerconfigjson Secret's
    `.dockerconfigjson`) has for `registry` (`auths` keys as registry hosts, or URLs of them)."""
    for document in documents:
        for key, entry in (document.get("auths") or {}).items():
            host = re.sub(r"^https?://", "", str(key)).split("/", 1)[0]
            if host != registry or not isinstance(entry, Mapping):
                continue
            if entry.get("username") is not None and entry.get("password") is not None:
                return Credentials(str(entry["username"]), str(entry["password"]))
            if entry.get("auth"):
                try:
                    user, _, password = base64.b64decode(str(entry["auth"])).decode().partition(":")
                except ValueError:
                    continue
                return Credentials(user, password)
    return None


# --- what an image says of itself ---------------------------------------------------------------------------


def image_labels(result: ConversionResult, model_sha256: str | None) -> dict[str, str]:
    """The labels of the image of a conversion's `result`."""
    signature = result.signature_status()
    parity = result.parity_status()
    labels = {
        FORMAT: FORMAT_VERSION,
        CACHE_KEY: result.cache_key or "",
        BACKEND: result.backend or "",
        MAX_BATCH_SIZE: str(result.max_batch_size or 0),
        TENSORRT_VERSION: result.tensorrt_version or "",
        GPU_PRODUCT: result.gpu_product or "",
        MODEL_DIGEST: model_sha256 or "",
        SIGNATURE: _compact(signature.model_dump(mode="json", by_alias=True, exclude_none=True))
        if signature
        else "",
        PARITY: _compact(parity.model_dump(mode="json", by_alias=True, exclude_none=True)) if parity else "",
    }
    return {key: value for key, value in labels.items() if value}


def _compact(document: Any) -> str:
    return json.dumps(document, separators=(",", ":"), sort_keys=True)


def engine_document(labels: Mapping[str, str], location: str) -> dict[str, Any]:
    """The status record (EngineRecord's JSON) an image's labels describe, served from `location`."""
    engine: dict[str, Any] = {
        "cacheKey": labels.get(CACHE_KEY),
        "tensorrtVersion": labels.get(TENSORRT_VERSION) or None,
        "gpuProduct": labels.get(GPU_PRODUCT) or None,
        "maxBatchSize": int(labels.get(MAX_BATCH_SIZE) or 0),
        "cacheHit": False,
        "location": location,
    }
    document: dict[str, Any] = {"engine": {k: v for k, v in engine.items() if v is not None}}
    for key, label in (("signature", SIGNATURE), ("parity", PARITY)):
        if labels.get(label):
            document[key] = json.loads(labels[label])
    return document


# --- packing ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    path: Path
    digest: str  # of the gzipped bytes (the blob)
    diff_id: str  # of the tar (the image config's rootfs)
    size: int


def pack_model(model_dir: Path, into: Path) -> Layer:
    """`model_dir` (a Triton model folder) as a reproducible gzipped tar of `model/`: sorted, owned by root,
    readable by all, no timestamps, so the same engine gives the same layer digest."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        paths = [model_dir, *sorted(model_dir.rglob("*"))]
        for path in paths:
            name = LAYER_ROOT + ("" if path == model_dir else "/" + path.relative_to(model_dir).as_posix())
            info = tarfile.TarInfo(name)
            info.uid = info.gid = 0
            info.mtime = 0
            if path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif path.is_file():
                info.size, info.mode = path.stat().st_size, 0o644
                with path.open("rb") as stream:
                    tar.addfile(info, stream)
            else:
                raise ModelError("ModelImageInvalid", f"{path} is neither a file nor a folder")
    data = raw.getvalue()
    compressed = gzip.compress(data, compresslevel=6, mtime=0)
    into.write_bytes(compressed)
    return Layer(
        into,
        "sha256:" + hashlib.sha256(compressed).hexdigest(),
        "sha256:" + hashlib.sha256(data).hexdigest(),
        len(compressed),
    )


def image_config(labels: Mapping[str, str], layer: Layer) -> dict[str, Any]:
    """The OCI image config: the labels, and the one layer's diff id."""
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": dict(sorted(labels.items()))},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
    }


# --- the registry -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedImage:
    """A model image as the registry has it: its manifest's digest, labels and layers."""

    reference: ImageReference  # pinned to `digest`
    digest: str
    labels: dict[str, str]
    layers: tuple[dict[str, Any], ...] = field(default=())

    @property
    def size(self) -> int:
        return sum(int(layer.get("size") or 0) for layer in self.layers)


def _extract(tar: tarfile.TarFile, root: Path, what: str) -> None:
    """Extract a model layer's folders and regular files under `root`, refusing any other member (links,
    devices) and any path that would land outside it. Written out rather than tarfile's `filter="data"`:
    the images' Python (Debian 12's 3.11.2) predates the filters (3.11.4)."""
    for member in tar.getmembers():
        target = (root / member.name).resolve()
        if not target.is_relative_to(root.resolve()) or Path(member.name).is_absolute():
            raise ModelError("ModelImageInvalid", f"{what}: layer member {member.name!r} escapes its folder")
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
        elif member.isfile():
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            with source, target.open("wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
        else:
            raise ModelError(
                "ModelImageInvalid", f"{what}: layer member {member.name!r} is not a file or a folder"
            )


class RegistryClient:
    """One registry, through the oras SDK's session and authentication."""

    def __init__(
        self,
        registry: str,
        *,
        credentials: Credentials | None = None,
        plain_http: bool = False,
        policy: AddressPolicy | None = None,
        timeout: float = 30,
    ) -> None:

        self.registry = registry
        self.plain_http = plain_http
        self.policy = policy or AddressPolicy()
        self.timeout = timeout
        self.credentials = credentials
        self._oras = self._registry("token")
        self._authenticated = False

    def _registry(self, auth_backend: str) -> Any:
        """oras' client with a timeout on every request: oras sets none, and a registry that never answers
        would hold a reconcile (or a replica's start) forever."""
        import oras.provider

        client = oras.provider.Registry(
            hostname=self.registry, insecure=self.plain_http, auth_backend=auth_backend
        )
        client.session.request = functools.partial(client.session.request, timeout=self.timeout)
        return client

    def _address_check(self) -> None:
        host, _, port = self.registry.rpartition(":") if ":" in self.registry else (self.registry, "", "")
        self.policy.allowed_addresses(host or self.registry, int(port or (80 if self.plain_http else 443)))

    def _set_up(self) -> None:
        """The authentication the registry asks for (a Basic or a Bearer challenge on /v2/)."""
        if self._authenticated:
            return

        self._address_check()
        probe = self._send(f"{self._oras.prefix}://{self.registry}/v2/", "GET", raw=True)
        challenge = probe.headers.get("Www-Authenticate", "")
        if probe.status_code == 401 and challenge.lower().startswith("basic"):
            if self.credentials is None:
                self._checked(probe, self.registry)  # oras' basic backend fails on no credentials
            self._oras = self._registry("basic")
        if self.credentials is not None:
            self._oras.auth.set_basic_auth(self.credentials.username, self.credentials.password)
        self._authenticated = True

    def _send(self, url: str, method: str, *, raw: bool = False, **options: Any) -> Any:
        import requests

        try:
            if raw:
                return self._oras.session.request(method, url, **options)
            # do_request is wrapped in oras' retry decorator (five tries, sleeping up to 81 s between them):
            # the operator reports a failure and requeues instead, so the undecorated call is made.
            return self._oras.do_request.__wrapped__(self._oras, url, method, **options)
        except ValueError as error:  # oras: "Cannot respond to request for authentication."
            raise ModelError("ModelImageUnauthorized", f"{self.registry}: {error}") from None
        except requests.RequestException as error:
            raise ModelError(
                "ModelImageUnreachable", f"{self.registry}: {type(error).__name__}: {error}"
            ) from None

    def _checked(self, response: Any, what: str) -> Any:
        if response.status_code in (401, 403):
            raise ModelError(
                "ModelImageUnauthorized",
                f"{what}: the registry refused {'the given credentials' if self.credentials else 'anonymous'}"
                f" access (HTTP {response.status_code}); name a pull secret for {self.registry} in"
                " spec.imagePullSecrets",
            )
        if response.status_code == 404:
            raise ModelError("ModelImageNotFound", f"{what}: no such image in the registry (HTTP 404)")
        if response.status_code >= 300:
            raise ModelError(
                "ModelImageUnreachable", f"{what}: the registry answered HTTP {response.status_code}"
            )
        return response

    def resolve(self, reference: ImageReference) -> ResolvedImage:
        """The image's manifest digest, labels (its config's) and layers; a digest given is checked."""
        self._set_up()
        base = f"{self._oras.prefix}://{self.registry}/v2/{reference.repository}"
        response = self._checked(
            self._send(
                f"{base}/manifests/{reference.reference}",
                "GET",
                headers={"Accept": MANIFEST_MEDIA_TYPE},
                stream=True,
            ),
            str(reference),
        )
        body = response.raw.read(MAX_MANIFEST_BYTES + 1, decode_content=True)
        if len(body) > MAX_MANIFEST_BYTES:
            raise ModelError(
                "ModelImageInvalid", f"{reference}: the manifest is over {MAX_MANIFEST_BYTES} bytes"
            )
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if reference.digest and digest != reference.digest:
            raise ModelError(
                "ModelImageDigestMismatch", f"{reference}: the registry's manifest has digest {digest}"
            )
        try:
            manifest = json.loads(body)
            media_type = manifest.get("mediaType", MANIFEST_MEDIA_TYPE)
            config_descriptor = manifest["config"]
        except (ValueError, KeyError, AttributeError):
            raise ModelError(
                "ModelImageInvalid", f"{reference}: the manifest is not an OCI image manifest"
            ) from None
        if media_type != MANIFEST_MEDIA_TYPE:
            raise ModelError(
                "ModelImageInvalid",
                f"{reference}: a {media_type} (an image index or another kind of manifest); give the digest"
                " of one image built by nimify build",
            )
        config = json.loads(self._blob(reference, config_descriptor))
        labels = (config.get("config") or {}).get("Labels") or {}
        return ResolvedImage(
            reference.pinned(digest),
            digest,
            {str(k): str(v) for k, v in labels.items()},
            tuple(manifest.get("layers") or ()),
        )

    def _blob(
        self, reference: ImageReference, descriptor: Mapping[str, Any], into: Path | None = None
    ) -> bytes:
        """A blob, its digest checked: its bytes, or written to `into` (then b"")."""
        digest = str(descriptor.get("digest") or "")
        url = f"{self._oras.prefix}://{self.registry}/v2/{reference.repository}/blobs/{digest}"
        response = self._checked(self._send(url, "GET", stream=True), f"{reference} blob {digest}")
        hasher = hashlib.sha256()
        chunks: list[bytes] = []
        with contextlib.closing(response):
            stream = into.open("wb") if into is not None else None
            try:
                for chunk in response.iter_content(chunk_size=1 << 20):
                    hasher.update(chunk)
                    if stream is not None:
                        stream.write(chunk)
                    else:
                        chunks.append(chunk)
            finally:
                if stream is not None:
                    stream.close()
        if "sha256:" + hasher.hexdigest() != digest:
            raise ModelError(
                "ModelImageDigestMismatch", f"{reference}: blob {digest} arrived with another digest"
            )
        return b"".join(chunks)

    def pull(self, image: ResolvedImage, destination: Path) -> None:
        """The image's model folder, its layers' digests checked, written to `destination` (made fresh)."""
        with tempfile.TemporaryDirectory(prefix="nimify-pull-") as scratch:
            unpacked = Path(scratch) / "unpacked"
            unpacked.mkdir()
            for index, layer in enumerate(image.layers):
                if layer.get("mediaType") not in (LAYER_MEDIA_TYPE, "application/vnd.oci.image.layer.v1.tar"):
                    raise ModelError(
                        "ModelImageInvalid", f"{image.reference}: layer {index} is a {layer.get('mediaType')}"
                    )
                blob = Path(scratch) / f"layer-{index}"
                self._blob(image.reference, layer, into=blob)
                with tarfile.open(blob) as tar:
                    _extract(tar, unpacked, str(image.reference))
                blob.unlink()
            model = unpacked / LAYER_ROOT
            if not model.is_dir():
                raise ModelError(
                    "ModelImageInvalid", f"{image.reference}: the image holds no {LAYER_ROOT}/ folder"
                )
            if destination.exists():
                shutil.rmtree(destination)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(model), destination)

    def push(self, reference: ImageReference, model_dir: Path, labels: Mapping[str, str]) -> str:
        """Push `model_dir` as a model image with `labels` (annotations of its manifest too); its digest."""
        self._set_up()
        with tempfile.TemporaryDirectory(prefix="nimify-push-") as scratch:
            layer = pack_model(model_dir, Path(scratch) / "model.tar.gz")
            config = Path(scratch) / "config.json"
            config.write_text(_compact(image_config(labels, layer)))
            try:
                response = self._oras.push(
                    target=reference.target,
                    files=[f"{layer.path}:{LAYER_MEDIA_TYPE}"],
                    manifest_config=f"{config}:{CONFIG_MEDIA_TYPE}",
                    manifest_annotations=dict(labels),
                    disable_path_validation=True,
                    quiet=True,
                )
            except ValueError as error:
                raise ModelError("ModelImageUnauthorized", f"{reference}: {error}") from None
            self._checked(response, str(reference))
        digest = response.headers.get("Docker-Content-Digest")
        if not digest:
            digest = self.resolve(reference).digest
        return str(digest)
