"""Domain mode's certificates: a local CA and a wildcard leaf for `*.<domain>`.

Both SDK generations build `https://` URLs in domain mode (`api.<domain>`,
`<port>-<id>.<domain>`), so the control plane needs a certificate they trust:
it makes a CA once (kept under the state directory, key 0600), a leaf for the
domain and its wildcard (renewed when under 30 days remain), and a client
bundle, the system's CAs plus ours, for `SSL_CERT_FILE`. The wildcard needs two
labels below it: `*.e2b.localhost` verifies, `*.localhost` does not.
"""

from __future__ import annotations

import datetime
import os
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
CA_YEARS = 10
LEAF_DAYS = 397
RENEW_DAYS = 30


@dataclass(frozen=True)
class Certificates:
    ca: str
    cert: str
    key: str
    client_bundle: str  # what SDK users point SSL_CERT_FILE at

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        context.set_alpn_protocols(["http/1.1"])  # the SDK's HTTP/2 would be unpinned
        return context


def ensure_certificates(directory: str, domain_host: str) -> Certificates:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    paths = Certificates(
        ca=os.path.join(directory, "ca.crt"),
        cert=os.path.join(directory, "server.crt"),
        key=os.path.join(directory, "server.key"),
        client_bundle=os.path.join(directory, "client-bundle.crt"),
    )
    ca_key_path = os.path.join(directory, "ca.key")
    if not (os.path.exists(paths.ca) and os.path.exists(ca_key_path)):
        _write_ca(paths.ca, ca_key_path)
    if _leaf_needs_renewal(paths.cert, domain_host):
        _write_leaf(paths, ca_key_path, domain_host)
    _write_bundle(paths)
    return paths


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _write_ca(cert_path: str, key_path: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "envd local control plane CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=365 * CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(
        key_path,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    with open(cert_path, "wb") as out:
        out.write(cert.public_bytes(serialization.Encoding.PEM))


def _leaf_needs_renewal(cert_path: str, domain_host: str) -> bool:
    try:
        with open(cert_path, "rb") as source:
            cert = x509.load_pem_x509_certificate(source.read())
    except (OSError, ValueError):
        return True
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    wanted = {domain_host, f"*.{domain_host}"}
    return set(
        names.get_values_for_type(x509.DNSName)
    ) != wanted or cert.not_valid_after_utc - _now() < datetime.timedelta(days=RENEW_DAYS)


def _write_leaf(paths: Certificates, ca_key_path: str, domain_host: str) -> None:
    with open(ca_key_path, "rb") as source:
        ca_key = serialization.load_pem_private_key(source.read(), password=None)
    with open(paths.ca, "rb") as source:
        ca = x509.load_pem_x509_certificate(source.read())
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain_host)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=LEAF_DAYS))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(domain_host), x509.DNSName(f"*.{domain_host}")]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # Both ignores: cryptography types a loaded key as any kind (DH, X25519, ...), even
        # those that cannot sign; ours is the EC key _write_ca made (or one the user put there).
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    _write_private(
        paths.key,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    with open(paths.cert, "wb") as out:
        out.write(cert.public_bytes(serialization.Encoding.PEM))


def _write_bundle(paths: Certificates) -> None:
    """The system's CAs (a TLS-intercepting proxy's CA stays trusted) and ours."""
    system = b""
    if os.path.exists(SYSTEM_BUNDLE):
        with open(SYSTEM_BUNDLE, "rb") as source:
            system = source.read()
    with open(paths.ca, "rb") as source:
        ours = source.read()
    with open(paths.client_bundle, "wb") as out:
        out.write(system.rstrip(b"\n") + b"\n" + ours)


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
