"""Two replicas race for one new pull secret on the real API server, as the webhook's
own ServiceAccount, while the API server answers the bookkeeping after the Secret's
create late (a delay fault on the record's create and the marker's): the admission that
made the Secret answers after that one write, without waiting for its bookkeeping; the
other, whose create the API server refused, follows the record when it comes; and each
Secret, record and marker is written once.

The two replicas are the product's ``PullSecretManager`` in this process, with their
watches of the real API server; the credential is a fake one (what is minted is not
what this checks)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest

from devenv.stack import Stack
from devenv.support.reviews import make_pod
from tests.e2e.support import get_json, ns_name, record_of
from tests.support.bookkeeping import Minter
from webhook.admission.decision import Outcome
from webhook.admission.needs import pull_needs
from webhook.config.load import load_config
from webhook.config.store import ConfigStore
from webhook.kube.calls import Kube, connect
from webhook.pullsecrets.manager import PullSecretManager

pytestmark = pytest.mark.usefixtures("webhook_logs_on_failure")

#: How late the record's create and the marker's answer: longer than the waiting
#: replica's CLAIM_RELOAD_SECONDS (it then asks the API server), well inside its
#: FOLLOW_SECONDS and the admission budget below.
BOOKKEEPING_DELAY = 1.5
BUDGET = 6.0


class LateBookkeeping(Kube):
    """The webhook's client, with the records' writes and the marker's create delayed
    and every write counted as sent."""

    def __init__(self, api: Any) -> None:
        super().__init__(api)
        self.sent: Counter[str] = Counter()

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self.sent["create_secret"] += 1
        return await super().create_secret(namespace, body)

    async def replace_secret(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        self.sent["replace_secret"] += 1
        return await super().replace_secret(namespace, name, body)

    async def check_secret(self, namespace: str, name: str, uid: str) -> None:
        self.sent["check_secret"] += 1
        await super().check_secret(namespace, name, uid)

    async def create_record(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(BOOKKEEPING_DELAY)
        self.sent["create_record"] += 1
        return await super().create_record(namespace, body)

    async def replace_record(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        await asyncio.sleep(BOOKKEEPING_DELAY)
        self.sent["replace_record"] += 1
        return await super().replace_record(namespace, name, body)

    async def create_marker(self, namespace: str, body: Mapping[str, Any]) -> None:
        await asyncio.sleep(BOOKKEEPING_DELAY)
        self.sent["create_marker"] += 1
        await super().create_marker(namespace, body)


async def _race(stack: Stack, namespace: str) -> tuple[list[Outcome], float, Counter[str]]:
    assert stack.config_path is not None and stack.webhook_kubeconfig is not None
    config = load_config(stack.config_path)
    [need] = pull_needs(config, make_pod(stack.acr_image))
    clients = [LateBookkeeping(await connect(str(stack.webhook_kubeconfig))) for _ in "ab"]
    replicas = [PullSecretManager(ConfigStore(config), kube, Minter()) for kube in clients]
    try:
        for replica in replicas:
            await replica.start()
        await asyncio.wait_for(asyncio.gather(*(r.wait_synced() for r in replicas)), 30)
        started = time.monotonic()

        async def admit(replica: PullSecretManager) -> tuple[Outcome, float]:
            outcome = await replica.ensure(namespace, [need], budget=BUDGET, dry_run=False)
            return outcome, time.monotonic() - started

        answered = await asyncio.gather(*(admit(r) for r in replicas))
        for replica in replicas:
            await replica.writer.drain()
        first = min(seconds for _, seconds in answered)
        sent = sum((kube.sent for kube in clients), Counter[str]())
        return [outcome for outcome, _ in answered], first, sent
    finally:
        for replica in replicas:
            await replica.close()
        for kube in clients:
            await kube.close()
        # The watches' TLS connections, closed with their bodies unread, finish their
        # TLS shutdown on the loop: let them, or asyncio.run closes the loop first and
        # their sockets are left to the garbage collector (a ResourceWarning in a later
        # test). aiohttp's documentation ("Graceful Shutdown") suggests this pause.
        await asyncio.sleep(0.5)


def test_two_replicas_racing_with_the_bookkeeping_delayed_write_once_and_both_admit(
    stack: Stack,
) -> None:
    cp = stack.controlplane
    ns = stack.labelled_namespace(ns_name("latebooks"))
    try:
        outcomes, first, sent = asyncio.run(_race(stack, ns))
        assert [dict(o.statuses) for o in outcomes] == [{}, {}], outcomes  # both ready
        # The replica that made the Secret answered before its bookkeeping came back.
        assert first < BOOKKEEPING_DELAY, first
        # The Secret's create tried by both, let through once; one record, created
        # Ready; one marker. The loser wrote nothing but its refused create, and did not
        # check the Secret: the record it followed says whose it is.
        assert sent == Counter(create_secret=2, create_record=1, create_marker=1), sent
        [secret] = [
            s
            for s in get_json(cp, "secrets", "-n", ns)["items"]
            if s["metadata"]["name"].startswith("psw-")
        ]
        name, uid = secret["metadata"]["name"], secret["metadata"]["uid"]
        status = record_of(cp, ns, name)["status"]
        assert status["state"] == "Ready" and status["secretUID"] == uid, status
        markers = get_json(cp, "pullsecretmarkers.pull-secret-webhook.io", "-n", ns)["items"]
        assert [m["metadata"]["ownerReferences"][0]["uid"] for m in markers] == [uid]
    finally:
        cp.kubectl("delete", "namespace", ns, "--wait=false", check=False)
