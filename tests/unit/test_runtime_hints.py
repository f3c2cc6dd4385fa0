"""The hints the webhook prints with a failed exchange agree with the docs: the ECR policy
they name is the one the guides attach, and an ACR refusal names the role ABAC-enabled
registries honour; sovereign clouds get their own Resource Manager audience."""

from __future__ import annotations

import time

import pytest
from botocore.exceptions import ClientError

from tests.support.manifests import REPO
from webhook.config.acr import ManagedIdentity, WorkloadIdentity, acr_registry_name, acr_scope
from webhook.config.load import parse_config
from webhook.credentials.acr import ROLE_HINT
from webhook.credentials.base import Attempt
from webhook.credentials.ecr_errors import map_boto_error


def test_an_ecr_access_denied_names_the_policy_the_guides_attach() -> None:
    denied = ClientError(
        {
            "Error": {"Code": "AccessDeniedException", "Message": "not authorized"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        "GetAuthorizationToken",
    )

    error = map_boto_error(Attempt("aws", "default", time.monotonic() + 5), denied)

    assert "AmazonEC2ContainerRegistryPullOnly" in error.hint
    irsa = (REPO / "docs" / "aws-irsa.md").read_text()
    assert "policy/AmazonEC2ContainerRegistryPullOnly" in irsa


def test_an_acr_refusal_names_the_role_abac_registries_honour() -> None:
    assert "AcrPull" in ROLE_HINT
    assert "Container Registry Repository Reader" in ROLE_HINT
    assert "ABAC" in ROLE_HINT
    assert "Container Registry Repository Reader" in (
        (REPO / "docs" / "azure-acr-access.md").read_text()
    )


@pytest.mark.parametrize(
    ("authority", "scope"),
    [
        pytest.param(
            "https://login.microsoftonline.com",
            "https://management.azure.com/.default",
            id="public",
        ),
        pytest.param(
            "https://login.microsoftonline.us/",
            "https://management.usgovcloudapi.net/.default",
            id="us-government",
        ),
        pytest.param(
            "https://login.chinacloudapi.cn",
            "https://management.chinacloudapi.cn/.default",
            id="china",
        ),
    ],
)
def test_the_arm_audience_follows_the_cloud_of_the_authority(authority: str, scope: str) -> None:
    assert acr_scope("arm", authority) == scope
    assert WorkloadIdentity(audience="arm", authority_host=authority).scope() == scope
    # Without an authorityHost of its own, the entry follows the default it is given
    # (AZURE_AUTHORITY_HOST in the provider).
    assert WorkloadIdentity(audience="arm").scope(authority) == scope


def test_another_cloud_names_its_audience_and_typos_are_refused() -> None:
    config = parse_config(
        {
            "registries": [
                {
                    "name": "stack",
                    "kind": "acr",
                    "hosts": ["r.azurecr.example"],
                    "auth": {"mode": "managedIdentity", "audience": "https://management.example"},
                },
            ]
        }
    )
    [entry] = config.registries
    assert isinstance(entry.auth, ManagedIdentity)
    assert entry.auth.scope() == "https://management.example/.default"

    with pytest.raises(Exception, match="audience"):
        parse_config(
            {
                "registries": [
                    {
                        "name": "x",
                        "kind": "acr",
                        "hosts": ["r.azurecr.io"],
                        "auth": {"mode": "managedIdentity", "audience": "management"},
                    }
                ]
            }
        )


def test_the_retired_germany_cloud_is_not_built_in_but_can_be_added() -> None:
    assert acr_registry_name("contoso.azurecr.de") is None
    config = parse_config(
        {
            "registries": [
                {
                    "name": "de",
                    "kind": "acr",
                    "anyRegistry": True,
                    "suffixes": ["azurecr.de"],
                    "auth": {"mode": "managedIdentity"},
                }
            ]
        }
    )
    [entry] = config.registries
    assert entry.rule.matches("contoso.azurecr.de")
    assert entry.rule.matches("contoso.azurecr.us")
