"""What to issue, from what is in place: pure decisions on certificates, no I/O."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization

from webhook.certs import pki

#: Reuse the CA while it is valid for more than this. Its successor must be in the
#: caBundle before it expires; 30 days leaves room for a monthly rotation job to miss a run.
CA_REUSE_MIN_REMAINING = dt.timedelta(days=30)
#: Lifetime of a new CA. Rotation of the serving pair needs no caBundle change, so a long
#: lived CA means the API server's trust rarely changes.
CA_DAYS = 3650
#: A Secret update reaches a pod's mounted files after the kubelet's next sync (about a
#: minute) plus its Secret cache TTL (about a minute); the webhook rereads them every 2 s.
#: Until the serving certificate in place is older than this, CAs of earlier serving
#: certificates stay in the caBundle because some replica may still present one.
PROPAGATION_GRACE = dt.timedelta(minutes=10)


class CertsError(Exception):
    """A problem the user must fix; the message says how."""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def fingerprint(cert: x509.Certificate) -> str:
    """Short SHA-256 fingerprint for messages (never key material)."""
    digest = cert.fingerprint(hashes.SHA256()).hex()
    return "sha256:" + digest[:16]


def describe(cert: x509.Certificate) -> str:
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    name = str(cn[0].value) if cn else cert.subject.rfc4514_string()
    until = cert.not_valid_after_utc.strftime("%Y-%m-%d")
    return f"{name} ({fingerprint(cert)}, valid until {until})"


def load_certs(pem: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle; an empty list when there is none or it is garbage."""
    try:
        return list(x509.load_pem_x509_certificates(pem))
    except ValueError:
        return []


def pem_bundle(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def usable_ca(pair: pki.KeyPair | None, now: dt.datetime) -> tuple[bool, str]:
    """Whether an existing CA may sign a new serving certificate, and why not."""
    if pair is None:
        return False, "no CA yet"
    try:
        cert = pair.certificate
        key = serialization.load_pem_private_key(pair.key_pem, password=None)
    except ValueError as e:
        return False, f"the stored CA cannot be read ({e})"
    ca_public = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if ca_public != key_public:
        return False, "the stored CA key does not belong to the CA certificate"
    left = cert.not_valid_after_utc - now
    if left <= CA_REUSE_MIN_REMAINING:
        return False, f"the CA expires in {max(left.days, 0)} days"
    return True, ""


@dataclass(frozen=True)
class Existing:
    """What a previous run left behind."""

    ca: pki.KeyPair | None = None
    serving: x509.Certificate | None = None
    bundle: tuple[x509.Certificate, ...] = ()
    """CA certificates currently trusted (caBundle, or the stored ca.crt)."""


@dataclass(frozen=True)
class Issued:
    ca: pki.KeyPair
    new_ca: bool
    why_new_ca: str
    serving: pki.KeyPair
    bundle: tuple[x509.Certificate, ...]
    """CA certificates to trust, the current CA first."""
    dropped: tuple[x509.Certificate, ...] = ()
    """Previously trusted CAs left out of the new bundle."""
    notes: tuple[str, ...] = ()


def issue(
    existing: Existing,
    *,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str],
    days: int,
    rotate_ca: bool,
    now: dt.datetime | None = None,
) -> Issued:
    """Decide on the CA, sign a new serving pair and compute the caBundle to publish."""
    now = now or utc_now()
    notes: list[str] = []
    reusable, why = usable_ca(existing.ca, now)
    if rotate_ca:
        reusable, why = False, "--rotate-ca"
    if reusable and existing.ca is not None:
        ca, new_ca = existing.ca, False
    else:
        ca, new_ca = pki.make_ca(days=CA_DAYS), True
    ca_cert = ca.certificate
    # A serving certificate must not outlive the CA that signed it.
    room = (ca_cert.not_valid_after_utc - now).days
    if days > room:
        notes.append(f"serving certificate shortened to {room} days (the CA's remaining life)")
        days = room
    serving = pki.make_serving_cert(ca, dns_names, ip_addresses, days=days)

    previous = [
        c
        for c in existing.bundle
        if c.fingerprint(hashes.SHA256()) != ca_cert.fingerprint(hashes.SHA256())
        and c.not_valid_after_utc > now
    ]
    if existing.ca is not None and new_ca:
        old = existing.ca.certificate
        if old.not_valid_after_utc > now and all(
            old.fingerprint(hashes.SHA256()) != c.fingerprint(hashes.SHA256()) for c in previous
        ):
            previous.append(old)
    # Keep earlier CAs while some replica may still present a certificate they signed.
    in_place = existing.serving
    keep_previous = new_ca or (
        in_place is not None
        and (
            not issued_by(in_place, ca_cert)
            or now - (in_place.not_valid_before_utc + pki.BACKDATE) < PROPAGATION_GRACE
        )
    )
    kept = previous if keep_previous else []
    dropped = [] if keep_previous else previous
    return Issued(
        ca=ca,
        new_ca=new_ca,
        why_new_ca=why,
        serving=serving,
        bundle=(ca_cert, *kept),
        dropped=tuple(dropped),
        notes=tuple(notes),
    )


def merge(cluster: Existing | None, files: Existing | None) -> Existing:
    """The cluster's state wins over files (it is what the API server and pods use)."""
    if cluster is None:
        return files or Existing()
    if files is None:
        return cluster
    return Existing(
        ca=cluster.ca or files.ca,
        serving=cluster.serving or files.serving,
        bundle=cluster.bundle or files.bundle,
    )


def still_good(existing: Existing, renew_before_days: int, now: dt.datetime) -> str:
    """Why the pair in place needs no renewal yet ('' when it does)."""
    serving, ca = existing.serving, existing.ca
    if serving is None or ca is None:
        return ""
    reusable, _ = usable_ca(ca, now)
    trusted = any(
        c.fingerprint(hashes.SHA256()) == ca.certificate.fingerprint(hashes.SHA256())
        for c in existing.bundle
    )
    left = serving.not_valid_after_utc - now
    if not (reusable and trusted and issued_by(serving, ca.certificate)):
        return ""
    if left <= dt.timedelta(days=renew_before_days):
        return ""
    return (
        f"serving certificate {fingerprint(serving)} is valid for {left.days} more days "
        f"(more than --renew-before {renew_before_days}), signed by a trusted CA that stays "
        "usable: nothing to renew"
    )


def stale_cas(existing: Existing, now: dt.datetime) -> tuple[x509.Certificate, ...]:
    """CAs the caBundle still trusts that no replica can need any more: the serving
    certificate in place was issued by the current CA more than ``PROPAGATION_GRACE`` ago.
    What a CA rotation leaves behind once it is complete."""
    serving, ca = existing.serving, existing.ca
    if serving is None or ca is None or not issued_by(serving, ca.certificate):
        return ()
    if now - (serving.not_valid_before_utc + pki.BACKDATE) < PROPAGATION_GRACE:
        return ()
    current = ca.certificate.fingerprint(hashes.SHA256())
    return tuple(c for c in existing.bundle if c.fingerprint(hashes.SHA256()) != current)
