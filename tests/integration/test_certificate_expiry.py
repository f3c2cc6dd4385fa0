"""The serving certificate's and CA's expiry are exported, and follow a rotation."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cryptography import x509

from devenv.support.serving import loopback_options
from webhook.certs.pki import KeyPair, make_ca, make_serving_cert
from webhook.config.schema import Config
from webhook.config.store import ConfigStore
from webhook.server.app import NamesOnlySource, start_server
from webhook.telemetry.metrics import Metrics

EXPIRY = "pull_secret_webhook_certificate_expiry_timestamp_seconds"


def not_after(pem: bytes) -> float:
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()


def write(tmp_path: Path, ca: KeyPair, days: int) -> KeyPair:
    pair = make_serving_cert(ca, ["localhost"], ["127.0.0.1"], days=days)
    pair.write(tmp_path / "tls.crt", tmp_path / "tls.key")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    return pair


async def test_expiry_of_serving_certificate_and_ca_is_exported_and_follows_rotation(
    config: Config, tmp_path: Path
) -> None:
    ca = make_ca(days=400)
    first = write(tmp_path, ca, days=30)
    metrics = Metrics()
    server = await start_server(
        ConfigStore(config),
        NamesOnlySource(),
        loopback_options(tmp_path),
        metrics=metrics,
    )
    try:
        sample = metrics.registry.get_sample_value
        assert sample(EXPIRY, {"certificate": "serving"}) == not_after(first.cert_pem)
        assert sample(EXPIRY, {"certificate": "ca"}) == not_after(ca.cert_pem)
        new_ca = make_ca("next-ca", days=800)
        second = write(tmp_path, new_ca, days=90)
        for _ in range(60):  # the watcher polls every 2 s
            if sample(EXPIRY, {"certificate": "serving"}) != not_after(first.cert_pem):
                break
            await asyncio.sleep(0.1)
        assert sample(EXPIRY, {"certificate": "serving"}) == not_after(second.cert_pem)
        assert sample(EXPIRY, {"certificate": "ca"}) == not_after(new_ca.cert_pem)
        assert not_after(second.cert_pem) > not_after(first.cert_pem)
    finally:
        await server.stop()
