"""Model images against a real registry (the distribution registry, tests/registry.py): what `nimify build`
pushes, what the operator reads of it, what the init container pulls, and each refusal."""

from __future__ import annotations

import base64
import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from nimify.api import EngineRecord
from nimify.engine import model_image
from nimify.engine.address_policy import AddressPolicy, parse_networks
from nimify.engine.model_image import Credentials, ImageReference, RegistryClient
from nimify.model.errors import ModelError
from nimify_devcluster.registry import LocalRegistry
from tests.registry import registry_fixture

DIGEST = "sha256:" + "a" * 64
LABELS = {
    model_image.FORMAT: "1",
    model_image.CACHE_KEY: "k" * 64,
    model_image.BACKEND: "onnxruntime",
    model_image.MAX_BATCH_SIZE: "8",
    model_image.SIGNATURE: json.dumps(
        {
            "inputs": [{"name": "input", "dtype": "FLOAT", "shape": [-1, 16]}],
            "outputs": [{"name": "logits", "dtype": "FLOAT", "shape": [-1, 4]}],
        }
    ),
}


@pytest.mark.parametrize(
    ("uri", "parts"),
    [
        ("oci://registry.example.com/models/mlp:v1", ("registry.example.com", "models/mlp", "v1", None)),
        (f"oci://10.0.0.1:5000/a/b/c@{DIGEST}", ("10.0.0.1:5000", "a/b/c", None, DIGEST)),
        (f"oci://r.io/m:v2@{DIGEST}", ("r.io", "m", "v2", DIGEST)),
        ("r.io/m:v2", ("r.io", "m", "v2", None)),
    ],
)
def test_references_parse(uri: str, parts: tuple[str, str, str | None, str | None]) -> None:
    reference = ImageReference.parse(uri)
    assert (reference.registry, reference.repository, reference.tag, reference.digest) == parts
    assert str(ImageReference.parse(str(reference))) == str(reference)


@pytest.mark.parametrize(
    "uri",
    [
        "oci://r.io/models/mlp",
        "oci://r.io/Models/mlp:v1",
        "oci://r.io/m@sha256:abc",
        "oci://r.io/../x:v1",
        "oci://:v1",
    ],
)
def test_references_without_a_tag_or_digest_or_malformed_are_refused(uri: str) -> None:
    with pytest.raises(ModelError) as refused:
        ImageReference.parse(uri)
    assert refused.value.reason == "ModelImageInvalid"


def test_credentials_come_from_docker_configs_by_registry_host() -> None:
    auth = base64.b64encode(b"alice:s3cret:with:colons").decode()
    documents = [
        {"auths": {"other.io": {"auth": base64.b64encode(b"bob:x").decode()}}},
        {"auths": {"https://r.io/v1/": {"auth": auth}}},
        {"auths": {"plain.io": {"username": "carol", "password": "pw"}}},
    ]
    assert model_image.credentials_for("r.io", documents) == Credentials("alice", "s3cret:with:colons")
    assert model_image.credentials_for("plain.io", documents) == Credentials("carol", "pw")
    assert model_image.credentials_for("nowhere.io", documents) is None


def _model_folder(root: Path, weights: bytes = b"\x01" * 4096) -> Path:
    folder = root / "mlp"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.onnx").write_bytes(weights)
    (folder / "config.pbtxt").write_text('name: "mlp"\n')
    return folder


def test_packing_is_reproducible_and_holds_the_model_folder(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path)
    first = model_image.pack_model(folder, tmp_path / "a.tar.gz")
    (folder / "1" / "model.onnx").touch()  # a new mtime changes nothing
    second = model_image.pack_model(folder, tmp_path / "b.tar.gz")
    assert first.digest == second.digest
    assert first.digest == "sha256:" + hashlib.sha256((tmp_path / "a.tar.gz").read_bytes()).hexdigest()
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == ["model", "model/1", "model/1/model.onnx", "model/config.pbtxt"]
    assert all(m.uid == 0 and m.mtime == 0 for m in members.values())
    config = model_image.image_config(LABELS, first)
    assert config["rootfs"]["diff_ids"] == [first.diff_id]
    assert config["config"]["Labels"][model_image.BACKEND] == "onnxruntime"


def test_labels_describe_the_engine_record(tmp_path: Path) -> None:
    document = model_image.engine_document(LABELS, f"oci://r.io/m:v1@{DIGEST}")
    record = EngineRecord.model_validate(document)
    assert record.engine.cache_key == "k" * 64
    assert record.engine.max_batch_size == 8
    assert record.engine.location == f"oci://r.io/m:v1@{DIGEST}"
    assert [t.name for t in record.signature.inputs] == ["input"]


registry = registry_fixture()


private = registry_fixture(users={"alice": "s3cret"})


def test_a_pushed_image_resolves_to_its_digest_and_pulls_back_checked(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    client = RegistryClient(registry.address, plain_http=True)
    reference = ImageReference.parse(f"oci://{registry.address}/models/mlp:v1")
    digest = client.push(reference, _model_folder(tmp_path), LABELS)
    resolved = client.resolve(reference)
    assert resolved.digest == digest
    assert resolved.labels == LABELS
    assert str(resolved.reference) == f"oci://{registry.address}/models/mlp:v1@{digest}"
    pinned = client.resolve(ImageReference.parse(f"oci://{registry.address}/models/mlp@{digest}"))
    assert pinned.digest == digest

    client.pull(pinned, tmp_path / "out" / "model")
    assert (tmp_path / "out" / "model" / "1" / "model.onnx").read_bytes() == b"\x01" * 4096
    assert (tmp_path / "out" / "model" / "config.pbtxt").exists()


def test_a_moved_tag_resolves_to_the_new_digest(registry: LocalRegistry, tmp_path: Path) -> None:
    client = RegistryClient(registry.address, plain_http=True)
    reference = ImageReference.parse(f"oci://{registry.address}/models/moving:latest")
    first = client.push(reference, _model_folder(tmp_path / "a"), LABELS)
    second = client.push(reference, _model_folder(tmp_path / "b", b"\x02" * 10), LABELS)
    assert first != second
    assert client.resolve(reference).digest == second
    assert client.resolve(reference.pinned(first)).digest == first  # the old one stays pullable by digest


def test_missing_images_and_digests_are_named(registry: LocalRegistry) -> None:
    client = RegistryClient(registry.address, plain_http=True)
    for uri in (f"oci://{registry.address}/models/none:v1", f"oci://{registry.address}/models/mlp@{DIGEST}"):
        with pytest.raises(ModelError) as refused:
            client.resolve(ImageReference.parse(uri))
        assert refused.value.reason == "ModelImageNotFound"
        assert uri in refused.value.message


def test_a_private_registry_needs_the_pull_secret(private: LocalRegistry, tmp_path: Path) -> None:
    reference = ImageReference.parse(f"oci://{private.address}/team/mlp:v1")
    alice = Credentials("alice", "s3cret")
    digest = RegistryClient(private.address, credentials=alice, plain_http=True).push(
        reference, _model_folder(tmp_path), LABELS
    )
    for credentials in (None, Credentials("alice", "wrong")):
        with pytest.raises(ModelError) as refused:
            RegistryClient(private.address, credentials=credentials, plain_http=True).resolve(reference)
        assert refused.value.reason == "ModelImageUnauthorized"
        assert "s3cret" not in refused.value.message and "wrong" not in refused.value.message
    resolved = RegistryClient(private.address, credentials=alice, plain_http=True).resolve(reference)
    assert resolved.digest == digest


def test_an_unreachable_registry_fails_at_once(tmp_path: Path) -> None:
    from nimify.ports import free_ports

    (port,) = free_ports(1)
    client = RegistryClient(f"127.0.0.1:{port}", plain_http=True)
    with pytest.raises(ModelError) as refused:
        client.resolve(ImageReference.parse(f"oci://127.0.0.1:{port}/m:v1"))
    assert refused.value.reason == "ModelImageUnreachable"


def test_a_denied_address_is_never_contacted(registry: LocalRegistry) -> None:
    policy = AddressPolicy(parse_networks(["127.0.0.0/8"]))
    client = RegistryClient(registry.address, plain_http=True, policy=policy)
    with pytest.raises(ModelError) as refused:
        client.resolve(ImageReference.parse(f"oci://{registry.address}/models/mlp:v1"))
    assert refused.value.reason == "FetchAddressDenied"


def test_a_layer_that_escapes_its_folder_is_refused(registry: LocalRegistry, tmp_path: Path) -> None:
    """An image whose layer writes outside model/ (pushed with oras directly, not nimify build)."""
    import io

    import oras.provider

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escaped")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    layer = tmp_path / "evil.tar.gz"
    layer.write_bytes(raw.getvalue())
    target = f"{registry.address}/models/evil:v1"
    oras.provider.Registry(insecure=True).push(
        target=target,
        files=[f"{layer}:{model_image.LAYER_MEDIA_TYPE}"],
        manifest_config=f"{tmp_path / 'config.json'}:{model_image.CONFIG_MEDIA_TYPE}"
        if (tmp_path / "config.json").write_text("{}")
        else None,
        disable_path_validation=True,
        quiet=True,
    )
    client = RegistryClient(registry.address, plain_http=True)
    resolved = client.resolve(ImageReference.parse(f"oci://{target}"))
    with pytest.raises(ModelError) as refused:
        client.pull(resolved, tmp_path / "out" / "model")
    assert refused.value.reason == "ModelImageInvalid"
    assert not (tmp_path / "out" / "escaped").exists() and not (tmp_path / "escaped").exists()


def test_a_layer_with_a_link_is_refused(registry: LocalRegistry, tmp_path: Path) -> None:
    """Only folders and regular files: a symlink in a layer could point the served model anywhere."""
    import io

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        folder = tarfile.TarInfo("model")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        link = tarfile.TarInfo("model/model.onnx")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    target = f"{registry.address}/models/linked:v1"
    (tmp_path / "linked.tar.gz").write_bytes(raw.getvalue())
    (tmp_path / "config.json").write_text("{}")
    import oras.provider

    oras.provider.Registry(insecure=True).push(
        target=target,
        files=[f"{tmp_path / 'linked.tar.gz'}:{model_image.LAYER_MEDIA_TYPE}"],
        manifest_config=f"{tmp_path / 'config.json'}:{model_image.CONFIG_MEDIA_TYPE}",
        disable_path_validation=True,
        quiet=True,
    )
    client = RegistryClient(registry.address, plain_http=True)
    with pytest.raises(ModelError) as refused:
        client.pull(client.resolve(ImageReference.parse(f"oci://{target}")), tmp_path / "out" / "model")
    assert refused.value.reason == "ModelImageInvalid" and "not a file or a folder" in refused.value.message
