"""Config reload on the real control plane: the replicas' config file is swapped the way the
kubelet updates a mounted ConfigMap (..data symlink swap); pods created through the API server
follow the new config within a minute, and a broken one is refused while the last good one
keeps serving."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv.processes import wait_for
from devenv.stack import Stack
from tests.e2e.support import get_json, ns_name, pod_manifest, pull_secret_names

pytestmark = pytest.mark.usefixtures("webhook_logs_on_failure")

#: The kubelet propagates a ConfigMap change within about a minute; the webhook then sees
#: it within its 5 s poll.
RELOAD_SECONDS = 60.0


class KubeletVolume:
    """Rewrites ``path`` the way kubelet's atomic writer updates a ConfigMap volume."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.root = path.parent
        self._n = itertools.count(1)

    def write(self, text: str) -> None:
        stamp = self.root / f"..2026_12_01_00_00_00.{next(self._n):09d}"
        stamp.mkdir()
        (stamp / self.path.name).write_text(text)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(stamp.name)
        os.replace(tmp, self.root / "..data")
        if not self.path.is_symlink():
            link = self.root / f"..{self.path.name}_link"
            link.symlink_to(f"..data/{self.path.name}")
            os.replace(link, self.path)


def reload_counts(stack: Stack, result: str) -> list[float]:
    prefix = f'pull_secret_webhook_config_reloads_total{{result="{result}"}} '
    counts = []
    for replica in stack.replicas:
        lines = [ln for ln in replica.metrics().splitlines() if ln.startswith(prefix)]
        counts.append(float(lines[0][len(prefix) :]) if lines else 0.0)
    return counts


@pytest.fixture
def volume(stack: Stack) -> Iterator[KubeletVolume]:
    assert stack.config_path is not None
    original = stack.config_path.read_text()
    volume = KubeletVolume(stack.config_path)
    try:
        yield volume
    finally:
        if stack.config_path.read_text() != original:
            before = sum(reload_counts(stack, "ok"))
            volume.write(original)  # the other tests run on the original config
            wait_for(
                "every replica to reload the original config",
                lambda: sum(reload_counts(stack, "ok")) >= before + len(stack.replicas),
                timeout=RELOAD_SECONDS,
            )


def test_config_changes_take_effect_and_a_broken_one_keeps_the_last_good(
    stack: Stack, volume: KubeletVolume
) -> None:
    assert stack.acr_short is not None and stack.config_path is not None
    cp = stack.controlplane
    ns = stack.labelled_namespace(ns_name("reload"))
    short_image = f"{stack.acr_short.login_server}/demo/hello:v1"
    names = (f"p{i}" for i in itertools.count())

    def secrets_of_new_pod(image: str) -> list[str]:
        name = next(names)
        cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod_manifest(name, image)))
        return pull_secret_names(get_json(cp, "pod", name, "-n", ns))

    assert secrets_of_new_pod(short_image)  # served by the original config
    doc: dict[str, Any] = yaml.safe_load(stack.config_path.read_text())
    without_short = {
        **doc,
        "registries": [e for e in doc["registries"] if e["name"] != "acr-short"],
    }

    # 1. An entry removed from the ConfigMap stops being served, on every replica.
    volume.write(yaml.safe_dump(without_short))
    wait_for(
        "every replica to drop the removed registry",
        lambda: all(c >= 1 for c in reload_counts(stack, "ok")),
        timeout=RELOAD_SECONDS,
    )
    for _ in range(2 * len(stack.replicas)):  # the API server spreads calls over replicas
        assert secrets_of_new_pod(short_image) == []
    assert secrets_of_new_pod(stack.acr_image)  # the others still are

    # 2. A broken config is refused; the last good one (without acr-short) keeps serving.
    volume.write("registries:\n  - {name: Bad_Name, kind: quay}\n")
    wait_for(
        "every replica to refuse the broken config",
        lambda: all(c >= 1 for c in reload_counts(stack, "error")),
        timeout=RELOAD_SECONDS,
    )
    for replica in stack.replicas:
        assert "pull_secret_webhook_config_last_reload_successful 0.0" in replica.metrics()
    assert secrets_of_new_pod(stack.acr_image)
    assert secrets_of_new_pod(short_image) == []
    refused = "changed but is refused; still serving the previous config"
    assert all(refused in r.log.read_text(errors="replace") for r in stack.replicas)

    # 3. Fixed: the entry is back.
    volume.write(yaml.safe_dump(doc))
    wait_for(
        "the restored registry to be served again",
        lambda: secrets_of_new_pod(short_image),
        timeout=RELOAD_SECONDS,
    )
