"""What a pull secret looks like: a ``kubernetes.io/dockerconfigjson`` Secret, its labels
and annotations. The one place that writes its shape; the manager decides when.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from webhook.admission.needs import PullNeed
from webhook.credentials.base import Credential
from webhook.kube.objects import DOCKERCONFIGJSON
from webhook.kube.rfc3339 import to_rfc3339
from webhook.pullsecrets.renewals import renew_at

#: Set on every pull secret so operators (and the shipped ValidatingAdmissionPolicy)
#: can tell them apart, with annotations saying what it is for and when it expires.
#: Informational only: the webhook itself decides what is its own, and how fresh it is,
#: from its records, because anyone who can write Secrets can set labels.
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "pull-secret-webhook"
MANAGED_SELECTOR = f"{MANAGED_BY}={MANAGER}"
REGISTRY_LABEL = "pull-secret-webhook/registry"
ANN_EXPIRES = "pull-secret-webhook/expires-at"
ANN_REFRESH = "pull-secret-webhook/refresh-at"
ANN_HOST = "pull-secret-webhook/host"
ANN_SERVICE_ACCOUNT = "pull-secret-webhook/service-account"


def dockerconfigjson(host: str, credential: Credential) -> bytes:
    auth = base64.b64encode(f"{credential.username}:{credential.password}".encode()).decode()
    doc = {
        "auths": {
            host: {"username": credential.username, "password": credential.password, "auth": auth}
        }
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def desired_secret(
    namespace: str, need: PullNeed, credential: Credential, fraction: float
) -> dict[str, Any]:
    annotations = {
        ANN_EXPIRES: to_rfc3339(credential.expires_at),
        ANN_REFRESH: to_rfc3339(renew_at(credential, fraction, namespace, need.secret_name)),
        ANN_HOST: need.host,
    }
    if need.identity.service_account:
        annotations[ANN_SERVICE_ACCOUNT] = need.identity.service_account
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {
            "name": need.secret_name,
            "namespace": namespace,
            "labels": {MANAGED_BY: MANAGER, REGISTRY_LABEL: need.entry.name},
            "annotations": annotations,
        },
        "data": {
            DOCKERCONFIGJSON: base64.b64encode(dockerconfigjson(need.host, credential)).decode()
        },
    }
