"""The API client reads the environment's proxy settings once, not on every request."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from webhook.kube import connect


def _kubeconfig(tmp_path: Path, server: str) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return str(path)


async def test_requests_do_not_consult_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    api = await connect(_kubeconfig(tmp_path, "https://api.example.test:6443"))
    try:
        # aiohttp sends every request of a session that trusts the environment through
        # two thread-pool hops (proxy variables, ~/.netrc).
        assert api.rest_client.pool_manager.trust_env is False
        assert api.rest_client.proxy is None
    finally:
        await api.close()


@pytest.mark.parametrize(
    ("no_proxy", "expected"),
    [("", "http://proxy.example.test:3128"), ("api.example.test", None)],
)
async def test_the_proxy_of_the_environment_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_proxy: str, expected: str | None
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.test:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    for lower in ("https_proxy", "no_proxy"):
        monkeypatch.delenv(lower, raising=False)
    api = await connect(_kubeconfig(tmp_path, "https://api.example.test:6443"))
    try:
        assert api.rest_client.proxy == expected
        assert api.rest_client.pool_manager.trust_env is False
    finally:
        await api.close()
