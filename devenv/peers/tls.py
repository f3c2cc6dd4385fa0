"""A throwaway certificate authority for the local peers.

Everything the fakes serve over HTTPS (Entra ID, ACR login servers) uses a
certificate from this CA, issued for IP 127.0.0.1 and DNS localhost, so real
clients (azure-identity, aiohttp, skopeo) verify TLS normally once they trust
``ca_path``. Keys and certificates live only under the directory given.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from devenv.peers.jws import PrivateKey
from webhook.certs.pki import issue, make_ca

# Valid from a little in the past so a peer whose clock is a few minutes behind
# still accepts the certificate; a day of validity outlives any test run.
_BACKDATE = datetime.timedelta(minutes=5)
_VALIDITY_DAYS = 1
_VALIDITY = datetime.timedelta(days=_VALIDITY_DAYS)
# RSA keys: 2048 bits is the smallest size every client here accepts.
_RSA_BITS = 2048
DEFAULT_HOSTS = ("127.0.0.1", "localhost")


def new_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def self_signed_certificate(key: PrivateKey, common_name: str) -> x509.Certificate:
    """A self-signed leaf certificate, e.g. to wrap a token-signing or client key."""
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_private(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class CertFiles:
    cert_path: Path
    key_path: Path

    def server_ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_path, self.key_path)
        return context


@dataclass(frozen=True)
class ClientCertificate:
    """An RSA key and self-signed certificate, as an app registration's certificate credential."""

    key: rsa.RSAPrivateKey
    certificate: x509.Certificate
    pem_path: Path  # key and certificate in one PEM, the form CertificateCredential reads

    @classmethod
    def create(cls, directory: Path, common_name: str) -> ClientCertificate:
        directory.mkdir(parents=True, exist_ok=True)
        key = new_rsa_key()
        cert = self_signed_certificate(key, common_name)
        path = _write_private(directory / f"{common_name}.pem", key_pem(key) + cert_pem(cert))
        return cls(key=key, certificate=cert, pem_path=path)


class CertificateAuthority:
    """A CA that issues server certificates for loopback listeners (``webhook.certs.pki``'s)."""

    def __init__(self, directory: Path, common_name: str = "pull-secret-webhook test CA") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.pair = make_ca(common_name, days=_VALIDITY_DAYS)
        self.certificate = self.pair.certificate
        self.ca_path = directory / "ca.pem"
        self.ca_path.write_bytes(self.pair.cert_pem)
        # skopeo and containers/image read CA files named *.crt from --cert-dir.
        self.cert_dir = directory / "cert-dir"
        self.cert_dir.mkdir(exist_ok=True)
        (self.cert_dir / "ca.crt").write_bytes(self.pair.cert_pem)

    def issue_server_cert(self, name: str, hosts: tuple[str, ...] = DEFAULT_HOSTS) -> CertFiles:
        """A serving certificate for ``hosts`` (IP addresses or DNS names)."""
        ips, dns = [], []
        for host in hosts:
            try:
                ipaddress.ip_address(host)
                ips.append(host)
            except ValueError:
                dns.append(host)
        leaf = issue(
            self.pair, hosts[0] if hosts else name, dns_names=dns, ip_addresses=ips,
            days=_VALIDITY_DAYS,
        )  # fmt: skip
        cert_path = self.directory / f"{name}.crt"
        cert_path.write_bytes(leaf.cert_pem + self.pair.cert_pem)
        key_path = _write_private(self.directory / f"{name}.key", leaf.key_pem)
        return CertFiles(cert_path=cert_path, key_path=key_path)

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts only this CA."""
        return ssl.create_default_context(cafile=str(self.ca_path))
