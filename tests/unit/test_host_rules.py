"""Host rules are anchored: only whole hosts of a configured entry or family match."""

from __future__ import annotations

import pytest

from webhook.admission.needs import match_images
from webhook.config.acr import AcrFamily
from webhook.config.ecr import EcrFamily, parse_ecr_host
from webhook.config.hosts import HostRule
from webhook.config.schema import Config

ACR_FAMILY = HostRule(
    family=AcrFamily(("azurecr.io", "azurecr.cn", "azurecr.us", "azurecr.de")),
)
ECR_FAMILY = HostRule(family=EcrFamily())


@pytest.mark.parametrize(
    "host",
    [
        "contoso.azurecr.io",
        "contoso.azurecr.cn",
        "contoso.azurecr.us",
        "contoso.azurecr.de",
        "myregistry01.azurecr.io",
        "contoso-h4dge2fa3b.azurecr.io",
    ],
)
def test_acr_family_matches_login_servers(host: str) -> None:
    assert ACR_FAMILY.matches(host)


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("x.azurecr.io.evil.com", id="suffix-spoof"),
        pytest.param("azurecr.io", id="bare-suffix"),
        pytest.param("evilazurecr.io", id="no-dot"),
        pytest.param("contoso.azurecr.io:443.evil", id="port-spoof"),
        pytest.param("a.azurecr.io", id="name-too-short"),
        pytest.param("contoso.azurecr.com", id="wrong-tld"),
        pytest.param("contoso.azurecr.io.", id="trailing-dot"),
    ],
)
def test_acr_family_refuses_spoofs(host: str) -> None:
    assert not ACR_FAMILY.matches(host)


@pytest.mark.parametrize(
    ("host", "account", "region", "fips"),
    [
        pytest.param(
            "123456789012.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012",
            "us-east-1",
            False,
            id="standard",
        ),
        pytest.param(
            "123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com",
            "123456789012",
            "us-gov-west-1",
            True,
            id="fips",
        ),
        pytest.param(
            "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
            "123456789012",
            "cn-north-1",
            False,
            id="china",
        ),
        pytest.param(
            "123456789012.dkr-ecr.us-west-2.on.aws",
            "123456789012",
            "us-west-2",
            False,
            id="dual-stack",
        ),
        pytest.param(
            "123456789012.dkr-ecr.cn-north-1.on.amazonwebservices.com.cn",
            "123456789012",
            "cn-north-1",
            False,
            id="dual-stack-china",
        ),
        pytest.param(
            "123456789012.dkr.ecr.us-iso-east-1.c2s.ic.gov",
            "123456789012",
            "us-iso-east-1",
            False,
            id="iso",
        ),
        pytest.param(
            "123456789012.dkr.ecr.us-isob-east-1.sc2s.sgov.gov",
            "123456789012",
            "us-isob-east-1",
            False,
            id="isob",
        ),
        pytest.param(
            "123456789012.dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk",
            "123456789012",
            "eu-isoe-west-1",
            False,
            id="isoe",
        ),
        pytest.param(
            "123456789012.dkr.ecr.us-isof-south-1.csp.hci.ic.gov",
            "123456789012",
            "us-isof-south-1",
            False,
            id="isof",
        ),
    ],
)
def test_ecr_family_covers_every_partition(
    host: str, account: str, region: str, fips: bool
) -> None:
    assert ECR_FAMILY.matches(host)
    parsed = parse_ecr_host(host)
    assert parsed is not None
    assert (parsed.account, parsed.region, parsed.fips) == (account, region, fips)


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.com", id="suffix-spoof"),
        pytest.param("12345678901.dkr.ecr.us-east-1.amazonaws.com", id="11-digit-account"),
        pytest.param("1234567890123.dkr.ecr.us-east-1.amazonaws.com", id="13-digit-account"),
        pytest.param("evil.123456789012.dkr.ecr.us-east-1.amazonaws.com", id="prefix-spoof"),
        pytest.param("123456789012.dkr.ecr.us-east-1.amazonaws.co", id="wrong-tld"),
        pytest.param("123456789012.ecr.us-east-1.amazonaws.com", id="no-dkr"),
    ],
)
def test_ecr_family_refuses_spoofs(host: str) -> None:
    assert not ECR_FAMILY.matches(host)


def test_ecr_account_allowlist_limits_the_family() -> None:
    rule = HostRule(family=EcrFamily(frozenset({"123456789012"})))
    assert rule.matches("123456789012.dkr.ecr.us-east-1.amazonaws.com")
    assert not rule.matches("999999999999.dkr.ecr.us-east-1.amazonaws.com")


def test_exact_hosts_match_only_themselves() -> None:
    rule = HostRule(hosts=frozenset({"harbor.example.com"}))
    assert rule.matches("harbor.example.com")
    assert rule.matches("HARBOR.example.com")
    assert not rule.matches("harbor.example.com:5000")
    assert not rule.matches("sub.harbor.example.com")
    assert not rule.matches("harbor.example.com.evil.com")


@pytest.mark.parametrize(
    ("image", "entry"),
    [
        pytest.param("contoso.azurecr.io/app:1", "contoso", id="exact-acr-first"),
        pytest.param("fabrikam.azurecr.io/app", "any-acr", id="acr-family"),
        pytest.param("gov1registry.azurecr.example.gov/app", "any-acr", id="acr-extra-suffix"),
        pytest.param("123456789012.dkr.ecr.us-east-1.amazonaws.com/app", "aws", id="ecr-family"),
        pytest.param(
            "210987654321.dkr.ecr.eu-west-1.amazonaws.com/app", "tenant-ecr", id="ecr-exact"
        ),
        pytest.param("127.0.0.1:5000/app", "harbor", id="generic-port"),
        pytest.param("evil.com/contoso.azurecr.io/app", None, id="host-in-path"),
        pytest.param("contoso.azurecr.io.evil.com/app", None, id="suffix-spoof"),
        pytest.param(
            "999999999999.dkr.ecr.us-east-1.amazonaws.com/app", None, id="account-not-allowed"
        ),
        pytest.param("nginx", None, id="docker-hub"),
    ],
)
def test_images_match_the_first_covering_entry(
    config: Config, image: str, entry: str | None
) -> None:
    [m] = match_images(config, [image])
    assert (m.need.entry.name if m.need else None) == entry
