"""Image reference parsing: the distribution/reference grammar with Docker's defaults.

The grammar (github.com/distribution/reference, ``regexp.go``)::

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [domain '/'] remote-name
    domain     := host [ ":" port-number ]
    host       := domain-name | IPv4address | "[" IPv6address "]"
    remote-name:= path-component [ '/' path-component ]*
    path-component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag        := [\\w][\\w.-]{0,127}
    digest     := algorithm ":" hex (at least 32 hex digits)

Docker's normalisation (``normalize.go``): the first path component is a domain
only if it contains '.' or ':', is ``localhost``, or has an upper-case letter;
otherwise the domain is ``docker.io`` and single-component names get
``library/``. ``index.docker.io`` is an alias of ``docker.io``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
#: distribution/reference's NameTotalLengthMax.
NAME_TOTAL_LENGTH_MAX = 255
#: The longest a valid reference can be: name (255) + ':' + tag (128) + '@' + a digest
#: (sha512: 7 + 128 hex; longer algorithms are rare). Longer strings are refused before
#: any regular expression sees them.
REFERENCE_LENGTH_MAX = 1024

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_NAME}|{_IPV6})"
_PORT = r"[0-9]+"
_DOMAIN = rf"{_HOST}(?::{_PORT})?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_REMOTE_NAME = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
#: Go's \w is ASCII; Python's would also accept "app:tägé", which Docker refuses.
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
_REMOTE_NAME_RE = re.compile(rf"^{_REMOTE_NAME}$")


class InvalidReference(ValueError):
    """An image string that is not a valid reference."""


@dataclass(frozen=True)
class ImageRef:
    """A normalised image reference."""

    domain: str
    """Registry host[:port], lower-cased; ``docker.io`` by default."""
    path: str
    """Repository path inside the registry (``library/`` added on docker.io)."""
    tag: str
    """Tag; ``latest`` when neither tag nor digest was given, else as written or ''."""
    digest: str
    """``algorithm:hex`` or ''."""
    original: str
    """The string as written in the pod."""

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        s = self.repository
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


def split_domain(name: str) -> tuple[str, str]:
    """Split a repository name into (domain, path) following Docker's rules."""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        domain, path = first, rest
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_REPO_PREFIX + path
    return domain, path


def parse_image(image: str) -> ImageRef:
    """Parse and normalise an image reference; raise InvalidReference with the reason."""
    if not isinstance(image, str) or not image:
        raise InvalidReference("empty image reference")
    if len(image) > REFERENCE_LENGTH_MAX:
        raise InvalidReference(f"image reference longer than {REFERENCE_LENGTH_MAX} characters")
    if image != image.strip() or any(c.isspace() for c in image):
        raise InvalidReference("image reference contains white space")
    # Docker refuses a 64-hex string without a name: it would be read as an image id.
    if re.fullmatch(r"[a-f0-9]{64}", image):
        raise InvalidReference("a bare image id is not a repository reference")
    name, tag, digest = _split_parts(image)
    domain, path = split_domain(name)
    if not _DOMAIN_RE.match(domain):
        raise InvalidReference(f"invalid registry host {domain!r}")
    if not _REMOTE_NAME_RE.match(path):
        if path.lower() != path:
            raise InvalidReference("repository name must be lowercase")
        raise InvalidReference(f"invalid repository path {path!r}")
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidReference(f"repository name longer than {NAME_TOTAL_LENGTH_MAX} characters")
    return ImageRef(
        domain=domain.lower(),
        path=path,
        tag=tag or ("" if digest else "latest"),
        digest=digest,
        original=image,
    )


def _split_parts(image: str) -> tuple[str, str, str]:
    """Split ``name[:tag][@digest]``; the tag colon is the one after the last '/'."""
    rest, at, digest = image.partition("@")
    if at and not re.fullmatch(_DIGEST, digest):
        raise InvalidReference(f"invalid digest {digest!r}")
    if not at:
        digest = ""
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    tag = ""
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not re.fullmatch(_TAG, tag):
            raise InvalidReference(f"invalid tag {tag!r}")
    if not rest:
        raise InvalidReference("missing repository name")
    return rest, tag, digest
