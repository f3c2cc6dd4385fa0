"""What the code knows of the Kubernetes API without calling it.

Every layer that talks to Kubernetes, directly (``webhook.kube.calls``) or through a narrow
Protocol (the credential providers' ``SecretReader``), shares this contract: a failed
call is a ``webhook.kube.errors.ApiError`` of the class its HTTP status names
(``NotFoundError``, ``ConflictError``, ...; ``UnreachableError`` when no answer came back), a
Secret read is a ``SecretData``, and the project's own API group has these coordinates.
Anything else escaping a Kubernetes call is a programming error, not an outage, and is
never retried as one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from webhook.kube.errors import BODY_LIMIT as BODY_LIMIT
from webhook.kube.errors import ApiError

GROUP = "pull-secret-webhook.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
#: ManagedPullSecret: the webhook's record of one pull secret it made.
KIND = "ManagedPullSecret"
PLURAL = "managedpullsecrets"
#: PullSecretMarker: a data-less object a pull secret owns, so its deletion is seen.
MARKER_KIND = "PullSecretMarker"
MARKER_PLURAL = "pullsecretmarkers"
MANAGED_BY_SELECTOR = "app.kubernetes.io/managed-by=pull-secret-webhook"
#: The label that opts a namespace in (``namespaceSelector`` and the namespace watch).
INJECT_LABEL = "pull-secret-webhook/inject"
INJECT_VALUE = "enabled"
#: The one key of a ``kubernetes.io/dockerconfigjson`` Secret.
DOCKERCONFIGJSON = ".dockerconfigjson"


#: The name every caller knew before the failures had classes: the base of them all.
KubeAPIError = ApiError


@dataclass(frozen=True)
class SecretData:
    """The decoded ``data`` of a Secret and its resourceVersion (to notice changes)."""

    data: Mapping[str, bytes]
    resource_version: str = ""
