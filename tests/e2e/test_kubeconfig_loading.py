"""Real kubeconfigs against the real API server, read by kubernetes-asyncio's loader (what
the command-line tools and ``serve`` outside a cluster use).

Each connection asks the API server who it is (a SelfSubjectReview, which every
authenticated identity may create): the identity it answers is the one the kubeconfig's
credentials prove, not merely a connection that worked.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv.controlplane import ControlPlane
from webhook.kube.client import ApiClient, Connection
from webhook.kube.kubeconfig import load_kubeconfig


async def who(connection: Connection) -> str:
    """The username the API server sees for ``connection`` (asked twice: a token source
    must keep working after its first use)."""
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    async with ApiClient(connection) as api:
        names = [
            (
                await api.call(
                    "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body=review
                )
            )["status"]["userInfo"]["username"]
            for _ in range(2)
        ]
    assert names[0] == names[1]
    return str(names[0])


def kubeconfig(
    cluster: dict[str, Any] | None, user: dict[str, Any] | None, *, current: bool = True
) -> dict[str, Any]:
    """A kubeconfig document with at most one cluster ("local") and one user ("me"), and a
    context "local" naming both."""
    doc: dict[str, Any] = {"apiVersion": "v1", "kind": "Config"}
    if cluster is not None:
        doc["clusters"] = [{"name": "local", "cluster": cluster}]
    if user is not None:
        doc["users"] = [{"name": "me", "user": user}]
        doc["contexts"] = [{"name": "local", "context": {"cluster": "local", "user": "me"}}]
    if current:
        doc["current-context"] = "local"
    return doc


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


async def test_client_certificate_files_beside_the_kubeconfig_prove_who_it_is(
    controlplane: ControlPlane, tmp_path: Path
) -> None:
    for name, source in (
        ("ca.crt", controlplane.ca_cert),
        ("admin.crt", controlplane.admin.client_cert),
        ("admin.key", controlplane.admin.client_key),
    ):
        shutil.copyfile(source, tmp_path / name)
    path = write(
        tmp_path / "config",
        kubeconfig(
            {"server": controlplane.server, "certificate-authority": "ca.crt"},
            {"client-certificate": "admin.crt", "client-key": "admin.key"},
        ),
    )
    assert await who(await load_kubeconfig(path)) == controlplane.admin.username
    # The control plane's own kubeconfig embeds them instead (…-data): the same identity.
    assert await who(await load_kubeconfig(controlplane.kubeconfig)) == "admin"


async def test_a_service_account_token_kubeconfig_is_that_service_account(
    controlplane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    path = controlplane.token_kubeconfig(tmp_path / "config", namespace, "default", seconds=600)
    assert await who(await load_kubeconfig(path)) == f"system:serviceaccount:{namespace}:default"


#: A credential plugin as kubectl runs one: it prints an ExecCredential with the token it
#: reads from $TOKEN_FILE, and counts its runs in $RUNS.
PLUGIN = """
import json, os, pathlib
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
runs = pathlib.Path(os.environ["RUNS"])
runs.write_text(str(int(runs.read_text() or 0) + 1) if runs.exists() else "1")
token = pathlib.Path(os.environ["TOKEN_FILE"]).read_text().strip()
print(json.dumps({"apiVersion": info["apiVersion"], "kind": "ExecCredential",
                  "status": {"token": token}}))
"""


async def test_an_exec_plugin_scripts_token_is_used_and_kept(
    controlplane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text(controlplane.service_account_token(namespace, "default", seconds=600))
    plugin = tmp_path / "bin" / "credential-plugin"
    plugin.parent.mkdir()
    plugin.write_text(f"#!{sys.executable}\n{PLUGIN}")
    plugin.chmod(0o755)
    ca = tmp_path / "ca.crt"
    shutil.copyfile(controlplane.ca_cert, ca)
    path = write(
        tmp_path / "config",
        kubeconfig(
            {"server": controlplane.server, "certificate-authority": "ca.crt"},
            {
                "exec": {
                    "apiVersion": "client.authentication.k8s.io/v1",
                    "command": "bin/credential-plugin",  # the kubeconfig's directory's
                    "env": [
                        {"name": "TOKEN_FILE", "value": str(token)},
                        {"name": "RUNS", "value": str(tmp_path / "runs")},
                    ],
                    "interactiveMode": "Never",
                }
            },
        ),
    )
    assert await who(await load_kubeconfig(path)) == f"system:serviceaccount:{namespace}:default"
    # No expirationTimestamp: the token is kept (as client-go keeps it), not asked for
    # on every request.
    assert (tmp_path / "runs").read_text() == "1"


async def test_a_merged_kubeconfig_takes_each_part_from_the_file_that_has_it(
    controlplane: ControlPlane, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KUBECONFIG of two files, as kubectl merges them: the cluster in one, the user, the
    context and current-context in the other; the first file to name a cluster wins."""
    token = controlplane.service_account_token(namespace, "default", seconds=600)
    (tmp_path / "shared").mkdir()
    shutil.copyfile(controlplane.ca_cert, tmp_path / "shared" / "ca.crt")
    mine = write(tmp_path / "mine", kubeconfig(None, {"token": token}))
    shared = write(
        tmp_path / "shared" / "clusters",
        # Its CA path is read from its own directory, not the first file's.
        kubeconfig({"server": controlplane.server, "certificate-authority": "ca.crt"}, None),
    )
    decoy = write(
        tmp_path / "decoy",
        # Named the same, later in the list: never used.
        kubeconfig({"server": "https://127.0.0.1:1"}, None, current=False),
    )
    monkeypatch.setenv("KUBECONFIG", f"{mine}:{shared}:{decoy}")
    connection = await load_kubeconfig()
    assert await who(connection) == f"system:serviceaccount:{namespace}:default"
    assert json.dumps(yaml.safe_load(mine.read_text())).count(token) == 1  # left as it was
