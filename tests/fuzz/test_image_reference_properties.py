"""Property: the image parser accepts the reference grammar and refuses the rest cleanly."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import count
from webhook.admission.images import (
    NAME_TOTAL_LENGTH_MAX,
    REFERENCE_LENGTH_MAX,
    InvalidReference,
    parse_image,
)

#: distribution/reference's grammar (regexp.go), built independently of webhook/admission/images.py.
#: Go's \w is ASCII-only: [0-9A-Za-z_].
_DOMAIN = r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::[0-9]+)?"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,6}[a-z0-9])?"
domains = st.from_regex(rf"{_LABEL}(?:\.{_LABEL}){{1,3}}(?::[0-9]{{1,5}})?", fullmatch=True)
components = st.from_regex(r"[a-z0-9]{1,6}(?:(?:[._]|__|-{1,3})[a-z0-9]{1,6}){0,2}", fullmatch=True)
tags = st.from_regex(r"[0-9A-Za-z_][0-9A-Za-z_.-]{0,20}", fullmatch=True)
digests = st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True)


@st.composite
def references(draw: st.DrawFn) -> str:
    domain = draw(st.none() | domains | st.just("localhost"))
    path = "/".join(draw(st.lists(components, min_size=1, max_size=4)))
    image = f"{domain}/{path}" if domain else path
    if draw(st.booleans()):
        image += ":" + draw(tags)
    if draw(st.booleans()):
        image += "@" + draw(digests)
    return image


def _parse(image: str) -> None:
    try:
        ref = parse_image(image)
    except InvalidReference:
        return
    assert len(image) <= REFERENCE_LENGTH_MAX
    if "." not in ref.domain and ":" not in ref.domain and ref.domain != "localhost":
        # "Ab/x": Docker reads "Ab" as a host only because of its upper-case letter; the
        # host is compared lower-cased (DNS), so the display form "ab/x" reads differently.
        assert image.split("/", 1)[0].lower() == ref.domain
        return
    again = parse_image(str(ref))  # the normalised form is itself a valid reference
    assert (again.domain, again.path, again.tag, again.digest) == (
        ref.domain,
        ref.path,
        ref.tag,
        ref.digest,
    )
    assert ref.domain == ref.domain.lower()
    assert "/" not in ref.domain


hostile_text = st.text(max_size=300) | st.text(
    alphabet="a0-._:/@[]Ab", min_size=200, max_size=REFERENCE_LENGTH_MAX + 50
)


@given(image=hostile_text)
def test_any_string_parses_or_is_refused(image: str) -> None:
    count("image-any")
    _parse(image)


@given(image=references())
def test_strings_of_the_grammar_parse_unless_too_long(image: str) -> None:
    count("image-grammar")
    name = image.partition("@")[0]
    tagless = name.rsplit(":", 1)[0] if name.rfind(":") > name.rfind("/") else name
    if re.fullmatch(r"[a-f0-9]{64}", image) or len(tagless) > NAME_TOTAL_LENGTH_MAX:
        return
    first, slash, _ = tagless.partition("/")
    if slash and ("." in first or ":" in first) and not re.fullmatch(_DOMAIN, first):
        return  # Docker reads a first component with '.' or ':' as a host; this one is invalid
    _parse(image)
    parse_image(image)  # raises if a grammar string were refused
