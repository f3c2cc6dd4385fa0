"""The admission decision: which pods are patched, and the JSONPatch applied to them."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonpatch
import pytest

from devenv.support.reviews import make_pod, make_review
from webhook.admission import decision as admission
from webhook.admission.decision import NeedStatus, Outcome, Plan, Skip
from webhook.admission.reviews import AdmissionRequest, AdmissionResponse
from webhook.admission.verdicts import Allowed, Denied, encode
from webhook.config.schema import Config

ACR = "contoso.azurecr.io/app:1"
ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com/api:2"


def request_for(pod: dict[str, Any] | None, **kw: Any) -> AdmissionRequest:
    req: AdmissionRequest = make_review(pod, **kw)["request"]
    return req


def planned(config: Config, pod: dict[str, Any], **kw: Any) -> Plan:
    decision = admission.plan(request_for(pod, **kw), config)
    assert isinstance(decision, Plan), decision
    return decision


def answered(plan: Plan, outcome: Outcome, *, fail_closed: bool) -> AdmissionResponse:
    """The response the server sends for this plan and outcome."""
    return encode(admission.respond(plan, outcome, fail_closed=fail_closed))


def patched(pod: dict[str, Any], response: AdmissionResponse) -> dict[str, Any]:
    assert response["allowed"]
    if "patch" not in response:
        assert "patchType" not in response
        return pod
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    result: dict[str, Any] = jsonpatch.apply_patch(pod, ops)
    return result


def pull_secret_names(pod: dict[str, Any]) -> list[str]:
    return [e.get("name") for e in pod["spec"].get("imagePullSecrets", [])]


def test_missing_list_is_created_with_one_secret_per_registry(config: Config) -> None:
    pod = make_pod(ACR, ECR, "nginx:1.27", generate_name="web-")
    plan = planned(config, pod)
    out = patched(pod, answered(plan, Outcome(), fail_closed=False))
    names = pull_secret_names(out)
    assert names == [n.secret_name for n in plan.needs]
    assert len(names) == 2
    assert names[0].startswith("psw-contoso-azurecr-io-")
    assert names[1].startswith("psw-123456789012-dkr-ecr-us-east-1-amazonaws-com-")


def test_existing_entries_stay_first_and_new_ones_are_appended(config: Config) -> None:
    pod = make_pod(ACR, pull_secrets=[{"name": "team-own"}])
    out = patched(pod, answered(planned(config, pod), Outcome(), fail_closed=False))
    names = pull_secret_names(out)
    assert names[0] == "team-own"
    assert len(names) == 2


def test_secret_already_listed_is_not_duplicated(config: Config) -> None:
    pod = make_pod(ACR)
    plan = planned(config, pod)
    pod["spec"]["imagePullSecrets"] = [{"name": plan.needs[0].secret_name}]
    response = answered(plan, Outcome(), fail_closed=False)
    assert "patch" not in response
    assert "patchType" not in response


def test_null_list_is_replaced(config: Config) -> None:
    pod = make_pod(ACR)
    pod["spec"]["imagePullSecrets"] = None
    out = patched(pod, answered(planned(config, pod), Outcome(), fail_closed=False))
    assert len(pull_secret_names(out)) == 1


def test_images_of_init_and_ephemeral_containers_count(config: Config) -> None:
    pod = make_pod("nginx", init_images=(ACR,), ephemeral_images=(ECR,))
    plan = planned(config, pod)
    assert [n.entry.name for n in plan.needs] == ["contoso", "aws"]


def test_many_images_of_one_registry_need_one_secret(config: Config) -> None:
    pod = make_pod(ACR, "contoso.azurecr.io/other:2", init_images=("contoso.azurecr.io/init",))
    plan = planned(config, pod)
    assert len(plan.needs) == 1
    assert len(plan.needs[0].images) == 3


def test_pod_service_account_identity_gives_each_account_its_own_secret(config: Config) -> None:
    image = "210987654321.dkr.ecr.eu-west-1.amazonaws.com/app"
    a = planned(config, make_pod(image, service_account="builder")).needs[0]
    b = planned(config, make_pod(image)).needs[0]
    assert a.identity.service_account == "builder"
    assert b.identity.service_account == "default"
    assert a.secret_name != b.secret_name


def test_secret_names_are_deterministic_dns_labels(config: Config) -> None:
    first = planned(config, make_pod(ACR)).needs[0].secret_name
    again = planned(config, make_pod(ACR, name="other")).needs[0].secret_name
    assert first == again
    assert len(first) <= 63
    assert first.replace("-", "").isalnum()
    assert first == first.lower()


@pytest.mark.parametrize(
    ("request_kwargs", "pod", "reason"),
    [
        pytest.param({}, make_pod("nginx"), "no image", id="no-configured-registry"),
        pytest.param(
            {},
            make_pod(ACR, labels={"pull-secret-webhook/inject": "disabled"}),
            "opted out",
            id="opt-out-label",
        ),
        pytest.param({"operation": "UPDATE"}, make_pod(ACR), "UPDATE", id="plain-update"),
        pytest.param({"operation": "DELETE"}, make_pod(ACR), "DELETE", id="delete"),
        pytest.param(
            {"sub_resource": "status", "operation": "UPDATE"},
            make_pod(ACR),
            "status",
            id="status-subresource",
        ),
        pytest.param({"sub_resource": "binding"}, make_pod(ACR), "binding", id="binding"),
        pytest.param(
            {
                "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            },
            make_pod(ACR),
            "not a pod",
            id="not-a-pod",
        ),
        pytest.param({}, None, "no pod object", id="no-object"),
        pytest.param({"namespace": ""}, make_pod(ACR), "namespace", id="no-namespace"),
    ],
)
def test_requests_we_do_not_handle_are_skipped(
    config: Config, request_kwargs: dict[str, Any], pod: dict[str, Any] | None, reason: str
) -> None:
    decision = admission.plan(request_for(pod, **request_kwargs), config)
    assert isinstance(decision, Skip)
    assert reason in decision.reason


def test_ephemeral_container_update_is_handled(config: Config) -> None:
    pod = make_pod("nginx", ephemeral_images=(ACR,), name="web-0")
    plan = planned(config, pod, operation="UPDATE", sub_resource="ephemeralcontainers")
    assert plan.pod_name == "web-0"
    assert len(plan.needs) == 1


def test_ephemeral_update_warns_when_the_pod_lacks_the_secret(config: Config) -> None:
    pod = make_pod("nginx", ephemeral_images=(ACR,), name="web-0")
    plan = planned(config, pod, operation="UPDATE", sub_resource="ephemeralcontainers")
    response = answered(plan, Outcome(), fail_closed=False)
    [warning] = response["warnings"]
    assert warning.startswith("pull-secret-webhook: an ephemeral container update cannot add")
    assert len(warning) <= 120
    # Once the pod lists it (say, for a regular container), there is nothing to add.
    pod["spec"]["imagePullSecrets"] = [{"name": plan.needs[0].secret_name}]
    again = answered(
        planned(config, pod, operation="UPDATE", sub_resource="ephemeralcontainers"),
        Outcome(),
        fail_closed=False,
    )
    assert "warnings" not in again
    assert "patch" not in again


def test_namespace_comes_from_the_request_when_the_pod_has_none(config: Config) -> None:
    pod = make_pod(ACR, generate_name="web-7d9c-")
    plan = planned(config, pod, namespace="team-b")
    assert plan.namespace == "team-b"
    assert plan.pod_name == "web-7d9c-<generated>"


def test_dry_run_is_carried_to_the_plan(config: Config) -> None:
    assert planned(config, make_pod(ACR), dry_run=True).dry_run


def test_pending_secret_is_still_patched_with_a_warning(config: Config) -> None:
    pod = make_pod(ACR, ECR)
    plan = planned(config, pod)
    acr = plan.needs[0].secret_name
    outcome = Outcome({acr: NeedStatus("pending", "ACR 401 UNAUTHORIZED")})
    response = answered(plan, outcome, fail_closed=False)
    assert len(pull_secret_names(patched(pod, response))) == 2
    [warning] = response["warnings"]
    assert "contoso.azurecr.io" in warning
    assert "ACR 401" in warning
    assert len(warning) <= 120


def test_pending_secret_denies_when_fail_closed(config: Config) -> None:
    pod = make_pod(ACR)
    plan = planned(config, pod)
    outcome = Outcome({plan.needs[0].secret_name: NeedStatus("pending", "timed out")})
    response = answered(plan, outcome, fail_closed=True)
    assert not response["allowed"]
    assert "contoso.azurecr.io (contoso): timed out" in response["status"]["message"]


@pytest.mark.parametrize("fail_closed", [False, True], ids=["warned", "denied"])
def test_a_remote_answer_s_control_characters_reach_the_client_escaped(
    config: Config, fail_closed: bool
) -> None:
    """kubectl prints warnings and denials to a terminal: a registry's error text quoted in
    them cannot move its cursor or start a line of its own."""
    pod = make_pod(ACR)
    plan = planned(config, pod)
    said = "ACR said \x1b[2J\x1b]0;owned\x07 no\rdone"
    outcome = Outcome({plan.needs[0].secret_name: NeedStatus("pending", said)})
    response = answered(plan, outcome, fail_closed=fail_closed)
    shown = response["status"]["message"] if fail_closed else response["warnings"][0]
    assert shown.isprintable(), shown
    assert "\\x1b[2J" in shown


def test_foreign_secret_of_the_same_name_is_not_used(config: Config) -> None:
    pod = make_pod(ACR)
    plan = planned(config, pod)
    name = plan.needs[0].secret_name
    response = answered(plan, Outcome({name: NeedStatus("foreign")}), fail_closed=True)
    assert response["allowed"]
    assert "patch" not in response
    assert "not managed" in response["warnings"][0]


@pytest.mark.parametrize(
    "current",
    [
        pytest.param(..., id="no-list"),
        pytest.param(None, id="null-list"),
        pytest.param("not-a-list", id="malformed-list"),
        pytest.param([], id="empty-list"),
        pytest.param([{"name": "team-own"}], id="one-own-entry"),
        pytest.param([{"name": "a"}, "junk", {"other": 1}], id="odd-entries"),
    ],
)
def test_written_patch_is_the_minimal_diff_jsonpatch_finds(config: Config, current: Any) -> None:
    pod = make_pod(ACR, ECR, generate_name="web-")
    if current is not ...:
        pod["spec"]["imagePullSecrets"] = current
    names = ["psw-one", "psw-two", "psw-one"]
    ops = admission.image_pull_secrets_patch(pod, names)
    existing = current if isinstance(current, list) else []
    after = {**pod, "spec": {**pod["spec"], "imagePullSecrets": [*existing, *names_of(names)]}}
    assert ops == jsonpatch.make_patch(pod, after).patch
    assert jsonpatch.apply_patch(pod, ops) == after


def names_of(names: list[str]) -> list[dict[str, str]]:
    return [{"name": n} for n in dict.fromkeys(names)]


def test_each_verdict_carries_the_result_it_is_counted_as(config: Config) -> None:
    pod = make_pod(ACR)
    plan = planned(config, pod)
    name = plan.needs[0].secret_name
    pending = Outcome({name: NeedStatus("pending", "timed out")})

    def verdict(outcome: Outcome, *, fail_closed: bool = False, on: Plan = plan) -> Any:
        return admission.respond(on, outcome, fail_closed=fail_closed)

    made = verdict(Outcome())
    assert isinstance(made, Allowed) and made.result == "patched" and made.patch
    assert not made.warnings
    warned = verdict(pending)
    assert isinstance(warned, Allowed) and warned.result == "warned" and warned.patch
    refused = verdict(Outcome(refused="namespace has not opted in"))
    assert isinstance(refused, Allowed) and refused.result == "refused" and not refused.patch
    assert refused.why == "namespace has not opted in" and encode(refused) == {
        "uid": plan.uid,
        "allowed": True,
    }
    closed = verdict(pending, fail_closed=True)
    assert isinstance(closed, Denied) and closed.result == "denied" and closed.code == 403
    listed = make_pod(ACR)
    listed["spec"]["imagePullSecrets"] = [{"name": name}]
    unchanged = verdict(Outcome(), on=planned(config, listed))
    assert isinstance(unchanged, Allowed) and unchanged.result == "unchanged"
    assert "patch" not in encode(unchanged)


@pytest.mark.parametrize("forged", ["../x", "kube-system:x", "Builder"])
def test_a_service_account_name_no_account_can_have_gets_no_per_pod_identity(
    config: Config, forged: str
) -> None:
    """Checked when the answer for (images, service account) is remembered: the first
    review and every later one from the same workload get the same answer."""
    per_pod = "210987654321.dkr.ecr.eu-west-1.amazonaws.com/app"
    for _ in range(2):
        alone = admission.plan(request_for(make_pod(per_pod, service_account=forged)), config)
        assert isinstance(alone, Skip)
        plan = planned(config, make_pod(ACR, per_pod, service_account=forged))
        assert [n.entry.name for n in plan.needs] == ["contoso"]
        assert not any(n.identity.service_account for n in plan.needs)
    valid = planned(config, make_pod(per_pod, service_account="builder")).needs
    assert [n.identity.service_account for n in valid] == ["builder"]


@pytest.mark.parametrize(
    ("pull_secrets", "update"),
    [
        pytest.param(None, False, id="no-list"),
        pytest.param([], False, id="empty-list"),
        pytest.param([{"name": "team-own"}], False, id="own-entry"),
        pytest.param(None, True, id="ephemeral-update"),
    ],
)
def test_the_all_ready_answer_is_the_one_worked_out_in_full(
    config: Config, pull_secrets: list[dict[str, str]] | None, update: bool
) -> None:
    """``respond`` answers a pod whose secrets are all ready (``ALL_READY``) from a patch
    made once per set of names when the pod lists none of its own; the verdict, and what
    is sent, are those of the full path, which an equal but distinct outcome takes."""
    kw: dict[str, Any] = {}
    if pull_secrets is not None:
        kw["pull_secrets"] = pull_secrets
    if update:
        pod = make_pod("nginx", ephemeral_images=(ACR, ECR), name="web-0", **kw)
        plan = planned(config, pod, operation="UPDATE", sub_resource="ephemeralcontainers")
    else:
        pod = make_pod(ACR, ECR, ACR, generate_name="web-", **kw)
        plan = planned(config, pod)
    full_path_outcome = Outcome()
    assert full_path_outcome == admission.ALL_READY and full_path_outcome is not admission.ALL_READY
    for _ in range(2):  # made, then remembered
        quick = admission.respond(plan, admission.ALL_READY, fail_closed=False)
        full = admission.respond(plan, full_path_outcome, fail_closed=False)
        assert isinstance(quick, Allowed) and isinstance(full, Allowed)
        assert (quick.uid, quick.result, quick.patch, quick.warnings, quick.why) == (
            full.uid,
            full.result,
            full.patch,
            full.warnings,
            full.why,
        )
        assert encode(quick) == encode(full)
    assert isinstance(quick, Allowed)
    names = [n.secret_name for n in plan.needs]
    assert list(quick.patch) == admission.image_pull_secrets_patch(pod, names)
    if pull_secrets is None and not update:
        assert quick.encoded_patch  # the remembered patch was used
        assert pull_secret_names(patched(pod, encode(quick))) == names
    else:
        assert not quick.encoded_patch


def test_remembered_patches_are_bounded() -> None:
    admission._ADDED_LISTS.clear()
    for i in range(admission.ADDED_LISTS_MAX + 10):
        admission._added_list((f"psw-{i}",))
    assert len(admission._ADDED_LISTS) == admission.ADDED_LISTS_MAX
    assert ("psw-0",) not in admission._ADDED_LISTS  # the oldest went first
    patch, encoded = admission._added_list(("psw-a", "psw-b"))
    assert json.loads(base64.b64decode(encoded)) == patch
    assert patch == [
        {
            "op": "add",
            "path": "/spec/imagePullSecrets",
            "value": [{"name": "psw-a"}, {"name": "psw-b"}],
        }
    ]
    admission._ADDED_LISTS.clear()
