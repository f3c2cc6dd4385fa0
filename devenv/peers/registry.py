"""A real OCI registry (Debian's ``docker-registry``, distribution 2.8) on loopback.

Two auth modes, as the webhook meets them:
- token auth, the way ACR works: the registry checks ES256 bearer tokens
  offline against the emulator's signing certificate, and sends clients to the
  emulator's login server for them (``DockerRegistry.token_auth``);
- htpasswd basic auth, the way ECR credentials are used (user ``AWS``)
  (``DockerRegistry.htpasswd_auth``).
The registry itself speaks plain HTTP; in token mode clients reach it through
the emulator's HTTPS login server, like a real ACR host.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from devenv.lifecycle import Component
from devenv.processes import terminate
from devenv.serve import free_port

if TYPE_CHECKING:
    from devenv.peers.acr import AcrRegistry
    from devenv.peers.artifactregistry import ArtifactRegistryHost
    from devenv.peers.azure import AzureEmulator
    from devenv.peers.gcp import GcpEmulator
    from devenv.peers.oci import OciImage

REGISTRY_BINARY = "docker-registry"
SKOPEO_BINARY = "skopeo"
# bcrypt cost 5 (32 rounds): the registry verifies the hash on every request and
# tests make many; production strength is irrelevant for a throwaway file.
_BCRYPT_COST = 5
_READY_TIMEOUT = 10.0  # seconds; it is ready in well under 0.1 s on an idle machine
_STOP_TIMEOUT = 5.0
# What the registry fixtures push, and the user name ECR credentials carry.
SEED_REPOSITORY = "demo/hello"
SEED_TAG = "v1"
#: Artifact Registry image paths are PROJECT/REPOSITORY/IMAGE.
GAR_SEED_REPOSITORY = "emulated-project/images/hello"
ECR_USERNAME = "AWS"


def missing_binaries(*names: str) -> list[str]:
    return [name for name in names if shutil.which(name) is None]


def bcrypt_hash(password: str) -> str:
    """A ``$2b$`` bcrypt hash, as docker-registry's htpasswd auth requires.

    Uses the C library's crypt(3) (libxcrypt, part of every Debian system), or
    Apache's ``htpasswd`` when that is missing. Only the first 72 bytes of the
    password count: tests of a wrong password must differ before that.
    """
    library = ctypes.util.find_library("crypt")
    if library is not None:
        libcrypt = ctypes.CDLL(library)
        libcrypt.crypt_gensalt.restype = ctypes.c_char_p
        libcrypt.crypt_gensalt.argtypes = [
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        libcrypt.crypt.restype = ctypes.c_char_p
        libcrypt.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        salt = libcrypt.crypt_gensalt(b"$2b$", _BCRYPT_COST, None, 0)
        hashed = libcrypt.crypt(password.encode(), salt) if salt else None
        if hashed and hashed.startswith(b"$2b$"):
            return str(hashed.decode("ascii"))
    if shutil.which("htpasswd"):
        result = subprocess.run(
            ["htpasswd", "-niBC", str(_BCRYPT_COST), "user"],
            input=password.encode(),
            capture_output=True,
            check=True,
        )
        return result.stdout.decode().strip().split(":", 1)[1]
    raise RuntimeError("no bcrypt implementation: neither libcrypt nor htpasswd is available")


class DockerRegistry(Component):
    """One ``docker-registry serve`` process with its own config, storage and log."""

    def __init__(self, directory: Path, auth: Mapping[str, Any] | None) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.storage_dir = directory / "storage"
        self.config_path = directory / "config.yml"
        self.log_path = directory / "registry.log"
        self.htpasswd_path = directory / "htpasswd"
        self.auth = dict(auth or {})
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @classmethod
    def token_auth(
        cls, directory: Path, *, realm: str, service: str, issuer: str, rootcertbundle: Path
    ) -> DockerRegistry:
        token = {
            "realm": realm,
            "service": service,
            "issuer": issuer,
            "rootcertbundle": str(rootcertbundle),
        }
        return cls(directory, {"token": token})

    @classmethod
    def htpasswd_auth(cls, directory: Path, users: Mapping[str, str]) -> DockerRegistry:
        registry = cls(directory, None)
        registry.set_users(users)
        registry.auth = {"htpasswd": {"realm": "basic-realm", "path": str(registry.htpasswd_path)}}
        return registry

    def set_users(self, users: Mapping[str, str]) -> None:
        """Rewrites the htpasswd file; the registry re-reads it when it changes."""
        lines = [f"{name}:{bcrypt_hash(password)}\n" for name, password in users.items()]
        self.htpasswd_path.write_text("".join(lines))

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def _config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {
                "addr": self.host,
                # Relative Location headers keep redirects valid behind the login server proxy.
                "relativeurls": True,
                "secret": secrets.token_hex(16),
            },
            "health": {"storagedriver": {"enabled": False}},
        }
        if self.auth:
            config["auth"] = self.auth
        return config

    def start(self) -> None:
        if self._process is not None:
            return
        self.port = free_port()
        # JSON is YAML; docker-registry reads either.
        self.config_path.write_text(json.dumps(self._config(), indent=2))
        # REGISTRY_* variables override config keys: keep the caller's out.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [REGISTRY_BINARY, "serve", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                self.stop()
                raise RuntimeError(f"docker-registry exited early:\n{self.log_tail()}")
            # Accepting connections means it is serving: it binds only after loading config.
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)  # poll often: startup takes tens of milliseconds
        self.stop()
        raise RuntimeError(f"docker-registry not ready after {_READY_TIMEOUT}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self._process is not None:
            terminate(self._process, _STOP_TIMEOUT)
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # --- lifecycle (``with`` starts and stops it: devenv.lifecycle.Component) ---


@dataclass
class TokenRegistry:
    emulator: AzureEmulator
    acr: AcrRegistry
    registry: DockerRegistry
    image: OciImage

    @property
    def login_server(self) -> str:
        return self.acr.login_server

    @property
    def image_ref(self) -> str:
        """The pushed image, as a pod would name it."""
        return f"{self.acr.login_server}/{SEED_REPOSITORY}:{SEED_TAG}"

    @property
    def cert_dir(self) -> Path:
        return self.emulator.cert_dir


@dataclass
class BasicRegistry:
    registry: DockerRegistry
    username: str
    password: str
    image: OciImage

    @property
    def host(self) -> str:
        return self.registry.host

    @property
    def image_ref(self) -> str:
        return f"{self.registry.host}/{SEED_REPOSITORY}:{SEED_TAG}"

    def set_password(self, password: str) -> None:
        """Accept a different password from now on (e.g. the one moto's ECR issues)."""
        self.password = password
        self.registry.set_users({self.username: password})


@dataclass
class GarRegistry:
    emulator: GcpEmulator
    gar: ArtifactRegistryHost
    registry: DockerRegistry
    image: OciImage

    @property
    def host(self) -> str:
        return self.gar.host

    @property
    def repository(self) -> str:
        """``PROJECT/REPOSITORY`` of the seeded image (what IAM bindings name)."""
        return "/".join(GAR_SEED_REPOSITORY.split("/")[:2])

    @property
    def image_ref(self) -> str:
        return f"{self.gar.host}/{GAR_SEED_REPOSITORY}:{SEED_TAG}"

    def allow_pull(self, member: str, role: str = "roles/artifactregistry.reader") -> None:
        self.emulator.iam.grant(f"repository:{self.repository}", role, member)
