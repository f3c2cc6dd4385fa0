"""The registry config, reloaded from its file without a restart.

The config usually comes from a ConfigMap mounted as a directory. The kubelet updates such
a volume atomically: it writes the new files into a fresh timestamped directory, points a
``..data_tmp`` symlink at it and renames that over ``..data``; ``config.yaml`` itself is a
symlink to ``..data/config.yaml`` (kubernetes pkg/volume/util/atomic_writer.go). Watching the
file's content (not its inode or mtime, which belong to the symlink) sees every such swap.

A changed file is validated in full before it is used. A broken one is refused with one
log line listing its problems and a metric, and the last good config keeps serving.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from webhook.config import Config
from webhook.configfile import FileProblems, read_text
from webhook.configload import ConfigError, load_config

log = logging.getLogger(__name__)

#: How often the file is read. The kubelet propagates a ConfigMap change within its sync
#: period plus the cache TTL (about a minute by default, Kubernetes docs "ConfigMaps:
#: Mounted ConfigMaps are updated automatically"); polling every 5 s adds little to that.
POLL_SECONDS = 5.0


class ConfigStore:
    """The config in use; readers take ``current`` per request, so a reload is atomic."""

    def __init__(self, config: Config) -> None:
        self.current = config
        self.generation = 1


class ConfigWatcher:
    def __init__(
        self,
        path: str | Path,
        store: ConfigStore,
        on_reload: Callable[[bool], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.store = store
        self._on_reload = on_reload
        self._digest = self._read_digest()

    def _read_digest(self) -> bytes:
        try:
            return hashlib.sha256(read_text(self.path).encode()).digest()
        except FileProblems:
            return b""  # unreadable now: any readable content later counts as a change

    def check(self) -> bool | None:
        """Reload if the file changed: True when applied, False when refused, None if same."""
        digest = self._read_digest()
        if digest == self._digest or not digest:
            return None
        self._digest = digest
        try:
            config = load_config(self.path)
        except ConfigError as e:
            log.warning(
                "config %s changed but is refused; still serving the previous config: %s",
                self.path,
                "; ".join(e.problems),
            )
            if self._on_reload:
                self._on_reload(False)
            return False
        self.store.current = config
        self.store.generation += 1
        log.info(
            "config %s reloaded: %d registry entries (%s)",
            self.path,
            len(config.registries),
            ", ".join(e.name for e in config.registries),
        )
        if self._on_reload:
            self._on_reload(True)
        return True

    async def watch(self, poll: float = POLL_SECONDS) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(poll)
            await asyncio.to_thread(self.check)
