"""The webhook's own Kubernetes client: kubeconfig and in-cluster loading, and requests
over TLS to a local HTTPS server standing in for the API server (the real API server
answers every call in the e2e suites, and tests/e2e/test_kubeconfig_loading.py loads real
kubeconfigs against it)."""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from webhook.certs import pki
from webhook.kube.client import (
    JSON_PATCH,
    ApiClient,
    KubeconfigError,
    TokenFile,
    load_in_cluster,
    resource_path,
)
from webhook.kube.kubeconfig import load_kubeconfig
from webhook.kube.objects import KubeAPIError


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_kubeconfig(path: Path, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "ctx",
            }
        )
    )
    return path


class ApiServer:
    """An HTTPS server that demands a client certificate from ``ca`` (like an API server
    with --client-ca-file) and records what it was sent."""

    def __init__(self, tmp: Path) -> None:
        self.ca = pki.make_ca("test-ca")
        self.serving = pki.issue(self.ca, "apiserver", ip_addresses=["127.0.0.1"])
        self.client = pki.issue(self.ca, "webhook", client=True)
        self.seen: list[dict[str, Any]] = []
        self.tmp = tmp
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "content_type": request.headers.get("Content-Type"),
                "authorization": request.headers.get("Authorization"),
                "body": json.loads(body) if body else None,
                "client_cn": request.transport.get_extra_info("peercert")["subject"]
                if request.transport
                else None,
            }
        )
        if request.path == "/api/v1/namespaces/missing":
            return web.json_response(
                {"kind": "Status", "message": 'namespaces "missing" not found'},
                status=404,
                reason="Not Found",
            )
        if request.query.get("watch") == "true":
            resp = web.StreamResponse()
            await resp.prepare(request)
            for n in range(3):
                line = {"type": "ADDED", "object": {"metadata": {"name": f"n{n}"}}}
                await resp.write(json.dumps(line).encode() + b"\n")
            await resp.write_eof()
            return resp
        return web.json_response({"kind": "Namespace", "metadata": {"name": "x"}})

    async def __aenter__(self) -> ApiServer:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert, key = self.tmp / "srv.crt", self.tmp / "srv.key"
        self.serving.write(cert, key)
        context.load_cert_chain(cert, key)
        context.load_verify_locations(cadata=self.ca.cert_pem.decode())
        context.verify_mode = ssl.CERT_REQUIRED
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def kubeconfig(self, path: Path, **user: str) -> Path:
        """A kubeconfig for this server with its CA and the client certificate embedded."""
        return write_kubeconfig(
            path,
            {"server": self.url, "certificate-authority-data": b64(self.ca.cert_pem)},
            {
                "client-certificate-data": b64(self.client.cert_pem),
                "client-key-data": b64(self.client.key_pem),
                **user,
            },
        )


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ApiServer]:
    async with ApiServer(tmp_path) as s:
        yield s


async def test_a_kubeconfig_with_embedded_certificates_talks_mutual_tls(
    server: ApiServer, tmp_path: Path
) -> None:
    path = server.kubeconfig(tmp_path / "config")
    async with ApiClient(await load_kubeconfig(path)) as api:
        doc = await api.call("GET", "/api/v1/namespaces/x", params={"limit": 5, "a": None})
        await api.call("PATCH", "/x", body=[{"op": "test"}], content_type=JSON_PATCH)
    assert doc["metadata"]["name"] == "x"
    first, patch = server.seen
    assert first["query"] == {"limit": "5"}  # None is left out, numbers are text
    assert first["authorization"] is None
    assert first["client_cn"] == ((("commonName", "webhook"),),)
    assert patch["content_type"] == JSON_PATCH and patch["body"] == [{"op": "test"}]


async def test_relative_paths_are_read_from_the_kubeconfigs_directory_and_tokens_sent(
    server: ApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "ca.crt").write_bytes(server.ca.cert_pem)
    server.client.write(tmp_path / "conf" / "client.crt", tmp_path / "conf" / "client.key")
    (tmp_path / "conf" / "token").write_text("file-token\n")
    path = write_kubeconfig(
        tmp_path / "conf" / "config",
        {"server": server.url + "/", "certificate-authority": "ca.crt"},
        {"client-certificate": "client.crt", "client-key": "client.key", "tokenFile": "token"},
    )
    monkeypatch.chdir("/")
    async with ApiClient(await load_kubeconfig(path)) as api:
        await api.call("GET", "/api")
    assert server.seen[0]["authorization"] == "Bearer file-token"
    assert server.seen[0]["path"] == "/api"  # the server's trailing slash is dropped


async def test_answers_and_silences_become_kube_api_errors(
    server: ApiServer, tmp_path: Path
) -> None:
    path = server.kubeconfig(tmp_path / "config", token="sekret-token")
    connection = await load_kubeconfig(path)
    async with ApiClient(connection) as api:
        with pytest.raises(KubeAPIError) as missing:
            await api.call("GET", "/api/v1/namespaces/missing")
        events = []
        async with api.stream("/api/v1/namespaces", params={"watch": True}, seconds=5) as resp:
            async for line in resp.content:
                events.append(json.loads(line)["object"]["metadata"]["name"])
    assert (missing.value.status, missing.value.message) == (404, 'namespaces "missing" not found')
    assert server.seen[-1]["query"] == {"watch": "true"}
    assert events == ["n0", "n1", "n2"]

    connection.server = "https://127.0.0.1:1"  # nothing listens there
    async with ApiClient(connection) as api:
        with pytest.raises(KubeAPIError) as silent:
            await api.call("GET", "/api")
    assert silent.value.status == 0 and silent.value.transient
    assert "sekret-token" not in str(silent.value) + str(missing.value)


async def test_a_server_certificate_from_another_ca_is_refused(
    server: ApiServer, tmp_path: Path
) -> None:
    other = pki.make_ca("other")
    path = write_kubeconfig(
        tmp_path / "config",
        {"server": server.url, "certificate-authority-data": b64(other.cert_pem)},
        {"token": "t"},
    )
    async with ApiClient(await load_kubeconfig(path)) as api:
        with pytest.raises(KubeAPIError) as e:
            await api.call("GET", "/api")
    assert e.value.status == 0 and "certificate" in str(e.value).lower()
    assert server.seen == []


@pytest.mark.parametrize(
    ("cluster", "user", "expected"),
    [
        (
            {"server": "http://plain:8080"},
            {"token": "t"},
            "server 'http://plain:8080' is not https://",
        ),
        (
            {"server": "https://api:6443", "certificate-authority": "nowhere/ca.crt"},
            {"token": "t"},
            "nowhere/ca.crt",
        ),
        (
            {"server": "https://api:6443"},
            {"username": "admin", "password": "hunter2"},
            "username and password are not supported",
        ),
        (
            {"server": "https://api:6443"},
            {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "./absent"}},
            "absent",
        ),
    ],
    ids=["plain-http", "missing-ca-file", "basic-auth", "missing-exec-plugin"],
)
async def test_a_kubeconfig_that_cannot_be_used_says_why_without_a_traceback(
    tmp_path: Path, cluster: dict[str, Any], user: dict[str, Any], expected: str
) -> None:
    path = write_kubeconfig(tmp_path / "config", cluster, user)
    with pytest.raises(KubeconfigError) as e:
        await load_kubeconfig(path)
    assert expected in str(e.value)
    assert "hunter2" not in str(e.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("clusters: [", "kubeconfig"),
        ("current-context: nowhere\ncontexts: []\nclusters: []\nusers: []\n", "nowhere"),
        ("clusters: []\n", "no current-context"),
    ],
    ids=["not-yaml", "unknown-context", "no-current-context"],
)
async def test_a_malformed_kubeconfig_is_a_kubeconfig_error(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "config"
    path.write_text(text)
    with pytest.raises(KubeconfigError, match=expected):
        await load_kubeconfig(path)


async def test_kubeconfig_files_merge_as_kubectl_merges_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = pki.make_ca()
    first = tmp_path / "first"
    first.write_text(yaml.safe_dump({"current-context": "b"}))
    second = write_kubeconfig(
        tmp_path / "second", {"server": "https://one:6443", "certificate-authority-data": ""}, {}
    )
    doc = yaml.safe_load(second.read_text())
    doc["contexts"].append({"name": "b", "context": {"cluster": "c2", "user": "u"}})
    doc["clusters"].append(
        {
            "name": "c2",
            "cluster": {
                "server": "https://two:6443",
                "certificate-authority-data": b64(ca.cert_pem),
            },
        }
    )
    second.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'absent'}:{first}:{second}")
    connection = await load_kubeconfig()
    assert connection.server == "https://two:6443"  # the first file's current-context wins
    assert "context 'b'" in connection.source

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(KubeconfigError, match="no kubeconfig at"):
        await load_kubeconfig()


def test_in_cluster_reads_the_mounted_service_account(tmp_path: Path) -> None:
    ca = pki.make_ca()
    with pytest.raises(KubeconfigError) as missing:
        load_in_cluster(
            {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}, tmp_path
        )
    assert "token is missing" in str(missing.value) and "ca.crt is missing" in str(missing.value)
    (tmp_path / "token").write_text("t1")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    v4 = load_in_cluster(
        {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}, tmp_path
    )
    v6 = load_in_cluster(
        {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}, tmp_path
    )
    assert (v4.server, v6.server) == ("https://10.0.0.1:443", "https://[fd00::1]:443")
    with pytest.raises(KubeconfigError, match="not in a pod"):
        load_in_cluster({}, tmp_path)


@pytest.mark.parametrize(
    ("no_proxy", "proxied"),
    [
        pytest.param("10.96.0.1,169.254.169.254,metadata.google.internal", False, id="listed"),
        pytest.param("", True, id="not-listed"),
        pytest.param("10.0.0.0/8", True, id="a-range-is-not-read"),
    ],
)
def test_the_api_server_is_reached_through_https_proxy_unless_no_proxy_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_proxy: str, proxied: bool
) -> None:
    """docs/install.md, "Behind an HTTP proxy": the in-cluster API server goes through
    HTTPS_PROXY unless NO_PROXY lists its address (a range is not read)."""
    for name in ("https_proxy", "http_proxy", "no_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp.example:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    (tmp_path / "token").write_text("t1")
    (tmp_path / "ca.crt").write_bytes(pki.make_ca().cert_pem)
    connection = load_in_cluster(
        {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}, tmp_path
    )
    assert connection.proxy == ("http://proxy.corp.example:3128" if proxied else None)


async def test_a_projected_token_is_read_again_every_minute(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "token"
    path.write_text("first\n")
    token = TokenFile(path, clock=lambda: now[0])
    assert await token() == "first"
    path.write_text("second")
    now[0] = 59.0
    assert await token() == "first"
    now[0] = 60.0
    assert await token() == "second"
    path.unlink()  # a failed re-read keeps the last token
    now[0] = 200.0
    assert await token() == "second"
    with pytest.raises(KubeAPIError, match="TokenFileUnreadable"):
        await TokenFile(path)()


def plugin_kubeconfig(
    tmp_path: Path, body: str, server: str = "https://api:6443", ca: bytes | None = None
) -> Path:
    """A kubeconfig whose user is an exec plugin: ``body``, a Python script beside it."""
    script = tmp_path / "plugin.py"
    script.write_text(f"#!{sys.executable}\n" + body)
    script.chmod(0o755)
    return write_kubeconfig(
        tmp_path / "config",
        {"server": server, "certificate-authority-data": b64(ca or pki.make_ca().cert_pem)},
        {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": str(script),
                "env": [{"name": "PLUGIN_COUNT", "value": str(tmp_path / "count")}],
            }
        },
    )


PRINTS_A_TOKEN = """
import json, os, pathlib
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
assert info["kind"] == "ExecCredential" and "interactive" in info["spec"]
count = pathlib.Path(os.environ["PLUGIN_COUNT"])
n = int(count.read_text()) + 1 if count.exists() else 1
count.write_text(str(n))
print(json.dumps({"apiVersion": info["apiVersion"], "kind": "ExecCredential",
                  "status": {"token": f"exec-{n}", "expirationTimestamp": "%s"}}))
"""


def _rfc3339(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


async def test_an_exec_plugins_token_is_kept_until_shortly_before_it_expires(
    tmp_path: Path,
) -> None:
    # An hour off: kept. The loader renews one due within five minutes (its margin).
    later = plugin_kubeconfig(tmp_path, PRINTS_A_TOKEN % _rfc3339(time.time() + 3600))
    token = (await load_kubeconfig(later)).token
    assert token is not None
    assert (await token(), await token()) == ("exec-1", "exec-1")
    (tmp_path / "count").unlink()
    soon = plugin_kubeconfig(tmp_path, PRINTS_A_TOKEN % _rfc3339(time.time() + 120))
    token = (await load_kubeconfig(soon)).token
    assert token is not None
    assert (await token(), await token()) == ("exec-2", "exec-3")


async def test_a_failing_exec_plugin_says_why_without_what_it_printed(tmp_path: Path) -> None:
    path = plugin_kubeconfig(
        tmp_path,
        'import sys\nprint(\'{"status": {"token": "leaked"}}\')\n'
        "print('no credentials found', file=sys.stderr)\nsys.exit(3)\n",
    )
    with pytest.raises(KubeconfigError) as e:
        await load_kubeconfig(path)
    assert "returned 3" in str(e.value) and "no credentials found" in str(e.value)
    assert "leaked" not in str(e.value)


PRINTS_A_CERTIFICATE = """
import json, os
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
print(json.dumps({"apiVersion": info["apiVersion"], "kind": "ExecCredential",
                  "status": {"clientCertificateData": %r, "clientKeyData": %r}}))
"""


async def test_an_exec_plugins_client_certificate_talks_mutual_tls(
    server: ApiServer, tmp_path: Path
) -> None:
    body = PRINTS_A_CERTIFICATE % (server.client.cert_pem.decode(), server.client.key_pem.decode())
    path = plugin_kubeconfig(tmp_path, body, server=server.url, ca=server.ca.cert_pem)
    connection = await load_kubeconfig(path)
    async with ApiClient(connection) as api:
        await api.call("GET", "/api")
    assert connection.token is None
    assert server.seen[0]["client_cn"] == ((("commonName", "webhook"),),)
    assert server.seen[0]["authorization"] is None
    # The key was written where ssl could read it, and is gone again.
    assert _files_holding(server.client.key_pem) == []


def _files_holding(secret: bytes) -> list[Path]:
    """Files of the temporary directory that hold ``secret``."""
    found = []
    for path in Path(tempfile.gettempdir()).iterdir():
        try:
            if path.is_file() and secret.strip() in path.read_bytes():
                found.append(path)
        except OSError:
            continue  # another process's file, gone or not ours to read
    return found


async def test_a_kubeconfigs_exec_plugin_is_found_beside_it_and_its_token_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    script = tmp_path / "conf" / "plugin"
    script.write_text(f"#!{sys.executable}\n" + PRINTS_A_TOKEN % "2030-01-01T00:00:00Z")
    script.chmod(0o755)
    ca = pki.make_ca()
    path = write_kubeconfig(
        tmp_path / "conf" / "config",
        {"server": "https://api:6443", "certificate-authority-data": b64(ca.cert_pem)},
        {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1beta1",
                "command": "./plugin",
                "env": [{"name": "PLUGIN_COUNT", "value": str(tmp_path / "count")}],
            }
        },
    )
    monkeypatch.chdir("/")
    connection = await load_kubeconfig(path)
    assert connection.token is not None
    assert await connection.token() == "exec-1"
    # The file keeps the command as its author wrote it.
    assert yaml.safe_load(path.read_text())["users"][0]["user"]["exec"]["command"] == "./plugin"


def id_token(expires: float) -> str:
    """An OIDC id-token as the loader reads it: a JWT whose payload says when it expires
    (the API server, not the client, checks its signature)."""

    def part(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part({'sub': 'alice', 'exp': int(expires)})}.c2ln"


def oidc_user(token: str) -> dict[str, Any]:
    return {
        "auth-provider": {
            "name": "oidc",
            "config": {
                "client-id": "kubernetes",
                "client-secret": "client-sekret",
                "id-token": token,
                "refresh-token": "refresh-sekret",
                # Nothing listens there: a refresh attempt would fail to connect.
                "idp-issuer-url": "https://127.0.0.1:1",
            },
        }
    }


async def test_an_oidc_auth_providers_id_token_is_sent_while_it_is_valid(
    server: ApiServer, tmp_path: Path
) -> None:
    token = id_token(time.time() + 3600)
    path = write_kubeconfig(
        tmp_path / "config",
        {"server": server.url, "certificate-authority-data": b64(server.ca.cert_pem)},
        {
            # This stand-in asks every client for a certificate (the API server only
            # accepts one); the token is what the test is about.
            "client-certificate-data": b64(server.client.cert_pem),
            "client-key-data": b64(server.client.key_pem),
            **oidc_user(token),
        },
    )
    async with ApiClient(await load_kubeconfig(path)) as api:
        await api.call("GET", "/api")
        await api.call("GET", "/api")
    assert [seen["authorization"] for seen in server.seen] == [f"Bearer {token}"] * 2


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        (oidc_user(id_token(time.time() - 60)), "id-token has expired"),
        ({"auth-provider": {"name": "gcp"}}, "gke-gcloud-auth-plugin"),
    ],
    ids=["expired-oidc", "gcp"],
)
async def test_an_auth_provider_that_would_need_a_refresh_says_what_to_do_instead(
    tmp_path: Path, user: dict[str, Any], expected: str
) -> None:
    path = write_kubeconfig(
        tmp_path / "config",
        {"server": "https://api:6443", "certificate-authority-data": b64(pki.make_ca().cert_pem)},
        user,
    )
    with pytest.raises(KubeconfigError) as e:
        await load_kubeconfig(path)
    assert expected in str(e.value)
    assert "sekret" not in str(e.value)


#: In a fresh interpreter: the whole command line imported, then the connection ``serve``
#: makes (``kube.client.load`` with or without --kubeconfig); prints which
#: kubernetes_asyncio modules were imported.
LOADS_AS_SERVE_DOES = """
import asyncio, sys
from pathlib import Path
from webhook.kube import client as kubeclient
from webhook.cli import build_parser
build_parser()
kubeclient.SERVICE_ACCOUNT_DIR = Path(sys.argv[1])
connection = asyncio.run(kubeclient.load(sys.argv[2] or None))
print(connection.source)
print(len([m for m in sys.modules if m.split(".")[0] == "kubernetes_asyncio"]))
"""


def test_a_replica_in_a_cluster_never_imports_kubernetes_asyncio(tmp_path: Path) -> None:
    """Its loader imports the generated client whole (~38 MiB resident, ~0.5 s): only a
    kubeconfig's users pay for it, never the replicas in a cluster."""
    ca = pki.make_ca()
    (tmp_path / "token").write_text("t")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    kubeconfig = write_kubeconfig(
        tmp_path / "config",
        {"server": "https://api:6443", "certificate-authority-data": b64(ca.cert_pem)},
        {"token": "t"},
    )
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env.update(KUBERNETES_SERVICE_HOST="10.0.0.1", KUBERNETES_SERVICE_PORT="443")

    def imported(kubeconfig: str) -> tuple[str, int]:
        result = subprocess.run(
            [sys.executable, "-c", LOADS_AS_SERVE_DOES, str(tmp_path), kubeconfig],
            env=env,
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        source, count = result.stdout.split("\n")[:2]
        return source, int(count)

    assert imported("") == ("in-cluster", 0)
    source, count = imported(str(kubeconfig))  # the same check sees it when it is there
    assert source.startswith("kubeconfig") and count > 100


def test_resource_paths_escape_names_and_leave_out_what_is_not_given() -> None:
    assert resource_path("/api/v1", "namespaces") == "/api/v1/namespaces"
    assert (
        resource_path("/api/v1", "secrets", namespace="team-a", name="a/b c")
        == "/api/v1/namespaces/team-a/secrets/a%2Fb%20c"
    )
    assert resource_path("/apis/g/v1", "things", name="x") == "/apis/g/v1/things/x"
