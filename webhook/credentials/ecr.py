"""Amazon ECR: AWS credentials → ``GetAuthorizationToken`` → ``AWS`` / password.

boto3 is synchronous; every call runs in a worker thread so the event loop never
blocks. One ECR token serves every ECR registry its principal may read, so
tokens are cached per (entry, principal, region), and the deprecated
``registryIds`` parameter is never sent. ``public.ecr.aws`` uses ECR Public's
own ``GetAuthorizationToken`` in us-east-1.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gzip
import json
import os
import threading
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.loaders
import botocore.session
from botocore import UNSIGNED
from botocore.config import Config as BotoConfig

from webhook.admission.needs import PullNeed
from webhook.config.ecr import (
    ECR_PUBLIC_HOST,
    AssumeRole,
    EcrEntry,
    PodServiceAccount,
    StaticKeys,
    parse_ecr_host,
)
from webhook.credentials.base import (
    Attempt,
    Credential,
    Provider,
    ProviderContext,
    principal_for,
)
from webhook.credentials.ecr_errors import map_boto_error
from webhook.credentials.kubeio import (
    read_secret,
    service_account_annotations,
    service_account_token,
)

#: ECR Public's API exists only in us-east-1 (its authorization token works everywhere).
ECR_PUBLIC_REGION = "us-east-1"
#: The audience EKS's IRSA webhook puts on projected tokens, and what IAM's OIDC
#: provider for the cluster is normally configured to accept.
WEB_IDENTITY_AUDIENCE = "sts.amazonaws.com"
ROLE_ARN_ANNOTATION = "eks.amazonaws.com/role-arn"
AUDIENCE_ANNOTATION = "eks.amazonaws.com/audience"
#: The pod token lives only for one AssumeRoleWithWebIdentity call; 600 s is the
#: shortest lifetime TokenRequest accepts.
SA_TOKEN_SECONDS = 600
#: Per-request bounds inside botocore; retries are ours (retry.py), so botocore
#: makes one attempt. 3 s to connect covers a cross-region TLS handshake; 10 s to
#: read covers STS/ECR under load while still fitting the exchange budget.
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 10.0


@dataclass(frozen=True)
class _Target:
    region: str
    public: bool = False
    fips: bool = False


@dataclass(frozen=True)
class _Keys:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:  # keys must never reach a log
        return f"_Keys({self.access_key_id[:4]}…)"


@dataclass(frozen=True)
class _ClientKey:
    service: str
    target: _Target
    endpoint_url: str
    principal: str
    keys: _Keys | None
    unsigned: bool = False


def make(context: ProviderContext) -> Provider[EcrEntry]:
    """The ``ecr`` kind's provider (``webhook.config.kinds``)."""
    return EcrProvider(context)


#: The services this provider makes clients of, by their endpoint prefixes in botocore's
#: endpoint table (ECR, ECR Public, STS): the rest of the table is never read here.
ENDPOINT_PREFIXES = frozenset({"api.ecr", "api.ecr-public", "sts"})
#: Keys of a service model that only docstrings read.
DOCUMENTATION_KEYS = ("documentation", "documentationUrl")


class PlainJsonFiles:
    """botocore's data files, read lean: as plain dicts (botocore reads them into
    OrderedDicts, which hold the same data in a third more memory: a dict keeps its order
    too), the endpoint table with only the services this provider calls (every partition
    and region kept: they decide each client's endpoint), and the service models without
    their documentation. An ECR and an STS client cost a replica 4.8 MiB instead of 11.2.
    A ``file_loader`` of ``botocore.loaders.Loader``."""

    def exists(self, file_path: str) -> bool:
        return os.path.isfile(file_path + ".json") or os.path.isfile(file_path + ".json.gz")

    def load_file(self, file_path: str) -> Any:
        """The file's data, or None; ``.json`` first, then ``.json.gz``, as botocore's own
        file loader tries them."""
        if os.path.isfile(file_path + ".json"):
            with open(file_path + ".json", "rb") as fp:
                raw = fp.read()
        elif os.path.isfile(file_path + ".json.gz"):
            with gzip.open(file_path + ".json.gz", "rb") as fp:
                raw = fp.read()
        else:
            return None
        data = json.loads(raw.decode("utf-8"))
        name = os.path.basename(file_path)
        if name == "endpoints":
            _only_our_services(data)
        elif name == "service-2":
            _without_documentation(data)
        return data


def _only_our_services(table: Any) -> None:
    if not isinstance(table, dict):
        return
    for partition in table.get("partitions") or []:
        services = partition.get("services") if isinstance(partition, dict) else None
        if isinstance(services, dict):
            partition["services"] = {
                prefix: service
                for prefix, service in services.items()
                if prefix in ENDPOINT_PREFIXES
            }


def _without_documentation(node: Any) -> None:
    if isinstance(node, dict):
        for key in DOCUMENTATION_KEYS:
            node.pop(key, None)
        for value in node.values():
            _without_documentation(value)
    elif isinstance(node, list):
        for value in node:
            _without_documentation(value)


def _shared_session() -> boto3.session.Session:
    """The one session the provider's clients are made from: its loader reads each data
    file once for all of them (a session of its own per client read the endpoint table
    and the models again: ~10 MiB per principal), and holds no credentials of its own
    (each client is given its principal's keys, or finds the default chain's)."""
    core = botocore.session.Session()
    # botocore's own loader (AWS_DATA_PATH's extra models included), reading plain dicts.
    loader = botocore.loaders.create_loader(core.get_config_variable("data_path"))
    loader.file_loader = PlainJsonFiles()
    core.register_component("data_loader", loader)
    return boto3.session.Session(botocore_session=core)


class EcrProvider:
    """Makes ECR credentials for ``ecr`` entries."""

    recheck_seconds: float | None = None

    def __init__(self, context: ProviderContext, *, read_timeout: float = READ_TIMEOUT) -> None:
        self._boto_config = BotoConfig(
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=read_timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
        )
        self._secrets = context.secrets
        self._tokens = context.tokens
        self._clock = context.clock
        self._lock = threading.Lock()
        self._session: boto3.session.Session | None = None
        # One client per (service, region, endpoint, principal); a principal's client is
        # replaced when its keys change (rotated static keys, new session credentials).
        self._clients: dict[Hashable, tuple[_Keys | None, Any]] = {}

    # -- keys ----------------------------------------------------------------------

    def cache_key(self, need: PullNeed[EcrEntry], namespace: str) -> Hashable:
        target = _target(need.entry, need.host)
        return ("ecr", need.entry.name, principal_for(need, namespace), target)

    # -- exchange ------------------------------------------------------------------

    async def fetch(self, need: PullNeed[EcrEntry], namespace: str, attempt: Attempt) -> Credential:
        entry = need.entry
        auth = entry.auth
        target = _target(entry, need.host)
        if not target.region:
            attempt.step = "ecr-region"
            raise attempt.error(
                "unknown-region",
                f"{need.host} is not an ECR host name",
                hint="set region on the registry entry",
            )
        principal = principal_for(need, namespace)
        keys: _Keys | None = None  # the default chain: boto3 finds them itself
        if isinstance(auth, StaticKeys):
            keys = await self._static_keys(auth, attempt)
        elif isinstance(auth, AssumeRole):
            keys = await self._assume_role(entry, auth, target, attempt)
        elif isinstance(auth, PodServiceAccount):
            keys = await self._web_identity(entry, auth, need, namespace, target, attempt)
        service = "ecr-public" if target.public else "ecr"
        attempt.step = f"{service}-get-authorization-token"
        client = _ClientKey(service, target, entry.endpoint_url, principal, keys)
        answer = await self._call(attempt, client, "get_authorization_token")
        data = answer["authorizationData"]
        if isinstance(data, list):
            data = data[0]
        try:
            decoded = base64.b64decode(data["authorizationToken"]).decode("utf-8")
            expires_at = data["expiresAt"].timestamp()
        except (binascii.Error, UnicodeDecodeError, KeyError, AttributeError) as e:
            raise attempt.error(
                "bad-response", "authorizationData lacks a base64 token or its expiry"
            ) from e
        username, _, password = decoded.partition(":")
        return Credential(
            username=username,
            password=password,
            hosts=(need.host,),
            expires_at=expires_at,
            issued_at=self._clock(),
        )

    async def _call(
        self, attempt: Attempt, client: _ClientKey, operation: str, **kwargs: Any
    ) -> Any:
        """``operation`` on the cached client, in a worker thread (making a client
        reads files and builds endpoint rules: tens of milliseconds)."""

        def call() -> Any:
            return getattr(self._client(client), operation)(**kwargs)

        try:
            return await asyncio.to_thread(call)
        except Exception as e:  # mapped to RegistryAuthError right here
            raise map_boto_error(attempt, e) from e

    def _client(self, c: _ClientKey) -> Any:
        key = (c.service, c.target, c.endpoint_url, c.principal, c.unsigned)
        keys, target, endpoint_url = c.keys, c.target, c.endpoint_url
        with self._lock:
            cached = self._clients.get(key)
            if cached is not None and cached[0] == keys:
                return cached[1]
            if cached is not None:
                cached[1].close()  # superseded keys: release its connection pool
            if self._session is None:
                self._session = _shared_session()
            config = self._boto_config
            if c.unsigned:
                config = config.merge(BotoConfig(signature_version=UNSIGNED))
            if target.fips and not endpoint_url:
                config = config.merge(BotoConfig(use_fips_endpoint=True))
            client = self._session.client(
                c.service,
                region_name=target.region,
                endpoint_url=endpoint_url or None,
                config=config,
                aws_access_key_id=keys.access_key_id if keys else None,
                aws_secret_access_key=keys.secret_access_key if keys else None,
                aws_session_token=keys.session_token if keys else None,
            )
            self._clients[key] = (keys, client)
            return client

    async def _static_keys(self, auth: StaticKeys, attempt: Attempt) -> _Keys:
        ref = auth.access_keys
        secret = await read_secret(
            self._secrets, ref, attempt, "keys accessKeyId and secretAccessKey"
        )
        data = secret.data
        access = data.get("accessKeyId") or data.get("AWS_ACCESS_KEY_ID")
        secret_key = data.get("secretAccessKey") or data.get("AWS_SECRET_ACCESS_KEY")
        token = data.get("sessionToken") or data.get("AWS_SESSION_TOKEN")
        if not access or not secret_key:
            raise attempt.error(
                "missing-keys",
                f"Secret {ref.namespace}/{ref.name} lacks accessKeyId/secretAccessKey",
                hint="use keys accessKeyId and secretAccessKey (or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY)",
            )
        return _Keys(
            access.decode().strip(),
            secret_key.decode().strip(),
            token.decode().strip() if token else None,
        )

    async def _assume_role(
        self, entry: EcrEntry, auth: AssumeRole, target: _Target, attempt: Attempt
    ) -> _Keys:
        attempt.step = "sts-assume-role"
        sts = _ClientKey("sts", target, entry.sts_endpoint_url, "default", None)
        params: dict[str, Any] = {"RoleArn": auth.role_arn, "RoleSessionName": auth.session_name}
        if auth.external_id:
            params["ExternalId"] = auth.external_id
        answer = await self._call(attempt, sts, "assume_role", **params)
        return _session_keys(answer)

    async def _web_identity(
        self,
        entry: EcrEntry,
        auth: PodServiceAccount,
        need: PullNeed[EcrEntry],
        namespace: str,
        target: _Target,
        attempt: Attempt,
    ) -> _Keys:
        sa = need.identity.service_account
        annotations = await service_account_annotations(self._tokens, namespace, sa, attempt)
        role_arn = annotations.get(ROLE_ARN_ANNOTATION, "")
        if not role_arn:
            raise attempt.error(
                "no-role-annotation",
                f"ServiceAccount {namespace}/{sa} has no {ROLE_ARN_ANNOTATION} annotation",
                hint=f"annotate it: kubectl annotate sa -n {namespace} {sa} "
                f"{ROLE_ARN_ANNOTATION}=arn:aws:iam::ACCOUNT:role/NAME",
            )
        audience = annotations.get(AUDIENCE_ANNOTATION, WEB_IDENTITY_AUDIENCE)
        token = await service_account_token(
            self._tokens, namespace, sa, audience, SA_TOKEN_SECONDS, attempt
        )
        attempt.step = "sts-assume-role-with-web-identity"
        # AssumeRoleWithWebIdentity is authenticated by the token alone: no signature.
        sts = _ClientKey("sts", target, entry.sts_endpoint_url, "", None, unsigned=True)
        answer = await self._call(
            attempt,
            sts,
            "assume_role_with_web_identity",
            RoleArn=role_arn,
            RoleSessionName=auth.session_name,
            WebIdentityToken=token,
        )
        return _session_keys(answer)

    async def aclose(self) -> None:
        with self._lock:
            clients = [client for _, client in self._clients.values()]
            self._clients.clear()
        for client in clients:
            client.close()


def _session_keys(answer: Mapping[str, Any]) -> _Keys:
    c = answer["Credentials"]
    return _Keys(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])


def _target(entry: EcrEntry, host: str) -> _Target:
    if host == ECR_PUBLIC_HOST:
        return _Target(ECR_PUBLIC_REGION, public=True)
    parsed = parse_ecr_host(host)
    region = entry.region or (parsed.region if parsed else "")
    return _Target(region, fips=bool(parsed and parsed.fips))
