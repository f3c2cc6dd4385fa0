"""Command line: ``python -m devenv.node {build,up,image}``.

``build`` makes sure every node binary exists (building the Go programs once, then a
no-op); ``up`` runs a control plane with a node until Ctrl-C or SIGTERM, then removes
both and puts the machine back as it was; ``image`` builds the webhook's container image
from the Dockerfile with buildah (devenv/node/image.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from devenv.controlplane.build import BuildError, MissingBinariesError, locate
from devenv.controlplane.cluster import ControlPlane, ControlPlaneError
from devenv.lifecycle import build_and_report, run_until_stopped
from devenv.node.build import MissingNodeBinariesError, locate_node
from devenv.node.harness import Node, NodeError
from devenv.node.image import build_image, export_oci_layout


def _build() -> int:
    return build_and_report(
        lambda: locate_node(allow_build=True), (BuildError, MissingNodeBinariesError), "node"
    )


def _image(layout: str | None, tag: str, labels: list[str]) -> int:
    try:
        if layout is None:
            print(build_image())
        else:
            build_image()
            bad = [label for label in labels if "=" not in label]
            if bad:
                print(f"error: --label takes KEY=VALUE, not {bad[0]!r}", file=sys.stderr)
                return 2
            pairs = dict(label.split("=", 1) for label in labels)
            export_oci_layout(Path(layout), tag, pairs)
            print(f"oci:{layout}:{tag}")
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _up(verbosity: int) -> int:
    try:
        control_plane = ControlPlane(locate(), verbosity=verbosity)
        node = Node(control_plane, locate_node(), verbosity=verbosity)
    except (MissingBinariesError, MissingNodeBinariesError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return run_until_stopped(
        [control_plane, node],
        (ControlPlaneError, NodeError),
        lambda: [
            f"# control plane and node {node.name} ready; logs in {node.workdir}",
            f"# pod logs in {node.pod_logs_dir}",
            f"export KUBECONFIG={control_plane.kubeconfig}",
        ],
        "the node and the control plane",
        after=lambda: node.cleanup_problems,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devenv.node")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build kubelet, kube-scheduler, containerd, crictl, pause once")
    up = sub.add_parser("up", help="run a control plane and a node until Ctrl-C/SIGTERM")
    up.add_argument("-v", "--verbosity", type=int, default=1, help="klog -v for components")
    image = sub.add_parser(
        "image", help="build the webhook's image with buildah (base from debootstrap)"
    )
    image.add_argument("--oci-layout", help="also write it to this OCI image layout directory")
    image.add_argument("--tag", default="dev", help="its tag in the layout (default: dev)")
    image.add_argument(
        "--label", action="append", default=[], help="KEY=VALUE label of the written image"
    )
    args = parser.parse_args(argv)
    if args.command == "build":
        return _build()
    if args.command == "image":
        return _image(args.oci_layout, args.tag, args.label)
    return _up(args.verbosity)


if __name__ == "__main__":
    sys.exit(main())
