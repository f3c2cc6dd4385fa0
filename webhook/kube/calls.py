"""The few Kubernetes calls the webhook makes, on plain JSON dicts (``webhook.kube.client``).

The webhook reads a handful of fields of what it gets and sends what it builds; every
call has its path in the module of the resource it calls (``secrets``, ``records``,
``accounts``, ``podcalls``, ``events``, ``leases``), all on ``webhook.kube.base``.
Failures raise the ``webhook.kube.errors.ApiError`` its HTTP status names
(``NotFoundError``, ``ConflictError``, ...; ``UnreachableError``: no answer).
"""

from __future__ import annotations

from webhook.kube.accounts import AccountCalls
from webhook.kube.client import connect
from webhook.kube.events import EventCalls
from webhook.kube.leases import LeaseCalls
from webhook.kube.podcalls import PodCalls
from webhook.kube.records import RecordCalls
from webhook.kube.secrets import SecretCalls

__all__ = ["Kube", "connect"]


class Kube(SecretCalls, RecordCalls, AccountCalls, PodCalls, EventCalls, LeaseCalls):
    """Pull secrets (written, never read), the webhook's records, Namespaces, credential
    Secrets, ServiceAccounts, TokenRequests, Events, Pods and Leases."""
