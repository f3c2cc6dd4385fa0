"""moto's ECR, served over HTTP on loopback, through a real boto3 client."""

# ruff: noqa: F811 - tests take the imported fixtures as parameters
from __future__ import annotations

import base64

from devenv.peers.aws import ecr_client
from devenv.peers.fixtures import moto_process, moto_server  # noqa: F401 - fixtures


def test_get_authorization_token_returns_an_aws_user_password_pair(moto_server: str) -> None:
    client = ecr_client(moto_server)

    response = client.get_authorization_token()

    [data] = response["authorizationData"]
    username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    assert username == "AWS"
    assert password
    assert data["proxyEndpoint"].startswith("https://")
    assert ".dkr.ecr.us-east-1.amazonaws.com" in data["proxyEndpoint"]
    assert data["expiresAt"].tzinfo is not None


def test_each_test_starts_with_an_empty_moto_state(moto_server: str) -> None:
    client = ecr_client(moto_server)
    client.create_repository(repositoryName="team-a/app")
    assert [r["repositoryName"] for r in client.describe_repositories()["repositories"]] == [
        "team-a/app"
    ]


def test_a_repository_from_an_earlier_test_is_gone(moto_server: str) -> None:
    client = ecr_client(moto_server)
    assert client.describe_repositories()["repositories"] == []
