"""The images the local registries hold, made here: no public registry is reachable.

The seed image the stack pushes into its registries carries ``hello.txt`` and, when
Debian's busybox-static is installed, a static ``/bin/busybox``: a node can then run it
(``/bin/busybox sh -c ...``) while skopeo-based tests only read its blobs.
"""

from __future__ import annotations

from pathlib import Path

from devenv.node.build import BUSYBOX, is_static
from devenv.peers.oci import OciImage, build_oci_layout

HELLO = {"hello.txt": b"hello from pull-secret-webhook tests\n"}


def seed_image(directory: Path, tag: str) -> OciImage:
    """The stack's seed image: runnable by a node when a static busybox is installed."""
    if not is_static(BUSYBOX):
        return build_oci_layout(directory, tag, HELLO)
    return build_oci_layout(
        directory,
        tag,
        HELLO,
        executables={"bin/busybox": BUSYBOX.read_bytes()},
        entrypoint=["/bin/busybox"],
    )
