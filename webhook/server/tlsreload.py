"""A serving TLS context whose certificate is reloaded from disk without a restart.

``ssl.SSLContext.load_cert_chain`` may be called again on a live context:
connections accepted afterwards present the new certificate, open ones keep
theirs. A new pair is first loaded into a throw-away context, so a half-written
rotation (new certificate, old key) is refused and the old pair keeps serving.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from cryptography import x509

log = logging.getLogger(__name__)

#: How often the files are checked. Kubernetes updates a mounted Secret within about a
#: minute (kubelet sync period); a 2 s poll costs two stat() calls and adds nothing to that.
POLL_SECONDS = 2.0


def _server_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # The API server speaks TLS 1.2 and 1.3; older versions have known weaknesses.
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # No TLS 1.3 session tickets (OpenSSL sends two after every handshake by default).
    # The API server never resumes a session: client-go's TLSConfigFor
    # (staging/src/k8s.io/client-go/transport/transport.go) sets no ClientSessionCache,
    # and Go clients resume only with one. Minting tickets nobody uses cost ~13% of the
    # CPU of a request on a new connection here (bench/README.md, "Bursts and handshakes").
    ctx.num_tickets = 0
    return ctx


def _not_after(pem: bytes) -> float:
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()


def _expiries(cert_pem: bytes, ca_file: Path) -> dict[str, float]:
    out = {"serving": _not_after(cert_pem)}
    # No CA beside the pair (cert-manager may omit it): only the serving one.
    with suppress(OSError, ValueError):
        out["ca"] = _not_after(ca_file.read_bytes())
    return out


class ReloadingTLS:
    def __init__(
        self,
        cert_file: str | Path,
        key_file: str | Path,
        on_reload: Callable[[bool], None] | None = None,
    ) -> None:
        self.cert_file = Path(cert_file)
        self.key_file = Path(key_file)
        self.context = _server_context()
        self._on_reload = on_reload
        self._fingerprint = b""
        self.not_after: dict[str, float] = {}
        """Expiry (Unix time) of the served certificate ("serving") and, when a ca.crt sits
        beside it (the kubernetes.io/tls Secret layout), of the CA ("ca")."""
        self.reload()  # the first load raises: a webhook without a certificate cannot serve

    def _read(self) -> tuple[bytes, bytes]:
        return self.cert_file.read_bytes(), self.key_file.read_bytes()

    def reload(self) -> bool:
        """Load the files if they changed; return True when a new pair is now served."""
        cert, key = self._read()
        fingerprint = hashlib.sha256(cert + b"\0" + key).digest()
        if fingerprint == self._fingerprint:
            return False
        _server_context().load_cert_chain(self.cert_file, self.key_file)  # validate first
        self.context.load_cert_chain(self.cert_file, self.key_file)
        self.not_after = _expiries(cert, self.cert_file.with_name("ca.crt"))
        first = not self._fingerprint
        self._fingerprint = fingerprint
        if not first:
            log.info("serving certificate reloaded from %s", self.cert_file)
        return True

    async def watch(self, poll: float = POLL_SECONDS) -> None:
        """Poll the files until cancelled."""
        while True:
            await asyncio.sleep(poll)
            try:
                changed = self.reload()
            except (OSError, ssl.SSLError) as e:
                log.warning("serving certificate not reloaded, keeping the old one: %s", e)
                if self._on_reload:
                    self._on_reload(False)
                continue
            if changed and self._on_reload:
                self._on_reload(True)
