"""Fetching a model (and its external data files, or a file that goes with it) to local disk, with retries,
progress, digest checks and the address policy.

Each store through the client its users use: https:// through httpx2, hf:// through huggingface_hub, s3://
through boto3, gs:// through google-cloud-storage. The object-store and Hub clients are optional dependencies
(the `fetch` extra) imported only when a model asks for them, so the toolkit installs without them and says
which package to add when one is needed.

Bytes are stored as the server sent them: identity encoding is asked for and never decoded, so a compressed
response cannot expand on disk (a decompression bomb is a gzip file that fails validation), and no file
grows past what it can be: 2 GiB for an ONNX protobuf, the bytes its tensors declare for external data.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import httpx2

from nimify.engine.address_policy import AddressPolicy
from nimify.engine.checked_http import checked_client
from nimify.engine.sources import DEFAULT_HF_ENDPOINT, ModelSource, hf_url, parse_uri, pvc_path
from nimify.model.digest import file_sha256, verify_sha256
from nimify.model.errors import ModelError
from nimify.model.external_data import ExternalRef, external_refs, safe_relative_location
from nimify.model.onnx_file import MAX_PROTOBUF_BYTES, looks_like_plan, read_onnx
from nimify.redaction import redact

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
    http_client: httpx2.Client | None = None
    #: Where downloads may not connect (the operator's modelUriDeniedRanges).
    address_policy: AddressPolicy = field(default_factory=AddressPolicy)
    #: The most a .onnx file may be: a protobuf cannot exceed 2 GiB (weights beyond go to external data).
    max_onnx_bytes: int = MAX_PROTOBUF_BYTES


def fetch_model(
    uri: str, dest_dir: Path, *, sha256: str | None = None, options: FetchOptions | None = None
) -> FetchedModel:
    """Fetch `uri` into `dest_dir` (local and pvc:// files are used in place) and verify its digest."""
    options = options or FetchOptions()
    source = parse_uri(uri)
    limit = options.max_onnx_bytes if source.filename.lower().endswith(".onnx") else None
    path = _fetch_one(source, dest_dir, source.filename, options, limit)
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
    path = _fetch_one(source, dest_dir, source.filename, options, None)
    digest = verify_sha256(path, sha256) if sha256 else file_sha256(path)
    return FetchedModel(path, digest, source.display)


def _declared_end(ref: ExternalRef) -> int | None:
    """Where the bytes a tensor reads from its external file end, when its type says how many it needs."""
    size = ref.length if ref.length is not None else ref.expected_bytes
    return None if size is None else ref.offset + size


def _fetch_external_data(
    source: ModelSource, model_path: Path, dest_dir: Path, options: FetchOptions
) -> tuple[Path, ...]:
    files: dict[str, list[ExternalRef]] = {}
    for ref in external_refs(read_onnx(model_path)):
        # Checked before anything is requested: a hostile location must not choose what gets downloaded where.
        location = safe_relative_location(ref.location, f"{model_path.name}: tensor '{ref.tensor}'")
        files.setdefault(str(location), []).append(ref)
    fetched = []
    for relative, refs in files.items():
        # A file never needs to be longer than the tensors reading it say; strings leave it unbounded.
        ends = [_declared_end(ref) for ref in refs]
        limit = None if None in ends else max(end for end in ends if end is not None)
        fetched.append(_fetch_one(source.sibling(relative), dest_dir, relative, options, limit))
    return tuple(fetched)


def _fetch_one(
    source: ModelSource, dest_dir: Path, relative: str, options: FetchOptions, limit: int | None
) -> Path:
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
    env = options.env if options.env is not None else os.environ
    if source.scheme == "hf":
        return _download_hf(source, dest_dir, options, env, limit)
    target = dest_dir / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.scheme == "http":
        headers = {"Authorization": env["AUTHORIZATION"]} if env.get("AUTHORIZATION") else {}
        _download_http(source.location, source.display, target, headers, options, limit)
    elif source.scheme == "s3":
        _download_s3(source, target, options, env)
    elif source.scheme == "gs":
        _download_gs(source, target, options, env)
    else:  # pragma: no cover - parse_uri admits no other scheme
        raise ModelError("InvalidModelUri", f"{source.display}: unsupported scheme")
    _check_size(target, source.display, limit)
    return target


def _too_large(display: str, limit: int) -> ModelError:
    return ModelError(
        "DownloadTooLarge",
        f"{display}: the server sends more than {limit} bytes, more than the file can hold "
        "(an ONNX protobuf is at most 2 GiB; external data no more than its tensors declare)",
    )


def _check_size(path: Path, display: str, limit: int | None) -> None:
    if limit is not None and path.stat().st_size > limit:
        path.unlink()
        raise _too_large(display, limit)


class _RetryableError(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(response: httpx2.Response) -> float | None:
    try:
        return min(float(response.headers["Retry-After"]), 60.0)
    except (KeyError, ValueError):
        return None


def _with_retries(display: str, options: FetchOptions, attempt_once: Callable[[], None]) -> None:
    """Run one download attempt until it succeeds, retrying busy servers and broken connections."""
    last_error = ""
    for attempt in range(options.retries + 1):
        try:
            attempt_once()
            return
        except _RetryableError as error:
            last_error, wait = str(error), error.retry_after
        except (httpx2.TransportError, ConnectionError, TimeoutError) as error:
            last_error, wait = redact(f"{type(error).__name__}: {error}"), None
        except OSError as error:  # the disk, not the network: retrying would not help
            message = f"{display}: cannot store the download: {error.strerror}"
            raise ModelError("FetchFailed", message) from None
        if attempt < options.retries:
            time.sleep(wait if wait is not None else options.backoff_seconds * 2**attempt)
    raise ModelError("FetchFailed", f"{display}: {last_error} (after {options.retries + 1} attempts)")


def _download_http(
    url: str,
    display: str,
    target: Path,
    headers: dict[str, str],
    options: FetchOptions,
    limit: int | None,
) -> None:
    client = options.http_client or checked_client(options.address_policy, timeout=options.timeout_seconds)
    partial = target.with_name(target.name + ".part")
    try:
        _with_retries(
            display,
            options,
            lambda: _stream_to(client, url, display, partial, headers, options.progress, limit),
        )
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
        if options.http_client is None:
            client.close()


def _stream_to(
    client: httpx2.Client,
    url: str,
    display: str,
    partial: Path,
    headers: dict[str, str],
    progress: Progress | None,
    limit: int | None,
) -> None:
    # identity: the bytes on disk are the bytes sent, never a small response inflated.
    with client.stream("GET", url, headers=headers | {"Accept-Encoding": "identity"}) as response:
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
        total = _content_length(response)
        if limit is not None and total is not None and total > limit:
            raise _too_large(display, limit)
        done = 0
        with partial.open("wb") as out:
            for chunk in response.iter_raw(CHUNK):
                done += len(chunk)
                if limit is not None and done > limit:
                    raise _too_large(display, limit)
                out.write(chunk)
                if progress is not None:
                    progress(display, done, total)
        if total is not None and done != total:
            raise _RetryableError(f"connection closed after {done} of {total} bytes")


def _content_length(response: httpx2.Response) -> int | None:
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, ValueError):
        return None


def _optional_module(name: str, package: str, scheme: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ModelError(
            "FetcherNotInstalled",
            f"{scheme}:// models need the {package} package: pip install {package} (or nimify[fetch])",
        ) from None


def _model_error_in(error: BaseException) -> ModelError | None:
    """A ModelError (the address policy's refusal) a client library wrapped in its own exception."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ModelError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _download_hf(
    source: ModelSource, dest_dir: Path, options: FetchOptions, env: Mapping[str, str], limit: int | None
) -> Path:
    hub: Any = _optional_module("huggingface_hub", "huggingface_hub", "hf")
    errors: Any = importlib.import_module("huggingface_hub.errors")
    constants: Any = importlib.import_module("huggingface_hub.constants")
    # Xet-backed files would come through hf_xet's own HTTP client, past the address policy; the Hub serves
    # them on the resolve URL too, through the client below.
    constants.HF_HUB_DISABLE_XET = True
    hub.set_client_factory(lambda: checked_client(options.address_policy, timeout=options.timeout_seconds))
    endpoint = env.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT
    # False, not None: only the credentials secret's token, never one saved on the machine.
    token: str | bool = env.get("HF_TOKEN") or False
    display = source.display
    target = dest_dir / source.path
    found: dict[str, Any] = {}

    def attempt() -> None:
        try:
            found["metadata"] = hub.get_hf_file_metadata(
                hf_url(source, endpoint), token=token, timeout=options.timeout_seconds, endpoint=endpoint
            )
            size = found["metadata"].size
            if limit is not None and size is not None and size > limit:
                raise _too_large(display, limit)
            hub.hf_hub_download(
                source.location,
                source.path,
                revision=source.revision,
                endpoint=endpoint,
                token=token,
                local_dir=dest_dir,
                etag_timeout=options.timeout_seconds,
                tqdm_class=_progress_bar(display, options.progress),
            )
        except ModelError:
            raise
        except Exception as error:
            raise _hub_error(error, display, errors) from None

    _with_retries(display, options, attempt)
    _check_size(target, display, limit)
    # The Hub names a stored (LFS) file by its SHA-256: a download that differs is not the file it serves.
    etag = str(found["metadata"].etag or "")
    if len(etag) == 64 and all(c in "0123456789abcdef" for c in etag):
        actual = file_sha256(target)
        if actual != etag:
            target.unlink()
            raise ModelError("DigestMismatch", f"{display}: sha256 is {actual}, the Hub's ETag says {etag}")
    return target


def _hub_error(error: Exception, display: str, errors: Any) -> Exception:
    """huggingface_hub's exception as a ModelError, or a retryable error for busy servers and networks."""
    if (refusal := _model_error_in(error)) is not None:
        return refusal
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    code = response.headers.get("X-Error-Code", "") if response is not None else ""
    if isinstance(error, errors.GatedRepoError):
        return ModelError("FetchUnauthorized", f"{display}: gated repository; HF_TOKEN needs its access")
    if isinstance(error, errors.RevisionNotFoundError):
        return ModelError("ModelNotFound", f"{display}: no such revision")
    if isinstance(error, errors.RemoteEntryNotFoundError):
        return ModelError("ModelNotFound", f"{display}: no such file in the repository")
    if status == 404 and isinstance(error, errors.RepositoryNotFoundError):
        return ModelError("ModelNotFound", f"{display}: no such repository that HF_TOKEN can see")
    if status in (401, 403) or isinstance(error, errors.RepositoryNotFoundError):
        # The Hub answers 401 both for a private repository without a token and for one that does not exist.
        detail = "no such repository, or a private one" if code == "RepoNotFound" else "access denied"
        return ModelError(
            "FetchUnauthorized",
            f"{display}: HTTP {status or 401}, {detail}: check HF_TOKEN in the credentials secret",
        )
    if status in RETRYABLE_STATUS:
        return _RetryableError(f"HTTP {status}", _retry_after(response) if response is not None else None)
    if status is not None:
        return ModelError("FetchFailed", f"{display}: HTTP {status}")
    cause = error.__cause__ or error.__context__
    if isinstance(cause, httpx2.TransportError | ConnectionError | TimeoutError):
        return _RetryableError(redact(f"{type(cause).__name__}: {cause}"))
    if isinstance(error, httpx2.TransportError | ConnectionError | TimeoutError):
        return _RetryableError(redact(f"{type(error).__name__}: {error}"))
    return ModelError("FetchFailed", redact(f"{display}: {type(error).__name__}: {error}"))


def _progress_bar(display: str, progress: Progress | None) -> Any:
    """A tqdm class for huggingface_hub that reports to `progress` and draws nothing."""
    tqdm: Any = importlib.import_module("tqdm").tqdm

    class Reporting(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **(kwargs | {"disable": True}))
            self.done = int(kwargs.get("initial") or 0)
            self.expected = kwargs.get("total")

        def update(self, n: float | None = 1) -> bool | None:
            self.done += int(n or 0)
            if progress is not None:
                progress(display, self.done, self.expected)
            return None

    return Reporting


def _s3_endpoint(env: Mapping[str, str], policy: AddressPolicy) -> str | None:
    """AWS_ENDPOINT_URL, once its host passes the address policy (boto3 opens its own connections, so the
    check happens here, once, before any request)."""
    endpoint = env.get("AWS_ENDPOINT_URL")
    if endpoint:
        parts = urlsplit(endpoint)
        if parts.hostname is None:
            raise ModelError("InvalidModelUri", f"AWS_ENDPOINT_URL {redact(endpoint)} names no host")
        policy.allowed_addresses(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    return endpoint


def _download_s3(source: ModelSource, target: Path, options: FetchOptions, env: Mapping[str, str]) -> None:
    boto3: Any = _optional_module("boto3", "boto3", "s3")
    botocore_config: Any = importlib.import_module("botocore.config")
    botocore_exceptions: Any = importlib.import_module("botocore.exceptions")
    # Explicit, so the credentials secret's keys win over whatever the pod's environment or metadata holds.
    settings = {
        "endpoint_url": _s3_endpoint(env, options.address_policy),
        "aws_access_key_id": env.get("AWS_ACCESS_KEY_ID"),
        "aws_secret_access_key": env.get("AWS_SECRET_ACCESS_KEY"),
        "aws_session_token": env.get("AWS_SESSION_TOKEN"),
        "region_name": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
    }
    # botocore retries throttling, 5xx and broken connections itself ("standard" mode), as often as https.
    config = botocore_config.Config(
        retries={"mode": "standard", "total_max_attempts": options.retries + 1},
        connect_timeout=options.timeout_seconds,
        read_timeout=options.timeout_seconds,
    )
    client = boto3.client("s3", config=config, **{key: value for key, value in settings.items() if value})
    done = 0

    def callback(chunk: int) -> None:
        nonlocal done
        done += chunk
        if options.progress is not None:
            options.progress(source.display, done, None)

    try:
        client.download_file(source.location, source.path, str(target), Callback=callback)
    except botocore_exceptions.NoCredentialsError:
        raise ModelError(
            "FetchUnauthorized",
            f"{source.display}: no AWS credentials: put AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in "
            "model.credentialsSecret (or give the conversion Job a workload identity)",
        ) from None
    except botocore_exceptions.ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("404", "NoSuchKey", "NoSuchBucket"):
            raise ModelError("ModelNotFound", f"{source.display}: {code}") from None
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise ModelError("FetchUnauthorized", f"{source.display}: access denied ({code})") from None
        attempts = error.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) + 1
        named = "" if code == str(status) else f" {code}"  # HEAD errors carry no body, so no code
        raise ModelError(
            "FetchFailed", f"{source.display}: HTTP {status}{named} (after {attempts} attempts)"
        ) from None
    except botocore_exceptions.BotoCoreError as error:
        raise ModelError("FetchFailed", redact(f"{source.display}: {error}")) from None
    finally:
        client.close()


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
        raise ModelError("FetchFailed", redact(f"{source.display}: {name}: {error}")) from None
    if options.progress is not None:
        size = target.stat().st_size
        options.progress(source.display, size, size)
