"""Fetching a model (and its external data files, or a file that goes with it) to local disk, with retries,
progress and digest checks.

Object-store clients are optional dependencies imported only when an s3:// or gs:// model asks for them, so
the toolkit installs without them and says which package to add when one is needed.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

from nimify.engine.sources import ModelSource, hf_url, parse_uri, pvc_path
from nimify.model.digest import file_sha256, verify_sha256
from nimify.model.errors import ModelError
from nimify.model.external_data import external_refs, safe_relative_location
from nimify.model.onnx_file import looks_like_plan, read_onnx

# (what is being fetched, bytes so far, total bytes when known)
Progress = Callable[[str, int, int | None], None]

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
DEFAULT_PVC_ROOT = Path("/mnt/pvc")
CHUNK = 1 << 20


@dataclass(frozen=True)
class FetchedModel:
    path: Path
    sha256: str
    source: str  # the URI as displayed (no query string)
    external: tuple[Path, ...] = ()


@dataclass(frozen=True)
class FetchOptions:
    pvc_root: Path = DEFAULT_PVC_ROOT
    retries: int = 4
    backoff_seconds: float = 1.0
    timeout_seconds: float = 60.0
    progress: Progress | None = None
    env: Mapping[str, str] | None = None  # credentials; os.environ when None
    http_client: httpx.Client | None = None


def fetch_model(
    uri: str, dest_dir: Path, *, sha256: str | None = None, options: FetchOptions | None = None
) -> FetchedModel:
    """Fetch `uri` into `dest_dir` (local and pvc:// files are used in place) and verify its digest."""
    options = options or FetchOptions()
    source = parse_uri(uri)
    path = _fetch_one(source, dest_dir, source.filename, options)
    digest = verify_sha256(path, sha256) if sha256 else file_sha256(path)
    external: tuple[Path, ...] = ()
    if source.scheme not in ("local", "pvc") and not looks_like_plan(path):
        external = _fetch_external_data(source, path, dest_dir, options)
    return FetchedModel(path, digest, source.display, external)


def fetch_file(
    uri: str, dest_dir: Path, *, sha256: str | None = None, options: FetchOptions | None = None
) -> FetchedModel:
    """Fetch one file that is not a model (parity inputs) from the same sources, with the same checks."""
    options = options or FetchOptions()
    source = parse_uri(uri)
    path = _fetch_one(source, dest_dir, source.filename, options)
    digest = verify_sha256(path, sha256) if sha256 else file_sha256(path)
    return FetchedModel(path, digest, source.display)


def _fetch_external_data(
    source: ModelSource, model_path: Path, dest_dir: Path, options: FetchOptions
) -> tuple[Path, ...]:
    fetched = []
    seen = set()
    for ref in external_refs(read_onnx(model_path)):
        # Checked before anything is requested: a hostile location must not choose what gets downloaded where.
        relative = safe_relative_location(ref.location, f"{model_path.name}: tensor '{ref.tensor}'")
        if str(relative) in seen:
            continue
        seen.add(str(relative))
        fetched.append(_fetch_one(source.sibling(str(relative)), dest_dir, str(relative), options))
    return tuple(fetched)


def _fetch_one(source: ModelSource, dest_dir: Path, relative: str, options: FetchOptions) -> Path:
    if source.scheme == "local":
        path = Path(source.location)
        if not path.exists():
            raise ModelError("ModelNotFound", f"{path}: no such file")
        return path
    if source.scheme == "pvc":
        path = pvc_path(source, options.pvc_root)
        if not path.exists():
            raise ModelError(
                "ModelNotFound", f"{source.display}: no such file under {options.pvc_root}/{source.claim}"
            )
        return path
    target = dest_dir / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    env = options.env if options.env is not None else os.environ
    if source.scheme == "http":
        headers = {"Authorization": env["AUTHORIZATION"]} if env.get("AUTHORIZATION") else {}
        _download_http(source.location, source.display, target, headers, options)
    elif source.scheme == "hf":
        headers = {"Authorization": f"Bearer {env['HF_TOKEN']}"} if env.get("HF_TOKEN") else {}
        url = hf_url(source, env.get("HF_ENDPOINT") or "https://huggingface.co")
        _download_http(url, source.display, target, headers, options)
    elif source.scheme == "s3":
        _download_s3(source, target, options, env)
    elif source.scheme == "gs":
        _download_gs(source, target, options, env)
    else:  # pragma: no cover - parse_uri admits no other scheme
        raise ModelError("InvalidModelUri", f"{source.display}: unsupported scheme")
    return target


class _RetryableError(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return min(float(response.headers["Retry-After"]), 60.0)
    except (KeyError, ValueError):
        return None


def _download_http(
    url: str, display: str, target: Path, headers: dict[str, str], options: FetchOptions
) -> None:
    client = options.http_client or httpx.Client(timeout=options.timeout_seconds, follow_redirects=True)
    partial = target.with_name(target.name + ".part")
    last_error = ""
    try:
        for attempt in range(options.retries + 1):
            try:
                _stream_to(client, url, display, partial, headers, options.progress)
                partial.replace(target)
                return
            except _RetryableError as error:
                last_error, wait = str(error), error.retry_after
            except httpx.TransportError as error:
                last_error, wait = f"{type(error).__name__}: {error}", None
            if attempt < options.retries:
                time.sleep(wait if wait is not None else options.backoff_seconds * 2**attempt)
    finally:
        partial.unlink(missing_ok=True)
        if options.http_client is None:
            client.close()
    raise ModelError("FetchFailed", f"{display}: {last_error} (after {options.retries + 1} attempts)")


def _stream_to(
    client: httpx.Client,
    url: str,
    display: str,
    partial: Path,
    headers: dict[str, str],
    progress: Progress | None,
) -> None:
    with client.stream("GET", url, headers=headers) as response:
        status = response.status_code
        if status in RETRYABLE_STATUS:
            raise _RetryableError(f"HTTP {status}", _retry_after(response))
        if status == 404:
            raise ModelError("ModelNotFound", f"{display}: HTTP 404 Not Found")
        if status in (401, 403):
            raise ModelError(
                "FetchUnauthorized",
                f"{display}: HTTP {status}; check the credentials secret (AUTHORIZATION, HF_TOKEN)",
            )
        if status >= 400:
            raise ModelError("FetchFailed", f"{display}: HTTP {status}")
        total = int(response.headers["Content-Length"]) if "Content-Length" in response.headers else None
        done = 0
        with partial.open("wb") as out:
            for chunk in response.iter_bytes(CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(display, done, total)
        if total is not None and done != total and "Content-Encoding" not in response.headers:
            raise _RetryableError(f"connection closed after {done} of {total} bytes")


def _optional_module(name: str, package: str, scheme: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ModelError(
            "FetcherNotInstalled", f"{scheme}:// models need the {package} package: pip install {package}"
        ) from None


def _download_s3(source: ModelSource, target: Path, options: FetchOptions, env: Mapping[str, str]) -> None:
    boto3: Any = _optional_module("boto3", "boto3", "s3")
    botocore_exceptions: Any = importlib.import_module("botocore.exceptions")
    # Explicit, so the credentials secret's keys win over whatever the pod's environment or metadata holds.
    settings = {
        "endpoint_url": env.get("AWS_ENDPOINT_URL"),
        "aws_access_key_id": env.get("AWS_ACCESS_KEY_ID"),
        "aws_secret_access_key": env.get("AWS_SECRET_ACCESS_KEY"),
        "aws_session_token": env.get("AWS_SESSION_TOKEN"),
        "region_name": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
    }
    client = boto3.client("s3", **{key: value for key, value in settings.items() if value})
    done = 0

    def callback(chunk: int) -> None:
        nonlocal done
        done += chunk
        if options.progress is not None:
            options.progress(source.display, done, None)

    try:
        client.download_file(source.location, source.path, str(target), Callback=callback)
    except botocore_exceptions.ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NoSuchBucket"):
            raise ModelError("ModelNotFound", f"{source.display}: {code}") from None
        if code in ("403", "AccessDenied"):
            raise ModelError("FetchUnauthorized", f"{source.display}: access denied") from None
        raise ModelError("FetchFailed", f"{source.display}: {error}") from None
    except botocore_exceptions.BotoCoreError as error:
        raise ModelError("FetchFailed", f"{source.display}: {error}") from None


def _download_gs(source: ModelSource, target: Path, options: FetchOptions, env: Mapping[str, str]) -> None:
    storage: Any = _optional_module("google.cloud.storage", "google-cloud-storage", "gs")
    if env.get("GOOGLE_APPLICATION_CREDENTIALS_JSON"):
        try:
            info = json.loads(env["GOOGLE_APPLICATION_CREDENTIALS_JSON"])
        except json.JSONDecodeError:
            raise ModelError("FetchUnauthorized", "GOOGLE_APPLICATION_CREDENTIALS_JSON is not JSON") from None
        client = storage.Client.from_service_account_info(info)
    else:
        client = storage.Client()
    blob = client.bucket(source.location).blob(source.path)
    try:
        blob.download_to_filename(str(target))
    except Exception as error:
        name = type(error).__name__
        if name == "NotFound":
            raise ModelError("ModelNotFound", f"{source.display}: not found") from None
        if name == "Forbidden":
            raise ModelError("FetchUnauthorized", f"{source.display}: access denied") from None
        raise ModelError("FetchFailed", f"{source.display}: {name}: {error}") from None
    if options.progress is not None:
        size = target.stat().st_size
        options.progress(source.display, size, size)
