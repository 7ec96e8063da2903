"""Fetching models: local paths and claims, a real local HTTP server (retries, errors, external data, the Hub
URL pattern), and s3/gs through stand-ins for their optional client libraries."""

from __future__ import annotations

import http.server
import sys
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import pytest

from nimify.engine.fetch import FetchOptions, fetch_model
from nimify.model.digest import file_sha256
from nimify.model.errors import ModelError
from nimify.model.samples import build_mlp, write_model, write_sample


@dataclass
class Behaviour:
    """What the test server does: files to serve, failures to inject, requests it saw."""

    root: Path
    failures: dict[str, list[int]] = field(default_factory=dict)  # path -> statuses to answer first
    short: set[str] = field(default_factory=set)  # paths answered with fewer bytes than announced, once
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Behaviour]]:
    behaviour = Behaviour(tmp_path / "served")
    behaviour.root.mkdir()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            behaviour.requests.append((self.path, dict(self.headers)))
            if queue := behaviour.failures.get(path):
                status = queue.pop(0)
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                return
            file = behaviour.root / path.lstrip("/")
            if not file.is_file():
                self.send_response(404)
                self.end_headers()
                return
            data = file.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if path in behaviour.short:
                behaviour.short.discard(path)
                self.wfile.write(data[: len(data) // 2])
                self.close_connection = True
                return
            self.wfile.write(data)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", behaviour
    httpd.shutdown()
    httpd.server_close()


def fast(**changes: Any) -> FetchOptions:
    return FetchOptions(**{"backoff_seconds": 0, "env": {}, **changes})


def test_local_path_is_used_in_place(tmp_path: Path) -> None:
    model = write_sample("mlp", tmp_path)
    for uri in (str(model), f"file://{model}"):
        fetched = fetch_model(uri, tmp_path / "dl", sha256=file_sha256(model), options=fast())
        assert fetched.path == model
    assert not (tmp_path / "dl").exists()


def test_pvc_uri_maps_to_the_claims_mount(tmp_path: Path) -> None:
    write_sample("mlp", tmp_path / "mounts" / "models" / "team")
    fetched = fetch_model(
        "pvc://models/team/mlp.onnx", tmp_path / "dl", options=fast(pvc_root=tmp_path / "mounts")
    )
    assert fetched.path == (tmp_path / "mounts" / "models" / "team" / "mlp.onnx").resolve()


def test_pvc_symlink_out_of_the_claim_is_refused(tmp_path: Path) -> None:
    write_sample("mlp", tmp_path / "elsewhere")
    (tmp_path / "mounts" / "models").mkdir(parents=True)
    (tmp_path / "mounts" / "models" / "mlp.onnx").symlink_to(tmp_path / "elsewhere" / "mlp.onnx")
    with pytest.raises(ModelError) as error:
        fetch_model("pvc://models/mlp.onnx", tmp_path / "dl", options=fast(pvc_root=tmp_path / "mounts"))
    assert error.value.reason == "InvalidModelUri"


def test_download_with_progress_and_digest(tmp_path: Path, server: tuple[str, Behaviour]) -> None:
    url, behaviour = server
    model = write_sample("mlp", behaviour.root)
    seen: list[tuple[str, int, int | None]] = []
    fetched = fetch_model(
        f"{url}/mlp.onnx?X-Amz-Signature=secret",
        tmp_path,
        sha256=file_sha256(model),
        options=fast(progress=lambda *a: seen.append(a)),
    )
    assert fetched.path.read_bytes() == model.read_bytes()
    assert seen[-1][1:] == (model.stat().st_size, model.stat().st_size)
    assert "secret" not in fetched.source and fetched.source.endswith("/mlp.onnx")


def test_retries_on_busy_server(tmp_path: Path, server: tuple[str, Behaviour]) -> None:
    url, behaviour = server
    write_sample("mlp", behaviour.root)
    behaviour.failures["/mlp.onnx"] = [503, 429, 502]
    behaviour.short.add("/mlp.onnx")
    fetched = fetch_model(f"{url}/mlp.onnx", tmp_path, options=fast(retries=4))
    assert fetched.path.stat().st_size == (behaviour.root / "mlp.onnx").stat().st_size
    assert len(behaviour.requests) == 5


def test_gives_up_after_the_retries(tmp_path: Path, server: tuple[str, Behaviour]) -> None:
    url, behaviour = server
    behaviour.failures["/mlp.onnx"] = [500] * 3
    with pytest.raises(ModelError) as error:
        fetch_model(f"{url}/mlp.onnx", tmp_path / "dl", options=fast(retries=2))
    assert error.value.reason == "FetchFailed"
    assert "HTTP 500 (after 3 attempts)" in error.value.message
    assert not list((tmp_path / "dl").iterdir())  # no partial file left


@pytest.mark.parametrize(
    ("status", "reason"),
    [(404, "ModelNotFound"), (401, "FetchUnauthorized"), (403, "FetchUnauthorized"), (400, "FetchFailed")],
)
def test_http_errors_are_named(
    tmp_path: Path, server: tuple[str, Behaviour], status: int, reason: str
) -> None:
    url, behaviour = server
    behaviour.failures["/model.onnx"] = [status]
    with pytest.raises(ModelError) as error:
        fetch_model(f"{url}/model.onnx", tmp_path, options=fast())
    assert error.value.reason == reason
    assert len(behaviour.requests) == 1  # client errors are not retried


def test_connection_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as error:
        fetch_model("http://127.0.0.1:9/model.onnx", tmp_path, options=fast(retries=1))
    assert error.value.reason == "FetchFailed" and "ConnectError" in error.value.message


def test_digest_mismatch(tmp_path: Path, server: tuple[str, Behaviour]) -> None:
    url, behaviour = server
    write_sample("mlp", behaviour.root)
    with pytest.raises(ModelError) as error:
        fetch_model(f"{url}/mlp.onnx", tmp_path, sha256="sha256:" + "ab" * 32, options=fast())
    assert error.value.reason == "DigestMismatch"
    assert "abab" in error.value.message


def test_external_data_comes_along(tmp_path: Path, server: tuple[str, Behaviour]) -> None:
    url, behaviour = server
    write_sample("mlp", behaviour.root / "v1", external_data=True)
    fetched = fetch_model(f"{url}/v1/mlp.onnx", tmp_path, options=fast())
    assert [p.name for p in fetched.external] == ["mlp.weights"]
    assert (tmp_path / "mlp.weights").read_bytes() == (behaviour.root / "v1" / "mlp.weights").read_bytes()


def test_hostile_external_location_is_never_requested(tmp_path: Path, server: tuple[str, Behaviour]) -> None:
    url, behaviour = server
    path = write_model(build_mlp(), behaviour.root / "m.onnx", external_data="w.bin")
    model = onnx.load_model(str(path), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../../etc/passwd"
    onnx.save_model(model, str(path))
    with pytest.raises(ModelError) as error:
        fetch_model(f"{url}/m.onnx", tmp_path / "dl", options=fast())
    assert error.value.reason == "ExternalDataPathEscapes"
    assert [request for request, _ in behaviour.requests] == ["/m.onnx"]


def test_hugging_face_resolve_url_and_token(tmp_path: Path, server: tuple[str, Behaviour]) -> None:
    url, behaviour = server
    write_sample("mlp", behaviour.root / "acme" / "classifier" / "resolve" / "v2" / "onnx")
    options = fast(env={"HF_ENDPOINT": url, "HF_TOKEN": "hf_abc"})
    fetched = fetch_model("hf://acme/classifier@v2/onnx/mlp.onnx", tmp_path, options=options)
    assert fetched.path.is_file() and fetched.source == "hf://acme/classifier@v2/onnx/mlp.onnx"
    path, headers = behaviour.requests[0]
    assert path == "/acme/classifier/resolve/v2/onnx/mlp.onnx"
    assert headers["Authorization"] == "Bearer hf_abc"


def test_authorization_header_for_https(tmp_path: Path, server: tuple[str, Behaviour]) -> None:
    url, behaviour = server
    write_sample("mlp", behaviour.root)
    fetch_model(f"{url}/mlp.onnx", tmp_path, options=fast(env={"AUTHORIZATION": "Basic dXNlcjpwYXNz"}))
    assert behaviour.requests[0][1]["Authorization"] == "Basic dXNlcjpwYXNz"


class FakeBoto3:
    """boto3's client("s3").download_file, serving files from a folder laid out as bucket/key."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.settings: dict[str, Any] = {}

    def module(self) -> tuple[types.ModuleType, types.ModuleType]:
        boto3 = types.ModuleType("boto3")
        exceptions = types.ModuleType("botocore.exceptions")

        class ClientError(Exception):
            def __init__(self, code: str) -> None:
                super().__init__(code)
                self.response = {"Error": {"Code": code}}

        class BotoCoreError(Exception):
            pass

        exceptions.ClientError, exceptions.BotoCoreError = ClientError, BotoCoreError  # type: ignore[attr-defined]
        fake = self

        class Client:
            def download_file(self, bucket: str, key: str, target: str, Callback: Any = None) -> None:  # noqa: N803
                source = fake.root / bucket / key
                if not source.is_file():
                    raise ClientError("404")
                data = source.read_bytes()
                Path(target).write_bytes(data)
                if Callback is not None:
                    Callback(len(data))

        def client(service: str, **settings: Any) -> Client:
            assert service == "s3"
            fake.settings = settings
            return Client()

        boto3.client = client  # type: ignore[attr-defined]
        return boto3, exceptions


def test_s3_through_boto3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeBoto3(tmp_path / "buckets")
    write_sample("mlp", tmp_path / "buckets" / "models" / "prod", external_data=True)
    boto3, exceptions = fake.module()
    monkeypatch.setitem(sys.modules, "boto3", boto3)
    monkeypatch.setitem(sys.modules, "botocore", types.ModuleType("botocore"))
    monkeypatch.setitem(sys.modules, "botocore.exceptions", exceptions)
    env = {
        "AWS_ACCESS_KEY_ID": "AKIA",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t",
        "AWS_ENDPOINT_URL": "http://minio:9000",
    }
    fetched = fetch_model("s3://models/prod/mlp.onnx", tmp_path / "dl", options=fast(env=env))
    assert fetched.path == tmp_path / "dl" / "mlp.onnx"
    assert (tmp_path / "dl" / "mlp.weights").is_file()
    assert fake.settings == {
        "endpoint_url": "http://minio:9000",
        "aws_access_key_id": "AKIA",
        "aws_secret_access_key": "s3cr3t",
    }
    with pytest.raises(ModelError) as error:
        fetch_model("s3://models/prod/missing.onnx", tmp_path / "dl", options=fast(env=env))
    assert error.value.reason == "ModelNotFound"


def test_gs_through_google_cloud_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_sample("mlp", tmp_path / "buckets" / "models")
    used: dict[str, Any] = {}
    storage = types.ModuleType("google.cloud.storage")

    class Blob:
        def __init__(self, bucket: str, name: str) -> None:
            self.source = tmp_path / "buckets" / bucket / name

        def download_to_filename(self, target: str) -> None:
            Path(target).write_bytes(self.source.read_bytes())

    class Client:
        def __init__(self) -> None:
            used["client"] = "default"

        @classmethod
        def from_service_account_info(cls, info: dict[str, Any]) -> Client:
            used["info"] = info
            return cls.__new__(cls)

        def bucket(self, name: str) -> Any:
            return types.SimpleNamespace(blob=lambda key: Blob(name, key))

    storage.Client = Client  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "google.cloud.storage", storage)
    options = fast(env={"GOOGLE_APPLICATION_CREDENTIALS_JSON": '{"type": "service_account"}'})
    fetched = fetch_model("gs://models/mlp.onnx", tmp_path / "dl", options=options)
    assert fetched.path.read_bytes() == (tmp_path / "buckets" / "models" / "mlp.onnx").read_bytes()
    assert used == {"info": {"type": "service_account"}}


@pytest.mark.parametrize(
    ("uri", "package"), [("s3://b/m.onnx", "boto3"), ("gs://b/m.onnx", "google-cloud-storage")]
)
def test_missing_object_store_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uri: str, package: str
) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    monkeypatch.setitem(sys.modules, "google.cloud.storage", None)
    with pytest.raises(ModelError) as error:
        fetch_model(uri, tmp_path, options=fast())
    assert error.value.reason == "FetcherNotInstalled"
    assert f"pip install {package}" in error.value.message
