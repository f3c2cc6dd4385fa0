"""The chart at the norms operators know from cert-manager, External Secrets and Kyverno:
its ServiceAccount is configurable and every binding, policy and printed subject follows
the one it renders; `global` values of an umbrella chart are honoured; the NetworkPolicy,
PodDisruptionBudget and issuer never lock an operator in or out; the README's values table
is what values.yaml says."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.charts import (
    RELEASED_IMAGE,
    assert_everything_names_the_rendered_account,
    umbrella,
    username,
    write_values,
)
from tests.support.manifests import (
    CHART,
    KUBE_VERSION,
    REPO,
    helm_binary,
    helm_template,
    objects,
    one,
    run_tool,
)

# ------------------------------------------------------------------ the identity


def notes(
    *args: str,
    release: str = "pull-secret-webhook",
    namespace: str = "pull-secret-webhook",
    tmp: Path,
) -> str:
    """NOTES.txt as `helm install` prints it. `helm template` leaves NOTES out and `helm
    install --dry-run` needs a cluster, so render it as an ordinary template of a copy."""
    chart = tmp / "chart"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "NOTES.txt").rename(chart / "notes.txt")
    (chart / "templates" / "notes-as-text.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data: {notes: {{ tpl (.Files.Get "notes.txt") . | quote }}}\n'
    )
    out = run_tool(
        [
            helm_binary(),
            "template",
            release,
            chart,
            "--namespace",
            namespace,
            "--kube-version",
            KUBE_VERSION,
            "--show-only",
            "templates/notes-as-text.yaml",
            *args,
        ]
    )
    [doc] = objects(out)
    text: str = doc["data"]["notes"]
    return text


@pytest.mark.parametrize(
    ("release", "namespace", "values", "account"),
    [
        pytest.param(
            "pull-secret-webhook", "pull-secret-webhook", [], "pull-secret-webhook", id="documented"
        ),
        pytest.param(
            "psw", "platform", [], "psw-pull-secret-webhook", id="other-release-and-namespace"
        ),
        pytest.param(
            "pull-secret-webhook",
            "tools",
            ["--set", "serviceAccount.name=registry-puller"],
            "registry-puller",
            id="named-account",
        ),
        pytest.param(
            "psw",
            "tools",
            ["--set", "serviceAccount.create=false", "--set", "serviceAccount.name=precreated"],
            "precreated",
            id="account-you-manage",
        ),
        pytest.param(
            "psw",
            "tools",
            [
                "--set",
                "fullnameOverride=acme-webhook",
                "--set",
                "podIdentity.enabled=true",
                "--set",
                "flowSchema.enabled=true",
                "--set",
                "credentialSecrets.tools[0]=harbor",
            ],
            "acme-webhook",
            id="fullname-override-with-every-grant",
        ),
    ],
)
def test_every_grant_policy_and_printed_subject_names_the_rendered_account(
    tmp_path: Path, release: str, namespace: str, values: list[str], account: str
) -> None:
    objs = helm_template(*values, release=release, namespace=namespace)

    user = assert_everything_names_the_rendered_account(objs)

    assert user == f"system:serviceaccount:{namespace}:{account}"
    accounts = [
        o for o in objs if o["kind"] == "ServiceAccount" and "certs" not in o["metadata"]["name"]
    ]
    if "serviceAccount.create=false" in values:
        assert accounts == []
    else:
        assert [a["metadata"]["name"] for a in accounts] == [account]
    # What the Azure and IRSA guides tell the operator to copy into the cloud side.
    printed = notes(*values, release=release, namespace=namespace, tmp=tmp_path)
    assert f"  subject: {user}\n" in printed


def test_an_account_you_manage_must_be_named() -> None:
    with pytest.raises(AssertionError, match=r"serviceAccount[./]name"):
        helm_template("--set", "serviceAccount.create=false")


def test_the_service_account_takes_annotations_and_labels() -> None:
    objs = helm_template(
        "--set",
        "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::111122223333:role/psw",
        "--set",
        "serviceAccount.labels.team=platform",
    )

    sa = one(objs, "ServiceAccount", "pull-secret-webhook")["metadata"]
    assert sa["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/psw"}
    assert sa["labels"]["team"] == "platform"


def test_the_identity_guides_build_their_subjects_from_the_webhooks_account() -> None:
    # The default the guides start from is the documented install's rendered account, and
    # every subject they write is made of the two variables, never spelled out.
    default = username(helm_template())
    for guide in ("azure-workload-identity.md", "aws-irsa.md"):
        text = (REPO / "docs" / guide).read_text()
        assert "export WEBHOOK_NAMESPACE=pull-secret-webhook WEBHOOK_SA=pull-secret-webhook" in text
        assert default == "system:serviceaccount:pull-secret-webhook:pull-secret-webhook"
        assert "system:serviceaccount:${WEBHOOK_NAMESPACE}:${WEBHOOK_SA}" in text
        assert "system:serviceaccount:pull-secret-webhook:pull-secret-webhook" not in text


# ------------------------------------------------------------------ global values


def test_the_umbrella_charts_global_values_reach_every_pod_and_object(tmp_path: Path) -> None:
    root = umbrella(tmp_path)
    (root / "values.yaml").write_text(
        yaml.safe_dump(
            {
                "global": {
                    "imageRegistry": "registry.example.com",
                    "imagePullSecrets": ["mirror-creds", {"name": "corp-creds"}],
                    "priorityClassName": "platform-critical",
                    "commonLabels": {"team": "platform", "cost-centre": "shared"},
                },
                "pull-secret-webhook": {
                    "enabled": True,
                    "commonLabels": {"team": "registry"},
                    "imagePullSecrets": [{"name": "corp-creds"}, {"name": "own"}],
                },
            }
        )
    )

    rendered = objects(
        run_tool(
            [
                helm_binary(),
                "template",
                "platform",
                root,
                "--namespace",
                "pull-secret-webhook",
                "--kube-version",
                KUBE_VERSION,
            ]
        )
    )
    linted = run_tool([helm_binary(), "lint", "--strict", root, "--kube-version", KUBE_VERSION])

    assert "0 chart(s) failed" in linted
    pods = []
    for obj in rendered:
        # The chart's own labels win over the umbrella's on the same key.
        assert obj["metadata"]["labels"]["team"] == "registry", obj["metadata"]["name"]
        assert obj["metadata"]["labels"]["cost-centre"] == "shared", obj["metadata"]["name"]
        spec = obj.get("spec", {})
        if obj["kind"] == "Pod":
            pods.append(spec)
        elif obj["kind"] in {"Deployment", "Job"}:
            pods.append(spec["template"]["spec"])
        elif obj["kind"] == "CronJob":
            pods.append(spec["jobTemplate"]["spec"]["template"]["spec"])
    assert len(pods) >= 4  # webhook, certs create/patch Jobs, renewal, helm test
    for pod in pods:
        assert [s["name"] for s in pod["imagePullSecrets"]] == ["mirror-creds", "corp-creds", "own"]
        for c in pod["containers"]:
            assert c["image"] == "registry.example.com/example-org/pull-secret-webhook:0.1.0"
    deployment = one(rendered, "Deployment", "platform-pull-secret-webhook")
    assert deployment["spec"]["template"]["spec"]["priorityClassName"] == "platform-critical"


@pytest.mark.parametrize(
    ("registry", "repository", "image"),
    [
        pytest.param(
            "mirror.corp:5000",
            RELEASED_IMAGE,
            "mirror.corp:5000/example-org/pull-secret-webhook",
            id="replaces-host",
        ),
        pytest.param(
            "mirror.corp/",
            "example-org/pull-secret-webhook",
            "mirror.corp/example-org/pull-secret-webhook",
            id="prefixes-a-path",
        ),
        pytest.param("mirror.corp", "localhost/psw", "mirror.corp/psw", id="replaces-localhost"),
    ],
)
def test_global_image_registry_replaces_the_registry_host(
    registry: str, repository: str, image: str
) -> None:
    objs = helm_template(
        "--set", f"global.imageRegistry={registry}", "--set", f"image.repository={repository}"
    )

    [c] = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert c["image"] == f"{image}:0.1.0"


def test_the_webhooks_own_priority_class_wins_over_the_global_one() -> None:
    objs = helm_template(
        "--set",
        "global.priorityClassName=low",
        "--set",
        "priorityClassName=system-cluster-critical",
    )

    assert one(objs, "Deployment")["spec"]["template"]["spec"]["priorityClassName"] == (
        "system-cluster-critical"
    )


# ------------------------------------------------- what must never lock anybody in or out


def test_the_network_policy_never_admits_every_source() -> None:
    # No sources: `from` would render empty (null), and an ingress rule without `from`
    # admits everybody. The chart refuses to render instead, as the kustomize component
    # fails closed with its placeholder range.
    for values in (
        ["--set", "networkPolicy.enabled=true"],
        ["--set", "networkPolicy.enabled=true", "--set-json", "networkPolicy.apiServerCIDRs=[]"],
    ):
        with pytest.raises(AssertionError, match="apiServerCIDRs"):
            helm_template(*values)

    objs = helm_template(
        "--set", "networkPolicy.enabled=true", "--set", "networkPolicy.apiServerCIDRs={10.0.0.0/28}"
    )

    policy = one(objs, "NetworkPolicy")
    webhook_rules = [
        r for r in policy["spec"]["ingress"] if {"protocol": "TCP", "port": 8443} in r["ports"]
    ]
    assert webhook_rules
    for rule in webhook_rules:
        assert rule.get("from"), rule


def test_no_disruption_budget_blocks_a_drain_of_a_single_replica() -> None:
    assert not [
        o for o in helm_template("--set", "replicaCount=1") if o["kind"] == "PodDisruptionBudget"
    ]
    [budget] = [
        o for o in helm_template("--set", "replicaCount=3") if o["kind"] == "PodDisruptionBudget"
    ]
    assert budget["spec"]["minAvailable"] == 1
    with pytest.raises(AssertionError, match="minAvailable"):
        helm_template("--set", "replicaCount=2", "--set", "podDisruptionBudget.minAvailable=2")


def test_on_the_host_network_a_rollout_stops_one_replica_before_starting_one() -> None:
    # Ports are per node: a surge replica would find no node on a cluster with as many
    # nodes as replicas, and the rollout would stall.
    def rolling(*values: str) -> Any:
        return one(helm_template(*values), "Deployment")["spec"]["strategy"]

    assert rolling()["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert rolling("--set", "hostNetwork=true")["rollingUpdate"] == {
        "maxSurge": 0,
        "maxUnavailable": 1,
    }
    # One replica: stopping it first would leave no webhook (and `helm install --wait`
    # would count 0 of 1 ready as done), so it still surges.
    assert rolling("--set", "hostNetwork=true", "--set", "replicaCount=1")["rollingUpdate"] == {
        "maxSurge": 1,
        "maxUnavailable": 0,
    }
    assert rolling("--set", "strategy.type=Recreate") == {"type": "Recreate"}


def test_revision_history_limit_is_a_value() -> None:
    assert one(helm_template(), "Deployment")["spec"]["revisionHistoryLimit"] == 5
    objs = helm_template("--set", "revisionHistoryLimit=2")
    assert one(objs, "Deployment")["spec"]["revisionHistoryLimit"] == 2


@pytest.mark.parametrize(
    "issuer",
    [
        pytest.param(
            {
                "name": "private-ca",
                "kind": "AWSPCAClusterIssuer",
                "group": "awspca.cert-manager.io",
            },
            id="aws-pca",
        ),
        pytest.param({"name": "vault", "kind": "Issuer", "group": "cert-manager.io"}, id="issuer"),
    ],
)
def test_cert_manager_accepts_an_issuer_of_any_kind_and_group(
    tmp_path: Path, issuer: dict[str, Any]
) -> None:
    values = write_values(tmp_path, {"certManager": {"enabled": True, "issuerRef": issuer}})

    objs = helm_template("-f", values)
    linted = run_tool([helm_binary(), "lint", "--strict", CHART, "-f", values])

    assert one(objs, "Certificate", "pull-secret-webhook-serving")["spec"]["issuerRef"] == issuer
    assert "0 chart(s) failed" in linted


# ------------------------------------------------------------------------ the README


def test_the_chart_readme_values_table_is_current() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "hack" / "chart_values_table.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )

    assert proc.returncode == 0, proc.stderr


def test_the_values_table_lists_every_value_and_fails_when_stale(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    readme = (chart / "README.md").read_text()
    for key in ("`serviceAccount.create`", "`global.imageRegistry`", "`revisionHistoryLimit`"):
        assert f"| {key} |" in readme
    values = chart / "values.yaml"
    values.write_text(values.read_text() + "\n# A value added without the table.\nnewValue: 1\n")

    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "hack" / "chart_values_table.py"),
            "--check",
            "--chart",
            str(chart),
        ],
        capture_output=True,
        text=True,
        check=False,
    )

    assert proc.returncode == 1 and "stale" in proc.stderr


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(
            ["--set", "serviceAccount.create=false", "--set", "serviceAccount.name=mine"],
            id="account-you-manage",
        ),
        pytest.param(
            [
                "--set",
                "global.imageRegistry=mirror.corp",
                "--set",
                "global.imagePullSecrets[0]=creds",
                "--set",
                "global.priorityClassName=high",
                "--set",
                "global.commonLabels.team=x",
            ],
            id="globals",
        ),
        pytest.param(["--set", "replicaCount=1"], id="one-replica"),
        pytest.param(
            [
                "--set",
                "networkPolicy.enabled=true",
                "--set",
                "networkPolicy.apiServerCIDRs={10.0.0.0/28}",
            ],
            id="network-policy",
        ),
        pytest.param(
            [
                "--set",
                "hostNetwork=true",
                "--set",
                "webhook.port=10260",
                "--set",
                "webhook.healthPort=10261",
            ],
            id="host-network",
        ),
    ],
)
def test_helm_lint_strict_passes_with_the_operator_values(values: list[str]) -> None:
    out = run_tool([helm_binary(), "lint", "--strict", CHART, *values])

    assert "0 chart(s) failed" in out
