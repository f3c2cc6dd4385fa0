"""The emulator outside an async test: on a background thread, and as a process."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from devenv.peers.azure import AzureEmulator, EmulatorThread
from devenv.peers.directory import CONTAINER_REGISTRY_RESOURCE
from devenv.peers.imds import TOKEN_PATH

REPO_ROOT = Path(__file__).resolve().parents[2]
# Generous: the child imports aiohttp and makes RSA keys on a loaded 2-core machine.
STARTUP_TIMEOUT = 30.0


def _get_json(url: str, headers: dict[str, str], context: ssl.SSLContext | None = None) -> Any:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback URLs
    with urllib.request.urlopen(request, timeout=10, context=context) as response:  # noqa: S310
        return json.loads(response.read())


def _imds_token(imds_host: str, client_id: str) -> Any:
    query = urllib.parse.urlencode(
        {
            "api-version": "2018-02-01",
            "resource": CONTAINER_REGISTRY_RESOURCE,
            "client_id": client_id,
        }
    )
    return _get_json(f"{imds_host}{TOKEN_PATH}?{query}", {"Metadata": "true"})


def _exchange(login_server: str, aad_token: str, ca_path: str) -> Any:
    context = ssl.create_default_context(cafile=ca_path)
    form = {"grant_type": "access_token", "service": login_server, "access_token": aad_token}
    request = urllib.request.Request(
        f"https://{login_server}/oauth2/exchange", data=urllib.parse.urlencode(form).encode()
    )
    with urllib.request.urlopen(request, timeout=10, context=context) as response:  # noqa: S310
        return json.loads(response.read())


def test_the_emulator_serves_sync_callers_from_a_background_thread(tmp_path: Path) -> None:
    thread = EmulatorThread(AzureEmulator(tmp_path / "azure"))
    emulator = thread.start()
    try:
        tenant = emulator.add_tenant()
        identity = emulator.add_managed_identity(tenant)
        registry = thread.call(emulator.add_registry("threaded"))
        registry.assign_role(identity.object_id)
        body = _imds_token(emulator.imds_host, identity.client_id)
        exchanged = _exchange(registry.login_server, body["access_token"], str(emulator.ca_path))
    finally:
        thread.stop()
    assert body["client_id"] == identity.client_id
    assert exchanged["refresh_token"]


def test_python_m_tests_fakes_azure_runs_a_configured_playground_until_sigterm(
    tmp_path: Path,
) -> None:
    tenant = "7f3c1a52-0000-4000-8000-000000000001"
    client_id = "5e1d0c9b-0000-4000-8000-000000000002"
    config = {
        "tenants": [tenant],
        "managed_identities": [{"tenant": tenant, "client_id": client_id}],
        "registries": [{"name": "playground", "roles": [{"principal": client_id}]}],
    }
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    state_dir = tmp_path / "state"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devenv.peers.azure",
            "--state-dir",
            str(state_dir),
            "--config",
            str(config_path),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        description_path = state_dir / "emulator.json"
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not description_path.exists() and process.poll() is None:
            assert time.monotonic() < deadline, "the emulator did not start in time"
            time.sleep(0.1)
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        time.sleep(0.1)  # the file is written in one call; let it land completely
        description = json.loads(description_path.read_text())

        body = _imds_token(description["imds_host"], client_id)
        assert body["client_id"] == client_id
        assert set(description["registries"]) == {"playground"}
        login_server = description["registries"]["playground"]
        exchanged = _exchange(login_server, body["access_token"], description["ca_path"])
        assert exchanged["refresh_token"]
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr.decode()
