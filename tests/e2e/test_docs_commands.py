"""Every kubectl command in the README and docs/ runs against a real kube-apiserver.

Each ```sh block's kubectl lines are run as written by bash, with three substitutions so
suites sharing this control plane never collide: the webhook's namespace and `team-a`
become fresh namespaces, and shell variables the guides set from cloud CLIs (`$PASSWORD`,
`$CLIENT_ID`, …) get placeholder values. Left out, and why:

- `kubectl exec` and `kubectl logs`: they need a kubelet running the pod (none here);
- the dry-run pod that shows the patched-in imagePullSecrets: it needs the webhook
  serving in the cluster (the webhook's admissions are end-to-end tested in
  test_webhook_e2e.py);
- `kubectl apply -k` of a path: docs/install.md's overlays are built and applied in
  test_docs_install.py; anything fetched from github.com needs the network;
- lines that run another cloud CLI (`$(az …)`) or read a file the guide made elsewhere;
- what changes objects every install on the control plane shares (the CRDs, markers in
  all namespaces, every namespace's label): docs/install.md's CRD hand-over and removal
  commands, run as written in test_release_node.py on a control plane of its own.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from devenv.controlplane import ControlPlane
from tests.support.manifests import REPO, kustomize

pytestmark = pytest.mark.controlplane

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "certs" / "README.md"]
#: Kinds of the base that live in the webhook's namespace and need no kubelet to exist.
NAMESPACED_KINDS = {"ServiceAccount", "ConfigMap", "Deployment", "Service", "CronJob"}
#: What the guides' shell variables would hold: placeholders of the right shape.
PLACEHOLDERS = {
    "PASSWORD": "placeholder-password",
    "ACCESS_KEY_ID": "AKIDEXAMPLE",
    "SECRET_ACCESS_KEY": "placeholder-secret",
    "NEW_ID": "AKIDEXAMPLE2",
    "NEW_SECRET": "placeholder-secret-2",
    "CLIENT_ID": "11111111-2222-3333-4444-555555555555",
    "ACCOUNT_ID": "111122223333",
}
#: One kubectl call against a local API server.
COMMAND_TIMEOUT_SECONDS = 60
#: kubectl refuses a second `rollout restart` of a Deployment within the same second.
RESTART_SPACING_SECONDS = 1.1


def kubectl_lines() -> list[tuple[str, str]]:
    """(where, command) for every kubectl line of every sh block, continuations joined."""
    found = []
    for path in DOCS:
        text = path.read_text()
        for block in re.finditer(r"^ *```sh\n(.*?)^ *```", text, re.S | re.M):
            line_no = text[: block.start()].count("\n") + 1
            joined = block.group(1).replace("\\\n", " ")
            for line in joined.splitlines():
                command = line.split(" # ")[0].strip()
                if command.startswith("kubectl "):
                    found.append((f"{path.relative_to(REPO)}:{line_no}", command))
    return found


def skip_reason(command: str) -> str | None:
    if re.search(r"^kubectl( -n \S+)? (exec|logs|port-forward) ", command):
        return "needs a kubelet"
    if " run probe " in command:
        return "needs the webhook serving in the cluster"
    if "https://github.com/" in command:
        return "needs the network"
    if re.search(r"^kubectl apply -k ", command):
        return "overlays: test_docs_install.py"
    if "$(" in command or "/home/you/" in command:
        return "needs another cloud CLI or a file made elsewhere"
    if re.search(r" crd |--all-namespaces|namespace --all ", command):
        return "cluster-wide: test_release_node.py"
    return None


def params() -> list[object]:
    return [
        pytest.param(command, id=f"{where} {command[:60]}")
        for where, command in kubectl_lines()
        if skip_reason(command) is None
    ]


def test_the_docs_have_kubectl_commands_and_only_the_listed_kinds_are_left_out() -> None:
    commands = kubectl_lines()
    left_out = {command: skip_reason(command) for _, command in commands if skip_reason(command)}

    # A guard against the extraction silently finding nothing (26 run, 25 left out when
    # written).
    assert len(commands) - len(left_out) >= 20
    assert all(
        re.search(
            r"\b(exec|logs|port-forward|apply -k|run probe)\b|\$\(|/home/you/|https://"
            r"| crd |--all-namespaces|namespace --all ",
            c,
        )
        for c in left_out
    )


@dataclass(frozen=True)
class Scratch:
    webhook_namespace: str
    team_namespace: str
    webhook_configuration: str
    kubeconfig: Path
    workdir: Path

    def rewrite(self, command: str) -> str:
        """The command with the documented namespaces replaced by this test's."""
        for documented, ours in (
            ("pull-secret-webhook", self.webhook_namespace),
            ("team-a", self.team_namespace),
        ):
            command = re.sub(rf"(-n|--namespace) {documented}(?=\s|$)", rf"\1 {ours}", command)
            command = re.sub(rf"\bnamespace {documented}(?=\s|$)", f"namespace {ours}", command)
        return command.replace(
            "mutatingwebhookconfiguration pull-secret-webhook ",
            f"mutatingwebhookconfiguration {self.webhook_configuration} ",
        )


@pytest.fixture(scope="module")
def scratch(
    controlplane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scratch]:
    suffix = uuid.uuid4().hex[:6]
    webhook_ns, team_ns = f"psw-cmd-{suffix}", f"team-cmd-{suffix}"
    controlplane.kubectl("create", "namespace", team_ns)
    controlplane.kubectl("-n", team_ns, "create", "serviceaccount", "builder")
    # The webhook's namespaced objects, as the base makes them, in a namespace of its
    # own (the docs' `kubectl create namespace pull-secret-webhook` runs as a test too,
    # against another fresh name, so it is not used here).
    controlplane.kubectl("create", "namespace", webhook_ns)
    base = kustomize()
    objects = [o for o in base if o["kind"] in NAMESPACED_KINDS]
    for obj in objects:
        obj["metadata"]["namespace"] = webhook_ns
    # The CRD the records commands read (cluster-wide and identical for every suite, so
    # it is applied and left in place).
    crds = [o for o in base if o["kind"] == "CustomResourceDefinition"]
    # The webhook registration under a name of its own, pointing at this namespace.
    [registration] = [o for o in base if o["kind"] == "MutatingWebhookConfiguration"]
    registration["metadata"]["name"] = f"pull-secret-webhook-{suffix}"
    registration["webhooks"][0]["clientConfig"]["service"]["namespace"] = webhook_ns
    controlplane.kubectl(
        "apply", "-f", "-", input=yaml.safe_dump_all([*crds, registration, *objects])
    )
    controlplane.kubectl(
        "wait", "--for=condition=Established", "crd/managedpullsecrets.pull-secret-webhook.io"
    )
    # The TLS Secret the verification commands read, made as the docs say.
    made = subprocess.run(
        [
            sys.executable, "-m", "webhook", "certs", f"--namespace={webhook_ns}",
            "--secret=pull-secret-webhook-tls",
            f"--webhook-config={registration['metadata']['name']}",
            "--kubeconfig", str(controlplane.kubeconfig),
        ],
        capture_output=True, text=True, cwd=REPO, timeout=COMMAND_TIMEOUT_SECONDS, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    try:
        yield Scratch(
            webhook_ns,
            team_ns,
            registration["metadata"]["name"],
            controlplane.kubeconfig,
            tmp_path_factory.mktemp("commands"),
        )
    finally:
        controlplane.kubectl(
            "delete", "mutatingwebhookconfiguration", registration["metadata"]["name"], check=False
        )
        for namespace in (webhook_ns, team_ns):
            controlplane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.mark.parametrize("command", params())
def test_the_documented_kubectl_command_runs(
    controlplane: ControlPlane, scratch: Scratch, command: str
) -> None:
    rewritten = scratch.rewrite(command)
    created = ""
    if rewritten.startswith("kubectl create namespace "):
        # A namespace of its own, really created by the documented command.
        created = f"psw-new-{uuid.uuid4().hex[:6]}"
        rewritten = f"kubectl create namespace {created}"
    if " rollout restart " in rewritten:
        time.sleep(RESTART_SPACING_SECONDS)
    env = {
        **os.environ,
        **PLACEHOLDERS,
        "KUBECONFIG": str(scratch.kubeconfig),
        # The kubectl of the project's virtualenv, the one the tests use.
        "PATH": f"{controlplane.binaries.kubectl.parent}{os.pathsep}{os.environ['PATH']}",
    }

    done = subprocess.run(
        # -e: `a | b; echo` must fail when `a | b` does.
        ["bash", "-e", "-o", "pipefail", "-c", rewritten],
        capture_output=True,
        text=True,
        env=env,
        # Commands that write files (`> ca.crt`) write them here, not into the checkout.
        cwd=scratch.workdir,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )

    if created:
        controlplane.kubectl("delete", "namespace", created, "--wait=false", check=False)
    assert done.returncode == 0, f"{rewritten}\n{done.stdout}{done.stderr}"
