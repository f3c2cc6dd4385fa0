"""``python -m devenv.incluster DIR ARGS...``: the webhook's command line as it runs in a pod.

A replica in a cluster finds the API server in ``KUBERNETES_SERVICE_HOST``/``_PORT`` and
its ServiceAccount's token and CA where the kubelet mounts them. Here only that directory
differs (``DIR``: nothing but the kubelet writes under /var/run/secrets), so the stack's
replicas, and the memory and start-up they are measured for, take the in-cluster path
the product takes, not the kubeconfig loader's.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from webhook.cli import main
from webhook.kube import client as kubeclient


def run(argv: Sequence[str]) -> int:
    directory, *args = argv
    kubeclient.SERVICE_ACCOUNT_DIR = Path(directory)
    return main(args)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
