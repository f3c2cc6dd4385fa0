"""What the background upkeep costs the API server, and how a refresh pass scales.

Two measurements:

``pass``: a refresh pass over many managed secrets, in-process against an
in-memory API (devenv/support/memkube.py) that counts every call: the pass's time
and calls for 10,000 records with 0, 1% and 10% of them due. Its API calls must
be proportional to the secrets due, not to all.

``idle`` (``--controlplane``): the real control plane with one webhook replica
(the leader), N opted-in namespaces each with a pod and its managed pull secret;
the requests the leader sends during an idle minute, read from its own
``pull_secret_webhook_api_requests_total``, for N = 100 and N = 1,000. They must
be a small constant, independent of N.

    python -m bench.upkeep                 # pass only (seconds)
    python -m bench.upkeep --controlplane  # and idle (a few minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from devenv.support.configs import sample_config
from devenv.support.hotpath import opted_in
from devenv.support.memkube import MemKube
from webhook.admission.needs import PullNeed, pull_needs
from webhook.config.store import ConfigStore
from webhook.credentials.base import Credential
from webhook.kube.pods import ListedPods
from webhook.pullsecrets.manager import PullSecretManager
from webhook.pullsecrets.records import ManagedSecret, marker_object
from webhook.pullsecrets.renewals import Pace
from webhook.upkeep.refresher import Refresher

RECORDS = 10_000
IDLE_SECONDS = 60.0


class Minter:
    async def get(self, need: PullNeed, namespace: str) -> Credential:
        now = time.time()
        return Credential("user", "password", (need.host,), now + 43200, now)


def _need() -> PullNeed:
    from devenv.support.reviews import make_pod

    [need] = pull_needs(
        sample_config(), make_pod("123456789012.dkr.ecr.us-east-1.amazonaws.com/a:1")
    )
    return need


async def one_pass(records: int, due: int) -> dict[str, Any]:
    """A pass over ``records`` Ready, referenced, marked secrets of which ``due`` are due."""
    config = sample_config()
    kube = MemKube()
    store = ConfigStore(config)
    manager = PullSecretManager(store, kube, Minter())
    need = _need()
    namespaces = [f"ns-{i}" for i in range(records)]
    manager.namespaces.replace_all(opted_in(*namespaces))
    # The pass's own cost, unpaced (the leader's bucket, webhook.pullsecrets.renewals.Pace, would
    # spread 1,000 renewals over 100 s).
    refresher = Refresher(
        store,
        manager,
        kube,
        "bench",
        writer=manager.writer,
        collector=manager.collector,
        pace=Pace(1e9, 10**9),
    )
    now = time.time()
    pods = []
    for i, ns in enumerate(namespaces):
        secret = kube.plant_secret(ns, need.secret_name)
        uid = secret["metadata"]["uid"]
        record = ManagedSecret(
            ns,
            need.secret_name,
            need.entry.name,
            need.host,
            need.identity.key,
            state="Ready",
            secret_uid=uid,
            expires_at=now + 43200,
            refresh_at=now - 1 if i < due else now + 21600,
        )
        saved = await kube.create_record(config.namespace, record.to_object(config.namespace))
        manager.records.put(ManagedSecret.from_object(saved) or record)
        manager.markers.apply("ADDED", marker_object(ns, need.secret_name, uid))
        pods.append(
            {
                "metadata": {"namespace": ns, "name": "p"},
                "spec": {"imagePullSecrets": [{"name": need.secret_name}]},
            }
        )
    refresher.references.replace_all(ListedPods.of(pods))
    kube.calls.clear()
    started = time.perf_counter()
    report = await refresher.run_once()
    took = time.perf_counter() - started
    assert len(report.refreshed) == due, report
    return {
        "records": records,
        "due": due,
        "seconds": round(took, 3),
        "api_calls": sum(kube.calls.values()),
        "calls": dict(kube.calls),
    }


def passes() -> list[dict[str, Any]]:
    return [asyncio.run(one_pass(RECORDS, due)) for due in (0, RECORDS // 100, RECORDS // 10)]


# ----------------------------------------------------------------- the real control plane


def _requests(metrics: str) -> dict[str, float]:
    prefix = 'pull_secret_webhook_api_requests_total{call="'
    out: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith(prefix):
            call, _, value = line[len(prefix) :].partition('"} ')
            out[call] = float(value)
    return out


def idle(sizes: tuple[int, ...] = (100, 1000)) -> list[dict[str, Any]]:
    from devenv.controlplane import ControlPlane, locate
    from devenv.stack import INJECT_LABEL, running_stack

    results = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        ControlPlane(locate()) as cp,
        running_stack(cp, Path(tmp) / "stack", replicas_wanted=1, refresh_interval=5) as st,
    ):
        [leader] = st.replicas
        made = 0
        for size in sizes:
            for i in range(made, size):
                ns = f"idle-{i}"
                cp.api(
                    "POST",
                    "/api/v1/namespaces",
                    {"metadata": {"name": ns, "labels": {INJECT_LABEL: "enabled"}}},
                )
            for i in range(made, size):
                ns = f"idle-{i}"
                cp.wait_for_service_account(ns)
                pod = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "p"},
                    "spec": {"containers": [{"name": "c", "image": st.ecr_image}]},
                }
                answer = cp.api("POST", f"/api/v1/namespaces/{ns}/pods", pod)
                assert answer.status == 201, answer.body
            made = size
            # Let the leader see them all and pass over them once, then stay idle.
            time.sleep(15)
            before = _requests(leader.metrics())
            time.sleep(IDLE_SECONDS)
            after = _requests(leader.metrics())
            delta = {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k)}
            results.append(
                {
                    "namespaces": size,
                    "managed_secrets": size,
                    "idle_seconds": IDLE_SECONDS,
                    "requests_per_minute": sum(delta.values()) * 60 / IDLE_SECONDS,
                    "by_call": delta,
                }
            )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--controlplane", action="store_true", help="also measure idle load")
    parser.add_argument("--json", type=Path, default=Path("bench/results/upkeep.json"))
    args = parser.parse_args()
    out: dict[str, Any] = {"pass": passes()}
    print(f"{'records':>8} {'due':>6} {'pass s':>8} {'API calls':>10}")
    for row in out["pass"]:
        print(f"{row['records']:>8} {row['due']:>6} {row['seconds']:>8} {row['api_calls']:>10}")
    if args.controlplane:
        out["idle"] = idle()
        print(f"\n{'namespaces':>10} {'secrets':>8} {'requests/min (idle leader)':>28}")
        for row in out["idle"]:
            print(
                f"{row['namespaces']:>10} {row['managed_secrets']:>8} "
                f"{row['requests_per_minute']:>28.1f}  {row['by_call']}"
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
