"""Registry configs used across tests."""

from __future__ import annotations

from typing import Any

from webhook.config.load import parse_config
from webhook.config.schema import Config

CLIENT_ID = "11111111-2222-3333-4444-555555555555"
TENANT_ID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


def sample_document() -> dict[str, Any]:
    return {
        "registries": [
            {
                "name": "contoso",
                "kind": "acr",
                "hosts": ["contoso.azurecr.io"],
                "auth": {"mode": "workloadIdentity", "clientId": CLIENT_ID, "tenantId": TENANT_ID},
                "scope": "repository:app:pull",
            },
            {
                "name": "any-acr",
                "kind": "acr",
                "anyRegistry": True,
                "suffixes": ["azurecr.example.gov"],
                "auth": {"mode": "managedIdentity", "clientId": CLIENT_ID},
            },
            {
                "name": "aws",
                "kind": "ecr",
                "anyRegistry": True,
                "accounts": ["123456789012"],
                "auth": {"mode": "default"},
            },
            {
                "name": "tenant-ecr",
                "kind": "ecr",
                "hosts": ["210987654321.dkr.ecr.eu-west-1.amazonaws.com"],
                "auth": {"mode": "podServiceAccount"},
            },
            {
                "name": "harbor",
                "kind": "generic",
                "hosts": ["harbor.example.com", "127.0.0.1:5000"],
                "auth": {"secretRef": {"name": "harbor-creds"}},
            },
        ]
    }


def sample_config() -> Config:
    return parse_config(sample_document())
