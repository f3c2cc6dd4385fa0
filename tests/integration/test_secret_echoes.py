"""Whatever a remote endpoint echoes back, no secret the webhook holds reaches a log line,
an Event or an admission warning: the real providers against moto (behind the AWS proxy)
and the Entra ID emulator, each made to echo what it was sent into its error body.

The secrets here are not JWTs on purpose: a 40-character AWS-style secret key, a client
secret made of words, and the password of a credential already minted."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator

import pytest

from devenv.peers.aws import MotoProxy
from devenv.peers.traffic import ENTRA_TOKEN
from devenv.support.hotpath import opted_in
from devenv.support.memkube import MemKube
from devenv.support.reviews import make_pod, make_review
from tests.integration.conftest import Clock, MemoryKube
from tests.support.aws import aws_env, clock, ecr_config, new_cache, pull_need
from tests.support.azure import SECRET_NAMESPACE, Azure, azure, azure_env
from webhook.admission.decision import Plan, plan, respond
from webhook.admission.reviews import AdmissionResponse, decode_review
from webhook.admission.verdicts import encode
from webhook.config.schema import Config
from webhook.config.store import ConfigStore
from webhook.credentials import RegistryAuthError
from webhook.pullsecrets.manager import PullSecretManager
from webhook.telemetry.logs import JsonFormatter, TextFormatter

__all__ = ["aws_env", "azure", "azure_env", "clock"]

#: AWS-style: 40 characters of base64 with '/' (not a JWT, not 64 long).
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLE9q"
#: An Entra client secret of words: no token shape at all, only its value gives it away.
CLIENT_SECRET = "correct-horse-battery-staple"


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """Every log line of the process, through the webhook's own text and JSON formatters."""
    out = io.StringIO()
    text, json_lines = logging.StreamHandler(out), logging.StreamHandler(out)
    text.setFormatter(TextFormatter("%(levelname)s %(name)s: %(message)s"))
    json_lines.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(text)
    root.addHandler(json_lines)
    root.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        root.removeHandler(text)
        root.removeHandler(json_lines)
        root.setLevel(level)


async def _admit(config: Config, cache: object, image: str) -> tuple[AdmissionResponse, MemKube]:
    """One admission through the real manager (its Events land in the in-memory API),
    answered as the server answers it, fail-open and fail-closed."""
    kube = MemKube()
    manager = PullSecretManager(ConfigStore(config), kube, cache)  # type: ignore[arg-type]
    manager.namespaces.replace_all(opted_in("team-a"))
    review = make_review(make_pod(image), namespace="team-a")
    _, request = decode_review(json.dumps(review).encode())
    planned = plan(request, config)
    assert isinstance(planned, Plan)
    outcome = await manager.ensure("team-a", planned.needs, budget=5, dry_run=False)
    await manager.close()
    opened = encode(respond(planned, outcome, fail_closed=False))
    closed = encode(respond(planned, outcome, fail_closed=True))
    return {**opened, "status": closed.get("status", {})}, kube


def _nowhere(secrets: list[str], *texts: str) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaked into: {text[:400]!r}"


async def test_an_aws_secret_key_and_an_ecr_password_echoed_by_ecr_reach_no_line(
    aws: MotoProxy, kube: MemoryKube, clock: Clock, lines: io.StringIO
) -> None:
    kube.put_secret(
        "pull-secret-webhook",
        "aws-keys",
        {"accessKeyId": b"AKIAECHOEXAMPLEKEYID", "secretAccessKey": AWS_SECRET.encode()},
    )
    config = ecr_config(aws, {"mode": "staticKeys", "accessKeysRef": {"name": "aws-keys"}})
    image = f"{pull_need(config).host}/app:1"
    async with new_cache(config, kube, clock) as cache:
        credential = await cache.get(pull_need(config), "team-a")
        auth = base64.b64encode(f"AWS:{credential.password}".encode()).decode()
        secrets = [AWS_SECRET, credential.password, auth]
        clock.now += 13 * 3600  # expired: the next admission asks ECR again
        echo = f"signature for {AWS_SECRET} invalid; last token {credential.password} {auth}"
        for _ in range(3):  # the admission's attempt and its retries
            aws.json_error("GetAuthorizationToken", "UnrecognizedClientException", echo, 403)
        with pytest.raises(RegistryAuthError) as caught:
            await cache.get(pull_need(config), "team-b")
        answer, events = await _admit(config, cache, image)
    assert "UnrecognizedClientException" in str(caught.value)  # the error still says what
    warnings = answer.get("warnings", [])
    assert warnings, answer  # the admission did warn
    _nowhere(
        secrets,
        str(caught.value),
        lines.getvalue(),
        *warnings,
        str(answer["status"]),
        *(e["message"] for e in events.events),
    )


async def test_a_client_secret_echoed_by_entra_id_reaches_no_line(
    azure: Azure, lines: io.StringIO
) -> None:
    app = azure.app_with_pull(secret=CLIENT_SECRET)
    azure.kube.put_secret(SECRET_NAMESPACE, "sp", {"clientSecret": CLIENT_SECRET.encode()})
    auth = {
        "mode": "servicePrincipal",
        "tenantId": azure.tenant,
        "clientId": app.client_id,
        "clientSecretRef": {"name": "sp"},
    }
    config = azure.config(auth)
    echo = {
        "error": "invalid_client",
        "error_description": f"AADSTS7000215: Invalid client secret provided: {CLIENT_SECRET}",
    }
    for _ in range(3):
        azure.emulator.traffic.inject_fault(ENTRA_TOKEN, status=401, body=echo)
    async with azure.cache(config) as cache:
        answer, events = await _admit(config, cache, f"{azure.host}/app:1")
    assert answer.get("warnings"), answer
    assert "AADSTS7000215" in lines.getvalue()  # the code stays, only the secret goes
    _nowhere(
        [CLIENT_SECRET],
        lines.getvalue(),
        *answer.get("warnings", []),
        str(answer["status"]),
        *(e["message"] for e in events.events),
    )
