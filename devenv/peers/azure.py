"""A local Azure for tests: Entra ID, IMDS and ACR login servers on loopback.

``AzureEmulator`` serves
- Entra ID's token endpoint over HTTPS at ``authority_host``
  (pass it as ``authority=`` or AZURE_AUTHORITY_HOST),
- IMDS over plain HTTP at ``imds_host`` (AZURE_POD_IDENTITY_AUTHORITY_HOST),
- one HTTPS listener per registry (``AcrRegistry.login_server`` = 127.0.0.1:PORT)
  with ACR's token service and ``/v2/`` proxied to a real registry.
Clients trust ``ca_path`` (or ``cert_dir`` for skopeo). Every request is
recorded (see ``traffic``) and faults can be injected per endpoint.

In-process: ``async with AzureEmulator() as azure: ...``. From sync code:
``EmulatorThread``. As a playground: ``python -m devenv.peers.azure --state-dir DIR
[--config FILE.json]`` prints and writes ``DIR/emulator.json`` with the URLs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from cryptography import x509

from devenv.peers import jws
from devenv.peers.acr import AcrRegistry
from devenv.peers.directory import Directory, Principal
from devenv.peers.entra import EntraTokenEndpoint
from devenv.peers.imds import ImdsHost
from devenv.peers.loopback import (
    LOOPBACK,
    LoopbackEmulator,
    oauth_error_body,
    registry_error_body,
)
from devenv.peers.tls import CertificateAuthority

T = TypeVar("T")


class AzureEmulator(LoopbackEmulator):
    NAME = "azure-emulator"

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        ca: CertificateAuthority | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(state_dir, ca=ca, clock=clock)
        self.directory = Directory(clock)
        self.imds = ImdsHost(self.directory)
        self.acr_signer, self.acr_signing_cert_path = self._token_signer("acr-token-signer")
        self.registries: dict[str, AcrRegistry] = {}
        self.authority_host = ""
        self.imds_host = ""

    async def _listen(self) -> None:
        entra = self._new_app(oauth_error_body)
        EntraTokenEndpoint(self.directory).add_routes(entra)
        self.authority_host = f"https://{LOOPBACK}:{await self._serve(entra, tls=True)}"
        imds = self._new_app(oauth_error_body)
        self.imds.add_routes(imds)
        self.imds_host = f"http://{LOOPBACK}:{await self._serve(imds, tls=False)}"

    # --- registries ---------------------------------------------------------------

    async def add_registry(self, name: str, upstream: str | None = None) -> AcrRegistry:
        """Starts a login server for registry ``name``; ``upstream`` (or later
        ``registry.upstream``) is the base URL of the registry its ``/v2/`` proxies to."""
        if not self.running:
            raise RuntimeError("start the emulator before adding registries")
        if name in self.registries:
            raise ValueError(f"registry {name} exists")
        app = self._new_app(registry_error_body)
        registry = AcrRegistry(name, "", self.directory, self.acr_signer)
        registry.add_routes(app)
        port = await self._serve(app, tls=True)
        registry.login_server = f"{LOOPBACK}:{port}"
        registry.realm = f"https://{registry.login_server}/oauth2/token"
        registry.upstream = upstream
        registry.proxy_session = self._session
        self.registries[name] = registry
        return registry

    def registry(self, name: str) -> AcrRegistry:
        return self.registries[name]

    def assign_role(self, registry: str, principal_id: str, role: str = "AcrPull") -> None:
        self.registries[registry].assign_role(principal_id, role)

    # --- directory ----------------------------------------------------------------

    def add_tenant(self, tenant_id: str | None = None) -> str:
        return self.directory.add_tenant(tenant_id)

    def register_app(
        self, tenant_id: str, client_id: str | None = None, **kwargs: Any
    ) -> Principal:
        """See ``Directory.register_app`` (``secret=``, ``certificate=``, ``object_id=``)."""
        return self.directory.register_app(tenant_id, client_id, **kwargs)

    def add_managed_identity(
        self,
        tenant_id: str,
        *,
        client_id: str | None = None,
        object_id: str | None = None,
        resource_id: str | None = None,
        system_assigned: bool = False,
        attach: bool = True,
    ) -> Principal:
        """A managed identity, attached to the emulated IMDS host unless ``attach=False``
        (then only usable through federated credentials, as with workload identity)."""
        principal = self.directory.add_managed_identity(
            tenant_id, client_id=client_id, object_id=object_id, resource_id=resource_id
        )
        if attach:
            self.imds.attach(principal, system_assigned=system_assigned)
        return principal

    def add_federated_credential(self, tenant_id: str, client_id: str, **kwargs: Any) -> None:
        """See ``Directory.add_federated_credential`` (``issuer=``, ``subject=``,
        ``audiences=``)."""
        self.directory.add_federated_credential(tenant_id, client_id, **kwargs)

    def register_issuer_keys(self, issuer: str, keys: Mapping[str, Any] | Iterable[Any]) -> None:
        self.directory.register_issuer_keys(issuer, keys)

    @property
    def entra_public_key(self) -> jws.PublicKey:
        """Verifies every Entra access token the emulator issues (RS256)."""
        return self.directory.signing_key.public_key()

    @property
    def acr_public_key(self) -> jws.PublicKey:
        """Verifies every ACR refresh and access token the emulator issues (ES256)."""
        return self.acr_signer.key.public_key()

    def environment(self) -> dict[str, str]:
        """Variables that point azure-identity at this emulator."""
        return {
            "AZURE_AUTHORITY_HOST": self.authority_host,
            "AZURE_POD_IDENTITY_AUTHORITY_HOST": self.imds_host,
        }

    def describe(self) -> dict[str, Any]:
        return {
            "authority_host": self.authority_host,
            "imds_host": self.imds_host,
            "ca_path": str(self.ca_path),
            "cert_dir": str(self.cert_dir),
            "acr_signing_cert_path": str(self.acr_signing_cert_path),
            "registries": {n: r.login_server for n, r in self.registries.items()},
            "tenants": sorted(self.directory.tenants),
        }

    async def apply_config(self, config: Mapping[str, Any]) -> None:
        """Registers what a playground config file describes (see ``main``)."""
        for tenant in config.get("tenants", []):
            self.add_tenant(tenant)
        for app in config.get("apps", []):
            certificate = None
            if app.get("certificate"):
                pem = await asyncio.to_thread(Path(app["certificate"]).read_bytes)
                certificate = x509.load_pem_x509_certificate(pem)
            self.register_app(
                app["tenant"],
                app.get("client_id"),
                secret=app.get("secret"),
                certificate=certificate,
                object_id=app.get("object_id"),
            )
        for identity in config.get("managed_identities", []):
            self.add_managed_identity(
                identity["tenant"],
                client_id=identity.get("client_id"),
                object_id=identity.get("object_id"),
                resource_id=identity.get("resource_id"),
                system_assigned=bool(identity.get("system_assigned", False)),
                attach=bool(identity.get("attach", True)),
            )
        for fic in config.get("federated_credentials", []):
            self.add_federated_credential(
                fic["tenant"], fic["client_id"], issuer=fic["issuer"], subject=fic["subject"]
            )
        for issuer, jwks in config.get("issuer_keys", {}).items():
            self.register_issuer_keys(issuer, jwks)
        for entry in config.get("registries", []):
            registry = await self.add_registry(entry["name"], entry.get("upstream"))
            for grant in entry.get("roles", []):
                registry.assign_role(grant["principal"], grant.get("role", "AcrPull"))
            for user in entry.get("users", []):
                registry.add_basic_user(user["username"], user["password"])


class Emulator(Protocol):
    """What ``EmulatorThread`` runs: an emulator started and stopped on its loop."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


E = TypeVar("E", bound=Emulator)


class EmulatorThread(Generic[E]):
    """Runs an emulator (Azure's, Google Cloud's) on its own event loop in a background
    thread, for sync callers."""

    def __init__(self, emulator: E) -> None:
        self.emulator = emulator
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"{type(emulator).__name__}", daemon=True
        )

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def start(self) -> E:
        self._thread.start()
        self.call(self.emulator.start())
        return self.emulator

    def stop(self) -> None:
        if self._thread.is_alive():
            self.call(self.emulator.stop())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()

    def __enter__(self) -> E:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _serve_forever(state_dir: Path, config: Mapping[str, Any]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with AzureEmulator(state_dir) as emulator:
        await emulator.apply_config(config)
        description = json.dumps(emulator.describe(), indent=2)
        (state_dir / "emulator.json").write_text(description + "\n")
        print(description, flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--state-dir", type=Path, required=True, help="where TLS files and emulator.json go"
    )
    parser.add_argument(
        "--config", type=Path, help="JSON: tenants, apps, managed_identities, registries…"
    )
    args = parser.parse_args(argv)
    config = json.loads(args.config.read_text()) if args.config else {}
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(args.state_dir, config))


if __name__ == "__main__":
    main()
