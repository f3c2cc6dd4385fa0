"""The certificate renewal CronJob as shipped, on the real control plane: its exact command
under its own ServiceAccount's real token renews a certificate near expiry (and rolls a CA
near expiry) while a webhook serving the mounted files keeps admitting, changes nothing
when there is nothing to renew, and its token reaches nothing else.

Both installs are rendered as an operator gets them: the kustomize base (through an
overlay that moves and renames it, with follow-renames.yaml as docs/install.md says,
so nothing collides with the session stack's objects) and the Helm chart (its own
release name and namespace). No kubelet runs here, so the CronJob's container command is
run locally with the token its pod would mount; ``$(POD_NAMESPACE)`` is expanded as the
kubelet expands it.

The API server cannot dial a Service here (no cluster DNS or proxy), so admissions come
from a client that does what it does for a Service-backed webhook: it trusts exactly the
caBundle stored in the MutatingWebhookConfiguration (re-read continuously, as the API
server's informer does), checks the name ``<service>.<namespace>.svc``, and opens a new
connection per admission. The webhook is the real server, reloading its pair from a
directory laid out as the kubelet lays out a Secret volume (``..data`` symlink swapped
atomically), updated from the Secret in the API server after a delay standing in for the
kubelet's sync period.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from devenv.controlplane import ControlPlane
from devenv.support.configs import sample_config
from devenv.support.reviews import make_pod, make_review
from devenv.support.serving import loopback_options
from tests.support.manifests import MANIFESTS, REPO, Obj, helm_template, kustomize
from webhook.certs import pki, rotation
from webhook.cli import build_parser
from webhook.config.store import ConfigStore
from webhook.server.app import NamesOnlySource, start_server

pytestmark = pytest.mark.controlplane

COMPONENT = "certs-renewal"
RENEWAL = "pull-secret-webhook-certs-renewal"
#: Admissions that go through before the renewal starts.
WARM_UP_ADMISSIONS = 50
#: One `webhook certs` run: a few API calls and up to two EC key generations.
CERTS_TIMEOUT_SECONDS = 60.0
#: The API server refuses TokenRequests shorter than 10 minutes.
TOKEN_SECONDS = 600
#: The seeded install's serving certificate: inside the CronJob's renewal window.
NEAR_EXPIRY_DAYS = 5
#: A CA this close to its end is replaced (rotation.CA_REUSE_MIN_REMAINING is 30 days).
CA_NEAR_EXPIRY_DAYS = 20
#: A kubelet updates a mounted Secret about a minute after it changed; a second here.
KUBELET_DELAY_SECONDS = 1.0
#: How often the stand-ins for the kubelet and the API server's informer look.
POLL_SECONDS = 0.1
CONCURRENCY = 4
#: The webhook rereads its files every 2 s: the new pair is served within this.
SWITCH_TIMEOUT_SECONDS = 20.0
#: Admissions go on this long after the new pair is served.
TAIL_SECONDS = 1.0


@dataclass(frozen=True)
class Renewal:
    """One install's renewal CronJob as rendered: namespace, identity and command."""

    kind: str
    namespace: str
    service_account: str
    args: list[str]

    @property
    def options(self) -> Any:
        return build_parser().parse_args(self.args)

    @property
    def secret(self) -> str:
        return str(self.options.secret)

    @property
    def webhook_config(self) -> str:
        return str(self.options.webhook_config)

    @property
    def server_name(self) -> str:
        """The name the API server checks for a Service-backed webhook."""
        return f"{self.options.service}.{self.options.namespace}.svc"


def expand(args: list[str], env: list[dict[str, Any]], namespace: str) -> list[str]:
    """``$(VAR)`` in a container's args, as the kubelet expands them."""
    values: dict[str, str] = {}
    for var in env:
        if "value" in var:
            values[var["name"]] = var["value"]
        else:
            assert var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace", var
            values[var["name"]] = namespace
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: values[m[1]], a) for a in args]


def renewal_of(objs: list[Obj]) -> Renewal:
    [cron] = [o for o in objs if o["kind"] == "CronJob"]
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    namespace = cron["metadata"]["namespace"]
    # The image's entrypoint is `python -m webhook`: the args are the whole command.
    return Renewal(
        kind="",
        namespace=namespace,
        service_account=pod["serviceAccountName"],
        args=expand(container["args"], container.get("env", []), namespace),
    )


def kustomize_overlay(directory: Path, namespace: str, prefix: str) -> Path:
    """The base moved and renamed as docs/install.md says ("Your overlay"): with
    follow-renames.yaml copied beside the kustomization and listed under ``replacements``,
    which carries the rename into the renewal CronJob's command and grant."""
    directory.mkdir(parents=True)
    base = os.path.relpath(MANIFESTS, directory)  # kustomize takes a base by relative path
    shutil.copy(MANIFESTS / "follow-renames.yaml", directory / "follow-renames.yaml")
    (directory / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [base],
                "namespace": namespace,
                "namePrefix": prefix,
                "replacements": [{"path": "follow-renames.yaml"}],
            }
        )
    )
    return directory


def render(kind: str, tmp: Path) -> list[Obj]:
    suffix = f"r{uuid.uuid4().hex[:6]}"
    namespace = f"psw-{suffix}"
    if kind == "kustomize":
        objs = kustomize(kustomize_overlay(tmp / "overlay", namespace, f"{suffix}-"))
    else:
        # Helm leaves the namespace to the operator (`kubectl create namespace`).
        objs = helm_template(release=suffix, namespace=namespace, hooks=False)
        objs.insert(0, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    # What the renewal touches: its own objects, the namespace, the registration.
    keep = {"Namespace", "MutatingWebhookConfiguration"}
    return [
        o
        for o in objs
        if o["kind"] in keep
        or o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == COMPONENT
    ]


@pytest.fixture(scope="module", params=["kustomize", "helm"])
def renewal(
    request: pytest.FixtureRequest,
    controlplane: ControlPlane,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Renewal]:
    objs = render(request.param, tmp_path_factory.mktemp("render"))
    manifest = yaml.safe_dump_all(objs)
    assert {o["kind"] for o in objs} == {
        "Namespace",
        "MutatingWebhookConfiguration",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
        "CronJob",
    }
    try:
        controlplane.kubectl(
            "apply", "--server-side", "--field-manager=e2e-renewal", "-f", "-", input=manifest
        )
        found = renewal_of(objs)
        yield Renewal(request.param, found.namespace, found.service_account, found.args)
    finally:
        controlplane.kubectl(
            "delete", "-f", "-", "--wait=false", "--ignore-not-found", input=manifest, check=False
        )


def token_kubeconfig(cp: ControlPlane, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig holding a real token of the ServiceAccount (TokenRequest as admin)."""
    return cp.token_kubeconfig(path, namespace, account, seconds=TOKEN_SECONDS)


@pytest.fixture(scope="module")
def renewal_kubeconfig(
    controlplane: ControlPlane, renewal: Renewal, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The CronJob's ServiceAccount's real token, as its pod would mount it."""
    return token_kubeconfig(
        controlplane,
        renewal.namespace,
        renewal.service_account,
        tmp_path_factory.mktemp("token") / "kubeconfig",
    )


def command(renewal: Renewal, kubeconfig: Path) -> list[str]:
    return [sys.executable, "-m", "webhook", *renewal.args, "--kubeconfig", str(kubeconfig)]


def get(cp: ControlPlane, path: str) -> Any:
    response = cp.api("GET", path)
    assert response.status == 200, (path, response.body)
    return response.body


def secret_path(renewal: Renewal, name: str) -> str:
    return f"/api/v1/namespaces/{renewal.namespace}/secrets/{name}"


def webhook_path(renewal: Renewal) -> str:
    return (
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/"
        f"{renewal.webhook_config}"
    )


def stored_bundle(config: Any) -> bytes:
    """Every webhook's caBundle must be the same; that one, decoded."""
    bundles = {h["clientConfig"].get("caBundle", "") for h in config["webhooks"]}
    assert len(bundles) == 1, bundles
    return base64.b64decode(bundles.pop())


def fingerprints(pem: bytes) -> list[str]:
    return [rotation.fingerprint(c) for c in rotation.load_certs(pem)]


def versions(cp: ControlPlane, renewal: Renewal) -> tuple[str, str, str]:
    return (
        get(cp, secret_path(renewal, renewal.secret))["metadata"]["resourceVersion"],
        get(cp, secret_path(renewal, f"{renewal.secret}-ca"))["metadata"]["resourceVersion"],
        get(cp, webhook_path(renewal))["metadata"]["resourceVersion"],
    )


def seed_near_expiry(cp: ControlPlane, renewal: Renewal, *, ca_near_expiry: bool) -> None:
    """An install whose serving certificate (and, if asked, CA) is near its end: made by
    an operator's `webhook certs` run, then given short-lived certificates."""
    for name in (renewal.secret, f"{renewal.secret}-ca"):
        cp.kubectl("delete", "secret", name, "-n", renewal.namespace, "--ignore-not-found")
    opts = renewal.options
    bootstrap = subprocess.run(
        [
            sys.executable,
            "-m",
            "webhook",
            "certs",
            f"--namespace={opts.namespace}",
            f"--service={opts.service}",
            f"--secret={opts.secret}",
            f"--webhook-config={opts.webhook_config}",
            f"--days={NEAR_EXPIRY_DAYS}",
            "--kubeconfig",
            str(cp.kubeconfig),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=CERTS_TIMEOUT_SECONDS,
        check=False,
    )
    assert bootstrap.returncode == 0, bootstrap.stdout + bootstrap.stderr
    if not ca_near_expiry:
        return
    ca = pki.make_ca(days=CA_NEAR_EXPIRY_DAYS)
    dns = pki.service_dns_names(opts.service, opts.namespace)
    serving = pki.make_serving_cert(ca, dns, days=NEAR_EXPIRY_DAYS)

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    for name, data in (
        (f"{renewal.secret}-ca", {"tls.crt": ca.cert_pem, "tls.key": ca.key_pem}),
        (
            renewal.secret,
            {"tls.crt": serving.cert_pem, "tls.key": serving.key_pem, "ca.crt": ca.cert_pem},
        ),
    ):
        patch = {"data": {k: b64(v) for k, v in data.items()}}
        cp.kubectl(
            "patch", "secret", name, "-n", renewal.namespace, "--type=merge", "-p",
            json.dumps(patch),
        )  # fmt: skip
    set_bundle(cp, renewal, ca.cert_pem)


def set_bundle(cp: ControlPlane, renewal: Renewal, pem: bytes) -> None:
    """Every webhook's caBundle, as admin."""
    value = base64.b64encode(pem).decode()
    hooks = get(cp, webhook_path(renewal))["webhooks"]
    ops = [
        {"op": "replace", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": value}
        for i in range(len(hooks))
    ]
    cp.kubectl(
        "patch", "mutatingwebhookconfiguration", renewal.webhook_config, "--type=json", "-p",
        json.dumps(ops),
    )  # fmt: skip


# ------------------------------------------------------------ the webhook and its callers


class SecretVolume:
    """A Secret volume's directory as the kubelet writes it: the files are symlinks into
    ``..data``, which is swapped atomically to a new timestamped directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.generation = 0
        directory.mkdir(parents=True, exist_ok=True)

    def project(self, data: dict[str, bytes]) -> None:
        self.generation += 1
        target = self.directory / f"..{self.generation:04d}"
        target.mkdir()
        for key, value in data.items():
            (target / key).write_bytes(value)
            (target / key).chmod(0o440)
        tmp = self.directory / "..data_tmp"
        tmp.symlink_to(target.name)
        tmp.replace(self.directory / "..data")
        for key in data:
            link = self.directory / key
            if not link.is_symlink():
                link.symlink_to(f"..data/{key}")


@dataclass
class Observed:
    statuses: list[int] = field(default_factory=list)
    warm: asyncio.Event = field(default_factory=asyncio.Event)
    failures: list[str] = field(default_factory=list)
    bundles: list[list[str]] = field(default_factory=list)
    served: list[str] = field(default_factory=list)


def secret_data(cp: ControlPlane, renewal: Renewal) -> dict[str, bytes]:
    secret = get(cp, secret_path(renewal, renewal.secret))
    # The Deployment mounts these two keys (its projected volume's items).
    return {k: base64.b64decode(secret["data"][k]) for k in ("tls.crt", "tls.key")}


def served_fingerprint(cert_der: bytes | None) -> str:
    assert cert_der is not None
    return rotation.fingerprint(x509.load_der_x509_certificate(cert_der))


@contextlib.asynccontextmanager
async def admitting(
    cp: ControlPlane, renewal: Renewal, volume: SecretVolume
) -> AsyncIterator[Observed]:
    """The webhook serving the Secret's files, kept busy until the block ends."""
    seen = Observed()
    volume.project(secret_data(cp, renewal))
    server = await start_server(
        ConfigStore(sample_config()),
        NamesOnlySource(),
        loopback_options(volume.directory),
    )
    trust: dict[str, ssl.SSLContext] = {}
    trusted = asyncio.Event()
    stop = asyncio.Event()

    async def informer() -> None:
        """The API server's view of the caBundle."""
        while not stop.is_set():
            config = await asyncio.to_thread(get, cp, webhook_path(renewal))
            pem = stored_bundle(config)
            if not seen.bundles or seen.bundles[-1] != fingerprints(pem):
                seen.bundles.append(fingerprints(pem))
                ctx = ssl.create_default_context(cadata=pem.decode())
                trust["ctx"] = ctx
                trusted.set()
            await asyncio.sleep(POLL_SECONDS)

    async def kubelet() -> None:
        projected = secret_data(cp, renewal)
        while not stop.is_set():
            data = await asyncio.to_thread(secret_data, cp, renewal)
            if data != projected:
                await asyncio.sleep(KUBELET_DELAY_SECONDS)
                volume.project(data)
                projected = data
            await asyncio.sleep(POLL_SECONDS)

    body = json.dumps(make_review(make_pod("contoso.azurecr.io/app:1"))).encode()
    url = f"https://127.0.0.1:{server.port}/mutate"

    async def caller() -> None:
        # A new connection for every admission: each one is a fresh TLS handshake.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            while not stop.is_set():
                try:
                    async with session.post(
                        url,
                        data=body,
                        ssl=trust["ctx"],
                        server_hostname=renewal.server_name,
                        headers={"Content-Type": "application/json"},
                    ) as resp:
                        seen.statuses.append(resp.status)
                        if len(seen.statuses) >= WARM_UP_ADMISSIONS:
                            seen.warm.set()
                        answer = await resp.json()
                        if resp.status != 200 or answer["response"]["allowed"] is not True:
                            seen.failures.append(f"HTTP {resp.status}: {answer}")
                except (aiohttp.ClientError, ssl.SSLError, OSError) as e:
                    seen.failures.append(repr(e))

    async def served() -> None:
        """Which pair the webhook presents, as the API server sees it (an untrusted one
        is an admission the API server would fail)."""
        while not stop.is_set():
            try:
                _, writer = await asyncio.open_connection(
                    "127.0.0.1", server.port, ssl=trust["ctx"], server_hostname=renewal.server_name
                )
            except (ssl.SSLError, OSError) as e:
                seen.failures.append(f"handshake: {e!r}")
                await asyncio.sleep(POLL_SECONDS)
                continue
            tls = writer.get_extra_info("ssl_object")
            fp = served_fingerprint(tls.getpeercert(binary_form=True))
            if not seen.served or seen.served[-1] != fp:
                seen.served.append(fp)
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
            await asyncio.sleep(POLL_SECONDS)

    tasks = [asyncio.create_task(informer()), asyncio.create_task(kubelet())]
    try:
        await asyncio.wait_for(trusted.wait(), CERTS_TIMEOUT_SECONDS)
        tasks += [asyncio.create_task(caller()) for _ in range(CONCURRENCY)]
        tasks.append(asyncio.create_task(served()))
        yield seen
    finally:
        stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await server.stop()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors


async def run_command(argv: list[str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), CERTS_TIMEOUT_SECONDS)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def ca_pair(cp: ControlPlane, renewal: Renewal) -> x509.Certificate:
    secret = get(cp, secret_path(renewal, f"{renewal.secret}-ca"))
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    key = serialization.load_pem_private_key(
        base64.b64decode(secret["data"]["tls.key"]), password=None
    )
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)
    return cert


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("ca_near_expiry", [False, True], ids=["serving", "ca-too"])
async def test_the_cron_job_renews_a_certificate_near_expiry_with_no_failed_admission(
    controlplane: ControlPlane,
    renewal: Renewal,
    renewal_kubeconfig: Path,
    ca_near_expiry: bool,
    tmp_path: Path,
) -> None:
    cp = controlplane
    seed_near_expiry(cp, renewal, ca_near_expiry=ca_near_expiry)
    kubeconfig = renewal_kubeconfig
    old_serving = secret_data(cp, renewal)["tls.crt"]
    old_ca = ca_pair(cp, renewal)
    old_bundle = stored_bundle(get(cp, webhook_path(renewal)))
    before = versions(cp, renewal)

    async with admitting(cp, renewal, SecretVolume(tmp_path / "volume")) as seen:
        await asyncio.wait_for(seen.warm.wait(), CERTS_TIMEOUT_SECONDS)
        at_start = len(seen.statuses)
        code, out = await run_command(command(renewal, kubeconfig))
        assert code == 0, out
        new_serving = secret_data(cp, renewal)["tls.crt"]
        new_fp = fingerprints(new_serving)[0]
        deadline = time.monotonic() + SWITCH_TIMEOUT_SECONDS
        while not seen.served or seen.served[-1] != new_fp:
            assert time.monotonic() < deadline, ("the new pair was never served", seen.served)
            await asyncio.sleep(0.1)
        at_switch = len(seen.statuses)
        await asyncio.sleep(TAIL_SECONDS)

    assert seen.failures == []
    # Admissions before the renewal, while it ran and the pair switched, and after.
    assert 0 < WARM_UP_ADMISSIONS <= at_start < at_switch < len(seen.statuses)
    # The rotation really happened mid-stream: the old pair, then the new one.
    assert seen.served == [fingerprints(old_serving)[0], new_fp]
    serving = x509.load_pem_x509_certificate(new_serving)
    left = serving.not_valid_after_utc - rotation.utc_now()
    assert left.days > renewal.options.renew_before
    ca = ca_pair(cp, renewal)
    bundle = stored_bundle(get(cp, webhook_path(renewal)))
    assert rotation.issued_by(serving, ca)
    after = versions(cp, renewal)
    assert after[0] != before[0]  # the serving pair
    if ca_near_expiry:
        assert rotation.fingerprint(ca) != rotation.fingerprint(old_ca)
        assert "CA: created" in out
        # Old and new CA are trusted together through the switch, the new one first.
        assert fingerprints(bundle) == [rotation.fingerprint(ca), rotation.fingerprint(old_ca)]
        assert seen.bundles == [fingerprints(old_bundle), fingerprints(bundle)]
        assert after[1] != before[1] and after[2] != before[2]
    else:
        assert rotation.fingerprint(ca) == rotation.fingerprint(old_ca)
        assert "CA: reused" in out
        assert bundle == old_bundle
        assert seen.bundles == [fingerprints(old_bundle)]
        assert after[1] == before[1]  # the CA Secret is not rewritten
    assert token_free(out)

    # The next scheduled run finds nothing to do and writes nothing.
    code, again = await run_command(command(renewal, kubeconfig))
    assert code == 0, again
    assert "nothing to renew" in again
    assert versions(cp, renewal) == after


def test_a_later_run_drops_the_ca_a_finished_rotation_left_trusted(
    controlplane: ControlPlane, renewal: Renewal, renewal_kubeconfig: Path
) -> None:
    cp = controlplane
    seed_near_expiry(cp, renewal, ca_near_expiry=False)
    # What a CA rotation leaves once its pair has been served for a while: the pair of
    # the current CA, issued before the propagation grace, and the previous CA trusted.
    secret = get(cp, secret_path(renewal, f"{renewal.secret}-ca"))
    current = pki.KeyPair(
        base64.b64decode(secret["data"]["tls.crt"]), base64.b64decode(secret["data"]["tls.key"])
    )
    previous = pki.make_ca("previous-ca")
    opts = renewal.options
    serving = pki.make_serving_cert(
        current,
        pki.service_dns_names(opts.service, opts.namespace),
        issued_at=rotation.utc_now() - rotation.PROPAGATION_GRACE - dt.timedelta(minutes=1),
    )
    data = {"tls.crt": serving.cert_pem, "tls.key": serving.key_pem}
    cp.kubectl(
        "patch", "secret", renewal.secret, "-n", renewal.namespace, "--type=merge", "-p",
        json.dumps({"data": {k: base64.b64encode(v).decode() for k, v in data.items()}}),
    )  # fmt: skip
    set_bundle(cp, renewal, current.cert_pem + previous.cert_pem)
    before = versions(cp, renewal)

    code, out = asyncio.run(run_command(command(renewal, renewal_kubeconfig)))

    assert code == 0, out
    assert "caBundle drops previous CA previous-ca" in out
    assert fingerprints(stored_bundle(get(cp, webhook_path(renewal)))) == [
        rotation.fingerprint(current.certificate)
    ]
    after = versions(cp, renewal)
    assert after[:2] == before[:2]  # neither Secret is written
    code, again = asyncio.run(run_command(command(renewal, renewal_kubeconfig)))
    assert code == 0 and "nothing to renew" in again and "drops" not in again, again
    assert versions(cp, renewal) == after


def test_before_the_first_certs_run_the_cron_job_creates_nothing_and_says_why(
    controlplane: ControlPlane, renewal: Renewal, renewal_kubeconfig: Path
) -> None:
    cp = controlplane
    for name in (renewal.secret, f"{renewal.secret}-ca"):
        cp.kubectl("delete", "secret", name, "-n", renewal.namespace, "--ignore-not-found")
    bundle = stored_bundle(get(cp, webhook_path(renewal)))

    code, out = asyncio.run(run_command(command(renewal, renewal_kubeconfig)))

    assert code == 1, out
    assert "cannot create it: run python -m webhook certs once" in out
    assert "created" not in out and "patched" not in out
    for name in (renewal.secret, f"{renewal.secret}-ca"):
        assert cp.api("GET", secret_path(renewal, name)).status == 404
    assert stored_bundle(get(cp, webhook_path(renewal))) == bundle


def token_free(text: str) -> bool:
    """No bearer token and no private key in what the command printed."""
    return "PRIVATE KEY" not in text and not re.search(r"eyJ[A-Za-z0-9_-]{20,}", text)


@pytest.fixture(scope="module")
def decoys(controlplane: ControlPlane, renewal: Renewal) -> Iterator[dict[str, str]]:
    """Objects the renewal identity must not reach: another Secret beside its own, and
    another webhook configuration."""
    cp = controlplane
    suffix = uuid.uuid4().hex[:6]
    secret, hook = f"other-{suffix}", f"other-webhook-{suffix}"
    cp.kubectl("create", "secret", "generic", secret, "-n", renewal.namespace, "--from-literal=k=v")
    cp.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": hook},
                "webhooks": [],
            }
        ),
    )
    try:
        yield {"SECRET": secret, "WEBHOOK": hook}
    finally:
        cp.kubectl("delete", "secret", secret, "-n", renewal.namespace, check=False)
        cp.kubectl("delete", "mutatingwebhookconfiguration", hook, check=False)


CA_BUNDLE_PATCH = json.dumps({"webhooks": []})
DENIED = {
    "read-another-secret": ("get", "secret", "SECRET", "-n", "NS"),
    "list-secrets": ("get", "secrets", "-n", "NS"),
    "list-secrets-everywhere": ("get", "secrets", "-A"),
    "read-kube-system-secrets": ("get", "secrets", "-n", "kube-system"),
    "create-a-secret": ("create", "secret", "generic", "planted", "-n", "NS", "--from-literal=a=b"),
    "delete-its-secret": ("delete", "secret", "TLS", "-n", "NS"),
    "patch-another-webhook": (
        "patch", "mutatingwebhookconfiguration", "WEBHOOK", "--type=merge", "-p", CA_BUNDLE_PATCH
    ),
    "read-another-webhook": ("get", "mutatingwebhookconfiguration", "WEBHOOK"),
    "list-webhooks": ("get", "mutatingwebhookconfigurations"),
    "delete-its-webhook": ("delete", "mutatingwebhookconfiguration", "HOOK"),
    "validating-webhooks": ("get", "validatingwebhookconfigurations"),
    "mint-its-own-token": ("create", "token", "SA", "-n", "NS"),
    "mint-another-token": ("create", "token", "default", "-n", "NS"),
    "create-pods": ("run", "p", "--image=busybox", "--restart=Never", "-n", "NS"),
    "read-its-cron-job": ("get", "cronjobs", "-n", "NS"),
    "grant-itself": ("create", "rolebinding", "x", "--clusterrole=admin", "--user=me", "-n", "NS"),
}  # fmt: skip


@pytest.mark.parametrize("attempt", list(DENIED), ids=list(DENIED))
def test_the_renewal_identity_reaches_nothing_else(
    controlplane: ControlPlane,
    renewal: Renewal,
    renewal_kubeconfig: Path,
    decoys: dict[str, str],
    attempt: str,
) -> None:
    cp = controlplane
    names = {
        **decoys,
        "NS": renewal.namespace,
        "TLS": renewal.secret,
        "HOOK": renewal.webhook_config,
        "SA": renewal.service_account,
    }
    args = [names.get(a, a) for a in DENIED[attempt]]

    result = subprocess.run(
        [str(cp.binaries.kubectl), "--kubeconfig", str(renewal_kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0, result.stdout
    assert "forbidden" in result.stderr.lower(), result.stderr
    assert token_free(result.stdout + result.stderr)
