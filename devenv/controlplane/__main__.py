"""Command line: ``python -m devenv.controlplane {build,up,measure}``.

``build`` makes sure every binary exists (building Kubernetes once, then a no-op);
``up`` runs a control plane until Ctrl-C or SIGTERM and removes it afterwards;
``measure`` times start-to-ready and stop over a few runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from devenv.controlplane.build import BuildError, MissingBinariesError, locate
from devenv.controlplane.cluster import ControlPlane, ControlPlaneError
from devenv.lifecycle import build_and_report, run_until_stopped


def _build() -> int:
    return build_and_report(
        lambda: locate(allow_build=True), (BuildError, MissingBinariesError), "control-plane"
    )


def _up(verbosity: int) -> int:
    try:
        control_plane = ControlPlane(locate(), verbosity=verbosity)
    except MissingBinariesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return run_until_stopped(
        [control_plane],
        (ControlPlaneError,),
        lambda: [
            f"# control plane ready in {control_plane.startup_seconds:.1f}s",
            f"# server {control_plane.server}, logs in {control_plane.workdir / 'logs'}",
            f"export KUBECONFIG={control_plane.kubeconfig}",
        ],
        "the control plane",
    )


def _measure(runs: int) -> int:
    """Start and stop a control plane ``runs`` times; print each start and stop time."""
    try:
        binaries = locate()
    except MissingBinariesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    starts: list[float] = []
    stops: list[float] = []
    for run in range(1, runs + 1):
        control_plane = ControlPlane(binaries)
        try:
            control_plane.start()
            assert control_plane.startup_seconds is not None
            starts.append(control_plane.startup_seconds)
        finally:
            stopping = time.monotonic()
            control_plane.stop()
            stops.append(time.monotonic() - stopping)
        print(f"run {run}: ready in {starts[-1]:.2f}s, stopped in {stops[-1]:.2f}s", flush=True)
    print(
        f"start to ready: median {statistics.median(starts):.2f}s, max {max(starts):.2f}s; "
        f"stop: median {statistics.median(stops):.2f}s ({runs} runs)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devenv.controlplane")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "build", help="build kube-apiserver/kube-controller-manager once; find etcd, kubectl"
    )
    up = sub.add_parser("up", help="run a control plane until Ctrl-C/SIGTERM")
    up.add_argument("-v", "--verbosity", type=int, default=1, help="klog -v for components")
    measure = sub.add_parser("measure", help="time control-plane start and stop")
    measure.add_argument("-n", "--runs", type=int, default=5)
    args = parser.parse_args(argv)
    if args.command == "build":
        return _build()
    if args.command == "measure":
        return _measure(args.runs)
    return _up(args.verbosity)


if __name__ == "__main__":
    sys.exit(main())
