"""botocore exceptions → RegistryAuthError with the AWS error code and a hint."""

from __future__ import annotations

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from webhook.credentials.base import Attempt, RegistryAuthError

#: Error codes AWS documents as retryable (throttling and server-side trouble),
#: as botocore's standard retry mode lists them.
TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "ServerException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        # STS could not reach the cluster's OIDC discovery endpoint; worth another try.
        "IDPCommunicationError",
    }
)

_CLOCK_HINT = "check the node's clock (NTP): AWS refuses requests more than 5 minutes off"
_KEYS_HINT = (
    "AWS does not know this access key id: check the keys in the Secret "
    "(or the credentials the default chain found)"
)


def _hint(code: str, step: str, identity: str) -> str:
    if code == "AccessDeniedException":
        return (
            "allow ecr:GetAuthorizationToken: attach AmazonEC2ContainerRegistryPullOnly "
            "to the role or user"
        )
    if code == "AccessDenied" and step == "sts-assume-role-with-web-identity":
        namespace, _, name = identity.partition("/")
        return (
            "the role's trust policy must allow sts:AssumeRoleWithWebIdentity for "
            f"system:serviceaccount:{namespace}:{name} from the cluster's OIDC provider"
        )
    if code == "AccessDenied":
        return (
            "the role's trust policy must allow sts:AssumeRole from the webhook's "
            "identity (with the ExternalId, if set), and that identity needs sts:AssumeRole"
        )
    if code == "InvalidIdentityToken":
        return (
            "IAM has no OIDC provider for the cluster's service account issuer, or it does "
            "not accept the token's audience (sts.amazonaws.com)"
        )
    if code in ("UnrecognizedClientException", "InvalidClientTokenId"):
        return _KEYS_HINT
    if code == "SignatureDoesNotMatch":
        return "the secret access key does not belong to the access key id"
    if code in ("ExpiredToken", "ExpiredTokenException"):
        return "the session credentials have expired: renew them, or " + _CLOCK_HINT
    if code in ("RequestExpired", "SignatureExpired", "InvalidSignatureException"):
        return _CLOCK_HINT
    if code == "NoCredentials":
        return (
            "no AWS credentials found: set up IRSA or EKS Pod Identity for the webhook's "
            "service account, an instance profile, or use mode staticKeys"
        )
    return ""


def map_boto_error(attempt: Attempt, exc: Exception) -> RegistryAuthError:
    """What a failed boto3 call means for the exchange in ``attempt``."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "Unknown")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        transient = code in TRANSIENT_CODES or status == 429 or status >= 500
        if code.isdigit():  # an answer without an AWS error body, e.g. a proxy's 503
            transient = transient or int(code) == 429 or int(code) >= 500
        return attempt.error(
            code,
            str(error.get("Message") or ""),
            hint=_hint(code, attempt.step, attempt.identity),
            transient=transient,
        )
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
        return attempt.error("timeout", str(exc), transient=True)
    if isinstance(exc, EndpointConnectionError | ConnectionClosedError):
        return attempt.error("connection", str(exc), transient=True)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return attempt.error("NoCredentials", str(exc), hint=_hint("NoCredentials", "", ""))
    if isinstance(exc, CredentialRetrievalError):
        # The default chain failed to fetch (IMDS, container endpoint, web identity):
        # usually an endpoint that is briefly unreachable.
        return attempt.error("CredentialRetrievalError", str(exc), transient=True)
    return attempt.error(type(exc).__name__, str(exc))
