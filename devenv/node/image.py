"""Build the webhook's container image from the project's Dockerfile, without a Docker daemon.

No public image registry is reachable here, so the Dockerfile's base (``ARG PYTHON_IMAGE``)
is made locally from Debian's packages:

1. ``debootstrap --variant=minbase`` a bookworm root filesystem with Python 3.11 and the CA
   certificates (~50 s on an idle machine, 275 MB), kept as a tarball in the cache;
2. ``buildah bud`` a one-line ``FROM scratch`` + ``ADD`` of that tarball: the base image;
3. ``buildah bud`` the Dockerfile with ``--build-arg PYTHON_IMAGE=<that base>``.

buildah runs with the vfs storage driver and chroot isolation (no overlay mounts, no user
namespaces: both work in this VM), ``--network host`` so pip in the RUN steps reaches the
package index, and its storage under the cache directory, not /var/lib/containers:

    ${XDG_CACHE_HOME:-~/.cache}/pull-secret-webhook/image/
        base-bookworm.tar          the debootstrapped root filesystem
        storage/, run/             buildah's --root and --runroot

The image carries a digest of its build inputs (the Dockerfile, what .dockerignore lets
into the context, the base image's ID) as a label: a build is skipped while the image in
the cache has the same digest, and redone when the sources change (or when another
checkout sharing the cache built its own sources under the same name).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from devenv.controlplane.build import BuildError, build_lock, cache_root

REPO = Path(__file__).resolve().parents[2]
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# What the Dockerfile's stages run: python (venv, compileall, the webhook) and pip's HTTPS.
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
BASE_IMAGE = f"localhost/pull-secret-webhook-base:{DEBIAN_SUITE}"
IMAGE = "localhost/pull-secret-webhook:dev"
# Debian's pip reads the system CA bundle; RUN steps see the host's through this mount.
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BUILD_TIMEOUT_SECONDS = 1200
# A cache key of this machine (the release script removes it from what it publishes).
INPUTS_LABEL = "dev.pull-secret-webhook.build-inputs"
# What .dockerignore lets into the build context, and the Dockerfile itself.
CONTEXT_FILES = ("Dockerfile", "requirements.lock")
CONTEXT_TREES = ("webhook",)


def image_dir() -> Path:
    return cache_root() / "image"


def base_tarball() -> Path:
    return image_dir() / f"base-{DEBIAN_SUITE}.tar"


def missing_tools() -> list[str]:
    return [tool for tool in ("buildah", "debootstrap") if shutil.which(tool) is None]


def _say(log: TextIO | None, message: str) -> None:
    stream = log if log is not None else sys.stderr
    stream.write(message + "\n")
    stream.flush()


def _run(cmd: list[str], *, log: TextIO | None, cwd: Path | None = None) -> str:
    _say(log, "+ " + " ".join(cmd))
    proc = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECONDS, check=False
    )
    if proc.returncode != 0:
        raise BuildError(
            f"`{' '.join(cmd)}` failed with exit code {proc.returncode}:\n"
            f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    return proc.stdout


def buildah(*args: str, log: TextIO | None = None, cwd: Path | None = None) -> str:
    """buildah with its storage under the cache (vfs: no overlay mounts left behind)."""
    return _run(
        [
            "buildah",
            f"--root={image_dir() / 'storage'}",
            f"--runroot={image_dir() / 'run'}",
            "--storage-driver=vfs",
            *args,
        ],
        log=log,
        cwd=cwd,
    )


def _has_image(name: str) -> bool:
    with open(os.devnull, "w") as quiet:
        try:
            buildah("inspect", "--type=image", "--format={{.FromImageID}}", name, log=quiet)
        except BuildError:
            return False
    return True


def build_inputs_digest(base_id: str) -> str:
    """sha256 over the build inputs: each file's path and content, and the base image."""
    digest = hashlib.sha256(f"base {base_id}\n".encode())
    paths = [REPO / name for name in CONTEXT_FILES]
    for tree in CONTEXT_TREES:
        paths += [
            p
            for p in (REPO / tree).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        ]
    for path in sorted(paths):
        content = path.read_bytes()
        digest.update(f"{path.relative_to(REPO)} {len(content)}\n".encode())
        digest.update(content)
    return digest.hexdigest()


def _image_json(name: str) -> dict[str, object] | None:
    with open(os.devnull, "w") as quiet:
        try:
            out = buildah("inspect", "--type=image", name, log=quiet)
        except BuildError:
            return None
    found: dict[str, object] = json.loads(out)
    return found


def _built_inputs(name: str) -> str | None:
    """The build-inputs label of the cached image ``name``, if it is there."""
    found = _image_json(name)
    if found is None:
        return None
    config = found.get("OCIv1")
    labels = (config.get("config") or {}).get("Labels") if isinstance(config, dict) else None
    value = (labels or {}).get(INPUTS_LABEL)
    return value if isinstance(value, str) else None


def build_base_tarball(log: TextIO | None = None) -> Path:
    """debootstrap the base root filesystem into a tarball in the cache (once)."""
    target = base_tarball()
    if target.exists():
        return target
    image_dir().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".base-", dir=image_dir()))
    try:
        rootfs = work / "rootfs"
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                DEBIAN_SUITE,
                str(rootfs),
                DEBIAN_MIRROR,
            ],
            log=log,
        )
        # Downloaded packages and indexes are not part of an image.
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / leftover).glob("*"):
                if entry.is_file():
                    entry.unlink()
        tmp = work / "base.tar"
        _run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tmp), "."], log=log)
        tmp.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def build_image(log: TextIO | None = None) -> str:
    """Build the webhook's image from the Dockerfile unless the cached one was built from
    the same inputs; return its local name."""
    problems = missing_tools()
    if problems:
        raise BuildError(
            f"missing {', '.join(problems)}: apt-get install {' '.join(problems)} "
            "(make system-deps installs them)"
        )
    with build_lock():
        _build_if_stale(log)
    return IMAGE


def _build_if_stale(log: TextIO | None) -> None:
    """Build the image (with the build lock held) unless it has the current inputs."""
    started = time.monotonic()
    tarball = build_base_tarball(log)
    if not _has_image(BASE_IMAGE):
        context = Path(tempfile.mkdtemp(prefix=".base-context-", dir=image_dir()))
        try:
            os.link(tarball, context / tarball.name)
            (context / "Containerfile").write_text(
                f'FROM scratch\nADD {tarball.name} /\nCMD ["python3"]\n'
            )
            buildah("bud", "--isolation=chroot", f"--tag={BASE_IMAGE}", str(context), log=log)
        finally:
            shutil.rmtree(context, ignore_errors=True)
    base = _image_json(BASE_IMAGE)
    assert base is not None, f"{BASE_IMAGE} vanished"
    inputs = build_inputs_digest(str(base.get("FromImageID", "")))
    if _built_inputs(IMAGE) == inputs:
        _say(log, f"{IMAGE} is up to date (build inputs {inputs[:12]})")
        return
    buildah(
        "bud",
        "--isolation=chroot",
        "--network=host",
        f"--volume={CA_BUNDLE}:{CA_BUNDLE}:ro",
        f"--build-arg=PYTHON_IMAGE={BASE_IMAGE}",
        f"--label={INPUTS_LABEL}={inputs}",
        "--layers=false",
        f"--tag={IMAGE}",
        "--file=Dockerfile",
        str(REPO),
        log=log,
    )
    # Dangling images of earlier builds of the same tag: vfs copies every layer.
    buildah("rmi", "--prune", log=log)
    _say(log, f"built {IMAGE} in {time.monotonic() - started:.1f}s")


def push_image(destination: str, log: TextIO | None = None) -> None:
    """Push the image of the current sources to ``destination`` (HOST:PORT/NAME:TAG) over
    plain HTTP. Under the build lock, after a fresh check: another checkout sharing the
    cache may have built its own sources under the same name meanwhile."""
    with build_lock():
        _build_if_stale(log)
        buildah("push", "--tls-verify=false", IMAGE, f"docker://{destination}", log=log)


def export_oci_layout(
    layout: Path, tag: str, labels: dict[str, str], log: TextIO | None = None
) -> None:
    """Write the image of the current sources to the OCI image layout ``layout`` as
    ``tag`` (what hack/release-artifacts.sh publishes when the base is made here): the
    build-inputs label (a cache key of this machine) replaced by ``labels``."""
    with build_lock():
        _build_if_stale(log)
        container = f"psw-export-{os.getpid()}"
        staged = f"localhost/pull-secret-webhook-export:{os.getpid()}"
        buildah("from", f"--name={container}", "--pull-never", IMAGE, log=log)
        try:
            buildah(
                "config",
                f"--label={INPUTS_LABEL}-",
                *(f"--label={key}={value}" for key, value in labels.items()),
                container,
                log=log,
            )
            buildah("commit", "--rm", container, staged, log=log)
        except BuildError:
            buildah("rm", container, log=log)
            raise
        try:
            buildah("push", staged, f"oci:{layout}:{tag}", log=log)
        finally:
            buildah("rmi", staged, log=log)
