"""API aggregation pieces: front-proxy flags and certificates, extension-server certificates, APIService
routing through an ExternalName Service (exercised for real in test_metrics_stack)."""

from __future__ import annotations

import base64
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nimify_devcluster.aggregation import (
    FRONT_PROXY_CLIENT,
    aggregated_api_manifests,
    create_authority,
    front_proxy_apiserver_args,
    service_dns_names,
)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_front_proxy_flags_name_files_that_exist_and_chain(tmp_path: Path) -> None:
    args = dict(arg.removeprefix("--").split("=", 1) for arg in front_proxy_apiserver_args(tmp_path))
    assert args["requestheader-allowed-names"] == FRONT_PROXY_CLIENT
    ca, client = load(Path(args["requestheader-client-ca-file"])), load(Path(args["proxy-client-cert-file"]))
    assert client.issuer == ca.subject
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == FRONT_PROXY_CLIENT
    usages = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert Path(args["proxy-client-key-file"]).stat().st_mode & 0o077 == 0
    # A restart of the same cluster keeps its credentials.
    assert front_proxy_apiserver_args(tmp_path) == front_proxy_apiserver_args(tmp_path)


def test_serving_certificate_for_a_service(tmp_path: Path) -> None:
    authority = create_authority(tmp_path, "ca", "test-ca")
    pair = authority.issue(
        tmp_path, "svc", "svc", dns_names=service_dns_names("keda", "api"), ips=("127.0.0.1",), server=True
    )
    cert = load(pair.cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "api.keda.svc" in sans.get_values_for_type(x509.DNSName)
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert cert.issuer == load(authority.pair.cert).subject


def test_api_service_routes_to_loopback(tmp_path: Path) -> None:
    authority = create_authority(tmp_path, "ca", "test-ca")
    service, api = aggregated_api_manifests(
        group="metrics.k8s.io", version="v1beta1", namespace="kube-system", service="ms", port=4443,
        ca_bundle=authority.pair.cert,
    )  # fmt: skip
    assert service["spec"] == {"type": "ExternalName", "externalName": "127.0.0.1", "ports": [{"port": 4443}]}
    assert api["metadata"]["name"] == "v1beta1.metrics.k8s.io"
    assert api["spec"]["service"] == {"namespace": "kube-system", "name": "ms", "port": 4443}
    assert base64.b64decode(api["spec"]["caBundle"]) == authority.pair.cert.read_bytes()
