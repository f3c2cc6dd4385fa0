"""``python -m webhook doctor``: try every registry entry's exchange from here.

One line per registry: ``ok``, ``FAIL`` (with the step, the remote code and a
hint) or ``SKIP`` (what could not be checked from here, and why). The exit code
is 1 when anything failed, 2 for unusable arguments or config, else 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TextIO

from webhook.admission.images import InvalidReference, parse_image
from webhook.admission.needs import PullNeed
from webhook.cli.common import Commands, add_config_option, config_path, load
from webhook.config.acr import AcrEntry
from webhook.config.ecr import EcrEntry, EcrFamily
from webhook.config.gar import GarEntry
from webhook.config.kinds import RegistryEntry, kind_of
from webhook.config.schema import Config
from webhook.config.store import ConfigStore
from webhook.credentials import CredentialCache, RegistryAuthError, RetryPolicy
from webhook.credentials.base import (
    Attempt,
    Credential,
    SecretReader,
    ServiceAccountTokens,
    jwt_claims,
    principal_for,
)
from webhook.credentials.retry import with_retries

#: How long one registry may take: room for two or three attempts at a slow
#: endpoint, short enough that a broken setup answers within a minute.
DOCTOR_TIMEOUT = 20.0
#: Three quick attempts: enough to ride out one blip, few enough to report fast.
DOCTOR_RETRY = RetryPolicy(first_delay=0.5, max_delay=2.0, max_attempts=3)
#: Tokens are dated by their issuer; beyond 5 minutes of difference (the usual
#: validator tolerance, and what AWS SigV4 allows) renewals land early or late.
SKEW_WARNING = 300.0


class KubeReads(SecretReader, ServiceAccountTokens, Protocol):
    """What doctor needs from Kubernetes: both credential interfaces."""


#: One Google access token serves every Google registry host its identity may read: a
#: ``gar`` family entry without a host is tried with this one (the exchange never
#: contacts it; ``--image`` checks a repository on its own host).
GAR_STAND_IN = "us-docker.pkg.dev"


@dataclass(frozen=True)
class Target:
    entry: RegistryEntry
    host: str
    """A concrete registry host, or ``*`` when only the identity step can be tried."""
    repositories: tuple[str, ...] = ()
    """Repositories on ``host`` to try reading with the credential (``--image``, gar)."""


def duration(seconds: float) -> str:
    """``2h59m``, ``45m``, ``30s``; negative means already past."""
    if seconds < 0:
        return "-" + duration(-seconds)
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m" if minutes else f"{secs}s"


def targets(
    config: Config,
    hosts: Mapping[str, Sequence[str]],
    repositories: Mapping[tuple[str, str], Sequence[str]] | None = None,
) -> list[Target]:
    """Each entry's exact hosts plus those given on the command line; a family entry
    without any gets a stand-in (an ECR host in its region, else AWS_REGION's; a Google
    registry host; or ``*``). ``repositories`` by (entry, host): what ``--image`` asks to
    read there."""
    repositories = repositories or {}
    found: list[Target] = []
    default_region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION", "")
    for entry in config.registries:
        names = sorted(entry.rule.hosts) + [h for h in hosts.get(entry.name, ()) if h]
        region = (entry.region if isinstance(entry, EcrEntry) else "") or default_region
        if not names and isinstance(entry, EcrEntry) and region:
            # One ECR token serves every host of a region: any host there tests it, and
            # the account in the name is never sent (no registryIds).
            family = entry.rule.family
            accounts = family.accounts if isinstance(family, EcrFamily) else frozenset()
            account = min(accounts) if accounts else "000000000000"
            names = [f"{account}.dkr.ecr.{region}.amazonaws.com"]
        if not names and isinstance(entry, GarEntry):
            names = [GAR_STAND_IN]
        for host in dict.fromkeys(names) or ["*"]:
            found.append(Target(entry, host, tuple(repositories.get((entry.name, host), ()))))
    return found


def _skew_note(token: str, issued_at: float) -> str:
    iat = jwt_claims(token).get("iat")
    if isinstance(iat, int | float) and abs(iat - issued_at) > SKEW_WARNING:
        return f"; WARNING clock differs from the issuer's by {duration(abs(iat - issued_at))}"
    return ""


def _describe(entry: RegistryEntry) -> str:
    scope = f", scope {entry.scope}" if isinstance(entry, AcrEntry) and entry.scope else ""
    return f"{entry.kind} {entry.auth.mode}{scope}"


class Doctor:
    def __init__(
        self,
        config: Config,
        cache: CredentialCache,
        out: TextIO,
        service_account: str,
        clock: Callable[[], float],
        timeout: float,
    ) -> None:
        self.config = config
        self.cache = cache
        self.out = out
        self.namespace, _, self.service_account = service_account.partition("/")
        self.clock = clock
        self.timeout = timeout

    def line(self, status: str, target: Target, identity: str, text: str) -> None:
        print(f"{status:<4} {target.entry.name} {target.host} {identity} {text}", file=self.out)

    async def check(self, target: Target) -> bool:
        """Prints the target's line; False when it failed."""
        entry = target.entry
        per_pod = entry.per_pod_identity
        if per_pod and not self.service_account:
            self.line(
                "SKIP",
                target,
                "pod-sa",
                "needs a pod's service account: pass --service-account NAMESPACE/NAME "
                "(with a kubeconfig, or run in the cluster)",
            )
            return True
        namespace = self.namespace if per_pod else self.config.namespace
        account = self.service_account or "default"
        need = PullNeed.make(entry, target.host, prefix="doctor", service_account=account)
        who = principal_for(need, namespace)
        try:
            if target.host != "*":
                credential = await self.cache.get(
                    need, namespace, deadline=time.monotonic() + self.timeout
                )
                text = self._ok_text(entry, credential)
                if isinstance(entry, GarEntry):
                    text += await self._reads(target, credential, who)
            elif isinstance(entry, AcrEntry):
                acr_need = PullNeed.make(entry, "*", prefix="doctor", service_account=account)
                text = await self._identity_only(acr_need, namespace)
            else:
                kind = kind_of(type(entry))
                region = ", set region, or set AWS_REGION" if isinstance(entry, EcrEntry) else ""
                self.line(
                    "SKIP",
                    target,
                    who,
                    f"an {kind.name.upper()} family entry needs "
                    f"{'a region' if region else 'a host'}: pass --host "
                    f"{entry.name}={kind.example_host}{region}",
                )
                return True
        except RegistryAuthError as e:
            if e.code == "no-kubernetes":
                self.line("SKIP", target, who, f"{e.step}: {e.message} — {e.hint}")
                return True
            hint = f" — hint: {e.hint}" if e.hint else ""
            message = f" {e.message}" if e.message else ""
            self.line("FAIL", target, who, f"{e.step}: {e.code}{message}{hint}")
            return False
        self.line("ok", target, who, text)
        return True

    def _ok_text(self, entry: RegistryEntry, credential: Credential) -> str:
        left = duration(credential.expires_at - self.clock())
        # An ACR token is a JWT that says when its issuer made it.
        acr = isinstance(entry, AcrEntry)
        skew = _skew_note(credential.password, credential.issued_at) if acr else ""
        return f"expires in {left} ({_describe(entry)}{skew})"

    async def _reads(self, target: Target, credential: Credential, who: str) -> str:
        """The registry step of a gar entry: each ``--image`` repository read with the
        token (raises RegistryAuthError naming the role when the registry refuses)."""
        if not target.repositories:
            return f"; pass --image {target.host}/PROJECT/REPOSITORY/IMAGE to try a read"
        from webhook.credentials.gar import GarProvider

        provider = self.cache.provider(GarEntry)
        assert isinstance(provider, GarProvider)
        for repository in target.repositories:
            attempt = Attempt(target.entry.name, who, time.monotonic() + self.timeout)
            await provider.check_pull(credential, target.host, repository, attempt, who)
        return f"; reads {', '.join(target.repositories)}"

    async def _identity_only(self, need: PullNeed[AcrEntry], namespace: str) -> str:
        """For an ACR family entry without a host: the Entra ID step alone."""
        entry = need.entry
        provider = self.cache.acr_provider()
        token = await with_retries(
            lambda attempt: provider.entra_token(need, namespace, attempt),
            entry=entry.name,
            identity=principal_for(need, namespace),
            deadline=time.monotonic() + self.timeout,
            policy=DOCTOR_RETRY,
        )
        left = duration(token.expires_on - self.clock())
        skew = _skew_note(token.token, self.clock())
        return (
            f"Entra token only, expires in {left} ({_describe(entry)}{skew}); "
            f"pass --host {entry.name}={kind_of(AcrEntry).example_host} to try the ACR exchange"
        )


async def run(
    config: Config,
    *,
    out: TextIO,
    hosts: Mapping[str, Sequence[str]] | None = None,
    repositories: Mapping[tuple[str, str], Sequence[str]] | None = None,
    service_account: str = "",
    kube: KubeReads | None = None,
    clock: Callable[[], float] = time.time,
    per_registry_seconds: float = DOCTOR_TIMEOUT,
) -> int:
    """Try every entry (each of its hosts) and print one line each; 1 if any failed."""
    async with CredentialCache(
        ConfigStore(config),
        kube,
        kube,
        clock=clock,
        retry=DOCTOR_RETRY,
        exchange_budget=per_registry_seconds,
    ) as cache:
        doctor = Doctor(config, cache, out, service_account, clock, per_registry_seconds)
        results = [await doctor.check(t) for t in targets(config, hosts or {}, repositories)]
    return 0 if all(results) else 1


def parse_hosts(config: Config, values: Sequence[str]) -> dict[str, list[str]]:
    """``ENTRY=HOST`` or a bare ``HOST`` (given to the entry that matches it)."""
    hosts: dict[str, list[str]] = {}
    names = {e.name for e in config.registries}
    for value in values:
        name, sep, host = value.partition("=")
        if not sep:
            entry = config.entry_for(value.lower())
            if entry is None:
                raise ValueError(f"--host {value}: no registry entry matches this host")
            name, host = entry.name, value
        if name not in names:
            raise ValueError(f"--host {value}: no registry entry named {name}")
        hosts.setdefault(name, []).append(host.lower())
    return hosts


def parse_images(
    config: Config, values: Sequence[str]
) -> tuple[dict[str, list[str]], dict[tuple[str, str], list[str]]]:
    """``--image IMAGE``: its host for the entry that covers it, and its repository to
    read there (gar entries)."""
    hosts: dict[str, list[str]] = {}
    repositories: dict[tuple[str, str], list[str]] = {}
    for value in values:
        try:
            image = parse_image(value)
        except InvalidReference as e:
            raise ValueError(f"--image {value}: {e}") from None
        entry = config.entry_for(image.domain)
        if not isinstance(entry, GarEntry):
            raise ValueError(f"--image {value}: no gar registry entry covers {image.domain}")
        hosts.setdefault(entry.name, []).append(image.domain)
        repositories.setdefault((entry.name, image.domain), []).append(image.path)
    return hosts, repositories


async def _with_kube(
    config: Config,
    hosts: dict[str, list[str]],
    repositories: dict[tuple[str, str], list[str]],
    service_account: str,
    kubeconfig: str | None,
    out: TextIO,
    err: TextIO,
) -> int:
    """Runs with Kubernetes access when a kubeconfig is given or we run in a cluster."""
    kube = None
    if kubeconfig or os.environ.get("KUBERNETES_SERVICE_HOST"):
        from webhook.kube.calls import Kube, connect

        try:
            kube = Kube(await connect(kubeconfig))
        except Exception as e:  # any kubeconfig or in-cluster setup problem
            print(f"error: cannot reach Kubernetes: {type(e).__name__}: {e}", file=err)
            return 2
    try:
        return await run(
            config,
            out=out,
            hosts=hosts,
            repositories=repositories,
            service_account=service_account,
            kube=kube,
        )
    finally:
        if kube is not None:
            await kube.close()


def add_command(sub: Commands) -> None:
    p = sub.add_parser("doctor", help="try every registry's identity exchange from here")
    add_config_option(p)
    p.add_argument(
        "--host",
        action="append",
        default=[],
        help="ENTRY=HOST: a host to try for a family entry (repeatable)",
    )
    p.add_argument(
        "--image",
        action="append",
        default=[],
        help="an image of a gar entry whose repository the identity must be able to read "
        "(repeatable)",
    )
    p.add_argument(
        "--service-account",
        default="",
        help="NAMESPACE/NAME whose token podServiceAccount entries use",
    )
    p.add_argument("--kubeconfig", help="kubeconfig for Secrets and service-account tokens")
    p.set_defaults(
        func=lambda args, out, err: main(
            config_path(args.config),
            hosts=args.host,
            images=args.image,
            service_account=args.service_account,
            kubeconfig=args.kubeconfig,
            out=out,
            err=err,
        )
    )


def main(
    path: str,
    *,
    hosts: Sequence[str] = (),
    images: Sequence[str] = (),
    service_account: str = "",
    kubeconfig: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``python -m webhook doctor``: 0 all ok, 1 something failed, 2 unusable input."""
    out, err = out or sys.stdout, err or sys.stderr
    config = load(path, err)
    if config is None:
        return 2
    if service_account and service_account.count("/") != 1:
        print(f"error: --service-account {service_account}: expected NAMESPACE/NAME", file=err)
        return 2
    try:
        by_entry = parse_hosts(config, hosts)
        image_hosts, repositories = parse_images(config, images)
        for name, more in image_hosts.items():
            by_entry.setdefault(name, []).extend(more)
    except ValueError as e:
        print(f"error: {e}", file=err)
        return 2
    # The FAIL line is the report. The credential layer also logs each failure as a
    # warning, which, with no logging configured, Python's last-resort handler would print
    # to stderr: every FAIL twice. Quiet that logger for the run; errors still show.
    quiet = logging.getLogger("webhook")
    level = quiet.level
    quiet.setLevel(max(level, logging.ERROR))
    try:
        return asyncio.run(
            _with_kube(config, by_entry, repositories, service_account, kubeconfig, out, err)
        )
    finally:
        quiet.setLevel(level)
