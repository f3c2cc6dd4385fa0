"""What the code knows of the Kubernetes API without calling it.

Every layer that talks to Kubernetes, directly (``webhook.kube``) or through a narrow
Protocol (the credential providers' ``SecretReader``), shares this contract: a failed
call is a ``KubeAPIError`` carrying the HTTP status (0 when no answer came back), a
Secret read is a ``SecretData``, and the project's own API group has these coordinates.
Anything else escaping a Kubernetes call is a programming error, not an outage, and is
never retried as one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: Remote error bodies are cut before they reach a message or a log line.
BODY_LIMIT = 300

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


class KubeAPIError(Exception):
    """A Kubernetes call that failed: ``status`` is the HTTP status, 0 when the request
    never got an answer (connection refused or reset, timeout, a broken watch stream)."""

    def __init__(self, status: int, reason: str, message: str = "") -> None:
        self.status = status
        self.reason = reason
        self.message = " ".join(message[:BODY_LIMIT].split())
        super().__init__(f"Kubernetes API {status} {reason}: {self.message}".rstrip(": "))

    @property
    def transient(self) -> bool:
        """Worth retrying: no answer, throttled, or a server-side failure."""
        return self.status == 0 or self.status == 429 or self.status >= 500

    @property
    def code(self) -> str:
        """The status as reported in errors and metrics (the reason when there is none)."""
        return str(self.status) if self.status > 0 else (self.reason or "unreachable")


@dataclass(frozen=True)
class SecretData:
    """The decoded ``data`` of a Secret and its resourceVersion (to notice changes)."""

    data: Mapping[str, bytes]
    resource_version: str = ""
