"""One ``python -m webhook certs`` run: read what is in place, decide, write in a safe order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from cryptography import x509

from webhook.certs import pki
from webhook.certs.cluster import Cluster, api_client
from webhook.certs.files import read_files, write_file, write_files
from webhook.certs.rotation import (
    Existing,
    Issued,
    describe,
    fingerprint,
    issue,
    merge,
    pem_bundle,
    stale_cas,
    still_good,
    utc_now,
)


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

    def dns_names(self) -> list[str]:
        names = pki.service_dns_names(self.service, self.namespace)
        return list(dict.fromkeys([*names, *self.dns]))


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
        now = utc_now()
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
                write_file(opts.out_dir / "ca.crt", existing_files.ca.cert_pem, 0o644)
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

    api = await api_client(opts.kubeconfig)
    async with api:
        cluster = Cluster(
            api=api,
            namespace=opts.namespace,
            secret=opts.secret,
            webhook_config=opts.webhook_config,
        )
        # Every read before any write: a refused or missing object changes nothing.
        existing = merge(await cluster.read(want_secret=bool(opts.secret)), files)
        if opts.renew_before_days and not opts.rotate_ca:
            now = utc_now()
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
