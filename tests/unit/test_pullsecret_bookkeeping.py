"""The webhook's own record decides what is its own: writes, races, deletions, planted
Secrets and refused namespaces, against an in-memory API with the server's semantics."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import pytest

from devenv.support.hotpath import NoNetwork, offline_manager, opted_in
from devenv.support.memkube import MemKube
from devenv.support.reviews import make_pod
from tests.support.bookkeeping import (
    HOME,
    Minter,
    need_of,
    record_of,
)
from webhook.admission.decision import Outcome
from webhook.admission.needs import PullNeed, pull_needs
from webhook.config.load import parse_config
from webhook.config.schema import Config
from webhook.config.store import ConfigStore
from webhook.credentials.base import Credential
from webhook.kube.errors import ApiError
from webhook.kube.pods import ListedPods
from webhook.pullsecrets import writer as writer_module
from webhook.pullsecrets.manager import MAX_NEEDS_PER_POD, PullSecretManager
from webhook.pullsecrets.records import CLAIM_SECONDS, ManagedSecret, Markers, RecordIndex
from webhook.pullsecrets.secret import ANN_EXPIRES, MANAGED_BY, MANAGER
from webhook.upkeep.references import References
from webhook.upkeep.refresher import PassReport, Refresher


def manager(config: Config, kube: MemKube, minter: Minter | None = None) -> PullSecretManager:
    m = PullSecretManager(ConfigStore(config), kube, minter or Minter())
    m.namespaces.replace_all(opted_in("team-a", "team-b"))
    return m


async def one_secret_made(
    config: Config, kube: MemKube, minter: Minter | None = None
) -> tuple[PullSecretManager, PullNeed]:
    """A manager that has made the pull secret of one ACR image in team-a."""
    m = manager(config, kube, minter)
    need = need_of(config)
    await m.ensure("team-a", [need], budget=5, dry_run=False)
    await m.writer.drain()  # its record's Ready and its marker follow the admission
    return m, need


async def test_first_need_creates_the_secret_then_records_its_uid(
    config: Config,
) -> None:
    kube = MemKube()
    m = manager(config, kube)
    need = need_of(config)
    outcome = await m.ensure("team-a", [need], budget=5, dry_run=False)
    assert dict(outcome.statuses) == {}
    secret = kube.secrets[("team-a", need.secret_name)]
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert secret["metadata"]["labels"][MANAGED_BY] == MANAGER
    status = record_of(kube, "team-a", need)["status"]
    assert status["state"] == "Ready"
    assert status["secretUID"] == secret["metadata"]["uid"]
    assert kube.calls["create_record"] == 1 and kube.calls["create_secret"] == 1


async def test_a_planted_labelled_secret_is_never_adopted_changed_or_patched(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "FOLLOW_SECONDS", 1.0)  # inside the budget
    kube = MemKube()
    need = need_of(config)
    planted = kube.plant_secret(
        "team-a",
        need.secret_name,
        labels={MANAGED_BY: MANAGER},
        annotations={ANN_EXPIRES: "2099-01-01T00:00:00Z"},
    )
    m = manager(config, kube)
    outcome = await m.ensure("team-a", [need], budget=5, dry_run=False)
    assert outcome.status(need.secret_name).state == "foreign"
    assert kube.secrets[("team-a", need.secret_name)] == planted
    assert record_of(kube, "team-a", need)["status"]["state"] == "Foreign"
    # From then on the record answers without a call, and never says ready.
    m.writer.kube = m.collector.kube = m.notices.kube = NoNetwork()  # any call fails the test
    again = await m.ensure("team-a", [need], budget=5, dry_run=False)
    assert again.status(need.secret_name).state == "foreign"


async def test_a_secret_replaced_by_someone_else_becomes_foreign_and_is_left_alone(
    config: Config,
) -> None:
    kube = MemKube()
    m, need = await one_secret_made(config, kube, Minter(lifetime=120))
    del kube.secrets[("team-a", need.secret_name)]
    planted = kube.plant_secret("team-a", need.secret_name, labels={MANAGED_BY: MANAGER})
    record = m.records.get("team-a", need.secret_name)
    assert record is not None
    m.writer.clock = lambda: record.refresh_at + 1  # renewal due: the UID no longer matches
    status = await m.writer.refresh("team-a", need)
    assert status.state == "foreign"
    assert kube.secrets[("team-a", need.secret_name)] == planted


#: What the API server answers when the shipped write policy refuses a renewal: of a
#: Secret that lost the webhook's label (the policy's reason Invalid, a 422), or in a
#: namespace that lost the opt-in label (reason Forbidden, a 403). The messages are the
#: same words for both, as a policy's are: only the status tells them apart.
POLICY_DENIAL = "ValidatingAdmissionPolicy 'pull-secret-webhook-secrets' denied request"


@pytest.mark.parametrize(
    ("status", "state"),
    [(422, "foreign"), (403, "pending")],
    ids=["label-taken-off-invalid", "rights-refused-forbidden"],
)
async def test_a_renewal_refused_as_invalid_leaves_the_secret_alone_and_a_forbidden_one_retries(
    config: Config, status: int, state: str
) -> None:
    kube = MemKube()
    m, need = await one_secret_made(config, kube, Minter(lifetime=120))
    record = m.records.get("team-a", need.secret_name)
    assert record is not None

    async def refused(namespace: str, name: str, body: Any) -> dict[str, Any]:
        raise ApiError(status, "Invalid" if status == 422 else "Forbidden", POLICY_DENIAL)

    kube.replace_secret = refused  # type: ignore[method-assign]
    m.writer.clock = lambda: record.refresh_at + 1  # renewal due
    outcome = await m.writer.refresh("team-a", need)
    assert outcome.state == state
    saved = record_of(kube, "team-a", need)["status"]["state"]
    assert saved == ("Foreign" if state == "foreign" else "Ready")


async def test_a_deleted_secret_is_re_created_by_the_refresher_with_a_new_uid(
    config: Config,
) -> None:
    kube = MemKube()
    m, need = await one_secret_made(config, kube)
    first_uid = kube.secrets[("team-a", need.secret_name)]["metadata"]["uid"]
    kube.reference("team-a", need.secret_name)
    refresher = Refresher(
        ConfigStore(config), m, kube, "replica-0", writer=m.writer, collector=m.collector
    )
    refresher.references.replace_all(ListedPods.of(kube.pods))  # the leader's watch
    m.markers.replace_all(list(kube.markers.values()))
    idle = await refresher.run_once()
    assert idle == PassReport() and kube.calls["check_secret"] == 0  # nothing asked
    kube.delete_secret_as_someone_else("team-a", need.secret_name)
    m.markers.replace_all(list(kube.markers.values()))  # the watch saw it go
    report = await refresher.run_once()
    assert report.recreated == [f"team-a/{need.secret_name}"]
    recreated = kube.secrets[("team-a", need.secret_name)]
    assert recreated["metadata"]["uid"] != first_uid
    assert record_of(kube, "team-a", need)["status"]["secretUID"] == recreated["metadata"]["uid"]
    assert ("team-a", need.secret_name) in kube.markers  # marked again


async def test_a_pass_right_after_a_secret_was_made_waits_for_its_marker_without_a_call(
    config: Config,
) -> None:
    kube = MemKube()
    m, need = await one_secret_made(config, kube)
    kube.reference("team-a", need.secret_name)
    refresher = Refresher(
        ConfigStore(config), m, kube, "replica-0", writer=m.writer, collector=m.collector
    )
    refresher.references.replace_all(ListedPods.of(kube.pods))
    # As on a leader whose watch has not shown the new marker yet.
    m.markers = m.writer.markers = Markers()
    calls = dict(kube.calls)
    assert await refresher.run_once() == PassReport()
    assert dict(kube.calls) == calls  # no check of the Secret, no marker made again
    # Past the grace, a marker that never came is looked into: the Secret is checked.
    refresher.clock = lambda: time.time() + CLAIM_SECONDS
    await refresher.run_once()
    assert kube.calls["check_secret"] == calls.get("check_secret", 0) + 1


def test_markers_remember_which_went_including_while_no_watch_ran() -> None:
    record = ManagedSecret("team-a", "s", "acr", "h", "i", state="Ready", secret_uid="uid-1")
    marker = {"metadata": {"namespace": "team-a", "name": "s", "ownerReferences": [
        {"kind": "Secret", "name": "s", "uid": "uid-1"}]}}  # fmt: skip
    markers = Markers()
    markers.apply("ADDED", marker)
    assert markers.marked(record) and not markers.lost(record)
    markers.apply("DELETED", marker)
    assert not markers.marked(record) and markers.lost(record)
    markers.apply("ADDED", marker)  # made again
    assert not markers.lost(record)
    orphaned = {"metadata": {**marker["metadata"], "ownerReferences": []}}
    markers.apply("MODIFIED", orphaned)
    assert markers.lost(record)
    markers.add("team-a", "s", "uid-1")
    markers.replace_all([])  # a relist: gone while the watch was down
    assert markers.lost(record)
    assert not markers.lost(replace(record, secret_uid="uid-2"))  # another Secret of that name


async def race(
    kube: MemKube,
    a: PullSecretManager,
    b: PullSecretManager,
    need: PullNeed,
    *,
    drain: bool = False,
) -> list[Outcome]:
    """Both replicas ensure ``need`` at once while each one's watches deliver what the API
    holds, a moment later; ``drain``: then wait for their bookkeeping too."""

    async def watches() -> None:
        while True:
            await asyncio.sleep(0.01)
            for m in (a, b):
                for record in list(kube.records.values()):
                    m.records.apply("MODIFIED", record)
                m.markers.replace_all(list(kube.markers.values()))

    watching = asyncio.create_task(watches())
    try:
        outcomes = await asyncio.gather(
            a.ensure("team-a", [need], budget=5, dry_run=False),
            b.ensure("team-a", [need], budget=5, dry_run=False),
        )
        if drain:
            await asyncio.gather(a.writer.drain(), b.writer.drain())
    finally:
        watching.cancel()
    return list(outcomes)


async def test_two_replicas_racing_make_one_secret_and_both_admit(config: Config) -> None:
    kube = MemKube()
    a, b = manager(config, kube), manager(config, kube)
    need = need_of(config)
    outcomes = await asyncio.gather(
        a.ensure("team-a", [need], budget=5, dry_run=False),
        b.ensure("team-a", [need], budget=5, dry_run=False),
    )
    assert [dict(o.statuses) for o in outcomes] == [{}, {}]
    # Both create; the API server lets one through (the other's is refused, 409).
    assert kube.calls["create_secret"] == 2 and kube.calls["replace_secret"] == 0
    status = record_of(kube, "team-a", need)["status"]
    assert status["state"] == "Ready"
    assert status["secretUID"] == kube.secrets[("team-a", need.secret_name)]["metadata"]["uid"]


async def test_the_replica_that_loses_the_race_follows_the_winner_without_a_write(
    config: Config,
) -> None:
    """Both replicas get the same cold admission at once, each with a credential of its
    own: one Secret written, one record, one marker, and the loser, whose create the API
    server refused, asks nothing it can learn from its watches (no check of the Secret,
    no marker made again, no renewal, no record of its own)."""
    kube = MemKube()
    a, b = manager(config, kube), manager(config, kube)

    need = need_of(config)
    outcomes = await race(kube, a, b, need)
    assert [dict(o.statuses) for o in outcomes] == [{}, {}]
    assert kube.calls["create_secret"] == 2  # one made, one refused (409)
    assert kube.calls["create_marker"] == 1
    for call in ("replace_secret", "check_secret", "delete_marker", "replace_record"):
        assert kube.calls[call] == 0, call
    assert kube.calls["create_record"] == 1  # the winner's, Ready
    assert kube.calls["get_record"] == 0  # the loser's watch brought it
    taken = [
        m.metrics.registry.get_sample_value(
            "pull_secret_webhook_secret_writes_total", {"operation": "create", "result": "taken"}
        )
        or 0.0
        for m in (a, b)
    ]
    assert sorted(taken) == [0.0, 1.0]  # the loser's refused create, counted


async def test_a_secret_made_while_this_replica_minted_is_not_written_again(
    config: Config,
) -> None:
    """Its watches already show the other replica's Secret (record Ready, marker there)
    when its own credential arrives, a younger one: no renewal of a Secret just made."""
    kube = MemKube()
    a = manager(config, kube)
    minted = asyncio.Event()

    class SlowMinter(Minter):
        async def get(self, need: PullNeed, namespace: str) -> Credential:
            await minted.wait()
            return await super().get(need, namespace)

    b = manager(config, kube, SlowMinter())
    need = need_of(config)
    late = asyncio.create_task(b.ensure("team-a", [need], budget=5, dry_run=False))
    await asyncio.sleep(0.01)  # b is minting
    assert dict((await a.ensure("team-a", [need], budget=5, dry_run=False)).statuses) == {}
    for record in kube.records.values():  # what b's watches deliver meanwhile
        b.records.apply("ADDED", record)
    b.markers.replace_all(list(kube.markers.values()))
    minted.set()
    assert dict((await late).statuses) == {}
    assert kube.calls["create_secret"] == 1 and kube.calls["replace_secret"] == 0


async def test_a_replica_that_began_after_the_secret_was_made_does_not_write_it_again(
    config: Config,
) -> None:
    """Its watch already had the other replica's Ready record, not yet the marker, when
    its admission began: it mints a credential of its own, a few ms younger than the one
    in the Secret, and must leave the fresh Secret as it is (seen in the storm test)."""
    kube = MemKube()
    a = manager(config, kube)
    need = need_of(config)
    assert dict((await a.ensure("team-a", [need], budget=5, dry_run=False)).statuses) == {}
    minter = Minter()
    b = manager(config, kube, minter)
    for record in kube.records.values():  # b's records watch is up to date...
        b.records.apply("ADDED", record)

    async def marker_arrives() -> None:  # ... its markers watch a moment later
        await asyncio.sleep(0.05)
        b.markers.replace_all(list(kube.markers.values()))

    arriving = asyncio.create_task(marker_arrives())
    assert dict((await b.ensure("team-a", [need], budget=5, dry_run=False)).statuses) == {}
    await arriving
    assert minter.calls == 1  # b did mint its own
    assert kube.calls["create_secret"] == 1 and kube.calls["replace_secret"] == 0


async def test_another_replicas_fresh_secret_is_used_before_its_marker_arrives(
    config: Config,
) -> None:
    """However late this replica's markers watch is, a Secret another replica made moments
    ago is used as it is: no check of it, no marker deleted and made again (on a busy API
    server the marker took longer than the 2 s once waited for it). Only a marker seen
    going makes it look at once."""
    kube = MemKube()
    a = manager(config, kube)
    need = need_of(config)
    assert dict((await a.ensure("team-a", [need], budget=5, dry_run=False)).statuses) == {}
    b = manager(config, kube)
    for record in kube.records.values():  # b's records watch is up to date, its markers not
        b.records.apply("ADDED", record)
    calls = dict(kube.calls)
    assert dict((await b.ensure("team-a", [need], budget=5, dry_run=False)).statuses) == {}
    assert dict(kube.calls) == calls
    # Now someone deletes the Secret and b's watch sees its marker go.
    [marker] = [m for k, m in kube.markers.items() if k == ("team-a", need.secret_name)]
    b.markers.apply("ADDED", marker)
    kube.delete_secret_as_someone_else("team-a", need.secret_name)
    b.markers.apply("DELETED", marker)
    assert dict((await b.ensure("team-a", [need], budget=5, dry_run=False)).statuses) == {}
    assert kube.calls["check_secret"] == calls.get("check_secret", 0) + 1
    assert kube.calls["create_secret"] == calls["create_secret"] + 1  # made again


async def test_a_claim_left_by_a_dead_replica_is_taken_over(config: Config) -> None:
    kube = MemKube()
    need = need_of(config)
    stale = ManagedSecret(
        "team-a",
        need.secret_name,
        need.entry.name,
        need.host,
        need.identity.key,
        claimed_at=time.time() - CLAIM_SECONDS - 1,
    )
    await kube.create_record(HOME, stale.to_object(HOME))
    m = manager(config, kube)
    outcome = await m.ensure("team-a", [need], budget=5, dry_run=False)
    assert dict(outcome.statuses) == {}
    await m.writer.drain()
    assert record_of(kube, "team-a", need)["status"]["state"] == "Ready"
    # Its Secret created straight away: no claim of its own written first.
    assert kube.calls["create_secret"] == 1 and kube.calls["replace_record"] == 1


@pytest.mark.parametrize(
    "namespace",
    ["kube-system", HOME, "not-opted-in", "does-not-exist"],
    ids=["system", "own", "unlabelled", "missing"],
)
async def test_a_review_for_a_namespace_that_did_not_opt_in_costs_nothing(
    config: Config, namespace: str
) -> None:
    m = offline_manager(config)
    # Labelled, but excluded whatever its label says.
    m.namespaces.replace_all(
        [*opted_in("team-a", "kube-system", HOME), {"metadata": {"name": "not-opted-in"}}]
    )
    outcome = await m.ensure(namespace, [need_of(config)], budget=5, dry_run=False)
    assert outcome.refused
    assert not m._background  # nothing retried later either


async def test_gc_deletes_only_what_its_records_say_it_created(config: Config) -> None:
    kube = MemKube()
    m, need = await one_secret_made(config, kube)
    kube.plant_secret("team-a", "app-database-credentials", labels={MANAGED_BY: MANAGER})
    refresher = Refresher(
        ConfigStore(config), m, kube, "replica-0", writer=m.writer, collector=m.collector
    )
    refresher.clock = lambda: time.time() + CLAIM_SECONDS
    first = await refresher.run_once()
    assert first.marked == [f"team-a/{need.secret_name}"]
    refresher.clock = lambda: time.time() + CLAIM_SECONDS + config.refresh.gc_grace_seconds + 1
    second = await refresher.run_once()
    assert second.collected == [f"team-a/{need.secret_name}"]
    assert ("team-a", need.secret_name) not in kube.secrets
    assert ("team-a", "app-database-credentials") in kube.secrets
    assert kube.records == {}


async def test_a_record_claimed_moments_ago_is_not_marked_before_its_pod_is_seen(
    config: Config,
) -> None:
    # Its pod is being admitted; the leader's pods watch may show it seconds later.
    kube = MemKube()
    m, need = await one_secret_made(config, kube)
    refresher = Refresher(
        ConfigStore(config), m, kube, "replica-0", writer=m.writer, collector=m.collector
    )
    calls = dict(kube.calls)
    report = await refresher.run_once()
    assert report.marked == [] and report.collected == []
    assert dict(kube.calls) == calls
    assert "unreferencedSince" not in record_of(kube, "team-a", need)["status"]
    # A grace shorter than the claim window bounds the wait instead.
    short = replace(config, refresh=replace(config.refresh, gc_grace_seconds=2.0))
    refresher = Refresher(
        ConfigStore(short), m, kube, "replica-0", writer=m.writer, collector=m.collector
    )
    refresher.clock = lambda: time.time() + 2.5
    assert (await refresher.run_once()).marked == [f"team-a/{need.secret_name}"]


def test_references_count_pods_per_secret_and_follow_updates_and_deletions() -> None:
    refs = References("psw")
    pod = {
        "metadata": {"namespace": "team-a", "name": "web-1"},
        "spec": {"imagePullSecrets": [{"name": "psw-a"}, {"name": "mine"}]},
    }
    refs.replace_all(
        ListedPods.of([pod, {**pod, "metadata": {"namespace": "team-a", "name": "web-2"}}])
    )
    assert refs.referenced("team-a", "psw-a") and not refs.referenced("team-a", "mine")
    refs.apply("DELETED", pod)
    assert refs.referenced("team-a", "psw-a")  # web-2 still lists it
    refs.apply(
        "MODIFIED",
        {
            **pod,
            "metadata": {"namespace": "team-a", "name": "web-2"},
            "spec": {"imagePullSecrets": []},
        },
    )
    assert not refs.referenced("team-a", "psw-a")
    assert len(refs) == 0


async def test_a_secret_deleted_with_orphan_cascade_is_noticed_and_re_created(
    config: Config,
) -> None:
    kube = MemKube()
    m, need = await one_secret_made(config, kube)
    first_uid = kube.secrets[("team-a", need.secret_name)]["metadata"]["uid"]
    kube.orphan_markers_of("team-a", need.secret_name)
    m.markers.apply("MODIFIED", kube.markers[("team-a", need.secret_name)])  # the watch
    # The next pod needing it does not get a name that points nowhere: it is made again.
    outcome = await m.ensure("team-a", [need], budget=5, dry_run=False)
    assert dict(outcome.statuses) == {}
    again = kube.secrets[("team-a", need.secret_name)]
    assert again["metadata"]["uid"] != first_uid
    owner = kube.markers[("team-a", need.secret_name)]["metadata"]["ownerReferences"][0]
    assert owner["uid"] == again["metadata"]["uid"]  # the stale marker was replaced


async def test_a_replanted_secret_is_never_patched_into_pods(config: Config) -> None:
    kube = MemKube()
    m, need = await one_secret_made(config, kube)
    # kubectl replace --force: the Secret is deleted (its marker with it) and planted again.
    kube.delete_secret_as_someone_else("team-a", need.secret_name)
    planted = kube.plant_secret("team-a", need.secret_name, labels={MANAGED_BY: MANAGER})
    m.markers.replace_all(list(kube.markers.values()))  # what the watch now says
    outcome = await m.ensure("team-a", [need], budget=5, dry_run=False)
    assert outcome.status(need.secret_name).state == "foreign"
    assert kube.secrets[("team-a", need.secret_name)] == planted


async def test_one_review_cannot_fan_out_past_the_per_pod_limit() -> None:
    config = parse_config(
        {"registries": [{"name": "acr", "kind": "acr", "anyRegistry": True, "auth": {}}]}
    )
    kube = MemKube()
    minter = Minter()
    m = manager(config, kube, minter)
    hosts = [f"team{i:04d}.azurecr.io/app:1" for i in range(MAX_NEEDS_PER_POD * 10)]
    needs = pull_needs(config, make_pod(*hosts))
    assert len(needs) == MAX_NEEDS_PER_POD * 10
    outcome = await m.ensure("team-a", needs, budget=5, dry_run=False)
    assert minter.calls == MAX_NEEDS_PER_POD
    assert kube.calls["create_secret"] == MAX_NEEDS_PER_POD
    refused = [s for s in outcome.statuses.values() if "more than" in s.message]
    assert len(refused) == len(needs) - MAX_NEEDS_PER_POD


async def test_a_secret_whose_ready_write_failed_is_recorded_later_never_made_foreign(
    config: Config,
) -> None:
    """The Secret was created, then the API server failed the record's write (a 500, a
    timeout): the replica still holds the Secret's UID, and its next attempt, however
    much later, records that UID instead of creating again, meeting its own Secret's 409
    and calling it Foreign."""

    class FailsOneReadyWrite(MemKube):
        failed = False

        async def create_record(self, namespace: str, body: Any) -> dict[str, Any]:
            if not self.failed and body.get("status", {}).get("state") == "Ready":
                self.failed = True
                self.calls["create_record"] += 1
                raise ApiError(500, "InternalError", "etcdserver: request timed out")
            return await super().create_record(namespace, body)

    kube = FailsOneReadyWrite()
    now = [time.time()]
    m = PullSecretManager(ConfigStore(config), kube, Minter(), clock=lambda: now[0])
    m.namespaces.replace_all(opted_in("team-a"))
    need = need_of(config)
    first = await m.ensure("team-a", [need], budget=5, dry_run=False)
    # The Secret exists once its create answers: the admission is ready, and the failed
    # Ready write, which it did not wait for, goes to the background retries.
    assert dict(first.statuses) == {}
    await m.writer.drain()
    assert kube.failed and len(m.retries) == 1
    secret = kube.secrets[("team-a", need.secret_name)]
    assert (HOME, f"team-a.{need.secret_name}") not in kube.records

    now[0] += CLAIM_SECONDS + 1
    second = await m.ensure("team-a", [need], budget=5, dry_run=False)
    assert dict(second.statuses) == {}
    status = record_of(kube, "team-a", need)["status"]
    assert status["state"] == "Ready"
    assert status["secretUID"] == secret["metadata"]["uid"]
    assert kube.calls["create_secret"] == 1
    await m.close()


class SlowBooks(MemKube):
    """The records endpoint and the markers' answer late (``hold`` until released, or
    ``delay`` seconds): the bookkeeping after a Secret's create, not the create."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.hold = asyncio.Event()
        self.hold.set()

    async def _late(self) -> None:
        await self.hold.wait()
        await asyncio.sleep(self.delay)

    async def create_record(self, namespace: str, body: Any) -> dict[str, Any]:
        if body.get("status", {}).get("state") == "Ready":  # not a Foreign verdict
            await self._late()
        return await super().create_record(namespace, body)

    async def replace_record(self, namespace: str, name: str, body: Any) -> dict[str, Any]:
        await self._late()
        return await super().replace_record(namespace, name, body)

    async def create_marker(self, namespace: str, body: Any) -> None:
        await self._late()
        await super().create_marker(namespace, body)


async def test_a_new_secret_is_ready_once_created_without_waiting_for_its_bookkeeping(
    config: Config,
) -> None:
    """After its credential, the admission waits for one write, the Secret's create, not
    for the record or the marker; later admissions on the replica use the Secret it made
    while those are on their way, without a call."""
    kube = SlowBooks()
    kube.hold.clear()  # the Ready write and the marker do not answer until released
    m = manager(config, kube)
    need = need_of(config)
    first = await asyncio.wait_for(m.ensure("team-a", [need], budget=5, dry_run=False), 1)
    assert dict(first.statuses) == {}
    assert ("team-a", need.secret_name) in kube.secrets
    assert kube.calls["create_secret"] == 1
    assert (HOME, f"team-a.{need.secret_name}") not in kube.records
    assert ("team-a", need.secret_name) not in kube.markers
    calls = dict(kube.calls)
    second = await asyncio.wait_for(m.ensure("team-a", [need], budget=5, dry_run=False), 1)
    assert dict(second.statuses) == {} and dict(kube.calls) == calls
    kube.hold.set()
    await m.writer.drain()
    status = record_of(kube, "team-a", need)["status"]
    assert status["state"] == "Ready"
    assert status["secretUID"] == kube.secrets[("team-a", need.secret_name)]["metadata"]["uid"]
    assert ("team-a", need.secret_name) in kube.markers
    assert kube.calls["create_secret"] == 1 and kube.calls["create_marker"] == 1
    assert kube.calls["create_record"] == 1 and kube.calls["replace_record"] == 0
    await m.close()


async def test_two_replicas_racing_with_the_bookkeeping_delayed_write_each_secret_once(
    config: Config,
) -> None:
    """The winner's record and marker answer 0.5 s late: one Secret written, one record,
    one marker, and both replicas answer ready (the loser, whose create was refused,
    follows the winner's record when it comes, without a write of its own)."""
    kube = SlowBooks(delay=0.5)
    a, b = manager(config, kube), manager(config, kube)

    need = need_of(config)
    outcomes = await race(kube, a, b, need, drain=True)
    assert [dict(o.statuses) for o in outcomes] == [{}, {}]
    assert kube.calls["create_secret"] == 2  # one made, one refused (409)
    assert kube.calls["create_marker"] == 1
    for call in ("replace_secret", "check_secret", "delete_marker", "replace_record"):
        assert kube.calls[call] == 0, call
    assert kube.calls["create_record"] == 1  # the winner's, Ready
    status = record_of(kube, "team-a", need)["status"]
    assert status["state"] == "Ready"
    assert status["secretUID"] == kube.secrets[("team-a", need.secret_name)]["metadata"]["uid"]
    await asyncio.gather(a.close(), b.close())


async def test_a_replica_shutting_down_finishes_the_bookkeeping_of_secrets_it_just_made(
    config: Config,
) -> None:
    """Cancelled, the record would never be written, and the next replica to need the
    Secret would meet its 409 and, no record coming, call it Foreign."""
    kube = SlowBooks(delay=0.2)
    m = manager(config, kube)
    need = need_of(config)
    assert dict((await m.ensure("team-a", [need], budget=5, dry_run=False)).statuses) == {}
    assert (HOME, f"team-a.{need.secret_name}") not in kube.records
    await m.close()
    assert record_of(kube, "team-a", need)["status"]["state"] == "Ready"
    assert ("team-a", need.secret_name) in kube.markers


@pytest.mark.parametrize("watch", ["late", "silent"])
async def test_the_replica_whose_create_was_refused_follows_the_record_when_it_comes(
    config: Config, watch: str
) -> None:
    """The winner's record lands 1.5 s after its Secret's create. A records watch that
    keeps delivering other records' events is merely late: the other replica, whose
    create met the Secret (409), waits for it without a read (in a cold storm those reads
    were hundreds, ~0.8 s each). One that says nothing at all may have stalled: the record
    is read each CLAIM_RELOAD_SECONDS until it is there. Either way the Secret is followed,
    never called Foreign, and nothing else is written."""
    kube = SlowBooks(delay=1.5)
    a, b = manager(config, kube), manager(config, kube)
    need = need_of(config)
    other = replace(
        ManagedSecret("team-b", "psw-other", "acr", "contoso.azurecr.io", "webhook"),
        resource_version="1",
    )

    async def b_watch() -> None:  # other records' events; this one's 0.3 s late
        seen: dict[Any, Any] = {}
        while True:
            await asyncio.sleep(0.05)
            b.records.apply("MODIFIED", other.to_object(HOME))
            for key, record in list(kube.records.items()):
                if key not in seen:
                    seen[key] = time.monotonic()
                if time.monotonic() - seen[key] > 0.3:
                    b.records.apply("MODIFIED", record)

    assert dict((await a.ensure("team-a", [need], budget=5, dry_run=False)).statuses) == {}
    watching = asyncio.create_task(b_watch()) if watch == "late" else None
    try:
        outcome = await b.ensure("team-a", [need], budget=5, dry_run=False)
    finally:
        if watching is not None:
            watching.cancel()
    assert dict(outcome.statuses) == {}
    assert kube.calls["create_secret"] == 2 and kube.calls["create_record"] == 1
    assert kube.calls["replace_record"] == 0 and kube.calls["check_secret"] == 0
    if watch == "late":
        assert kube.calls["get_record"] == 0
    else:
        assert kube.calls["get_record"] >= 1
    assert record_of(kube, "team-a", need)["status"]["state"] == "Ready"
    await asyncio.gather(a.close(), b.close())


async def test_a_secret_no_replica_records_is_never_named_and_turns_foreign(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Secret of the name, labelled as the webhook's, that no replica's record claims
    (planted, or left by a replica that died before its record): while the writer waits
    for a record, an admission out of budget leaves it out of the pod; when none comes
    within FOLLOW_SECONDS the record says Foreign, and it is never written."""
    monkeypatch.setattr(writer_module, "FOLLOW_SECONDS", 1.5)
    kube = MemKube()
    m = manager(config, kube)
    need = need_of(config)
    planted = kube.plant_secret("team-a", need.secret_name, labels={MANAGED_BY: MANAGER})
    outcome = await m.ensure("team-a", [need], budget=0.5, dry_run=False)
    status = outcome.status(need.secret_name)
    assert status.state == "foreign" and "not known" in status.message
    await asyncio.sleep(1.5)  # the writer's wait runs out
    assert record_of(kube, "team-a", need)["status"]["state"] == "Foreign"
    outcome = await m.ensure("team-a", [need], budget=5, dry_run=False)
    assert outcome.status(need.secret_name).state == "foreign"
    assert kube.secrets[("team-a", need.secret_name)] == planted
    assert kube.calls["replace_secret"] == 0 and kube.calls["create_marker"] == 0
    await m.close()


@pytest.mark.parametrize("meanwhile", ["kept", "replaced"])
async def test_a_foreign_verdict_reached_before_the_makers_record_is_written_over_by_it(
    config: Config, monkeypatch: pytest.MonkeyPatch, meanwhile: str
) -> None:
    """The maker's record is held back longer than the other replica waits: that one calls
    the name Foreign. The maker, holding the 201 of the Secret there, checks by UID that
    it is still there and records it Ready over the verdict; had someone deleted it and
    planted another meanwhile, the check fails and the verdict stands."""
    monkeypatch.setattr(writer_module, "FOLLOW_SECONDS", 0.3)
    kube = SlowBooks()
    kube.hold.clear()
    a, b = manager(config, kube), manager(config, kube)
    need = need_of(config)
    assert dict((await a.ensure("team-a", [need], budget=5, dry_run=False)).statuses) == {}
    made = kube.secrets[("team-a", need.secret_name)]
    # b, out of patience, calls it Foreign (only the maker's Ready record is held back).
    outcome = await b.ensure("team-a", [need], budget=5, dry_run=False)
    assert outcome.status(need.secret_name).state == "foreign"
    assert record_of(kube, "team-a", need)["status"]["state"] == "Foreign"
    if meanwhile == "replaced":
        kube.delete_secret_as_someone_else("team-a", need.secret_name)
        planted = kube.plant_secret("team-a", need.secret_name, labels={MANAGED_BY: MANAGER})
    kube.hold.set()
    await asyncio.gather(a.writer.drain(), b.writer.drain())
    await asyncio.sleep(0.1)
    status = record_of(kube, "team-a", need)["status"]
    if meanwhile == "kept":
        assert status["state"] == "Ready" and status["secretUID"] == made["metadata"]["uid"]
    else:
        assert status["state"] == "Foreign"
        assert kube.secrets[("team-a", need.secret_name)] == planted
    assert kube.calls["check_secret"] == 1 and kube.calls["replace_secret"] == 0
    await asyncio.gather(a.close(), b.close())


async def test_a_writer_waiting_for_a_record_wakes_as_the_watch_brings_it() -> None:
    """``RecordIndex.wait_change``: a put or a removal of that record wakes the waiter at
    once; other records' events do not; with nothing, it returns after its bound."""
    index = RecordIndex()
    mine = ManagedSecret("team-a", "psw-a", "acr", "contoso.azurecr.io", "webhook")
    other = ManagedSecret("team-b", "psw-b", "acr", "contoso.azurecr.io", "webhook")

    async def waited(change: Any) -> float:
        began = time.monotonic()
        waiting = asyncio.create_task(index.wait_change("team-a", "psw-a", 2.0))
        await asyncio.sleep(0.05)
        change()
        await waiting
        return time.monotonic() - began

    assert await waited(lambda: index.put(mine)) < 0.5
    assert await waited(lambda: index.remove("team-a", "psw-a")) < 0.5
    began = time.monotonic()
    watching = asyncio.create_task(index.wait_change("team-a", "psw-a", 0.3))
    await asyncio.sleep(0.05)
    index.put(other)
    assert not watching.done()
    await watching
    assert time.monotonic() - began >= 0.3
    assert index._waiters == {}
