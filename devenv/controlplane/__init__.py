"""A local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager).

``python -m devenv.controlplane build`` builds or finds the binaries;
``python -m devenv.controlplane up`` runs a control plane until interrupted.
"""

from __future__ import annotations

from devenv.controlplane.build import (
    K8S_VERSION,
    Binaries,
    BuildError,
    MissingBinariesError,
    locate,
)
from devenv.controlplane.cluster import (
    AdminCredentials,
    ApiResponse,
    ControlPlane,
    ControlPlaneError,
    KubectlError,
    Ports,
)

__all__ = [
    "K8S_VERSION",
    "AdminCredentials",
    "ApiResponse",
    "Binaries",
    "BuildError",
    "ControlPlane",
    "ControlPlaneError",
    "KubectlError",
    "MissingBinariesError",
    "Ports",
    "locate",
]
