"""``gar`` entries: the anchored family of Google registry hosts, and how an entry and its
Google identity are read from the config file (every problem at once)."""

from __future__ import annotations

from typing import Any

import pytest

from webhook.admission.needs import match_images
from webhook.config.gar import (
    Federation,
    GarEntry,
    GarFamily,
    MetadataServer,
    PodServiceAccount,
    ServiceAccountKey,
)
from webhook.config.hosts import HostRule
from webhook.config.load import ConfigError, parse_config

GAR_FAMILY = HostRule(family=GarFamily())
PROVIDER = (
    "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/"
    "clusters/providers/on-prem"
)


@pytest.mark.parametrize(
    "host",
    [
        "us-docker.pkg.dev",
        "europe-docker.pkg.dev",
        "asia-docker.pkg.dev",
        "us-central1-docker.pkg.dev",
        "northamerica-northeast1-docker.pkg.dev",
        "europe-west10-docker.pkg.dev",
        "gcr.io",
        "us.gcr.io",
        "eu.gcr.io",
        "asia.gcr.io",
        "US-Docker.pkg.dev",
    ],
)
def test_gar_family_matches_artifact_and_container_registry_hosts(host: str) -> None:
    assert GAR_FAMILY.matches(host)


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("evil-docker.pkg.dev.attacker.com", id="suffix-spoof"),
        pytest.param("us-docker.pkg.dev.evil", id="tld-spoof"),
        pytest.param("gcr.io.evil.com", id="gcr-suffix-spoof"),
        pytest.param("us-docker.pkg.dev:443", id="port"),
        pytest.param("gcr.io:443.evil", id="port-spoof"),
        pytest.param("us-docker.pkg.dev.", id="trailing-dot"),
        pytest.param("docker.pkg.dev", id="no-location"),
        pytest.param("-docker.pkg.dev", id="empty-location"),
        pytest.param("us-npm.pkg.dev", id="another-format"),
        pytest.param("us-docker-pkg.dev", id="dash-for-dot"),
        pytest.param("evilgcr.io", id="no-dot"),
        pytest.param("a.b.gcr.io", id="two-labels"),
        pytest.param("gcr.io.", id="gcr-trailing-dot"),
        pytest.param("user@gcr.io", id="userinfo"),
        pytest.param("pkg.dev", id="bare-domain"),
    ],
)
def test_gar_family_refuses_spoofs(host: str) -> None:
    assert not GAR_FAMILY.matches(host)


def _document(**auth: Any) -> dict[str, Any]:
    return {
        "registries": [
            {"name": "contoso", "kind": "acr", "hosts": ["contoso.azurecr.io"]},
            {"name": "google", "kind": "gar", "anyRegistry": True, "auth": auth},
        ]
    }


@pytest.mark.parametrize(
    ("image", "entry"),
    [
        pytest.param("us-docker.pkg.dev/proj/repo/app:1", "google", id="artifact-registry"),
        pytest.param("europe-west1-docker.pkg.dev/proj/repo/app", "google", id="regional"),
        pytest.param("gcr.io/proj/app@sha256:" + "a" * 64, "google", id="container-registry"),
        pytest.param("contoso.azurecr.io/app", "contoso", id="acr-untouched"),
        pytest.param("evil.com/us-docker.pkg.dev/proj/repo/app", None, id="host-in-path"),
        pytest.param("us-docker.pkg.dev.evil/proj/repo/app", None, id="tld-spoof"),
        pytest.param("evil-docker.pkg.dev.attacker.com/p/r/app", None, id="suffix-spoof"),
        pytest.param("gcr.io.evil.com/proj/app", None, id="gcr-spoof"),
        pytest.param("us-docker.pkg.dev:443/proj/repo/app", None, id="port"),
    ],
)
def test_images_of_google_registries_get_the_gar_entry_and_spoofs_get_nothing(
    image: str, entry: str | None
) -> None:
    [m] = match_images(parse_config(_document()), [image])
    assert (m.need.entry.name if m.need else None) == entry


def test_each_mode_is_read_with_its_settings() -> None:
    def auth(**fields: Any) -> Any:
        entry = parse_config(_document(**fields)).registries[1]
        assert isinstance(entry, GarEntry)
        return entry.auth

    assert auth() == MetadataServer()
    assert auth(serviceAccount="puller@p.iam.gserviceaccount.com") == MetadataServer(
        "puller@p.iam.gserviceaccount.com"
    )
    federation = auth(
        mode="federation",
        audience=PROVIDER,
        tokenFile="/var/run/secrets/gcp/token",
        serviceAccount="puller@p.iam.gserviceaccount.com",
    )
    assert federation == Federation(
        PROVIDER, "/var/run/secrets/gcp/token", "puller@p.iam.gserviceaccount.com"
    )
    pods = auth(mode="podServiceAccount", audience=PROVIDER)
    assert pods == PodServiceAccount(PROVIDER)
    assert pods.pod_token_audience == "https:" + PROVIDER
    assert pods.per_pod and not federation.per_pod
    key = auth(mode="serviceAccountKey", keyRef={"name": "gar-key"})
    assert isinstance(key, ServiceAccountKey)
    assert (key.key.name, key.key.namespace) == ("gar-key", "pull-secret-webhook")
    entry = parse_config(_document()).registries[1]
    assert isinstance(entry, GarEntry)
    assert entry.sts_url == "https://sts.googleapis.com/v1/token"
    assert entry.oauth2_token_url == "https://oauth2.googleapis.com/token"


def test_every_problem_of_a_gar_entry_is_reported_at_once() -> None:
    document = _document(
        mode="podServiceAccount",
        audience="projects/123/pools/x",
        serviceAccount="not-an-email",
        tokenFile="relative",
        keyRef={"name": "k"},
    )
    document["registries"][1]["stsUrl"] = "http://sts.example.com/v1/token"
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    problems = "\n".join(caught.value.problems)
    for fragment in (
        "registries[1].auth.audience: got 'projects/123/pools/x', expected //iam.googleapis.com",
        "registries[1].auth.serviceAccount: got 'not-an-email', expected a service account",
        "registries[1].auth.serviceAccount: got 'not-an-email', expected not with mode "
        "podServiceAccount",
        "registries[1].auth.tokenFile: got 'relative', expected only with mode federation",
        "registries[1].auth.keyRef: got 'k', expected only with mode serviceAccountKey",
        "registries[1].stsUrl: got 'http://sts.example.com/v1/token', expected an https:// URL",
    ):
        assert fragment in problems, (fragment, problems)


@pytest.mark.parametrize(
    ("auth", "fragment"),
    [
        ({"mode": "federation", "audience": PROVIDER}, "auth.tokenFile: got None"),
        ({"mode": "federation", "tokenFile": "/t"}, "auth.audience: got None"),
        ({"mode": "serviceAccountKey"}, "auth.keyRef: got None"),
        ({"mode": "workloadIdentity"}, "auth.mode: got 'workloadIdentity', expected one of "),
        ({"audience": PROVIDER}, "only with mode federation or podServiceAccount"),
        ({"clientId": "x"}, "auth.clientId: got 'x', expected no such key"),
    ],
    ids=["no-token-file", "no-audience", "no-key", "azure-mode", "audience-alone", "acr-key"],
)
def test_a_mode_missing_what_it_needs_is_refused_with_the_key(
    auth: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_document(**auth))
    assert any(fragment in p for p in caught.value.problems), caught.value.problems
