"""``python -m webhook certs``: create or rotate the webhook's CA, serving certificate and caBundle.

Where things are kept:

- the serving pair in ``--out-dir`` (``tls.crt``, ``tls.key``, ``ca.crt``) and/or in the
  ``kubernetes.io/tls`` Secret ``--secret`` (keys ``tls.crt``, ``tls.key``, ``ca.crt``),
  which the Deployment mounts;
- the CA's certificate and key in ``--out-dir`` (``ca.key``) and/or in the Secret
  ``<--secret>-ca``, which no pod mounts: the running webhook never holds the CA key;
- the CA certificate(s) in the ``caBundle`` of every webhook of the
  MutatingWebhookConfiguration ``--webhook-config``, which the API server trusts. That
  configuration is also the Secrets' owner (``ownerReferences``): deleting it, as
  ``helm uninstall`` or ``kubectl delete -k`` do, lets the garbage collector delete them.

Rerunning rotates without an outage window: the CA is reused while it is valid for more
than ``CA_REUSE_MIN_REMAINING`` and only the serving pair is reissued (the caBundle does
not change, so the API server trusts the new pair the moment the webhook reloads it).
When a new CA is made (``--rotate-ca``, or the old one is close to expiry) the caBundle
is published with both the new and the old CA *before* the new serving pair is written,
and a later run drops the old CA once the new pair has had time to reach every replica.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import datetime as dt
import ipaddress
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization

from webhook import pki

#: Reuse the CA while it is valid for more than this. Its successor must be in the
#: caBundle before it expires; 30 days leaves room for a monthly rotation job to miss a run.
CA_REUSE_MIN_REMAINING = dt.timedelta(days=30)
#: Lifetime of a new CA. Rotation of the serving pair needs no caBundle change, so a long
#: lived CA means the API server's trust rarely changes.
CA_DAYS = 3650
#: A Secret update reaches a pod's mounted files after the kubelet's next sync (about a
#: minute) plus its Secret cache TTL (about a minute); the webhook rereads them every 2 s.
#: Until the serving certificate in place is older than this, CAs of earlier serving
#: certificates stay in the caBundle because some replica may still present one.
PROPAGATION_GRACE = dt.timedelta(minutes=10)
#: cert-manager's CA injector owns a caBundle when this annotation is set.
CERT_MANAGER_ANNOTATION = "cert-manager.io/inject-ca-from"
#: Labels of the Secrets this command writes. Deliberately not the managed-by label of
#: the pull secrets: the webhook garbage-collects those.
SECRET_LABELS = {
    "app.kubernetes.io/name": "pull-secret-webhook",
    "app.kubernetes.io/component": "certificates",
}
#: Shown from an API error body at most (status messages are short; HTML proxies are not).
ERROR_BODY_LIMIT = 300

_DNS_RE = re.compile(
    r"^(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)


class CertsError(Exception):
    """A problem the user must fix; the message says how."""


# ------------------------------------------------------------------------ pure logic


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def fingerprint(cert: x509.Certificate) -> str:
    """Short SHA-256 fingerprint for messages (never key material)."""
    digest = cert.fingerprint(hashes.SHA256()).hex()
    return "sha256:" + digest[:16]


def describe(cert: x509.Certificate) -> str:
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    name = str(cn[0].value) if cn else cert.subject.rfc4514_string()
    until = cert.not_valid_after_utc.strftime("%Y-%m-%d")
    return f"{name} ({fingerprint(cert)}, valid until {until})"


def load_certs(pem: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle; an empty list when there is none or it is garbage."""
    try:
        return list(x509.load_pem_x509_certificates(pem))
    except ValueError:
        return []


def pem_bundle(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def usable_ca(pair: pki.KeyPair | None, now: dt.datetime) -> tuple[bool, str]:
    """Whether an existing CA may sign a new serving certificate, and why not."""
    if pair is None:
        return False, "no CA yet"
    try:
        cert = pair.certificate
        key = serialization.load_pem_private_key(pair.key_pem, password=None)
    except ValueError as e:
        return False, f"the stored CA cannot be read ({e})"
    ca_public = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if ca_public != key_public:
        return False, "the stored CA key does not belong to the CA certificate"
    left = cert.not_valid_after_utc - now
    if left <= CA_REUSE_MIN_REMAINING:
        return False, f"the CA expires in {max(left.days, 0)} days"
    return True, ""


@dataclass(frozen=True)
class Existing:
    """What a previous run left behind."""

    ca: pki.KeyPair | None = None
    serving: x509.Certificate | None = None
    bundle: tuple[x509.Certificate, ...] = ()
    """CA certificates currently trusted (caBundle, or the stored ca.crt)."""


@dataclass(frozen=True)
class Issued:
    ca: pki.KeyPair
    new_ca: bool
    why_new_ca: str
    serving: pki.KeyPair
    bundle: tuple[x509.Certificate, ...]
    """CA certificates to trust, the current CA first."""
    dropped: tuple[x509.Certificate, ...] = ()
    """Previously trusted CAs left out of the new bundle."""
    notes: tuple[str, ...] = ()


def issue(
    existing: Existing,
    *,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str],
    days: int,
    rotate_ca: bool,
    now: dt.datetime | None = None,
) -> Issued:
    """Decide on the CA, sign a new serving pair and compute the caBundle to publish."""
    now = now or _now()
    notes: list[str] = []
    reusable, why = usable_ca(existing.ca, now)
    if rotate_ca:
        reusable, why = False, "--rotate-ca"
    if reusable and existing.ca is not None:
        ca, new_ca = existing.ca, False
    else:
        ca, new_ca = pki.make_ca(days=CA_DAYS), True
    ca_cert = ca.certificate
    # A serving certificate must not outlive the CA that signed it.
    room = (ca_cert.not_valid_after_utc - now).days
    if days > room:
        notes.append(f"serving certificate shortened to {room} days (the CA's remaining life)")
        days = room
    serving = pki.make_serving_cert(ca, dns_names, ip_addresses, days=days)

    previous = [
        c
        for c in existing.bundle
        if c.fingerprint(hashes.SHA256()) != ca_cert.fingerprint(hashes.SHA256())
        and c.not_valid_after_utc > now
    ]
    if existing.ca is not None and new_ca:
        old = existing.ca.certificate
        if old.not_valid_after_utc > now and all(
            old.fingerprint(hashes.SHA256()) != c.fingerprint(hashes.SHA256()) for c in previous
        ):
            previous.append(old)
    # Keep earlier CAs while some replica may still present a certificate they signed.
    in_place = existing.serving
    keep_previous = new_ca or (
        in_place is not None
        and (
            not issued_by(in_place, ca_cert)
            or now - (in_place.not_valid_before_utc + pki.BACKDATE) < PROPAGATION_GRACE
        )
    )
    kept = previous if keep_previous else []
    dropped = [] if keep_previous else previous
    return Issued(
        ca=ca,
        new_ca=new_ca,
        why_new_ca=why,
        serving=serving,
        bundle=(ca_cert, *kept),
        dropped=tuple(dropped),
        notes=tuple(notes),
    )


# ----------------------------------------------------------------------------- files


def read_files(out_dir: Path) -> Existing:
    ca_crt, ca_key, tls_crt = out_dir / "ca.crt", out_dir / "ca.key", out_dir / "tls.crt"
    bundle = tuple(load_certs(ca_crt.read_bytes())) if ca_crt.is_file() else ()
    ca = None
    if bundle and ca_key.is_file():
        ca = pki.KeyPair(bundle[0].public_bytes(serialization.Encoding.PEM), ca_key.read_bytes())
    serving = load_certs(tls_crt.read_bytes()) if tls_crt.is_file() else []
    return Existing(ca=ca, serving=serving[0] if serving else None, bundle=bundle)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    tmp.replace(path)


def write_files(out_dir: Path, issued: Issued) -> list[str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    # The CA first: a run interrupted later can still reuse it.
    _write_file(out_dir / "ca.key", issued.ca.key_pem, 0o600)
    _write_file(out_dir / "ca.crt", pem_bundle(issued.bundle), 0o644)
    issued.serving.write(out_dir / "tls.crt", out_dir / "tls.key")
    return [str(out_dir / n) for n in ("ca.crt", "ca.key", "tls.crt", "tls.key")]


# --------------------------------------------------------------------------- cluster


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: Any) -> bytes:
    if not isinstance(value, str):
        return b""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return b""


def api_error(what: str, e: Exception) -> CertsError:
    status = getattr(e, "status", None)
    reason = getattr(e, "reason", "") or ""
    body = getattr(e, "body", "") or ""
    message = ""
    if isinstance(body, bytes | str):
        try:
            message = str(json.loads(body).get("message", ""))
        except (ValueError, AttributeError):
            message = str(body)
    message = " ".join(message.split())[:ERROR_BODY_LIMIT]
    detail = f"HTTP {status} {reason}".strip() if status else type(e).__name__
    return CertsError(f"{what}: {detail}{': ' + message if message else ''}")


@dataclass
class Cluster:
    """The few API calls this command makes (kubernetes-asyncio)."""

    core: Any
    admission: Any
    namespace: str
    secret: str
    webhook_config: str
    secret_versions: dict[str, str] = field(default_factory=dict)
    #: ownerReferences of the Secrets read, kept on every rewrite.
    secret_owners: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    webhook_names: list[str] = field(default_factory=list)
    #: uid of the MutatingWebhookConfiguration read: it owns the Secrets this writes, so
    #: deleting the registration (`helm uninstall`, `kubectl delete -k`) lets the garbage
    #: collector delete them too.
    webhook_uid: str = ""

    def owner_reference(self) -> dict[str, Any] | None:
        if not self.webhook_uid:
            return None
        # No blockOwnerDeletion: it would need update rights on the owner's finalizers.
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "name": self.webhook_config,
            "uid": self.webhook_uid,
        }

    def owned(self, name: str) -> bool:
        """Whether Secret ``name`` already names the webhook configuration as its owner."""
        ref = self.owner_reference()
        return ref is None or any(
            o.get("uid") == ref["uid"] for o in self.secret_owners.get(name, [])
        )

    @property
    def ca_secret(self) -> str:
        return f"{self.secret}-ca"

    async def read_secret(self, name: str) -> dict[str, bytes] | None:
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            obj = await self.core.read_namespaced_secret(name, self.namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise api_error(f"reading Secret {self.namespace}/{name}", e) from e
        self.secret_versions[name] = obj.metadata.resource_version
        self.secret_owners[name] = [
            {
                "apiVersion": o.api_version,
                "kind": o.kind,
                "name": o.name,
                "uid": o.uid,
                **({"controller": o.controller} if o.controller is not None else {}),
            }
            for o in obj.metadata.owner_references or []
        ]
        if obj.type != "kubernetes.io/tls":
            raise CertsError(
                f"Secret {self.namespace}/{name} has type {obj.type}, expected kubernetes.io/tls;"
                " delete it or pick another name"
            )
        return {k: _unb64(v) for k, v in (obj.data or {}).items()}

    async def read(self, want_secret: bool) -> Existing:
        ca: pki.KeyPair | None = None
        serving: x509.Certificate | None = None
        bundle: list[x509.Certificate] = []
        if want_secret:
            stored_ca = await self.read_secret(self.ca_secret)
            if stored_ca and stored_ca.get("tls.crt") and stored_ca.get("tls.key"):
                ca = pki.KeyPair(stored_ca["tls.crt"], stored_ca["tls.key"])
            tls = await self.read_secret(self.secret)
            if tls:
                found = load_certs(tls.get("tls.crt", b""))
                serving = found[0] if found else None
                bundle = load_certs(tls.get("ca.crt", b""))
        if self.webhook_config:
            bundle = await self.read_webhook_bundle()
        return Existing(ca=ca, serving=serving, bundle=tuple(bundle))

    async def read_webhook_bundle(self) -> list[x509.Certificate]:
        from kubernetes_asyncio.client.exceptions import ApiException

        name = self.webhook_config
        try:
            obj = await self.admission.read_mutating_webhook_configuration(name)
        except ApiException as e:
            if e.status == 404:
                raise CertsError(
                    f"MutatingWebhookConfiguration {name} not found: apply the manifests first "
                    "(kubectl apply -k manifests/), or pass --webhook-config '' to skip it"
                ) from e
            raise api_error(f"reading MutatingWebhookConfiguration {name}", e) from e
        self.webhook_uid = obj.metadata.uid or ""
        annotations = obj.metadata.annotations or {}
        if CERT_MANAGER_ANNOTATION in annotations:
            raise CertsError(
                f"MutatingWebhookConfiguration {name} gets its caBundle from cert-manager "
                f"({CERT_MANAGER_ANNOTATION}: {annotations[CERT_MANAGER_ANNOTATION]}); "
                "let cert-manager rotate it, or pass --webhook-config '' to skip it"
            )
        hooks = obj.webhooks or []
        if not hooks:
            raise CertsError(f"MutatingWebhookConfiguration {name} has no webhooks")
        self.webhook_names = [h.name for h in hooks]
        bundle: list[x509.Certificate] = []
        seen: set[bytes] = set()
        for hook in hooks:
            raw = hook.client_config.ca_bundle if hook.client_config else None
            for cert in load_certs(_unb64(raw)):
                fp = cert.fingerprint(hashes.SHA256())
                if fp not in seen:
                    seen.add(fp)
                    bundle.append(cert)
        return bundle

    async def patch_webhook_bundle(self, bundle: Sequence[x509.Certificate]) -> None:
        from kubernetes_asyncio.client.exceptions import ApiException

        value = _b64(pem_bundle(bundle))
        ops: list[dict[str, Any]] = []
        for i, hook_name in enumerate(self.webhook_names):
            # `test` first: the patch applies only if webhook i is still the one we read.
            ops.append({"op": "test", "path": f"/webhooks/{i}/name", "value": hook_name})
            ops.append(
                {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": value}
            )
        try:
            await self.admission.patch_mutating_webhook_configuration(self.webhook_config, ops)
        except ApiException as e:
            raise api_error(
                f"patching caBundle of MutatingWebhookConfiguration {self.webhook_config}", e
            ) from e

    async def write_secret(self, name: str, data: dict[str, bytes]) -> str:
        from kubernetes_asyncio.client.exceptions import ApiException

        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": self.namespace, "labels": SECRET_LABELS},
            "data": {k: _b64(v) for k, v in data.items()},
        }
        owners = list(self.secret_owners.get(name, []))
        ref = self.owner_reference()
        if ref and not any(o.get("uid") == ref["uid"] for o in owners):
            owners.append(ref)
        if owners:
            body["metadata"]["ownerReferences"] = owners
        version = self.secret_versions.get(name)
        try:
            if version is None:
                await self.core.create_namespaced_secret(self.namespace, body)
                return "created"
            # resourceVersion: a concurrent writer makes this fail (409) instead of being lost.
            body["metadata"]["resourceVersion"] = version
            await self.core.replace_namespaced_secret(name, self.namespace, body)
            return "updated"
        except ApiException as e:
            if e.status == 403 and version is None:
                raise CertsError(
                    f"{api_error(f'creating Secret {self.namespace}/{name}', e)}; an identity "
                    "that may only renew (the certs renewal CronJob) cannot create it: run "
                    "python -m webhook certs once with one that may"
                ) from e
            if e.status == 404 and version is None:
                raise CertsError(
                    f"namespace {self.namespace} not found: apply the manifests first "
                    "(kubectl apply -k manifests/) or create it"
                ) from e
            if e.status == 409:
                raise CertsError(
                    f"Secret {self.namespace}/{name} was changed by someone else meanwhile; "
                    "run the command again"
                ) from e
            raise api_error(f"writing Secret {self.namespace}/{name}", e) from e


def check_kubeconfig(kubeconfig: str | None) -> None:
    """Fail early, with a hint, when there are no credentials to load at all (the client
    library would log its own complaint first)."""
    if kubeconfig or os.environ.get("KUBERNETES_SERVICE_HOST"):
        return
    default = os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())
    if os.pathsep not in default and not Path(default).is_file():
        raise CertsError(
            f"no kubeconfig at {default}; pass --kubeconfig, or --webhook-config '' "
            "without --secret to only write files"
        )


async def _api_client(kubeconfig: str | None) -> Any:
    from kubernetes_asyncio import client, config

    cfg = client.Configuration()
    try:
        if kubeconfig:
            await config.load_kube_config(
                config_file=kubeconfig, client_configuration=cfg, persist_config=False
            )
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        else:
            await config.load_kube_config(client_configuration=cfg, persist_config=False)
    except (config.ConfigException, OSError) as e:
        raise CertsError(
            f"cannot load Kubernetes credentials ({e}); pass --kubeconfig, or "
            "--webhook-config '' without --secret to only write files"
        ) from e
    return client.ApiClient(configuration=cfg)


# ------------------------------------------------------------------------------- run


@dataclass(frozen=True)
class Options:
    namespace: str
    service: str
    out_dir: Path | None
    secret: str
    webhook_config: str
    dns: tuple[str, ...]
    ips: tuple[str, ...]
    days: int
    rotate_ca: bool
    kubeconfig: str | None
    renew_before_days: int = 0
    """0: always issue. N: do nothing while the pair in place is valid for more than N days,
    signed by a CA that is itself reusable and trusted (safe to run on a schedule)."""

    @property
    def needs_cluster(self) -> bool:
        return bool(self.secret or self.webhook_config)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Options:
        problems: list[str] = []
        out_dir = Path(args.out_dir) if args.out_dir else None
        secret = args.secret or ""
        if out_dir is None and not secret:
            problems.append(
                "nothing to write: pass --secret NAME (the Deployment mounts "
                "pull-secret-webhook-tls) and/or --out-dir DIR"
            )
        for ip in args.ip:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                problems.append(f"--ip {ip!r} is not an IP address")
        dns = [d.lower().rstrip(".") for d in args.dns]
        problems += [f"--dns {d!r} is not a DNS name" for d in dns if not _DNS_RE.match(d)]
        if not 1 <= args.days <= CA_DAYS:
            problems.append(f"--days {args.days}: expected 1 to {CA_DAYS}")
        renew_before = int(getattr(args, "renew_before", 0) or 0)
        if renew_before and not 1 <= renew_before < args.days:
            problems.append(
                f"--renew-before {renew_before}: expected 1 to {args.days - 1} (below --days)"
            )
        if problems:
            raise CertsError("; ".join(problems))
        return cls(
            namespace=args.namespace,
            service=args.service,
            out_dir=out_dir,
            secret=secret,
            webhook_config=args.webhook_config or "",
            dns=tuple(dict.fromkeys(dns)),
            ips=tuple(dict.fromkeys(args.ip)),
            days=args.days,
            # Declared by the CLI as --rotate-ca; absent from older parsers.
            rotate_ca=bool(getattr(args, "rotate_ca", False)),
            kubeconfig=args.kubeconfig,
            renew_before_days=renew_before,
        )

    def dns_names(self) -> list[str]:
        names = pki.service_dns_names(self.service, self.namespace)
        return list(dict.fromkeys([*names, *self.dns]))


def _merge(cluster: Existing | None, files: Existing | None) -> Existing:
    """The cluster's state wins over files (it is what the API server and pods use)."""
    if cluster is None:
        return files or Existing()
    if files is None:
        return cluster
    return Existing(
        ca=cluster.ca or files.ca,
        serving=cluster.serving or files.serving,
        bundle=cluster.bundle or files.bundle,
    )


def still_good(existing: Existing, renew_before_days: int, now: dt.datetime) -> str:
    """Why the pair in place needs no renewal yet ('' when it does)."""
    serving, ca = existing.serving, existing.ca
    if serving is None or ca is None:
        return ""
    reusable, _ = usable_ca(ca, now)
    trusted = any(
        c.fingerprint(hashes.SHA256()) == ca.certificate.fingerprint(hashes.SHA256())
        for c in existing.bundle
    )
    left = serving.not_valid_after_utc - now
    if not (reusable and trusted and issued_by(serving, ca.certificate)):
        return ""
    if left <= dt.timedelta(days=renew_before_days):
        return ""
    return (
        f"serving certificate {fingerprint(serving)} is valid for {left.days} more days "
        f"(more than --renew-before {renew_before_days}), signed by a trusted CA that stays "
        "usable: nothing to renew"
    )


def stale_cas(existing: Existing, now: dt.datetime) -> tuple[x509.Certificate, ...]:
    """CAs the caBundle still trusts that no replica can need any more: the serving
    certificate in place was issued by the current CA more than ``PROPAGATION_GRACE`` ago.
    What a CA rotation leaves behind once it is complete."""
    serving, ca = existing.serving, existing.ca
    if serving is None or ca is None or not issued_by(serving, ca.certificate):
        return ()
    if now - (serving.not_valid_before_utc + pki.BACKDATE) < PROPAGATION_GRACE:
        return ()
    current = ca.certificate.fingerprint(hashes.SHA256())
    return tuple(c for c in existing.bundle if c.fingerprint(hashes.SHA256()) != current)


async def run(opts: Options, out: TextIO) -> None:
    # What was issued is reported only once something was written: a run that fails before
    # its first write (no such namespace, no rights) must not claim "CA: created".
    pending: list[str] = []

    def say(line: str) -> None:
        pending.append(line)

    def done(line: str) -> None:
        pending.append(line)
        for text in pending:
            print(text, file=out)
        pending.clear()

    files = read_files(opts.out_dir) if opts.out_dir else None
    if not opts.needs_cluster:
        now = _now()
        existing_files = files or Existing()
        reason = (
            still_good(existing_files, opts.renew_before_days, now)
            if opts.renew_before_days and not opts.rotate_ca
            else ""
        )
        if reason:
            stale = stale_cas(existing_files, now)
            if stale and opts.out_dir and existing_files.ca:
                for old in stale:
                    say(f"caBundle drops previous CA {describe(old)}")
                _write_file(opts.out_dir / "ca.crt", existing_files.ca.cert_pem, 0o644)
                done(f"{reason}; wrote {opts.out_dir / 'ca.crt'}")
                return
            done(reason)
            return
        issued = issue(
            files or Existing(),
            dns_names=opts.dns_names(),
            ip_addresses=opts.ips,
            days=opts.days,
            rotate_ca=opts.rotate_ca,
        )
        _report_issue(say, issued)
        assert opts.out_dir is not None
        done("wrote " + ", ".join(write_files(opts.out_dir, issued)))
        return

    from kubernetes_asyncio import client

    api = await _api_client(opts.kubeconfig)
    async with api:
        cluster = Cluster(
            core=client.CoreV1Api(api),
            admission=client.AdmissionregistrationV1Api(api),
            namespace=opts.namespace,
            secret=opts.secret,
            webhook_config=opts.webhook_config,
        )
        # Every read before any write: a refused or missing object changes nothing.
        existing = _merge(await cluster.read(want_secret=bool(opts.secret)), files)
        if opts.renew_before_days and not opts.rotate_ca:
            now = _now()
            reason = still_good(existing, opts.renew_before_days, now)
            if reason:
                # Nothing to renew, but a finished CA rotation may have left its
                # predecessor trusted: drop it (a scheduled run is the "later run").
                stale = stale_cas(existing, now)
                if stale and opts.webhook_config and existing.ca:
                    for old in stale:
                        say(f"caBundle drops previous CA {describe(old)}")
                    await cluster.patch_webhook_bundle([existing.ca.certificate])
                    done(
                        f"{reason}; patched caBundle of MutatingWebhookConfiguration "
                        f"{opts.webhook_config}: {fingerprint(existing.ca.certificate)}"
                    )
                    return
                done(reason)
                return
        issued = issue(
            existing,
            dns_names=opts.dns_names(),
            ip_addresses=opts.ips,
            days=opts.days,
            rotate_ca=opts.rotate_ca,
        )
        _report_issue(say, issued)
        # 1. The CA, so an interrupted run can reuse it.
        if opts.secret and (
            issued.new_ca
            or cluster.ca_secret not in cluster.secret_versions
            or not cluster.owned(cluster.ca_secret)
        ):
            verb = await cluster.write_secret(
                cluster.ca_secret,
                {"tls.crt": issued.ca.cert_pem, "tls.key": issued.ca.key_pem},
            )
            done(
                f"{verb} Secret {opts.namespace}/{cluster.ca_secret} (CA certificate and key; "
                "mounted by no pod)"
            )
        # 2. Trust before use: the API server must trust the new CA before any replica
        #    presents a certificate it signed.
        if opts.webhook_config:
            await cluster.patch_webhook_bundle(issued.bundle)
            cas = ", ".join(fingerprint(c) for c in issued.bundle)
            n = len(cluster.webhook_names)
            done(
                f"patched caBundle of MutatingWebhookConfiguration {opts.webhook_config} "
                f"({n} webhook{'s' if n != 1 else ''}): {cas}"
            )
        # 3. The serving pair; the webhook reloads it from its mounted Secret.
        if opts.secret:
            verb = await cluster.write_secret(
                opts.secret,
                {
                    "tls.crt": issued.serving.cert_pem,
                    "tls.key": issued.serving.key_pem,
                    "ca.crt": pem_bundle(issued.bundle),
                },
            )
            done(f"{verb} Secret {opts.namespace}/{opts.secret} (tls.crt, tls.key, ca.crt)")
        if opts.out_dir:
            done("wrote " + ", ".join(write_files(opts.out_dir, issued)))


def _report_issue(say: Callable[[str], None], issued: Issued) -> None:
    ca = issued.ca.certificate
    if issued.new_ca:
        say(f"CA: created {describe(ca)} ({issued.why_new_ca})")
    else:
        say(f"CA: reused {describe(ca)}")
    serving = issued.serving.certificate
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = [*sans.get_values_for_type(x509.DNSName)]
    names += [str(i) for i in sans.get_values_for_type(x509.IPAddress)]
    until = serving.not_valid_after_utc.strftime("%Y-%m-%d")
    say(f"serving certificate: {fingerprint(serving)} for {', '.join(names)}, valid until {until}")
    for note in issued.notes:
        say(f"note: {note}")
    for old in issued.bundle[1:]:
        say(f"caBundle keeps previous CA {describe(old)} until the new pair is in use")
    for old in issued.dropped:
        say(f"caBundle drops previous CA {describe(old)}")


def main(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Entry point of ``python -m webhook certs``: 0 done, 1 failed, 2 bad arguments."""
    try:
        opts = Options.from_args(args)
    except CertsError as e:
        print(f"error: {e}", file=err)
        return 2
    try:
        if opts.needs_cluster:
            check_kubeconfig(opts.kubeconfig)
        asyncio.run(run(opts, out))
    except CertsError as e:
        print(f"error: {e}", file=err)
        return 1
    return 0
