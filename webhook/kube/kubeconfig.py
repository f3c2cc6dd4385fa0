"""A connection from a kubeconfig, read by kubernetes-asyncio's loader: what kubectl reads.

``$KUBECONFIG`` (several files merged: the first to set a name wins) or ``~/.kube/config``;
the context's cluster (``server``, ``certificate-authority[-data]``,
``insecure-skip-tls-verify``, ``tls-server-name``, ``proxy-url``) and user: a token or a
token file, a client certificate, an ``exec`` credential plugin (printing a token or a
client certificate; its token run for again shortly before it expires) or the ``oidc``
``auth-provider`` (its id-token, while it is valid). Relative paths are the kubeconfig's
own, an exec plugin's relative command path included.

Two things the loader would do are refused instead, saying what to do: refreshing an
expired OIDC id-token (kubernetes-asyncio 36 hands aiohttp a file name where a TLS
context belongs, and without ``idp-certificate-authority-data`` it would send the client
secret and refresh token to an identity provider whose certificate it does not check:
refresh with kubectl, or use kubelogin as an exec plugin), and the ``gcp`` provider
(removed from kubectl in 1.26 for ``gke-gcloud-auth-plugin``, an exec plugin).

Only code that uses a kubeconfig imports this module (the command-line tools, ``serve``
outside a cluster): ``kubernetes_asyncio.config`` imports the generated client whole,
some 38 MiB of memory and half a second, which a replica in a cluster never pays
(``webhook.kube.client.load_in_cluster``).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from kubernetes_asyncio.client import Configuration
from kubernetes_asyncio.config import kube_config
from kubernetes_asyncio.config.config_exception import ConfigException
from kubernetes_asyncio.config.kube_config import KubeConfigLoader, KubeConfigMerger

from webhook.kube.client import Connection, KubeconfigError, TokenFile, TokenSource, env_proxy
from webhook.kube.errors import ApiError

#: What the loader raises for a kubeconfig it cannot use: its own ConfigException, and
#: plain errors where it indexes or asserts what a malformed file does not have.
_LOADER_ERRORS = (
    ConfigException,
    AssertionError,
    KeyError,
    TypeError,
    AttributeError,
    ValueError,
    OSError,
    ImportError,
    yaml.YAMLError,
)


class _Loader(KubeConfigLoader):
    """kubernetes-asyncio's loader, less what is refused (see the module's docstring)."""

    async def _refresh_oidc(self, provider: Any) -> None:
        raise ConfigException(
            "the oidc auth-provider's id-token has expired (or is missing): run a kubectl "
            "command to refresh it, or use kubelogin as an exec credential plugin"
        )

    async def load_gcp_token(self) -> str:
        raise ConfigException(
            "the gcp auth-provider is not supported (kubectl dropped it in 1.26): use "
            "gke-gcloud-auth-plugin, an exec credential plugin"
        )


def kubeconfig_paths(env: Mapping[str, str] | None = None) -> list[Path]:
    """``$KUBECONFIG``'s files in order, or ``~/.kube/config``."""
    env = os.environ if env is None else env
    listed = [p for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        return [Path(p).expanduser() for p in listed]
    return [Path("~/.kube/config").expanduser()]


@dataclass
class LoaderToken:
    """The loader's bearer token: an exec plugin's run for again once its
    ``expirationTimestamp`` is near; an OIDC id-token checked for expiry before each
    use (an expired one is an error saying how to refresh it). Any other token is what
    was loaded."""

    loader: KubeConfigLoader

    async def __call__(self) -> str:
        loader = self.loader
        try:
            if loader.provider == kube_config.PROVIDER_TYPE_OIDC:
                await loader._load_oid_token()
            elif hasattr(loader, "exec_plugin_expiry"):  # an exec plugin's token that expires
                await loader.load_from_exec_plugin()
        except (*_LOADER_ERRORS, aiohttp.ClientError) as e:
            # Its message never holds the token (the plugin's stderr at most).
            raise ApiError(0, "CredentialRefreshFailed", str(e)) from e
        return loader.token.removeprefix("Bearer ")


def _resolve_exec_commands(merged: KubeConfigMerger) -> None:
    """As kubectl: an exec plugin's command with a path separator is relative to the
    kubeconfig that names it; a bare name is looked up on $PATH."""
    config = merged.config
    for node in config.value.get("users") or [] if config is not None else []:
        user = node.value.get("user") if isinstance(node.value, Mapping) else None
        plugin = user.get("exec") if isinstance(user, Mapping) else None
        if not isinstance(plugin, dict):
            continue
        command = plugin.get("command")
        if not isinstance(command, str) or "/" not in command or Path(command).is_absolute():
            continue
        plugin["command"] = str(Path(node.path).parent / command)  # in memory only


def _current_context(merged: KubeConfigMerger) -> str:
    """The first file's current-context that sets one (kubectl's rule; the loader's
    merger keeps the last)."""
    for doc in merged.config_files.values():
        if isinstance(doc, Mapping) and doc.get("current-context"):
            return str(doc["current-context"])
    return ""


def _tls(configuration: Configuration) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if configuration.ssl_ca_cert:
        context.load_verify_locations(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file and configuration.key_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _merged(path: str | Path | None, context: str | None) -> tuple[str, KubeConfigMerger, str]:
    """The files merged, where they are (for messages) and the context to use."""
    paths = [Path(path).expanduser()] if path else kubeconfig_paths()
    where = "kubeconfig " + os.pathsep.join(map(str, paths))
    present = [p for p in paths if p.is_file()]
    if not present:
        raise KubeconfigError("no kubeconfig at " + os.pathsep.join(map(str, paths)))
    try:
        merged = KubeConfigMerger(os.pathsep.join(map(str, present)))
        _resolve_exec_commands(merged)
    except _LOADER_ERRORS as e:
        raise KubeconfigError(f"{where}: {e}") from e
    name = context or _current_context(merged)
    if not name:
        raise KubeconfigError(f"{where}: no current-context")
    return where, merged, name


async def load_kubeconfig(path: str | Path | None = None, context: str | None = None) -> Connection:
    """A connection from a kubeconfig file (or $KUBECONFIG, or ~/.kube/config); a
    KubeconfigError that says what is wrong with it otherwise."""
    where, merged, name = _merged(path, context)
    configuration = Configuration()
    try:
        loader = _Loader(
            config_dict=merged.config,
            active_context=name,
            config_base_path=None,
        )
        await loader.load_and_set(configuration)
        tls = _tls(configuration)
    except AssertionError as e:
        raise KubeconfigError(f"{where}: no context {name!r} with a known cluster") from e
    except (*_LOADER_ERRORS, ssl.SSLError) as e:
        raise KubeconfigError(f"{where} (context {name!r}): {e}") from e
    finally:
        # The loader wrote the CA, certificate and key it was given inline to files for
        # ssl to read: they are in the context now, and gone from the disk at once.
        kube_config._cleanup_temp_files()
    server = str(configuration.host)
    if not server.startswith("https://"):
        raise KubeconfigError(f"{where} (context {name!r}): server {server!r} is not https://")
    return Connection(
        server=server,
        tls=tls,
        token=_token(loader, name),
        server_hostname=configuration.tls_server_name or None,
        proxy=configuration.proxy or env_proxy(server),
        source=f"{where} (context {name!r})",
    )


def _token(loader: KubeConfigLoader, context: str) -> TokenSource | None:
    token: Any = getattr(loader, "token", None)
    if token is None:
        return None  # a client certificate alone
    if not str(token).startswith("Bearer "):
        raise KubeconfigError(
            f"context {context!r}: username and password are not supported (API servers "
            "dropped basic authentication in 1.19); use a token or a client certificate"
        )
    user = loader._user
    token_file = user.safe_get("tokenFile") if user is not None else None
    if token_file and not user.safe_get("token"):  # type: ignore[union-attr]
        # Read again every minute, as client-go does: whatever writes it may rotate it.
        base = Path(user.path).parent if user.path else Path()  # type: ignore[union-attr]
        return TokenFile(base / Path(str(token_file)).expanduser())
    return LoaderToken(loader)
