"""The one config in use, which every consumer reads where it uses a setting."""

from __future__ import annotations

from webhook.config.schema import Config


class ConfigStore:
    """The one config in use. Every consumer (the server, the pull-secret writer, the
    credential cache and its providers, the refresher, self-healing) takes the store and
    reads ``current`` where it uses a setting, never a copy taken at start, so a reload
    (``webhook.config.watch``) applies to all of them at once. A one-shot command or a
    test that never reloads passes ``ConfigStore(config)``."""

    def __init__(self, config: Config) -> None:
        self.current = config
        self.generation = 1
        """Bumped by each reload, for readers that derive something from the config."""

    def replace(self, config: Config) -> None:
        self.current = config
        self.generation += 1
