"""The JWS helpers the fakes sign and check tokens with."""

from __future__ import annotations

import re

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from devenv.peers import jws
from devenv.peers.tls import new_ec_key, new_rsa_key


def test_a_libtrust_key_id_is_twelve_groups_of_four_base32_characters() -> None:
    kid = jws.libtrust_kid(new_ec_key().public_key())
    assert re.fullmatch(r"([A-Z2-7]{4}:){11}[A-Z2-7]{4}", kid)


def test_an_es256_signature_is_raw_r_and_s_and_verifies() -> None:
    key = new_ec_key()
    token = jws.sign({"alg": "ES256", "typ": "JWT"}, {"sub": "x"}, key)
    decoded = jws.decode_unverified(token)
    assert len(decoded.signature) == 64
    assert jws.verify_signature(decoded, key.public_key())
    assert not jws.verify_signature(decoded, new_ec_key().public_key())


def test_a_padded_ps256_assertion_like_azure_identity_makes_verifies() -> None:
    key = new_rsa_key()
    token = jws.sign({"alg": "PS256"}, {"iss": "app"}, key)
    header, payload, _ = token.split(".")
    signing_input = f"{header}==.{payload}=".encode()
    signature = key.sign(
        signing_input,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )
    padded = f"{header}==.{payload}=.{jws.b64url_encode(signature)}=="
    decoded = jws.decode_unverified(padded)
    assert decoded.claims == {"iss": "app"}
    assert jws.verify_signature(decoded, key.public_key())


def test_a_jwks_round_trip_gives_back_keys_that_verify() -> None:
    rsa_key, ec_key = new_rsa_key(), new_ec_key()
    document = {
        "keys": [
            jws.public_key_to_jwk(rsa_key.public_key(), "r"),
            jws.public_key_to_jwk(ec_key.public_key(), "e"),
            {"kty": "oct", "k": "c2VjcmV0"},
        ]
    }
    keys = dict(jws.jwks_keys(document))
    assert set(keys) == {"r", "e"}
    token = jws.decode_unverified(jws.sign({"alg": "RS256"}, {}, rsa_key))
    assert jws.verify_signature(token, keys["r"])
