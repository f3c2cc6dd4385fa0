"""Command line: ``python -m tests.e2e.controlplane {build,up}``."""

from __future__ import annotations

import argparse
import sys
import time

from tests.e2e.controlplane.build import BuildError, MissingBinariesError, locate


def _build() -> int:
    started = time.monotonic()
    try:
        binaries = locate(allow_build=True)
    except (BuildError, MissingBinariesError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, path in vars(binaries).items():
        print(f"{name:24} {path}")
    print(f"control-plane binaries ready in {time.monotonic() - started:.2f}s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.controlplane")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build or find kube-apiserver, kube-controller-manager, etcd")
    args = parser.parse_args(argv)
    if args.command == "build":
        return _build()
    return 2


if __name__ == "__main__":
    sys.exit(main())
