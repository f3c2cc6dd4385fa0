"""The pair and the CA as files in ``--out-dir``."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization

from webhook.certs import pki
from webhook.certs.rotation import Existing, Issued, load_certs, pem_bundle


def read_files(out_dir: Path) -> Existing:
    ca_crt, ca_key, tls_crt = out_dir / "ca.crt", out_dir / "ca.key", out_dir / "tls.crt"
    bundle = tuple(load_certs(ca_crt.read_bytes())) if ca_crt.is_file() else ()
    ca = None
    if bundle and ca_key.is_file():
        ca = pki.KeyPair(bundle[0].public_bytes(serialization.Encoding.PEM), ca_key.read_bytes())
    serving = load_certs(tls_crt.read_bytes()) if tls_crt.is_file() else []
    return Existing(ca=ca, serving=serving[0] if serving else None, bundle=bundle)


def write_file(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    tmp.replace(path)


def write_files(out_dir: Path, issued: Issued) -> list[str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    # The CA first: a run interrupted later can still reuse it.
    write_file(out_dir / "ca.key", issued.ca.key_pem, 0o600)
    write_file(out_dir / "ca.crt", pem_bundle(issued.bundle), 0o644)
    issued.serving.write(out_dir / "tls.crt", out_dir / "tls.key")
    return [str(out_dir / n) for n in ("ca.crt", "ca.key", "tls.crt", "tls.key")]
