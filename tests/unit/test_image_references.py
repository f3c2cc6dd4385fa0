"""Image references follow the distribution grammar with Docker's defaults."""

from __future__ import annotations

import pytest

from webhook.admission.images import InvalidReference, parse_image

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("image", "domain", "path", "tag", "digest"),
    [
        pytest.param("nginx", "docker.io", "library/nginx", "latest", "", id="official-image"),
        pytest.param("nginx:1.27", "docker.io", "library/nginx", "1.27", "", id="official-tag"),
        pytest.param("bitnami/redis", "docker.io", "bitnami/redis", "latest", "", id="hub-user"),
        pytest.param(
            "docker.io/nginx", "docker.io", "library/nginx", "latest", "", id="hub-domain"
        ),
        pytest.param(
            "index.docker.io/library/busybox:1",
            "docker.io",
            "library/busybox",
            "1",
            "",
            id="legacy-hub-domain",
        ),
        pytest.param("localhost/app", "localhost", "app", "latest", "", id="localhost"),
        pytest.param("localhost:5000/app:v1", "localhost:5000", "app", "v1", "", id="port"),
        pytest.param("127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000", "a/b/c", "t", "", id="ip-port"),
        pytest.param("[::1]:5000/app", "[::1]:5000", "app", "latest", "", id="ipv6"),
        pytest.param(
            "contoso.azurecr.io/team/app:2.0",
            "contoso.azurecr.io",
            "team/app",
            "2.0",
            "",
            id="acr",
        ),
        pytest.param(
            f"123456789012.dkr.ecr.us-east-1.amazonaws.com/app@{DIGEST}",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com",
            "app",
            "",
            DIGEST,
            id="ecr-digest",
        ),
        pytest.param(
            f"ghcr.io/o/app:v1@{DIGEST}", "ghcr.io", "o/app", "v1", DIGEST, id="tag-and-digest"
        ),
        pytest.param(
            "Contoso.AzureCR.io/app",
            "contoso.azurecr.io",
            "app",
            "latest",
            "",
            id="domain-is-case-insensitive",
        ),
        pytest.param("UPPER/app", "upper", "app", "latest", "", id="uppercase-first-is-domain"),
        pytest.param(
            "a/b__c/d-e--f/g.h_i", "docker.io", "a/b__c/d-e--f/g.h_i", "latest", "", id="separators"
        ),
        pytest.param(
            "registry.k8s.io/pause:3.10",
            "registry.k8s.io",
            "pause",
            "3.10",
            "",
            id="registry-k8s-io",
        ),
    ],
)
def test_valid_references_are_normalised(
    image: str, domain: str, path: str, tag: str, digest: str
) -> None:
    ref = parse_image(image)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)
    assert ref.original == image


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param(" nginx", "white space", id="leading-space"),
        pytest.param("docker.io/Nginx", "lowercase", id="uppercase-path"),
        pytest.param("x.azurecr.io@evil", "digest", id="at-spoof"),
        pytest.param("app:", "tag", id="empty-tag"),
        pytest.param("app:-bad", "tag", id="tag-starts-with-dash"),
        pytest.param("app:" + "t" * 129, "tag", id="tag-too-long"),
        pytest.param("app@sha256:abc", "digest", id="short-digest"),
        pytest.param("a//b", "path", id="empty-component"),
        pytest.param("a/b_", "path", id="trailing-separator"),
        pytest.param("-host.io/app", "host", id="host-starts-with-dash"),
        pytest.param("0" * 64, "image id", id="bare-image-id"),
        pytest.param("docker.io/" + "a" * 250, "longer than", id="name-too-long"),
    ],
)
def test_invalid_references_are_refused_with_a_reason(image: str, reason: str) -> None:
    with pytest.raises(InvalidReference, match=reason):
        parse_image(image)


def test_string_form_is_the_fully_qualified_reference() -> None:
    assert str(parse_image("nginx")) == "docker.io/library/nginx:latest"
    assert str(parse_image(f"app@{DIGEST}")) == f"docker.io/library/app@{DIGEST}"
