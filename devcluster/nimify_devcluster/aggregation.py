"""API aggregation for the local cluster: extension API servers (metrics-server, KEDA's metrics adapter) run
as host processes on 127.0.0.1 and are reached by kube-apiserver like in-cluster ones.

Three pieces, the same a kubeadm cluster has:
- front-proxy credentials: kube-apiserver forwards a request to an extension server with a client
  certificate of its own (`--proxy-client-*`) and the caller's identity in X-Remote-* headers, which the
  extension server trusts because that certificate is signed by the `--requestheader-client-ca-file` CA;
- serving certificates for the extension servers, signed by a CA the APIService's caBundle names;
- per API an APIService pointing at a Service. Endpoints may not name loopback addresses, so the Service is
  of type ExternalName with `127.0.0.1`: kube-apiserver's service resolver (aggregator routing off, the
  default) turns an ExternalName Service into `https://<externalName>:<port>`, and checks the certificate
  against `<service>.<namespace>.svc`.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from nimify_devcluster.pki import certificate_name, sign_certificate

FRONT_PROXY_CLIENT = "front-proxy-client"


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Authority:
    """A CA on disk that issues certificates."""

    pair: CertPair

    def issue(
        self,
        directory: Path,
        stem: str,
        common_name: str,
        *,
        organisation: str | None = None,
        dns_names: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        server: bool = False,
        client: bool = False,
    ) -> CertPair:
        ca_cert = x509.load_pem_x509_certificate(self.pair.cert.read_bytes())
        ca_key = serialization.load_pem_private_key(self.pair.key.read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey), "the local CAs use EC keys"
        key = ec.generate_private_key(ec.SECP256R1())
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
        extensions: list[tuple[x509.ExtensionType, bool]] = [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.KeyUsage(True, False, True, False, False, False, False, False, False), True),
            (x509.ExtendedKeyUsage(usages), False),
        ]
        sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        if sans:
            extensions.append((x509.SubjectAlternativeName(sans), False))
        subject = certificate_name(common_name, organisation)
        cert = sign_certificate(subject, key.public_key(), ca_cert.subject, ca_key, extensions)
        return _write(directory, stem, cert, key)


def create_authority(directory: Path, stem: str, common_name: str) -> Authority:
    """A new self-signed CA (or the one already in `directory` under that stem)."""
    pair = CertPair(directory / f"{stem}.crt", directory / f"{stem}.key")
    if pair.cert.exists() and pair.key.exists():
        return Authority(pair)
    key = ec.generate_private_key(ec.SECP256R1())
    name = certificate_name(common_name)
    cert = sign_certificate(
        name,
        key.public_key(),
        name,
        key,
        [
            (x509.BasicConstraints(ca=True, path_length=None), True),
            (x509.KeyUsage(True, False, False, False, False, True, True, False, False), True),
        ],
    )
    return Authority(_write(directory, stem, cert, key))


def front_proxy_apiserver_args(pki_directory: Path) -> list[str]:
    """kube-apiserver flags for API aggregation, with the front-proxy CA and client pair they name (created
    in `pki_directory` the first time)."""
    authority = create_authority(pki_directory, "front-proxy-ca", "nimify-front-proxy-ca")
    client = CertPair(
        pki_directory / f"{FRONT_PROXY_CLIENT}.crt", pki_directory / f"{FRONT_PROXY_CLIENT}.key"
    )
    if not (client.cert.exists() and client.key.exists()):
        client = authority.issue(pki_directory, FRONT_PROXY_CLIENT, FRONT_PROXY_CLIENT, client=True)
    return [
        f"--requestheader-client-ca-file={authority.pair.cert}",
        f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={client.cert}",
        f"--proxy-client-key-file={client.key}",
    ]


def service_dns_names(namespace: str, service: str) -> tuple[str, ...]:
    return (f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local", "localhost")


def aggregated_api_manifests(
    *, group: str, version: str, namespace: str, service: str, port: int, ca_bundle: Path
) -> list[dict[str, Any]]:
    """The ExternalName Service and APIService that route GROUP/VERSION to 127.0.0.1:PORT."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": service, "namespace": namespace},
            "spec": {"type": "ExternalName", "externalName": "127.0.0.1", "ports": [{"port": port}]},
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": f"{version}.{group}"},
            "spec": {
                "group": group,
                "version": version,
                "service": {"namespace": namespace, "name": service, "port": port},
                "caBundle": base64.b64encode(ca_bundle.read_bytes()).decode(),
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]


def _write(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> CertPair:
    directory.mkdir(parents=True, exist_ok=True)
    pair = CertPair(directory / f"{stem}.crt", directory / f"{stem}.key")
    pair.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    pair.key.chmod(0o600)
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return pair
