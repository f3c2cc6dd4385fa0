"""Just enough JWS/JWT for the protocol fakes: sign and verify RS256, PS256 and ES256.

The fakes have to produce tokens that real peers accept (docker-registry checks
ES256 tokens with a libtrust ``kid``) and to check tokens that real clients make
(azure-identity signs client assertions with PS256 and pads its base64url), so
this module follows RFC 7515/7518 directly on top of ``cryptography``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

# P-256 coordinates and ES256 signature halves are 32 bytes each (RFC 7518 §3.4).
_P256_BYTES = 32


class JwtError(ValueError):
    """A token that is not a well-formed compact JWS."""


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decodes base64url with or without padding (azure-identity sends it padded)."""
    stripped = text.rstrip("=")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (ValueError, TypeError) as exc:
        raise JwtError(f"invalid base64url: {exc}") from exc


@dataclass(frozen=True)
class DecodedJwt:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def decode_unverified(token: str) -> DecodedJwt:
    parts = token.split(".")
    if len(parts) != 3:
        raise JwtError("a compact JWS has three dot-separated parts")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
    except json.JSONDecodeError as exc:
        raise JwtError(f"header or payload is not JSON: {exc}") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JwtError("header and payload must be JSON objects")
    return DecodedJwt(
        header=header,
        claims=claims,
        signing_input=f"{parts[0]}.{parts[1]}".encode("ascii"),
        signature=b64url_decode(parts[2]),
    )


def sign(header: Mapping[str, Any], claims: Mapping[str, Any], key: PrivateKey) -> str:
    """Signs with the algorithm named in ``header["alg"]`` (RS256, PS256 or ES256)."""
    alg = header.get("alg")
    encoded_header = b64url_encode(json.dumps(dict(header), separators=(",", ":")).encode())
    encoded_claims = b64url_encode(json.dumps(dict(claims), separators=(",", ":")).encode())
    signing_input = f"{encoded_header}.{encoded_claims}".encode("ascii")
    if alg == "ES256":
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError("ES256 needs an EC P-256 key")
        der = key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        # JWS wants the raw r||s form, not DER (RFC 7518 §3.4).
        signature = r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")
    elif alg in ("RS256", "PS256"):
        if not isinstance(key, rsa.RSAPrivateKey):
            raise TypeError(f"{alg} needs an RSA key")
        signature = key.sign(signing_input, _rsa_padding(alg), hashes.SHA256())
    else:
        raise ValueError(f"unsupported alg {alg!r}")
    return f"{signing_input.decode('ascii')}.{b64url_encode(signature)}"


def _rsa_padding(alg: str) -> padding.AsymmetricPadding:
    if alg == "PS256":
        # RFC 7518 §3.5: salt length equals the hash length.
        return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=hashes.SHA256.digest_size)
    return padding.PKCS1v15()


def verify_signature(token: DecodedJwt, key: PublicKey) -> bool:
    """True when the signature is valid for ``key`` under the header's algorithm."""
    alg = token.header.get("alg")
    try:
        if alg == "ES256" and isinstance(key, ec.EllipticCurvePublicKey):
            if len(token.signature) != 2 * _P256_BYTES:
                return False
            r = int.from_bytes(token.signature[:_P256_BYTES], "big")
            s = int.from_bytes(token.signature[_P256_BYTES:], "big")
            der = encode_dss_signature(r, s)
            key.verify(der, token.signing_input, ec.ECDSA(hashes.SHA256()))
            return True
        if alg in ("RS256", "PS256") and isinstance(key, rsa.RSAPublicKey):
            key.verify(token.signature, token.signing_input, _rsa_padding(alg), hashes.SHA256())
            return True
    except InvalidSignature:
        return False
    return False


def libtrust_kid(key: PublicKey) -> str:
    """The key id docker-registry derives for a key (docker/libtrust ``keyIDFromCryptoKey``).

    SHA-256 of the DER SubjectPublicKeyInfo, first 240 bits, base32 without
    padding, in 12 groups of 4 characters joined by ':'.
    """
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # 30 bytes = 240 bits = exactly 48 base32 characters, so no padding appears.
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def x5t(cert: x509.Certificate) -> str:
    """SHA-1 certificate thumbprint, base64url (JWS ``x5t``); SHA-1 is what the header names."""
    return b64url_encode(cert.fingerprint(hashes.SHA1()))  # noqa: S303


def x5t_s256(cert: x509.Certificate) -> str:
    """SHA-256 certificate thumbprint, base64url (JWS ``x5t#S256``)."""
    return b64url_encode(cert.fingerprint(hashes.SHA256()))


def public_key_to_jwk(key: PublicKey, kid: str) -> dict[str, str]:
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return {
            "kty": "RSA",
            "kid": kid,
            "use": "sig",
            "alg": "RS256",
            "n": b64url_encode(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
            "e": b64url_encode(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
        }
    ec_numbers = key.public_numbers()
    return {
        "kty": "EC",
        "kid": kid,
        "use": "sig",
        "alg": "ES256",
        "crv": "P-256",
        "x": b64url_encode(ec_numbers.x.to_bytes(_P256_BYTES, "big")),
        "y": b64url_encode(ec_numbers.y.to_bytes(_P256_BYTES, "big")),
    }


def jwk_to_public_key(jwk: Mapping[str, Any]) -> PublicKey:
    kty = jwk.get("kty")
    if kty == "RSA":
        n = int.from_bytes(b64url_decode(str(jwk["n"])), "big")
        e = int.from_bytes(b64url_decode(str(jwk["e"])), "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    if kty == "EC" and jwk.get("crv") == "P-256":
        x = int.from_bytes(b64url_decode(str(jwk["x"])), "big")
        y = int.from_bytes(b64url_decode(str(jwk["y"])), "big")
        return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    raise ValueError(f"unsupported JWK kty={kty!r} crv={jwk.get('crv')!r}")


def jwks_keys(jwks: Mapping[str, Any]) -> list[tuple[str | None, PublicKey]]:
    """(kid, key) pairs of a JWKS document; keys of unsupported types are skipped."""
    result: list[tuple[str | None, PublicKey]] = []
    for jwk in jwks.get("keys", []):
        try:
            key = jwk_to_public_key(jwk)
        except (ValueError, KeyError):
            continue
        kid = jwk.get("kid")
        result.append((str(kid) if kid is not None else None, key))
    return result
