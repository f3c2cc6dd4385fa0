"""Reading the config file safely: a small regular UTF-8 file, decoded by a bounded YAML loader.

Every way a file can be hostile or broken ends in a list of problems, quickly: not a
regular file (a FIFO must not block the reader), too large, not UTF-8, YAML that nests too
deep, expands aliases without bound (a "billion laughs" document), repeats a key, or holds
a number too long to be a setting.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import yaml

#: A ConfigMap holds at most 1 MiB (Kubernetes ``MaxSecretSize``/``ConfigMap`` data limit,
#: pkg/apis/core/validation). A config file larger than that cannot have come from one.
MAX_FILE_BYTES = 1024 * 1024
#: The config schema is 5 levels deep (registries[].auth.clientSecretRef.name); anything far
#: deeper is not a config, and PyYAML's recursive composer would overflow on it.
MAX_DEPTH = 32
#: Nodes the document may hold once every alias is expanded. Aliases are legal YAML, but
#: 437 bytes of nested aliases expand to billions of nodes; a real config has hundreds.
MAX_EXPANDED_NODES = 100_000
#: The longest integer or float literal a setting can need (a 12-digit account id, a
#: timeout); Python refuses to convert integers over 4,300 digits with a ValueError.
MAX_NUMBER_CHARS = 32


class FileProblems(Exception):
    """The file cannot be turned into a document; ``problems`` says every reason found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def read_text(path: Path) -> str:
    """The file's text, or FileProblems: not regular, unreadable, too large, not UTF-8."""
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever;
        # the fstat below then refuses it. It changes nothing for regular files.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise FileProblems([f"cannot read {path}: {e.strerror or e}"]) from e
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileProblems([f"{path} is not a regular file ({_file_type(info.st_mode)})"])
        if info.st_size > MAX_FILE_BYTES:
            raise FileProblems(
                [f"{path} is {info.st_size} bytes; a config is at most {MAX_FILE_BYTES} bytes"]
            )
        data = _read_at_most(fd, MAX_FILE_BYTES + 1)
    except OSError as e:
        raise FileProblems([f"cannot read {path}: {e.strerror or e}"]) from e
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise FileProblems([f"{path} grew past {MAX_FILE_BYTES} bytes while being read"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise FileProblems(
            [f"{path} is not UTF-8 text: byte 0x{data[e.start]:02x} at line {line}"]
        ) from e


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        try:
            chunk = os.read(fd, min(65536, limit - size))
        except BlockingIOError as e:  # not possible for a regular file; be explicit anyway
            raise OSError(errno.EAGAIN, "read would block") from e
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _file_type(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a plain file"


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that bounds depth, refuses huge numbers and records duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0
        self.problems: list[str] = []

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels (line {mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            line = key_node.start_mark.line + 1
            if key_node.value in seen:
                self.problems.append(
                    f"line {line}: duplicate key {key_node.value[:80]!r} "
                    f"(first at line {seen[key_node.value]}); YAML keeps only the last"
                )
            seen.setdefault(key_node.value, line)
        return super().construct_mapping(node, deep)


def _number(kind: str) -> Any:
    base = yaml.SafeLoader.yaml_constructors[kind]

    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode) and len(node.value) > MAX_NUMBER_CHARS:
            # Not converted (a 5,000-digit int would raise); the validator then names the
            # key that holds it, alongside every other problem.
            return f"<a number of {len(node.value)} characters>"
        return base(loader, node)

    return construct


for _tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float"):
    _BoundedLoader.add_constructor(_tag, _number(_tag))


class _Refused(Exception):
    """Stops composing or constructing: the document is hostile or broken beyond listing."""


def _expanded_size(root: yaml.Node) -> int:
    """Nodes in the document with every alias expanded, counted without expanding them.

    A node reachable through several aliases counts once per path (that is what a consumer
    walking the decoded value visits); memoised, so the count itself is linear. A node that
    contains itself through an alias counts as unbounded.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # iterative post-order: children's sizes before their parent's
        node, children_done = stack.pop()
        if children_done:
            open_nodes.discard(id(node))
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            sizes[id(node)] = min(total, MAX_EXPANDED_NODES + 1)
            continue
        if id(node) in sizes:
            continue
        if id(node) in open_nodes:
            return MAX_EXPANDED_NODES + 1  # an alias to one of its own ancestors
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def load_yaml(text: str) -> tuple[Any, list[str]]:
    """Decode a YAML config; return (document, problems that still let it be checked).

    Raises FileProblems when the document cannot be decoded at all.
    """
    loader: _BoundedLoader | None = None
    try:
        # The reader checks every character as it is made (a control character raises
        # yaml.ReaderError here), so it is made inside the try.
        loader = _BoundedLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None, []
        size = _expanded_size(node)
        if size > MAX_EXPANDED_NODES:
            raise _Refused(
                f"expands to more than {MAX_EXPANDED_NODES} values through aliases "
                "(a config needs a few hundred)"
            )
        return loader.construct_document(node), loader.problems
    except _Refused as e:
        raise FileProblems([f"not a usable config: {e}"]) from None
    except yaml.YAMLError as e:
        raise FileProblems([f"not valid YAML: {_one_line(str(e))}"]) from None
    except RecursionError:
        deep = f"not a usable config: nested deeper than {MAX_DEPTH} levels"
        raise FileProblems([deep]) from None
    except ValueError as e:  # a constructor refusing a value (dates, numbers)
        raise FileProblems([f"not a usable config: {_one_line(str(e))}"]) from None
    finally:
        if loader is not None:
            loader.dispose()


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
