"""The registry config, reloaded from its file without a restart.

The config usually comes from a ConfigMap mounted as a directory. The kubelet updates such
a volume atomically: it writes the new files into a fresh timestamped directory, points a
``..data_tmp`` symlink at it and renames that over ``..data``; ``config.yaml`` itself is a
symlink to ``..data/config.yaml`` (kubernetes pkg/volume/util/atomic_writer.go). Watching the
file's content (not its inode or mtime, which belong to the symlink) sees every such swap.

A changed file is validated in full before it is used, then put in the one ``ConfigStore``
every consumer reads at use. A file that cannot be read or is broken, or that changes a
setting a running replica cannot take (``webhook.config.schema.RESTART_ONLY``), is refused with
one log line saying why and a metric, and the last good config keeps serving. Nothing a
file holds stops the watch: the next change is looked at like any other.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from webhook.config.files import FileProblems, read_text
from webhook.config.load import ConfigError, load_config_text
from webhook.config.schema import restart_needed
from webhook.config.store import ConfigStore

__all__ = ["POLL_SECONDS", "ConfigStore", "ConfigWatcher"]

log = logging.getLogger(__name__)

#: How often the file is read. The kubelet propagates a ConfigMap change within its sync
#: period plus the cache TTL (about a minute by default, Kubernetes docs "ConfigMaps:
#: Mounted ConfigMaps are updated automatically"); polling every 5 s adds little to that.
POLL_SECONDS = 5.0


class ConfigWatcher:
    def __init__(
        self,
        path: str | Path,
        store: ConfigStore,
        on_reload: Callable[[bool], None] | None = None,
    ) -> None:
        """``on_reload`` hears True for each change applied, False for each refused."""
        self.path = Path(path)
        self.store = store
        self._on_reload = on_reload
        self._seen = self._state()[0]

    def _state(self) -> tuple[bytes, str | None, list[str]]:
        """(what the file is now, its text, why it cannot be read). The first is a digest of
        the text, or of the reason it cannot be read: the same problem is refused once, and
        any change after it (readable or not) is looked at again."""
        try:
            text = read_text(self.path)
        except FileProblems as e:
            return b"unreadable:" + "; ".join(e.problems).encode(), None, e.problems
        return hashlib.sha256(text.encode()).digest(), text, []

    def check(self) -> bool | None:
        """Reload if the file changed: True when applied, False when refused, None if same."""
        seen, text, problems = self._state()
        if seen == self._seen:
            return None
        self._seen = seen
        if text is None:
            return self._refuse(problems)
        try:
            config = load_config_text(text, str(self.path))
        except ConfigError as e:
            return self._refuse(e.problems)
        needs_restart = restart_needed(self.store.current, config)
        if needs_restart:
            return self._refuse(needs_restart)
        self.store.replace(config)
        log.info(
            "config %s reloaded: %d registry entries (%s)",
            self.path,
            len(config.registries),
            ", ".join(e.name for e in config.registries),
        )
        self._tell(True)
        return True

    def _refuse(self, problems: Sequence[str]) -> bool:
        log.warning(
            "config %s changed but is refused; still serving the previous config: %s",
            self.path,
            "; ".join(problems),
        )
        self._tell(False)
        return False

    def _tell(self, applied: bool) -> None:
        if self._on_reload is not None:
            self._on_reload(applied)

    async def watch(self, poll: float = POLL_SECONDS) -> None:
        """Poll until cancelled. A check that fails in a way no file should cause is logged
        and counted as refused; the watch goes on."""
        while True:
            await asyncio.sleep(poll)
            try:
                await asyncio.to_thread(self.check)
            except Exception:
                log.exception(
                    "config %s: the check failed; still serving the previous config", self.path
                )
                self._tell(False)
