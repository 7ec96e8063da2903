"""Model storage under faults: s3:// against moto's S3 server (5xx and their retries, a wrong digest, missing
or refused credentials, an endpoint in a denied range) and hf:// against a Hub on loopback that answers like
huggingface.co (redirects to a presigned CDN URL, relative redirects of a renamed repository, ETags, 401s,
gated repositories, unknown revisions and files, busy servers). No error message carries a secret."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nimify.engine.fetch import FetchOptions, fetch_model
from nimify.model.errors import ModelError
from nimify.model.samples import write_sample
from tests.chaos.report import ChaosReport, Figure
from tests.stores import CDN_SIGNATURE, FakeHub, HubRepo, S3Server, running_hub, running_s3

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

SECRET_KEY = "s3cr3t-chaos-key"
HF_TOKEN = "hf_chaos_token_1a2b"


def fast(**changes: Any) -> FetchOptions:
    return FetchOptions(**{"backoff_seconds": 0, "env": {}, **changes})


def no_secret_in(error: ModelError) -> None:
    text = str(error)
    for secret in (SECRET_KEY, HF_TOKEN, CDN_SIGNATURE):
        assert secret not in text, text


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("model")
    write_sample("mlp", root, external_data=True)
    return {name: (root / name).read_bytes() for name in ("mlp.onnx", "mlp.weights")}


# --- s3:// --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3(model: dict[str, bytes]) -> Iterator[S3Server]:
    with pytest.MonkeyPatch.context() as patch:
        # Nothing from this machine: no credentials files, no instance metadata.
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            patch.delenv(key, raising=False)
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        patch.setenv("AWS_CONFIG_FILE", "/nonexistent")
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        for server in running_s3():
            import boto3

            client = boto3.client("s3", endpoint_url=server.endpoint, **credentials(server))
            client.create_bucket(Bucket="chaos-models")
            for name, content in model.items():
                client.put_object(Bucket="chaos-models", Key=f"v1/{name}", Body=content)
            yield server


def credentials(server: S3Server) -> dict[str, str]:
    return {"aws_access_key_id": "AKIACHAOS", "aws_secret_access_key": SECRET_KEY, "region_name": "us-east-1"}


def s3_env(server: S3Server, **changes: str) -> dict[str, str]:
    env = {
        "AWS_ENDPOINT_URL": server.endpoint,
        "AWS_ACCESS_KEY_ID": "AKIACHAOS",
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": "us-east-1",
    }
    return {key: value for key, value in (env | changes).items() if value}


def test_s3_retries_server_errors(
    tmp_path: Path, s3: S3Server, model: dict[str, bytes], chaos_report: ChaosReport
) -> None:
    started = time.monotonic()
    s3.faults.statuses["v1/mlp.onnx"] = [503, 500]
    s3.faults.statuses["v1/mlp.weights"] = [502]
    before = len(s3.faults.requests)
    fetched = fetch_model(
        "s3://chaos-models/v1/mlp.onnx",
        tmp_path,
        sha256=file_sha256_bytes(model["mlp.onnx"]),
        options=fast(env=s3_env(s3), retries=3),
    )
    assert fetched.path.read_bytes() == model["mlp.onnx"]
    assert fetched.external[0].read_bytes() == model["mlp.weights"]
    seen = s3.faults.requests[before:]
    assert [m for m, p, _ in seen if p.endswith("mlp.onnx")] == ["HEAD", "HEAD", "HEAD", "GET"]
    chaos_report.add(Figure("s3 5xx (503, 500, 502)", 3, 1, "retried, fetched", time.monotonic() - started))


def test_s3_gives_up_with_a_named_error(tmp_path: Path, s3: S3Server) -> None:
    s3.faults.statuses["v1/mlp.onnx"] = [500] * 3
    with pytest.raises(ModelError) as error:
        fetch_model("s3://chaos-models/v1/mlp.onnx", tmp_path / "dl", options=fast(env=s3_env(s3), retries=2))
    assert error.value.reason == "FetchFailed"
    assert error.value.message == "s3://chaos-models/v1/mlp.onnx: HTTP 500 (after 3 attempts)"
    assert not s3.faults.statuses["v1/mlp.onnx"]
    assert not [p for p in (tmp_path / "dl").rglob("*") if p.is_file()]  # nothing half-written left
    no_secret_in(error.value)


def test_s3_wrong_digest(tmp_path: Path, s3: S3Server) -> None:
    with pytest.raises(ModelError) as error:
        fetch_model("s3://chaos-models/v1/mlp.onnx", tmp_path, sha256="0" * 64, options=fast(env=s3_env(s3)))
    assert error.value.reason == "DigestMismatch" and "0000000000" in error.value.message


def test_s3_missing_credentials(tmp_path: Path, s3: S3Server) -> None:
    before = len(s3.faults.requests)
    env = s3_env(s3, AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="")
    with pytest.raises(ModelError) as error:
        fetch_model("s3://chaos-models/v1/mlp.onnx", tmp_path, options=fast(env=env))
    assert error.value.reason == "FetchUnauthorized"
    assert "no AWS credentials" in error.value.message and "credentialsSecret" in error.value.message
    assert len(s3.faults.requests) == before  # refused before any request: nothing unsigned was sent


def test_s3_refused_credentials(tmp_path: Path, s3: S3Server) -> None:
    s3.faults.statuses["v1/mlp.onnx"] = [403]
    with pytest.raises(ModelError) as error:
        fetch_model("s3://chaos-models/v1/mlp.onnx", tmp_path, options=fast(env=s3_env(s3)))
    assert error.value.reason == "FetchUnauthorized" and "access denied" in error.value.message
    no_secret_in(error.value)


def test_s3_endpoint_in_a_denied_range(tmp_path: Path, s3: S3Server) -> None:
    before = len(s3.faults.requests)
    env = s3_env(s3, AWS_ENDPOINT_URL="http://169.254.169.254:80")
    with pytest.raises(ModelError) as error:
        fetch_model("s3://chaos-models/v1/mlp.onnx", tmp_path, options=fast(env=env))
    assert error.value.reason == "FetchAddressDenied"
    assert len(s3.faults.requests) == before


def file_sha256_bytes(content: bytes) -> str:
    import hashlib

    return hashlib.sha256(content).hexdigest()


# --- hf:// --------------------------------------------------------------------------------------------------


@pytest.fixture
def hub(model: dict[str, bytes]) -> Iterator[FakeHub]:
    files = {f"onnx/{name}": content for name, content in model.items()}
    repos = {
        "acme/public": HubRepo(files, lfs={"onnx/mlp.weights"}, revisions=("main", "v2")),
        "acme/lfs-model": HubRepo(files, lfs=set(files)),
        "acme/private": HubRepo(files, token=HF_TOKEN),
        "acme/gated": HubRepo(files, token=HF_TOKEN, gated=True),
        "acme/old-name": HubRepo({}, moved_to="acme/public"),
        "acme/hostile": HubRepo(
            files, lfs=set(files), cdn_location="http://169.254.169.254/latest/meta-data"
        ),
    }
    yield from running_hub(FakeHub(repos))


def hf_env(hub: FakeHub, token: str | None = None) -> dict[str, str]:
    return {"HF_ENDPOINT": hub.endpoint} | ({"HF_TOKEN": token} if token else {})


def hf_error(hub: FakeHub, uri: str, tmp_path: Path, token: str | None = None, **options: Any) -> ModelError:
    with pytest.raises(ModelError) as error:
        fetch_model(uri, tmp_path / "dl", options=fast(env=hf_env(hub, token), **options))
    no_secret_in(error.value)
    return error.value


def test_hub_lfs_files_come_from_the_cdn_checked_against_their_etag(
    tmp_path: Path, hub: FakeHub, model: dict[str, bytes]
) -> None:
    fetched = fetch_model("hf://acme/lfs-model/onnx/mlp.onnx", tmp_path, options=fast(env=hf_env(hub)))
    assert fetched.path.read_bytes() == model["mlp.onnx"]
    cdn = [r for r in hub.requests if r.server == "cdn"]
    assert len(cdn) == 2 and all(CDN_SIGNATURE in r.path for r in cdn)


def test_hub_etag_mismatch(tmp_path: Path, hub: FakeHub, model: dict[str, bytes]) -> None:
    hub.corrupt.add(file_sha256_bytes(model["mlp.onnx"]))
    error = hf_error(hub, "hf://acme/lfs-model/onnx/mlp.onnx", tmp_path)
    assert error.reason == "DigestMismatch" and "the Hub's ETag says" in error.message
    assert not (tmp_path / "dl" / "onnx" / "mlp.onnx").exists()


def test_hub_private_repository_without_a_token(tmp_path: Path, hub: FakeHub) -> None:
    error = hf_error(hub, "hf://acme/private/onnx/mlp.onnx", tmp_path)
    assert error.reason == "FetchUnauthorized" and "HTTP 401" in error.message and "HF_TOKEN" in error.message


def test_hub_private_repository_with_its_token(tmp_path: Path, hub: FakeHub) -> None:
    options = fast(env=hf_env(hub, HF_TOKEN))
    assert fetch_model("hf://acme/private/onnx/mlp.onnx", tmp_path, options=options).path.is_file()


def test_hub_missing_repository_with_a_token(tmp_path: Path, hub: FakeHub) -> None:
    error = hf_error(hub, "hf://acme/nothing/onnx/mlp.onnx", tmp_path, token=HF_TOKEN)
    assert error.reason == "ModelNotFound" and "no such repository" in error.message


def test_hub_gated_repository(tmp_path: Path, hub: FakeHub) -> None:
    error = hf_error(hub, "hf://acme/gated/onnx/mlp.onnx", tmp_path, token="hf_someone_else")
    assert error.reason == "FetchUnauthorized" and "gated" in error.message


def test_hub_unknown_revision_and_file(tmp_path: Path, hub: FakeHub) -> None:
    revision = hf_error(hub, "hf://acme/public@v9/onnx/mlp.onnx", tmp_path)
    assert revision.reason == "ModelNotFound" and "no such revision" in revision.message
    entry = hf_error(hub, "hf://acme/public/onnx/other.onnx", tmp_path)
    assert entry.reason == "ModelNotFound" and "no such file" in entry.message


def test_hub_renamed_repository_is_followed(tmp_path: Path, hub: FakeHub, model: dict[str, bytes]) -> None:
    fetched = fetch_model("hf://acme/old-name@v2/onnx/mlp.onnx", tmp_path, options=fast(env=hf_env(hub)))
    assert fetched.path.read_bytes() == model["mlp.onnx"]
    assert [r.path for r in hub.requests if r.server == "hub"][:2] == [
        "/acme/old-name/resolve/v2/onnx/mlp.onnx",
        "/acme/public/resolve/v2/onnx/mlp.onnx",
    ]


def test_hub_busy_servers_are_retried(tmp_path: Path, hub: FakeHub, chaos_report: ChaosReport) -> None:
    started = time.monotonic()
    hub.failures["/acme/public/resolve/main/onnx/mlp.onnx"] = [503, 429]
    hub.failures["/acme/public/resolve/main/onnx/mlp.weights"] = [502]
    fetched = fetch_model("hf://acme/public/onnx/mlp.onnx", tmp_path, options=fast(env=hf_env(hub)))
    assert fetched.path.is_file() and fetched.external[0].is_file()
    chaos_report.add(Figure("hub 5xx/429", 3, 1, "retried, fetched", time.monotonic() - started))
    hub.failures["/acme/public/resolve/main/onnx/mlp.onnx"] = [500] * 3
    error = hf_error(hub, "hf://acme/public/onnx/mlp.onnx", tmp_path, retries=2)
    assert error.reason == "FetchFailed" and "HTTP 500 (after 3 attempts)" in error.message


def test_hub_redirect_into_a_denied_range(tmp_path: Path, hub: FakeHub) -> None:
    error = hf_error(hub, "hf://acme/hostile/onnx/mlp.onnx", tmp_path)
    assert error.reason == "FetchAddressDenied" and "169.254.169.254" in error.message
    assert not [r for r in hub.requests if r.server == "cdn"]
