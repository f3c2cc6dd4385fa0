"""A tiny OCI image on disk, and skopeo as the real client that pushes and pulls it.

The skopeo helpers are coroutines: the emulator usually serves on the same
event loop as the test, so a blocking subprocess call would deadlock it.
``--authfile`` gets exactly the ``.dockerconfigjson`` under test; skopeo uses
no other credentials then.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
# Bound every skopeo run: a hung pull must fail the test, not the CI job.
SKOPEO_TIMEOUT = 60.0


@dataclass(frozen=True)
class OciImage:
    layout_dir: Path
    tag: str
    manifest_digest: str
    config_digest: str
    layer_digest: str


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar(files: Mapping[str, bytes], executables: Mapping[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    entries = [(name, content, 0o644) for name, content in files.items()]
    entries += [(name, content, 0o755) for name, content in (executables or {}).items()]
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content, mode in sorted(entries):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = mode
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def build_oci_layout(
    directory: Path,
    tag: str = "v1",
    files: Mapping[str, bytes] | None = None,
    *,
    executables: Mapping[str, bytes] | None = None,
    entrypoint: list[str] | None = None,
) -> OciImage:
    """Writes an OCI image layout (oci-layout, index.json, blobs) with one gzip layer.

    ``executables`` are added with mode 0755 and ``entrypoint`` goes into the image
    config, so a container runtime can run the image (e.g. a static busybox).
    """
    files = files if files is not None else {"hello.txt": b"hello from pull-secret-webhook tests\n"}
    layer_tar = _tar(files, executables)
    # mtime=0 keeps the blob, and so every digest, stable for the same files.
    layer = gzip.compress(layer_tar, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": entrypoint} if entrypoint else {},
            "rootfs": {"type": "layers", "diff_ids": [_digest(layer_tar)]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "digest": _digest(config),
                "size": len(config),
            },
            "layers": [
                {"mediaType": LAYER_MEDIA_TYPE, "digest": _digest(layer), "size": len(layer)}
            ],
        }
    ).encode()
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for blob in (layer, config, manifest):
        (blobs / _digest(blob).removeprefix("sha256:")).write_bytes(blob)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": _digest(manifest),
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (directory / "index.json").write_text(json.dumps(index))
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return OciImage(directory, tag, _digest(manifest), _digest(config), _digest(layer))


def dockerconfigjson(host: str, username: str, password: str) -> dict[str, Any]:
    """The ``.dockerconfigjson`` document a kubernetes.io/dockerconfigjson Secret holds."""
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"auths": {host: {"username": username, "password": password, "auth": auth}}}


def write_authfile(path: Path, config: Mapping[str, Any]) -> Path:
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class SkopeoResult:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def json(self) -> Any:
        return json.loads(self.stdout)


async def run_skopeo(*args: str, time_limit: float = SKOPEO_TIMEOUT) -> SkopeoResult:
    # Credentials come only from --authfile: drop variables that name other files.
    env = {k: v for k, v in os.environ.items() if k not in ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG")}
    process = await asyncio.create_subprocess_exec(
        "skopeo",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), time_limit)
    except TimeoutError:
        process.kill()
        await process.communicate()
        raise
    assert process.returncode is not None
    return SkopeoResult(args, process.returncode, stdout.decode(), stderr.decode())


def _tls_args(prefix: str, cert_dir: Path | None, tls_verify: bool) -> list[str]:
    args = [f"--{prefix}tls-verify={'true' if tls_verify else 'false'}"]
    if cert_dir is not None:
        args.append(f"--{prefix}cert-dir={cert_dir}")
    return args


async def skopeo_push(
    image: OciImage,
    destination: str,
    authfile: Path,
    *,
    cert_dir: Path | None = None,
    tls_verify: bool = True,
) -> SkopeoResult:
    """``skopeo copy oci:DIR:TAG docker://destination`` (destination = HOST/REPO:TAG)."""
    return await run_skopeo(
        "--insecure-policy",  # no signature policy: the images are made by the test itself
        "copy",
        f"--authfile={authfile}",
        *_tls_args("dest-", cert_dir, tls_verify),
        f"oci:{image.layout_dir}:{image.tag}",
        f"docker://{destination}",
    )


async def skopeo_inspect(
    image: str,
    authfile: Path,
    *,
    cert_dir: Path | None = None,
    tls_verify: bool = True,
) -> SkopeoResult:
    """``skopeo inspect docker://image``: reads the manifest and config with the authfile."""
    return await run_skopeo(
        "inspect",
        f"--authfile={authfile}",
        *_tls_args("", cert_dir, tls_verify),
        f"docker://{image}",
    )


async def skopeo_copy_to_dir(
    image: str,
    authfile: Path,
    destination: Path,
    *,
    cert_dir: Path | None = None,
    tls_verify: bool = True,
) -> SkopeoResult:
    """A full pull (manifest, config and layers) into ``dir:destination``."""
    return await run_skopeo(
        "--insecure-policy",
        "copy",
        f"--authfile={authfile}",
        *_tls_args("src-", cert_dir, tls_verify),
        f"docker://{image}",
        f"dir:{destination}",
    )
