"""The local node itself: pods really run, and stopping it leaves the machine as found."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from devenv.controlplane import ControlPlane
from devenv.node.build import NodeBinaries
from devenv.node.harness import Node
from devenv.node.host import HostSnapshot
from devenv.node.images import seed_image
from devenv.node.pods import pod_state, running_pod, wait_for_log, wait_for_pod
from devenv.peers.oci import skopeo_push, write_authfile
from tests.support.node import controlplane

#: A fixture, used by name.
__all__ = ["controlplane"]


def test_a_pod_runs_and_stopping_the_node_leaves_the_host_as_found(
    controlplane: ControlPlane, node_binaries: NodeBinaries, namespace: str, tmp_path: Path
) -> None:
    node = Node(controlplane, node_binaries)
    node.start()
    try:
        during = HostSnapshot.take()
        # The node's own anonymous registry also takes the seed image: no secret needed.
        image = seed_image(tmp_path / "image", "v1")
        reference = node.pause_image.rsplit("/", 1)[0] + "/demo/hello:v1"
        authfile = write_authfile(tmp_path / "anonymous.json", {"auths": {}})
        pushed = asyncio.run(skopeo_push(image, reference, authfile, tls_verify=False))
        assert pushed.ok, pushed.stderr
        controlplane.kubectl(
            "apply", "-n", namespace, "-f", "-",
            input=json.dumps(running_pod("p", {"app": reference})),
        )  # fmt: skip
        pod, _ = wait_for_pod(controlplane, namespace, "p")
        assert pod["spec"]["nodeName"] == node.name
        assert pod_state(pod).waiting == {}
        # The container ran the image's own busybox and read the image's file.
        assert wait_for_log(node, namespace, "p", "app")[0] == "app: pulled 37 bytes of hello.txt"
    finally:
        node.stop()
    # Snapshots taken while the machine's node lock was held: no other node interferes.
    before, after = node.host_before, node.host_after
    assert before is not None and after is not None
    # The check can fail: while the node ran the host did differ (a bridge, mounts, cgroups).
    assert before.differences(during), "the snapshot saw nothing of a running node"
    assert node.cleanup_problems == []
    assert before.differences(after) == []
    assert controlplane.api("GET", f"/api/v1/nodes/{node.name}").status == 404
