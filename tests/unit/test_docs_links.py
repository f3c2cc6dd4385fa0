"""What the markdown says about itself holds: every link to another file of the project
exists, every #anchor names a heading of its target (GitHub's slugs), and shell lines that
split a cloud CLI's output into several variables get it on one line."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.manifests import REPO

_LINK_RE = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_HEADING_RE = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE_RE = re.compile(r"^```.*?^```", re.S | re.M)


def markdown_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "*.md"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    return [REPO / name for name in listed if (REPO / name).is_file()]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces
    to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    text = _FENCE_RE.sub("", path.read_text())
    for line in text.splitlines():
        m = _HEADING_RE.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = counts.get(base, 0)
        counts[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links() -> list[tuple[str, Path, str]]:
    out = []
    for path in markdown_files():
        text = _FENCE_RE.sub("", path.read_text())
        for m in _LINK_RE.finditer(text):
            target = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
                continue
            where = f"{path.relative_to(REPO)}: {target}"
            out.append((where, path, target))
    return out


def test_the_docs_link_to_each_other() -> None:
    # A guard against the extraction silently finding nothing (well over 30 when written).
    assert len(links()) > 30


@pytest.mark.parametrize(
    ("where", "source", "target"), [pytest.param(*link, id=link[0]) for link in links()]
)
def test_every_link_inside_the_project_resolves(where: str, source: Path, target: str) -> None:
    file_part, _, anchor = target.partition("#")
    resolved = (source.parent / file_part).resolve() if file_part else source
    assert resolved.exists(), f"{where}: {resolved} does not exist"
    if anchor and resolved.suffix == ".md":
        assert anchor in anchors(resolved), f"{where}: no heading #{anchor} in {resolved.name}"


def test_every_read_of_a_tsv_list_gets_one_line() -> None:
    # `az ... --query '[a, b]' -o tsv` prints one value per line: `read -r A B` would fill
    # only A. A list of one list (`'[[a, b]]'`) prints them tab-separated on one line.
    found = 0
    for path in markdown_files():
        text = path.read_text().replace("\\\n", " ")
        for line in text.splitlines():
            if re.search(r"\bread\b.*<\s*<\(\s*az\b", line):
                found += 1
                query = re.search(r"--query\s+'([^']*)'", line)
                assert query and query.group(1).startswith("[["), f"{path.name}: {line.strip()}"
    assert found >= 1


_REFERENCE_RE = re.compile(r"((?:[\w.-]+/)*[\w.-]+\.md), \"([^\"]+)\"")


def text_references() -> list[tuple[str, Path, str]]:
    """Mentions like `docs/install.md, "Your overlay"` in every tracked text file."""
    listed = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    out = []
    for name in listed:
        path = REPO / name
        if not path.is_file() or path.suffix in {".png", ".gz", ".tgz", ".ico"}:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        # A mention may wrap inside a comment: drop the markers of continued lines.
        flat = " ".join(re.sub(r"\n\s*(?:#|//|--)\s?", " ", text).split())
        for m in _REFERENCE_RE.finditer(flat):
            out.append((f"{name}: {m.group(0)}", Path(m.group(1)), m.group(2)))
    return out


def test_the_project_names_sections_of_its_docs() -> None:
    assert len(text_references()) > 10


@pytest.mark.parametrize(
    ("where", "doc", "heading"),
    [pytest.param(*ref, id=ref[0]) for ref in text_references()],
)
def test_every_named_section_of_the_docs_exists(where: str, doc: Path, heading: str) -> None:
    candidates = [REPO / doc, REPO / "docs" / doc.name]
    target = next((c for c in candidates if c.is_file()), None)
    assert target is not None, f"{where}: no file {doc}"
    assert heading.lower() in places(target), f"{where}: no section {heading!r} in {target.name}"


def places(path: Path) -> set[str]:
    """What a mention may name, lower-cased: a heading or the start of one ("Self-healing"
    for "Self-healing of pods ..."), or the lead of a list item ("- From chart 0.1.0, ...")."""
    found: set[str] = set()
    for line in _FENCE_RE.sub("", path.read_text()).splitlines():
        heading = _HEADING_RE.match(line)
        text = heading.group(2) if heading else ""
        item = re.match(r"^\s*[-*]\s+(?:\*\*)?([^,:*(]+)", line)
        if item and not heading:
            text = item.group(1)
        text = re.sub(r"`([^`]*)`", r"\1", text).strip().lower()
        words = text.split()
        found |= {" ".join(words[:n]) for n in range(1, len(words) + 1)}
    return found
