"""A ConfigMap update (the kubelet's symlink swap) takes effect without a restart; a broken
one is refused, counted, and the last good config keeps serving."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from devenv.support.reviews import make_pod, make_review
from devenv.support.serving import loopback_options, write_serving_pair
from webhook.certs.pki import make_ca
from webhook.cli.serve import _count
from webhook.config.load import load_config
from webhook.config.store import ConfigStore
from webhook.config.watch import ConfigWatcher
from webhook.server.app import NamesOnlySource, RunningServer, start_server
from webhook.telemetry.metrics import Metrics

HARBOR = "harbor.example.com/team/app:1"
QUAY = "quay.example.com/team/app:1"


def registry(name: str, host: str) -> dict[str, Any]:
    return {"name": name, "kind": "generic", "hosts": [host], "auth": {"secretRef": {"name": name}}}


class ConfigMapVolume:
    """A directory laid out and updated the way the kubelet's atomic writer does it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.version = 0

    @property
    def path(self) -> Path:
        return self.root / "config.yaml"

    def write(self, text: str) -> None:
        self.version += 1
        stamp = self.root / f"..2026_12_01_04_00_00.{self.version:09d}"
        stamp.mkdir()
        (stamp / "config.yaml").write_text(text)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(stamp.name)
        os.replace(tmp, self.root / "..data")  # the atomic swap
        if not self.path.is_symlink():
            self.path.symlink_to("..data/config.yaml")


@dataclass
class Reloading:
    server: RunningServer
    volume: ConfigMapVolume
    watcher: ConfigWatcher
    metrics: Metrics
    ctx: ssl.SSLContext

    async def secrets_for(self, image: str) -> list[str]:
        connector = aiohttp.TCPConnector(ssl=self.ctx, force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.post(
                f"https://127.0.0.1:{self.server.port}/mutate",
                data=json.dumps(make_review(make_pod(image, generate_name="w-"))),
                headers={"Content-Type": "application/json"},
            ) as resp,
        ):
            assert resp.status == 200
            body = await resp.json()
        patch = body["response"].get("patch")
        if not patch:
            return []
        return [s["name"] for op in json.loads(base64.b64decode(patch)) for s in op["value"]]

    async def until(self, image: str, want_secret: bool, seconds: float = 5.0) -> list[str]:
        async with asyncio.timeout(seconds):
            while True:
                names = await self.secrets_for(image)
                if bool(names) == want_secret:
                    return names
                await asyncio.sleep(0.1)


@pytest.fixture
async def reloading(tmp_path: Path) -> AsyncIterator[Reloading]:
    volume = ConfigMapVolume(tmp_path / "volume")
    volume.root.mkdir()
    volume.write(yaml.safe_dump({"registries": [registry("harbor", "harbor.example.com")]}))
    store = ConfigStore(load_config(volume.path))
    metrics = Metrics()
    watcher = ConfigWatcher(volume.path, store, on_reload=lambda ok: _count(metrics, ok))
    ca = make_ca()
    write_serving_pair(ca, tmp_path)
    server = await start_server(
        store,
        NamesOnlySource(),
        loopback_options(tmp_path),
        metrics=metrics,
    )
    server.tasks.append(asyncio.create_task(watcher.watch(poll=0.1)))
    try:
        yield Reloading(
            server,
            volume,
            watcher,
            metrics,
            ssl.create_default_context(cadata=ca.cert_pem.decode()),
        )
    finally:
        await server.stop()


def metric(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float | None:
    value = metrics.registry.get_sample_value(name, labels or {})
    return value


async def test_an_added_registry_is_served_after_the_symlink_swap(reloading: Reloading) -> None:
    assert await reloading.secrets_for(QUAY) == []
    reloading.volume.write(
        yaml.safe_dump(
            {
                "registries": [
                    registry("harbor", "harbor.example.com"),
                    registry("quay", "quay.example.com"),
                ]
            }
        )
    )
    names = await reloading.until(QUAY, want_secret=True)
    assert names[0].startswith("psw-quay-example-com-")
    assert (
        metric(reloading.metrics, "pull_secret_webhook_config_reloads_total", {"result": "ok"}) == 1
    )


async def test_a_removed_registry_is_no_longer_served(reloading: Reloading) -> None:
    assert await reloading.secrets_for(HARBOR)
    reloading.volume.write(yaml.safe_dump({"registries": [registry("quay", "quay.example.com")]}))
    await reloading.until(HARBOR, want_secret=False)
    assert await reloading.secrets_for(QUAY)


async def test_a_changed_auth_changes_the_secret(reloading: Reloading) -> None:
    before = await reloading.secrets_for(HARBOR)
    changed = registry("harbor", "harbor.example.com")
    changed["auth"]["secretRef"]["name"] = "harbor-robot-2"
    reloading.volume.write(yaml.safe_dump({"registries": [changed]}))
    for _ in range(50):
        if await reloading.secrets_for(HARBOR) != before:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the changed auth did not change the secret within 5 s")


async def test_a_broken_config_is_refused_and_the_last_good_one_keeps_serving(
    reloading: Reloading, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="webhook.config.watch")
    good = await reloading.secrets_for(HARBOR)
    reloading.volume.write("registries:\n  - {name: Bad_Name, kind: quay}\nregistries: []\n")
    for _ in range(100):
        if metric(
            reloading.metrics, "pull_secret_webhook_config_reloads_total", {"result": "error"}
        ):
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the broken config was not refused within 5 s")
    assert metric(reloading.metrics, "pull_secret_webhook_config_last_reload_successful") == 0
    assert await reloading.secrets_for(HARBOR) == good
    [line] = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert "still serving the previous config" in line
    assert "duplicate key 'registries'" in line
    assert "\n" not in line
    # fixed again: accepted, and the gauge says so
    reloading.volume.write(yaml.safe_dump({"registries": [registry("quay", "quay.example.com")]}))
    await reloading.until(QUAY, want_secret=True)
    assert metric(reloading.metrics, "pull_secret_webhook_config_last_reload_successful") == 1


async def test_an_unchanged_file_is_not_reloaded(reloading: Reloading) -> None:
    assert reloading.watcher.check() is None
    assert reloading.watcher.store.generation == 1
