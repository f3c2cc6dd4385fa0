"""The few API calls ``certs`` makes: its Secrets and the webhook configuration's caBundle."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from webhook.certs import pki
from webhook.certs.rotation import CertsError, Existing, load_certs, pem_bundle
from webhook.kube.client import (
    CORE_API,
    JSON_PATCH,
    ApiClient,
    KubeconfigError,
    connect,
    resource_path,
)
from webhook.kube.errors import (
    ApiError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    UnreachableError,
)

#: cert-manager's CA injector owns a caBundle when this annotation is set.
CERT_MANAGER_ANNOTATION = "cert-manager.io/inject-ca-from"
#: Labels of the Secrets this command writes. Deliberately not the managed-by label of
#: the pull secrets: the webhook garbage-collects those.
SECRET_LABELS = {
    "app.kubernetes.io/name": "pull-secret-webhook",
    "app.kubernetes.io/component": "certificates",
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: Any) -> bytes:
    if not isinstance(value, str):
        return b""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return b""


def api_error(what: str, error: ApiError) -> CertsError:
    """A failed call as the user sees it: what was being done, the status and the API's
    own message (clipped), in the same error contract as the webhook's client."""
    message = error.message
    unanswered = isinstance(error, UnreachableError)
    detail = error.code if unanswered else f"HTTP {error.status} {error.reason}".strip()
    return CertsError(f"{what}: {detail}{': ' + message if message else ''}")


@dataclass
class Cluster:
    """The few API calls this command makes."""

    api: ApiClient
    namespace: str
    secret: str
    webhook_config: str
    secret_versions: dict[str, str] = field(default_factory=dict)
    #: ownerReferences of the Secrets read, kept on every rewrite.
    secret_owners: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    webhook_names: list[str] = field(default_factory=list)
    #: uid of the MutatingWebhookConfiguration read: it owns the Secrets this writes, so
    #: deleting the registration (`helm uninstall`, `kubectl delete -k`) lets the garbage
    #: collector delete them too.
    webhook_uid: str = ""

    def owner_reference(self) -> dict[str, Any] | None:
        if not self.webhook_uid:
            return None
        # No blockOwnerDeletion: it would need update rights on the owner's finalizers.
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "name": self.webhook_config,
            "uid": self.webhook_uid,
        }

    def owned(self, name: str) -> bool:
        """Whether Secret ``name`` already names the webhook configuration as its owner."""
        ref = self.owner_reference()
        return ref is None or any(
            o.get("uid") == ref["uid"] for o in self.secret_owners.get(name, [])
        )

    @property
    def ca_secret(self) -> str:
        return f"{self.secret}-ca"

    def _secrets(self, name: str = "") -> str:
        return resource_path(CORE_API, "secrets", namespace=self.namespace, name=name)

    def _webhook_config(self) -> str:
        return resource_path(
            "/apis/admissionregistration.k8s.io/v1",
            "mutatingwebhookconfigurations",
            name=self.webhook_config,
        )

    async def read_secret(self, name: str) -> dict[str, bytes] | None:
        try:
            obj = await self.api.call("GET", self._secrets(name))
        except NotFoundError:
            return None
        except ApiError as e:
            raise api_error(f"reading Secret {self.namespace}/{name}", e) from e
        meta = obj.get("metadata") or {}
        self.secret_versions[name] = str(meta.get("resourceVersion", ""))
        self.secret_owners[name] = [
            {
                key: o[key]
                for key in ("apiVersion", "kind", "name", "uid", "controller")
                if o.get(key) is not None
            }
            for o in meta.get("ownerReferences") or []
        ]
        kind = obj.get("type")
        if kind != "kubernetes.io/tls":
            raise CertsError(
                f"Secret {self.namespace}/{name} has type {kind}, expected kubernetes.io/tls;"
                " delete it or pick another name"
            )
        return {k: _unb64(v) for k, v in (obj.get("data") or {}).items()}

    async def read(self, want_secret: bool) -> Existing:
        ca: pki.KeyPair | None = None
        serving: x509.Certificate | None = None
        bundle: list[x509.Certificate] = []
        if want_secret:
            stored_ca = await self.read_secret(self.ca_secret)
            if stored_ca and stored_ca.get("tls.crt") and stored_ca.get("tls.key"):
                ca = pki.KeyPair(stored_ca["tls.crt"], stored_ca["tls.key"])
            tls = await self.read_secret(self.secret)
            if tls:
                found = load_certs(tls.get("tls.crt", b""))
                serving = found[0] if found else None
                bundle = load_certs(tls.get("ca.crt", b""))
        if self.webhook_config:
            bundle = await self.read_webhook_bundle()
        return Existing(ca=ca, serving=serving, bundle=tuple(bundle))

    async def read_webhook_bundle(self) -> list[x509.Certificate]:
        name = self.webhook_config
        try:
            obj = await self.api.call("GET", self._webhook_config())
        except NotFoundError as e:
            raise CertsError(
                f"MutatingWebhookConfiguration {name} not found: apply the manifests first "
                "(kubectl apply -k manifests/), or pass --webhook-config '' to skip it"
            ) from e
        except ApiError as e:
            raise api_error(f"reading MutatingWebhookConfiguration {name}", e) from e
        meta = obj.get("metadata") or {}
        self.webhook_uid = str(meta.get("uid") or "")
        annotations = meta.get("annotations") or {}
        if CERT_MANAGER_ANNOTATION in annotations:
            raise CertsError(
                f"MutatingWebhookConfiguration {name} gets its caBundle from cert-manager "
                f"({CERT_MANAGER_ANNOTATION}: {annotations[CERT_MANAGER_ANNOTATION]}); "
                "let cert-manager rotate it, or pass --webhook-config '' to skip it"
            )
        hooks = obj.get("webhooks") or []
        if not hooks:
            raise CertsError(f"MutatingWebhookConfiguration {name} has no webhooks")
        self.webhook_names = [str(h.get("name")) for h in hooks]
        bundle: list[x509.Certificate] = []
        seen: set[bytes] = set()
        for hook in hooks:
            raw = (hook.get("clientConfig") or {}).get("caBundle")
            for cert in load_certs(_unb64(raw)):
                fp = cert.fingerprint(hashes.SHA256())
                if fp not in seen:
                    seen.add(fp)
                    bundle.append(cert)
        return bundle

    async def patch_webhook_bundle(self, bundle: Sequence[x509.Certificate]) -> None:
        value = _b64(pem_bundle(bundle))
        ops: list[dict[str, Any]] = []
        for i, hook_name in enumerate(self.webhook_names):
            # `test` first: the patch applies only if webhook i is still the one we read.
            ops.append({"op": "test", "path": f"/webhooks/{i}/name", "value": hook_name})
            ops.append(
                {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": value}
            )
        try:
            await self.api.call("PATCH", self._webhook_config(), body=ops, content_type=JSON_PATCH)
        except ApiError as e:
            raise api_error(
                f"patching caBundle of MutatingWebhookConfiguration {self.webhook_config}", e
            ) from e

    async def write_secret(self, name: str, data: dict[str, bytes]) -> str:
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": self.namespace, "labels": SECRET_LABELS},
            "data": {k: _b64(v) for k, v in data.items()},
        }
        owners = list(self.secret_owners.get(name, []))
        ref = self.owner_reference()
        if ref and not any(o.get("uid") == ref["uid"] for o in owners):
            owners.append(ref)
        if owners:
            body["metadata"]["ownerReferences"] = owners
        version = self.secret_versions.get(name)
        try:
            if version is None:
                return await self._create_secret(name, body)
            # resourceVersion: a concurrent writer makes this fail (409) instead of being lost.
            body["metadata"]["resourceVersion"] = version
            await self.api.call("PUT", self._secrets(name), body=body)
            return "updated"
        except ConflictError as e:
            raise CertsError(
                f"Secret {self.namespace}/{name} was changed by someone else meanwhile; "
                "run the command again"
            ) from e
        except ApiError as e:
            raise api_error(f"writing Secret {self.namespace}/{name}", e) from e

    async def _create_secret(self, name: str, body: dict[str, Any]) -> str:
        try:
            await self.api.call("POST", self._secrets(), body=body)
        except ForbiddenError as e:
            raise CertsError(
                f"{api_error(f'creating Secret {self.namespace}/{name}', e)}; an identity "
                "that may only renew (the certs renewal CronJob) cannot create it: run "
                "python -m webhook certs once with one that may"
            ) from e
        except NotFoundError as e:
            raise CertsError(
                f"namespace {self.namespace} not found: apply the manifests first "
                "(kubectl apply -k manifests/) or create it"
            ) from e
        return "created"


async def api_client(kubeconfig: str | None) -> ApiClient:
    """--kubeconfig, else the pod's ServiceAccount in a cluster, else $KUBECONFIG or
    ~/.kube/config."""
    try:
        return await connect(kubeconfig)
    except KubeconfigError as e:
        raise CertsError(
            f"cannot load Kubernetes credentials ({e}); pass --kubeconfig, or "
            "--webhook-config '' without --secret to only write files"
        ) from e
