"""Model stores on loopback that speak the real protocols: S3 (moto's server, with injected faults), a
Hugging Face Hub that answers its resolve endpoint the way huggingface.co does, and an HTTPS store that
serves presigned URLs.

The Hub's behaviour, as huggingface_hub relies on it: `HEAD|GET /{repo}/resolve/{revision}/{path}` answers a
file kept in git with 200, `ETag` (the git blob id) and `X-Repo-Commit`; a file kept in LFS with a 302 to a
CDN URL carrying a presigned query string, `X-Linked-Etag` (the file's SHA-256), `X-Linked-Size` and
`X-Repo-Commit`; a renamed repository with a relative 307 to its new name; an unknown or private repository
with 401 `X-Error-Code: RepoNotFound` (404 for a valid token), a gated one with 401 `GatedRepo`, an unknown
revision or file with 404 `RevisionNotFound` / `EntryNotFound`.
"""

from __future__ import annotations

import hashlib
import http.server
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CDN_SIGNATURE = "X-Amz-Signature=cdn-secret-0d1e2f"


@dataclass
class HubRepo:
    files: dict[str, bytes]  # path -> content
    lfs: set[str] = field(default_factory=set)  # paths kept in LFS (served through the CDN)
    revisions: tuple[str, ...] = ("main",)
    token: str | None = None  # required when set (a private or gated repository)
    gated: bool = False
    moved_to: str | None = None  # a renamed repository: ORG/NAME it redirects to
    cdn_location: str | None = None  # where LFS files redirect instead of the CDN (a hostile Hub mirror)


@dataclass
class Request:
    server: str  # hub or cdn
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FakeHub:
    repos: dict[str, HubRepo] = field(default_factory=dict)
    #: path (without query) -> statuses answered before the real answer, one per request
    failures: dict[str, list[int]] = field(default_factory=dict)
    #: CDN blobs (by SHA-256) served with other bytes than their digest names
    corrupt: set[str] = field(default_factory=set)
    requests: list[Request] = field(default_factory=list)
    endpoint: str = ""
    cdn: str = ""

    def blobs(self) -> dict[str, bytes]:
        return {
            hashlib.sha256(content).hexdigest(): content
            for repo in self.repos.values()
            for path, content in repo.files.items()
            if path in repo.lfs
        }


def _serve(handler: type[http.server.BaseHTTPRequestHandler]) -> tuple[http.server.ThreadingHTTPServer, str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    hub: FakeHub
    name: str

    def log_message(self, *args: object) -> None:
        pass

    def answer(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        self.handle_request()

    def do_HEAD(self) -> None:
        self.handle_request()

    def handle_request(self) -> None:
        path = urlsplit(self.path).path
        headers = {key.title(): value for key, value in self.headers.items()}
        self.hub.requests.append(Request(self.name, self.command, self.path, headers))
        if queue := self.hub.failures.get(path):
            self.answer(queue.pop(0), {"Retry-After": "0"})
            return
        self.respond(path, urlsplit(self.path).query)

    def respond(self, path: str, query: str) -> None:
        raise NotImplementedError


class _HubHandler(_Handler):
    name = "hub"

    def respond(self, path: str, query: str) -> None:
        error = {"X-Repo-Commit": COMMIT}
        parts = path.lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            self.answer(404, {"X-Error-Code": "RepoNotFound"})
            return
        repo_id, revision, file = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        repo = self.hub.repos.get(repo_id)
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if repo is not None and repo.moved_to:
            self.answer(307, {"Location": "/" + "/".join([repo.moved_to, *parts[2:]])})
            return
        if repo is None or (repo.token and token != repo.token and not repo.gated):
            # The Hub does not tell a private repository from a missing one.
            self.answer(404 if token else 401, {"X-Error-Code": "RepoNotFound"})
            return
        if repo.token and token != repo.token:
            self.answer(401, {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to this repo is gated"})
            return
        if revision not in repo.revisions:
            self.answer(404, {"X-Error-Code": "RevisionNotFound"})
            return
        if file not in repo.files:
            self.answer(404, error | {"X-Error-Code": "EntryNotFound"})
            return
        content = repo.files[file]
        if file in repo.lfs:
            digest = hashlib.sha256(content).hexdigest()
            self.answer(
                302,
                {
                    "Location": repo.cdn_location or f"{self.hub.cdn}/{digest}?{CDN_SIGNATURE}",
                    "X-Repo-Commit": COMMIT,
                    "X-Linked-Etag": f'"{digest}"',
                    "X-Linked-Size": str(len(content)),
                    "ETag": f'W/"{hashlib.sha1(content).hexdigest()}"',
                },
            )
            return
        blob = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
        self.answer(200, {"X-Repo-Commit": COMMIT, "ETag": f'"{blob}"'}, content)


class _CdnHandler(_Handler):
    name = "cdn"

    def respond(self, path: str, query: str) -> None:
        digest = path.lstrip("/")
        content = self.hub.blobs().get(digest)
        if content is None or CDN_SIGNATURE not in query:
            self.answer(403, {}, b"<Error><Code>AccessDenied</Code></Error>")
            return
        if digest in self.hub.corrupt:
            content = bytes(reversed(content))
        self.answer(200, {"ETag": f'"{digest}"'}, content)


def running_hub(hub: FakeHub) -> Iterator[FakeHub]:
    """Serve `hub` (its Hub endpoint and its CDN) for as long as the generator is suspended."""
    handlers = [type(f"Bound{h.__name__}", (h,), {"hub": hub}) for h in (_HubHandler, _CdnHandler)]
    (hub_server, hub.endpoint), (cdn_server, hub.cdn) = (_serve(h) for h in handlers)
    try:
        yield hub
    finally:
        for server in (hub_server, cdn_server):
            server.shutdown()
            server.server_close()


@dataclass
class S3Faults:
    """What the fault-injecting layer in front of moto does to requests whose path ends with a key."""

    #: key suffix -> statuses answered (as S3 XML errors) before moto answers, one per request
    statuses: dict[str, list[int]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # method, path, headers


_S3_ERRORS = {500: "InternalError", 503: "SlowDown", 403: "AccessDenied"}


def _faulty(app: Callable[..., Iterable[bytes]], faults: S3Faults) -> Callable[..., Iterable[bytes]]:
    def middleware(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        headers = {
            k[5:].replace("_", "-").title(): str(v) for k, v in environ.items() if k.startswith("HTTP_")
        }
        faults.requests.append((environ["REQUEST_METHOD"], path, headers))
        for suffix, queue in faults.statuses.items():
            if path.endswith(suffix) and queue:
                status = queue.pop(0)
                code = _S3_ERRORS.get(status, "InternalError")
                body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
                start_response(f"{status} {code}", [("Content-Type", "application/xml")])
                return [body]
        return app(environ, start_response)

    return middleware


@dataclass
class S3Server:
    endpoint: str
    faults: S3Faults


def running_s3() -> Iterator[S3Server]:
    """moto's S3 server on loopback (the werkzeug app `moto_server` runs), behind a fault-injecting layer."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    class QuietHandler(MotoRequestHandler):
        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    faults = S3Faults()
    app = _faulty(DomainDispatcherApplication(create_backend_app), faults)
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield S3Server(f"http://127.0.0.1:{server.server_port}", faults)
    finally:
        server.shutdown()
        thread.join(timeout=10)


@dataclass
class PresignedStore:
    """An HTTPS server handing out files only to presigned URLs (the right X-Amz-Signature)."""

    root: Path
    signature: str
    ca_file: Path
    url: str = ""
    redirects: dict[str, str] = field(default_factory=dict)  # path -> Location of a 302
    requests: list[str] = field(default_factory=list)


def running_presigned_store(store: PresignedStore, certificate: Path, key: Path) -> Iterator[PresignedStore]:
    """Serve `store` over TLS with the given serving pair (its CA is store.ca_file)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            store.requests.append(self.path)
            parts = urlsplit(self.path)
            if f"X-Amz-Signature={store.signature}" not in parts.query.split("&"):
                self.send_response(403)
                self.end_headers()
                return
            if location := store.redirects.get(parts.path):
                self.send_response(302)
                self.send_header("Location", location)
                self.end_headers()
                return
            file = store.root / parts.path.lstrip("/")
            if not file.is_file():
                self.send_response(404)
                self.end_headers()
                return
            data = file.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(certificate), str(key))
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    store.url = f"https://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield store
    finally:
        httpd.shutdown()
        httpd.server_close()
