from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from nimify_devcluster.pki import CLIENTS, create_pki


def test_every_certificate_is_signed_by_the_cluster_ca(tmp_path: Path) -> None:
    pki = create_pki(tmp_path, "10.96.0.1")
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    leaves = [pki.serving_cert, *(pki.client_cert(name) for name in CLIENTS)]
    for path in leaves:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        cert.verify_directly_issued_by(ca)
    public_key = ca.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)


def test_serving_certificate_names_loopback_and_the_service_ip(tmp_path: Path) -> None:
    pki = create_pki(tmp_path, "10.96.0.1")
    cert = x509.load_pem_x509_certificate(pki.serving_cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.96.0.1"}
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)


def test_private_keys_are_readable_only_by_their_owner(tmp_path: Path) -> None:
    pki = create_pki(tmp_path, "10.96.0.1")
    assert pki.ca_key.stat().st_mode & 0o777 == 0o600
    assert pki.client_key("admin").stat().st_mode & 0o777 == 0o600
