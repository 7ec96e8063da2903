"""Model URIs: which store a model lives in, where it lands locally, and where its external data files are.

Supported: a local path (or file://), pvc://CLAIM/PATH (a claim mounted under a root), https:// (and http://
for local mirrors), hf://ORG/REPO[@REVISION]/PATH (the Hugging Face Hub's resolve URLs), s3://BUCKET/KEY and
gs://BUCKET/KEY.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urlsplit, urlunsplit

from nimify.model.errors import ModelError
from nimify.redaction import redact

DEFAULT_HF_ENDPOINT = "https://huggingface.co"


@dataclass(frozen=True)
class ModelSource:
    scheme: str  # local, pvc, http, hf, s3, gs
    location: str  # local path, URL, or bucket
    path: str = ""  # key inside the bucket / repo, or claim-relative path
    revision: str = "main"  # hf only
    claim: str = ""  # pvc only

    @property
    def filename(self) -> str:
        name = PurePosixPath(
            urlsplit(self.location).path if self.scheme == "http" else self.path or self.location
        ).name
        return name or "model.onnx"

    @property
    def display(self) -> str:
        """The URI without query string or credentials, for messages (presigned URLs carry secrets)."""
        if self.scheme == "http":
            parts = urlsplit(self.location)
            host = parts.hostname or ""
            if parts.port:
                host = f"{host}:{parts.port}"
            return urlunsplit((parts.scheme, host, parts.path, "", ""))
        if self.scheme == "hf":
            return f"hf://{self.location}@{self.revision}/{self.path}"
        if self.scheme == "pvc":
            return f"pvc://{self.claim}/{self.path}"
        if self.scheme in ("s3", "gs"):
            return f"{self.scheme}://{self.location}/{self.path}"
        return self.location

    def sibling(self, relative: str) -> ModelSource:
        """The source of a file next to this one (an external data file); `relative` is already checked."""
        if self.scheme == "local":
            return replace(self, location=str(Path(self.location).parent / relative))
        if self.scheme == "http":
            parts = urlsplit(self.location)
            joined = posixpath.join(posixpath.dirname(parts.path), quote(relative))
            return replace(self, location=urlunsplit((parts.scheme, parts.netloc, joined, parts.query, "")))
        return replace(self, path=posixpath.join(posixpath.dirname(self.path), relative))


def _checked_path(path: str, uri: str) -> str:
    parts = PurePosixPath(path).parts
    if ".." in parts:
        raise ModelError("InvalidModelUri", f"{redact(uri)}: '..' segments are not allowed")
    return path.lstrip("/")


def parse_uri(uri: str) -> ModelSource:
    """The source a URI names; an InvalidModelUri error quotes it without query string or user-info."""
    try:
        return _parse_uri(uri)
    except ModelError as error:
        raise ModelError(error.reason, redact(error.message)) from None


def _parse_uri(uri: str) -> ModelSource:
    if "://" not in uri:
        return ModelSource("local", str(Path(uri).expanduser()))
    scheme, rest = uri.split("://", 1)
    scheme = scheme.lower()
    if scheme == "file":
        return ModelSource("local", urlsplit(uri).path)
    if scheme in ("http", "https"):
        parts = urlsplit(uri)
        if not parts.hostname:
            raise ModelError("InvalidModelUri", f"{uri}: no host")
        _checked_path(parts.path, uri)
        return ModelSource("http", uri)
    if scheme in ("s3", "gs", "pvc"):
        bucket, _, key = rest.partition("/")
        if not bucket or not key:
            raise ModelError("InvalidModelUri", f"{scheme}://{bucket}/...: expected {scheme}://NAME/PATH")
        key = _checked_path(key, uri)
        if scheme == "pvc":
            return ModelSource("pvc", "", path=key, claim=bucket)
        return ModelSource(scheme, bucket, path=key)
    if scheme == "hf":
        segments = rest.split("/")
        if len(segments) < 3 or not all(segments[:3]):
            raise ModelError("InvalidModelUri", f"{uri}: expected hf://ORG/REPO[@REVISION]/PATH")
        org, repo_and_revision = segments[0], segments[1]
        repo, _, revision = repo_and_revision.partition("@")
        path = _checked_path("/".join(segments[2:]), uri)
        return ModelSource("hf", f"{org}/{repo}", path=path, revision=revision or "main")
    raise ModelError(
        "InvalidModelUri", f"{uri}: unsupported scheme {scheme!r} (https, s3, gs, pvc, hf or a path)"
    )


def hf_url(source: ModelSource, endpoint: str = DEFAULT_HF_ENDPOINT) -> str:
    """The Hub's download URL: {endpoint}/{org}/{repo}/resolve/{revision}/{path}."""
    revision = quote(source.revision, safe="")
    return f"{endpoint.rstrip('/')}/{source.location}/resolve/{revision}/{quote(source.path)}"


def pvc_path(source: ModelSource, root: Path) -> Path:
    """Where a pvc:// file is: the claim is mounted at {root}/{claim}; symlinks must not leave the claim."""
    claim_root = (root / source.claim).resolve()
    path = (claim_root / source.path).resolve()
    if not path.is_relative_to(claim_root):
        raise ModelError(
            "InvalidModelUri", f"{source.display} resolves outside the claim's mount {claim_root}"
        )
    return path
