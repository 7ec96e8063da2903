"""Fetching models: local paths and claims, a real local HTTP server (retries, errors, external data, size
limits, encodings, the address policy), the Hub through huggingface_hub against a local Hub, s3 through boto3
against moto's S3 server, gs through a stand-in for its client library (no local GCS server here).

Store faults (5xx, digests, credentials, the Hub's 401s and redirects): tests/chaos/test_model_storage.py.
"""

from __future__ import annotations

import gzip
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

from nimify.engine.address_policy import AddressPolicy, parse_networks
from nimify.engine.fetch import FetchOptions, fetch_model
from nimify.model.digest import file_sha256
from nimify.model.errors import ModelError
from nimify.model.samples import build_mlp, write_model, write_sample
from tests.stores import FakeHub, HubRepo, S3Server, running_hub, running_s3


@dataclass
class Behaviour:
    """What the test server does: files to serve, failures to inject, requests it saw."""

    root: Path
    failures: dict[str, list[int]] = field(default_factory=dict)  # path -> statuses to answer first
    short: set[str] = field(default_factory=set)  # paths answered with fewer bytes than announced, once
    chunked: set[str] = field(default_factory=set)  # paths answered without a Content-Length
    encoded: dict[str, bytes] = field(default_factory=dict)  # path -> a gzip body sent as Content-Encoding
    redirects: dict[str, str] = field(default_factory=dict)  # path -> Location of a 302
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
            if location := behaviour.redirects.get(path):
                self.send_response(302)
                self.send_header("Location", location)
                self.end_headers()
                return
            if body := behaviour.encoded.get(path):
                self.send_response(200)
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            file = behaviour.root / path.lstrip("/")
            if not file.is_file():
                self.send_response(404)
                self.end_headers()
                return
            data = file.read_bytes()
            self.send_response(200)
            if path in behaviour.chunked:  # HTTP/1.0 style: the body ends when the connection closes
                self.end_headers()
                self.wfile.write(data)
                self.close_connection = True
                return
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


def test_authorization_header_for_https(tmp_path: Path, server: tuple[str, Behaviour]) -> None:
    url, behaviour = server
    write_sample("mlp", behaviour.root)
    fetch_model(f"{url}/mlp.onnx", tmp_path, options=fast(env={"AUTHORIZATION": "Basic dXNlcjpwYXNz"}))
    assert behaviour.requests[0][1]["Authorization"] == "Basic dXNlcjpwYXNz"
    assert behaviour.requests[0][1]["Accept-Encoding"] == "identity"


def test_a_compressed_answer_is_stored_as_sent(tmp_path: Path, server: tuple[str, Behaviour]) -> None:
    # A decompression bomb: 10 MiB of zeros in a 10 KiB gzip stream. Stored as the bytes the server sent, it
    # stays 10 KiB and is refused as what it is (a gzip archive), never inflated on disk.
    url, behaviour = server
    bomb = gzip.compress(b"\0" * (10 << 20))
    behaviour.encoded["/bomb.onnx"] = bomb
    with pytest.raises(ModelError) as error:
        fetch_model(f"{url}/bomb.onnx", tmp_path, options=fast())
    assert error.value.reason == "NotOnnx" and "gzip" in error.value.message
    assert (tmp_path / "bomb.onnx").read_bytes() == bomb


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "chunked"])
def test_an_onnx_file_past_the_protobuf_limit_is_cut_off(
    tmp_path: Path, server: tuple[str, Behaviour], announced: bool
) -> None:
    url, behaviour = server
    (behaviour.root / "big.onnx").write_bytes(b"\x08\x08" + b"\0" * 300_000)
    if not announced:
        behaviour.chunked.add("/big.onnx")
    with pytest.raises(ModelError) as error:
        fetch_model(f"{url}/big.onnx", tmp_path / "dl", options=fast(max_onnx_bytes=100_000))
    assert error.value.reason == "DownloadTooLarge" and "100000 bytes" in error.value.message
    assert not list((tmp_path / "dl").iterdir())


def test_external_data_no_longer_than_its_tensors_declare(
    tmp_path: Path, server: tuple[str, Behaviour]
) -> None:
    url, behaviour = server
    write_sample("mlp", behaviour.root, external_data=True)
    weights = behaviour.root / "mlp.weights"
    declared = weights.stat().st_size
    weights.write_bytes(weights.read_bytes() + b"\0" * 50_000)  # a server that keeps sending
    with pytest.raises(ModelError) as error:
        fetch_model(f"{url}/mlp.onnx", tmp_path / "dl", options=fast())
    assert error.value.reason == "DownloadTooLarge" and f"{declared} bytes" in error.value.message


def test_metadata_address_is_never_contacted(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as error:
        fetch_model("http://169.254.169.254/latest/meta-data/m.onnx", tmp_path, options=fast())
    assert error.value.reason == "FetchAddressDenied"
    assert "169.254.0.0/16" in error.value.message


def test_a_redirect_to_a_denied_address_is_refused(tmp_path: Path, server: tuple[str, Behaviour]) -> None:
    url, behaviour = server
    behaviour.redirects["/m.onnx"] = "http://[fd00:ec2::254]/latest/api/token"
    with pytest.raises(ModelError) as error:
        fetch_model(f"{url}/m.onnx?sig=presigned-secret", tmp_path, options=fast())
    assert error.value.reason == "FetchAddressDenied" and "fd00:ec2::254" in error.value.message
    assert "presigned-secret" not in str(error.value)
    assert [path for path, _ in behaviour.requests] == ["/m.onnx?sig=presigned-secret"]


def test_the_check_runs_after_dns_resolution(tmp_path: Path, server: tuple[str, Behaviour]) -> None:
    url, behaviour = server
    write_sample("mlp", behaviour.root)
    loopback = AddressPolicy(parse_networks(["127.0.0.0/8", "::1/128"]))
    named = url.replace("127.0.0.1", "localhost")
    with pytest.raises(ModelError) as error:
        fetch_model(f"{named}/mlp.onnx", tmp_path, options=fast(address_policy=loopback))
    assert error.value.reason == "FetchAddressDenied"
    assert "localhost resolves to 127.0.0.1" in error.value.message or "::1" in error.value.message
    assert behaviour.requests == []
    # The default policy lets the same download through.
    assert fetch_model(f"{named}/mlp.onnx", tmp_path, options=fast()).path.is_file()


def test_hugging_face_hub_through_huggingface_hub(tmp_path: Path) -> None:
    write_sample("mlp", tmp_path / "src", external_data=True)
    files = {
        "onnx/mlp.onnx": (tmp_path / "src" / "mlp.onnx").read_bytes(),
        "onnx/mlp.weights": (tmp_path / "src" / "mlp.weights").read_bytes(),
    }
    hub = FakeHub({"acme/classifier": HubRepo(files, lfs={"onnx/mlp.weights"}, revisions=("v2",))})
    for _ in running_hub(hub):
        options = fast(env={"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": "hf_abc"})
        fetched = fetch_model("hf://acme/classifier@v2/onnx/mlp.onnx", tmp_path / "dl", options=options)
    assert fetched.source == "hf://acme/classifier@v2/onnx/mlp.onnx"
    assert fetched.path == tmp_path / "dl" / "onnx" / "mlp.onnx"
    assert fetched.external == (tmp_path / "dl" / "onnx" / "mlp.weights",)
    assert fetched.external[0].read_bytes() == files["onnx/mlp.weights"]
    hub_requests = [r for r in hub.requests if r.server == "hub"]
    assert {r.path for r in hub_requests} == {
        "/acme/classifier/resolve/v2/onnx/mlp.onnx",
        "/acme/classifier/resolve/v2/onnx/mlp.weights",
    }
    assert all(r.headers["Authorization"] == "Bearer hf_abc" for r in hub_requests)
    # The token never leaves the Hub: the CDN gets the presigned URL alone.
    assert [r.headers.get("Authorization") for r in hub.requests if r.server == "cdn"] == [None]


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    # No credentials from this machine: no files, no metadata service.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    yield from running_s3()


def s3_env(server: S3Server) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": server.endpoint,
        "AWS_ACCESS_KEY_ID": "AKIATESTKEY",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t-test-key",
        "AWS_REGION": "us-east-1",
    }


def upload(server: S3Server, bucket: str, files: dict[str, bytes]) -> None:
    import boto3

    env = s3_env(server)
    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
    )
    client.create_bucket(Bucket=bucket)
    for key, content in files.items():
        client.put_object(Bucket=bucket, Key=key, Body=content)


def test_s3_through_boto3(tmp_path: Path, s3: S3Server) -> None:
    write_sample("mlp", tmp_path / "src", external_data=True)
    files = {name: (tmp_path / "src" / name).read_bytes() for name in ("mlp.onnx", "mlp.weights")}
    upload(s3, "models-basic", {f"prod/{name}": content for name, content in files.items()})
    env = s3_env(s3)
    fetched = fetch_model("s3://models-basic/prod/mlp.onnx", tmp_path / "dl", options=fast(env=env))
    assert fetched.path == tmp_path / "dl" / "mlp.onnx"
    assert fetched.path.read_bytes() == files["mlp.onnx"]
    assert (tmp_path / "dl" / "mlp.weights").read_bytes() == files["mlp.weights"]
    assert all("AKIATESTKEY" in headers.get("Authorization", "") for _, _, headers in s3.faults.requests)
    with pytest.raises(ModelError) as error:
        fetch_model("s3://models-basic/prod/missing.onnx", tmp_path / "dl", options=fast(env=env))
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
    ("uri", "package"),
    [
        ("s3://b/m.onnx", "boto3"),
        ("gs://b/m.onnx", "google-cloud-storage"),
        ("hf://o/r/m.onnx", "huggingface_hub"),
    ],
)
def test_missing_object_store_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uri: str, package: str
) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    monkeypatch.setitem(sys.modules, "google.cloud.storage", None)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ModelError) as error:
        fetch_model(uri, tmp_path, options=fast())
    assert error.value.reason == "FetcherNotInstalled"
    assert f"pip install {package}" in error.value.message
