"""RegistryAuthError's one-line message, secret scrubbing, and how botocore's
exceptions are classified."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from webhook.config.entry import SecretRef
from webhook.credentials import Credential, RegistryAuthError
from webhook.credentials.base import Attempt, jwt_claims, scrub
from webhook.credentials.ecr_errors import map_boto_error
from webhook.credentials.kubeio import read_secret
from webhook.kube.objects import KubeAPIError

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


def test_the_message_is_one_line_with_entry_identity_step_code_and_hint() -> None:
    error = RegistryAuthError(
        entry="contoso",
        identity="mi:abc",
        step="imds",
        code="400",
        message="Identity not found\n  (details)",
        hint="assign the identity",
    )
    assert str(error) == (
        "registry entry contoso as mi:abc: imds failed (permanent): "
        "400 Identity not found (details) — hint: assign the identity"
    )


def test_a_copy_has_the_same_fields_and_no_shared_traceback() -> None:
    error = RegistryAuthError(
        entry="e", identity="i", step="s", code="c", transient=True, retry_after=2.0
    )
    twin = error.copy()
    assert twin is not error
    assert vars(twin) == vars(error)


@pytest.mark.parametrize(
    ("text", "kept", "removed"),
    [
        pytest.param(f"bad token {JWT} sent", "bad token <token> sent", JWT, id="jwt"),
        pytest.param("key " + "A" * 80, "key <redacted>", "A" * 80, id="opaque"),
        pytest.param(
            "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/"
            "userAssignedIdentities/a-rather-long-identity-name-used-by-the-team",
            "userAssignedIdentities/a-rather-long-identity-name-used-by-the-team",
            "<redacted>",
            id="arm-id-kept",
        ),
    ],
)
def test_remote_text_is_scrubbed_of_anything_token_like(text: str, kept: str, removed: str) -> None:
    assert kept in scrub(text)
    assert removed not in scrub(text)


def test_remote_text_is_cut_to_a_readable_length() -> None:
    assert len(scrub("word " * 200)) == 240


def test_a_credential_never_shows_its_password() -> None:
    credential = Credential("AWS", "s3cr3t-password", ("h",), 2.0, 1.0)
    assert "s3cr3t-password" not in repr(credential)
    assert credential.lifetime == 1.0


def test_jwt_claims_reads_the_payload_and_ignores_non_jwts() -> None:
    payload = base64.urlsafe_b64encode(json.dumps({"exp": 123}).encode()).rstrip(b"=")
    assert jwt_claims(f"eyJhbGciOiJub25lIn0.{payload.decode()}.") == {"exp": 123}
    assert jwt_claims("not-a-jwt") == {}
    assert jwt_claims("a.!!!.c") == {}


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (KubeAPIError(503, "Service Unavailable"), ("503", True)),
        (KubeAPIError(429, "Too Many Requests"), ("429", True)),
        (KubeAPIError(403, "Forbidden"), ("403", False)),
        (KubeAPIError(0, "ClientConnectorError"), ("ClientConnectorError", True)),
        (KubeAPIError(0, ""), ("unreachable", True)),
    ],
    ids=["503", "429", "403", "connection", "no-reason"],
)
def test_kubernetes_api_errors_are_transient_only_when_the_api_is_in_trouble(
    error: KubeAPIError, expected: tuple[str, bool]
) -> None:
    assert (error.code, error.transient) == expected


class BrokenReader:
    """A reader with a bug in it: what it raises is not the API's error contract."""

    async def read_secret(self, namespace: str, name: str) -> None:
        raise AttributeError("'NoneType' object has no attribute 'data'")


async def test_a_programming_error_in_a_kubernetes_read_is_not_retried_as_an_outage() -> None:
    attempt = Attempt("entry", "example.com", deadline=time.monotonic() + 5)
    with pytest.raises(AttributeError):
        await read_secret(BrokenReader(), SecretRef("ns", "creds"), attempt, "username")


async def test_a_failed_kubernetes_read_becomes_a_registry_auth_error_with_its_status() -> None:
    class Failing:
        async def read_secret(self, namespace: str, name: str) -> None:
            raise KubeAPIError(503, "Service Unavailable")

    attempt = Attempt("entry", "example.com", deadline=time.monotonic() + 5)
    with pytest.raises(RegistryAuthError) as caught:
        await read_secret(Failing(), SecretRef("ns", "creds"), attempt, "username")
    assert caught.value.code == "503"
    assert caught.value.transient


def client_error(code: str, status: int, operation: str = "GetAuthorizationToken") -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": f"{code} happened"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, operation)


def attempt(step: str = "ecr-get-authorization-token") -> Attempt:
    return Attempt(entry="aws", identity="team-a/builder", deadline=0.0, step=step)


@pytest.mark.parametrize(
    ("exc", "code", "transient"),
    [
        (client_error("ThrottlingException", 400), "ThrottlingException", True),
        (client_error("TooManyRequestsException", 429), "TooManyRequestsException", True),
        (client_error("ServerException", 500), "ServerException", True),
        (client_error("503", 503), "503", True),
        (client_error("IDPCommunicationError", 400), "IDPCommunicationError", True),
        (client_error("AccessDeniedException", 400), "AccessDeniedException", False),
        (client_error("InvalidClientTokenId", 403), "InvalidClientTokenId", False),
        (client_error("ExpiredToken", 400), "ExpiredToken", False),
        (EndpointConnectionError(endpoint_url="https://ecr"), "connection", True),
        (ConnectTimeoutError(endpoint_url="https://ecr"), "timeout", True),
        (ReadTimeoutError(endpoint_url="https://ecr"), "timeout", True),
        (NoCredentialsError(), "NoCredentials", False),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_botocore_failures_are_classified(exc: Exception, code: str, transient: bool) -> None:
    error = map_boto_error(attempt(), exc)
    assert (error.code, error.transient) == (code, transient)


@pytest.mark.parametrize(
    ("code", "step", "hint"),
    [
        ("AccessDeniedException", "ecr-get-authorization-token", "AmazonEC2ContainerRegistry"),
        (
            "AccessDenied",
            "sts-assume-role-with-web-identity",
            "system:serviceaccount:team-a:builder",
        ),
        ("AccessDenied", "sts-assume-role", "trust policy"),
        ("InvalidIdentityToken", "sts-assume-role-with-web-identity", "OIDC provider"),
        ("SignatureDoesNotMatch", "ecr-get-authorization-token", "secret access key"),
    ],
    ids=["ecr-denied", "web-identity-denied", "assume-role-denied", "no-oidc", "signature"],
)
def test_permanent_aws_errors_carry_a_hint_for_their_step(code: str, step: str, hint: str) -> None:
    error = map_boto_error(attempt(step), client_error(code, 403))
    assert hint in error.hint
    assert error.step == step
