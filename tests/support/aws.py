"""AWS for the ECR tests: moto behind a counting proxy, the environment boto3 reads, an ECR
config and a credential cache on the in-memory Kubernetes."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devenv.peers.aws import TEST_CREDENTIALS, MotoProxy
from tests.integration import conftest
from tests.integration.conftest import Clock, MemoryKube
from webhook.admission.needs import PullNeed
from webhook.config.load import parse_config
from webhook.config.schema import Config
from webhook.config.store import ConfigStore
from webhook.credentials import CredentialCache, RetryPolicy

#: moto's GetAuthorizationToken always answers expiresAt = 2015-01-01T00:00:00Z.
MOTO_EXPIRES_AT = datetime.datetime(2015, 1, 1, tzinfo=datetime.UTC).timestamp()

HOST = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"

OTHER_ACCOUNT_HOST = "210987654321.dkr.ecr.eu-west-1.amazonaws.com"

OTHER_REGION_HOST = "123456789012.dkr.ecr.us-west-2.amazonaws.com"

ROLE_ARN = "arn:aws:iam::123456789012:role/puller"

#: Retries in milliseconds: the tests check how often, not how patiently.
FAST = RetryPolicy(first_delay=0.01, max_delay=0.05)


@pytest.fixture
def clock() -> Clock:
    # moto's tokens expired in 2015: time starts 12 h before that.
    return Clock(MOTO_EXPIRES_AT - 12 * 3600)


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """The default chain finds only what a test puts in the environment."""
    for name in (
        "AWS_PROFILE",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_STS",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEST_CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", TEST_CREDENTIALS["aws_secret_access_key"])
    yield


def ecr_config(aws: MotoProxy, auth: dict[str, Any], hosts: list[str] | None = None) -> Config:
    return parse_config(
        {
            "registries": [
                {
                    "name": "aws",
                    "kind": "ecr",
                    "hosts": hosts or [HOST, OTHER_ACCOUNT_HOST, OTHER_REGION_HOST],
                    "auth": auth,
                    "endpointUrl": aws.url,
                    "stsEndpointUrl": aws.url,
                }
            ]
        }
    )


def pull_need(config: Config, host: str = HOST, service_account: str = "default") -> PullNeed:
    return conftest.pull_need(config, host, service_account)


def new_cache(config: Config, kube: MemoryKube, clock: Clock, **kwargs: Any) -> CredentialCache:
    return CredentialCache(ConfigStore(config), kube, kube, clock=clock, retry=FAST, **kwargs)
