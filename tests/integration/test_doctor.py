"""``doctor`` against the Azure emulator and moto: one line per registry."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv.peers.aws import MotoProxy
from devenv.peers.azure import AzureEmulator, EmulatorThread
from devenv.serve import free_port
from tests.integration.conftest import CLUSTER_ISSUER, Clock, MemoryKube
from tests.support.aws import MOTO_EXPIRES_AT, aws_env
from tests.support.azure import APP_SECRET, Azure, azure, azure_env
from webhook.cli import doctor
from webhook.config.load import parse_config
from webhook.credentials.acr import ROLE_HINT

__all__ = ["aws_env", "azure", "azure_env"]


async def run_doctor(
    config_document: dict[str, Any], kube: MemoryKube | None, **kwargs: Any
) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = await doctor.run(parse_config(config_document), out=out, kube=kube, **kwargs)
    return code, out.getvalue().splitlines()


def acr_entry(azure: Azure, name: str, auth: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "acr",
        "auth": {"authorityHost": azure.emulator.authority_host, **auth},
        **extra,
    }


async def test_each_registry_gets_one_line_and_a_failure_sets_the_exit_code(
    azure: Azure,
) -> None:
    good = azure.sp_auth(azure.app_with_pull())
    no_role = azure.emulator.register_app(azure.tenant, secret=APP_SECRET)
    document = {
        "caFile": str(azure.emulator.ca_path),
        "registries": [
            acr_entry(azure, "good", good, hosts=[azure.host]),
            acr_entry(azure, "denied", {**good, "clientId": no_role.client_id}, hosts=[azure.host]),
        ],
    }
    code, lines = await run_doctor(document, azure.kube)
    assert code == 1
    assert len(lines) == 2
    assert lines[0].startswith(f"ok   good {azure.host} sp:{azure.tenant}/")
    assert "expires in 2h59m (acr servicePrincipal)" in lines[0] or "expires in 3h00m" in lines[0]
    assert lines[1].startswith(f"FAIL denied {azure.host} sp:{azure.tenant}/{no_role.client_id}")
    assert "acr-exchange: 401 UNAUTHORIZED" in lines[1]
    assert lines[1].endswith(f"— hint: {ROLE_HINT}")
    assert all("eyJ" not in line for line in lines)


async def test_a_family_entry_without_a_host_checks_the_entra_token_only(azure: Azure) -> None:
    identity = azure.emulator.add_managed_identity(azure.tenant)
    auth = {"mode": "managedIdentity", "clientId": identity.client_id}
    document = {
        "caFile": str(azure.emulator.ca_path),
        "registries": [acr_entry(azure, "any-acr", auth, anyRegistry=True)],
    }
    code, lines = await run_doctor(document, azure.kube)
    assert code == 0
    (line,) = lines
    assert line.startswith(f"ok   any-acr * mi:{identity.client_id} Entra token only, expires in")
    assert "pass --host any-acr=REGISTRY.azurecr.io" in line


async def test_a_host_given_for_a_family_entry_gets_the_full_exchange(azure: Azure) -> None:
    identity = azure.emulator.add_managed_identity(azure.tenant, attach=False)
    auth = {"mode": "managedIdentity", "clientId": identity.client_id}
    document = {
        "caFile": str(azure.emulator.ca_path),
        "registries": [acr_entry(azure, "any-acr", auth, anyRegistry=True)],
    }
    code, lines = await run_doctor(document, azure.kube, hosts={"any-acr": ["contoso.azurecr.io"]})
    assert code == 1
    assert lines == [
        f"FAIL any-acr contoso.azurecr.io mi:{identity.client_id} imds: 400 Identity not found"
        " — hint: the managed identity is not assigned to this node/VMSS (or the client id is"
        " wrong)"
    ]


async def test_a_pod_service_account_entry_is_skipped_without_a_service_account(
    azure: Azure,
) -> None:
    document = {
        "caFile": str(azure.emulator.ca_path),
        "registries": [
            acr_entry(azure, "tenants", {"mode": "podServiceAccount"}, hosts=[azure.host])
        ],
    }
    code, lines = await run_doctor(document, azure.kube)
    assert code == 0
    assert lines == [
        f"SKIP tenants {azure.host} pod-sa needs a pod's service account: pass --service-account"
        " NAMESPACE/NAME (with a kubeconfig, or run in the cluster)"
    ]


async def test_a_pod_service_account_entry_is_checked_with_the_given_service_account(
    azure: Azure,
) -> None:
    app = azure.app_with_pull()
    azure.emulator.add_federated_credential(
        azure.tenant,
        app.client_id,
        issuer=CLUSTER_ISSUER,
        subject="system:serviceaccount:team-a:ci",
    )
    azure.kube.put_service_account(
        "team-a",
        "ci",
        **{
            "azure.workload.identity/client-id": app.client_id,
            "azure.workload.identity/tenant-id": azure.tenant,
        },
    )
    document = {
        "caFile": str(azure.emulator.ca_path),
        "registries": [
            acr_entry(azure, "tenants", {"mode": "podServiceAccount"}, hosts=[azure.host])
        ],
    }
    code, lines = await run_doctor(document, azure.kube, service_account="team-a/ci")
    assert code == 0
    assert lines[0].startswith(f"ok   tenants {azure.host} team-a/ci expires in")


async def test_a_clock_off_by_more_than_five_minutes_is_reported(azure: Azure) -> None:
    document = {
        "caFile": str(azure.emulator.ca_path),
        "registries": [
            acr_entry(azure, "good", azure.sp_auth(azure.app_with_pull()), hosts=[azure.host])
        ],
    }
    clock = Clock()
    clock.now -= 630  # this machine is ten and a half minutes behind the issuer
    code, lines = await run_doctor(document, azure.kube, clock=clock)
    assert code == 0
    assert "WARNING clock differs from the issuer's by 10m" in lines[0]


async def test_an_ecr_family_entry_with_a_region_is_checked_in_that_region(
    aws: MotoProxy, kube: MemoryKube
) -> None:
    document = {
        "registries": [
            {
                "name": "aws",
                "kind": "ecr",
                "anyRegistry": True,
                "accounts": ["123456789012"],
                "region": "eu-central-1",
                "endpointUrl": aws.url,
            },
            {"name": "aws-anywhere", "kind": "ecr", "anyRegistry": True, "endpointUrl": aws.url},
        ]
    }
    code, lines = await run_doctor(document, kube, clock=Clock(MOTO_EXPIRES_AT - 12 * 3600))
    assert code == 0
    assert lines[0] == (
        "ok   aws 123456789012.dkr.ecr.eu-central-1.amazonaws.com default expires in 12h00m"
        " (ecr default)"
    )
    assert lines[1].startswith("SKIP aws-anywhere * default an ECR family entry needs a region")
    assert [c.region for c in aws.calls] == ["eu-central-1"]


async def test_an_ecr_family_entry_takes_the_region_from_the_aws_environment(
    aws: MotoProxy, kube: MemoryKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    document = {
        "registries": [
            {"name": "aws", "kind": "ecr", "anyRegistry": True, "endpointUrl": aws.url},
        ]
    }
    code, lines = await run_doctor(document, kube, clock=Clock(MOTO_EXPIRES_AT - 3600))
    assert code == 0
    assert lines == [
        "ok   aws 000000000000.dkr.ecr.ap-south-1.amazonaws.com default expires in 1h00m"
        " (ecr default)"
    ]


async def test_secrets_outside_a_cluster_are_skipped_not_failed() -> None:
    document = {
        "registries": [
            {
                "name": "harbor",
                "kind": "generic",
                "hosts": ["harbor.example.com"],
                "auth": {"secretRef": {"name": "harbor-creds"}},
            }
        ]
    }
    code, lines = await run_doctor(document, None)
    assert code == 0
    assert lines == [
        "SKIP harbor harbor.example.com secret:pull-secret-webhook/harbor-creds read-secret: "
        "cannot read Secret pull-secret-webhook/harbor-creds — run inside the cluster, or give "
        "doctor a kubeconfig"
    ]


def test_main_reads_the_config_file_and_runs_without_kubernetes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    thread = EmulatorThread(AzureEmulator(tmp_path / "azure"))
    emulator = thread.start()
    try:
        tenant = emulator.add_tenant()
        app = emulator.register_app(tenant, secret=APP_SECRET)
        registry = thread.call(emulator.add_registry("contoso"))
        registry.assign_role(app.object_id)
        secret_file = tmp_path / "secret"
        secret_file.write_text(APP_SECRET)
        auth = {
            "mode": "servicePrincipal",
            "tenantId": tenant,
            "clientId": app.client_id,
            "clientSecretFile": str(secret_file),
            "authorityHost": emulator.authority_host,
        }
        document = {
            "caFile": str(emulator.ca_path),
            "registries": [{"name": "contoso", "kind": "acr", "anyRegistry": True, "auth": auth}],
        }
        config_file = tmp_path / "config.yaml"
        config_file.write_text(yaml.safe_dump(document))
        out, err = io.StringIO(), io.StringIO()
        code = doctor.main(
            str(config_file), hosts=[f"contoso={registry.login_server}"], out=out, err=err
        )
    finally:
        thread.stop()
    assert (code, err.getvalue()) == (0, "")
    assert out.getvalue().startswith(f"ok   contoso {registry.login_server} sp:{tenant}/")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param({"hosts": ["nope=x.azurecr.io"]}, "no registry entry named nope", id="entry"),
        pytest.param({"hosts": ["quay.io"]}, "no registry entry matches", id="host"),
        pytest.param({"service_account": "just-a-name"}, "NAMESPACE/NAME", id="service-account"),
    ],
)
def test_main_refuses_unusable_arguments(
    tmp_path: Path, args: dict[str, Any], message: str
) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        yaml.safe_dump({"registries": [{"name": "acr", "kind": "acr", "anyRegistry": True}]})
    )
    err = io.StringIO()
    assert doctor.main(str(config_file), **args, out=io.StringIO(), err=err) == 2
    assert message in err.getvalue()


def test_main_reports_an_invalid_config(tmp_path: Path) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text("registries: 3\n")
    err = io.StringIO()
    assert doctor.main(str(config_file), out=io.StringIO(), err=err) == 2
    assert "registries" in err.getvalue()


def test_each_failure_is_printed_once_by_the_command(tmp_path: Path) -> None:
    # As a process: with no logging configured, a warning the credential layer logs would
    # reach stderr through Python's last-resort handler and repeat the FAIL line.
    config = tmp_path / "config.yaml"
    closed = f"http://127.0.0.1:{free_port()}"
    config.write_text(
        yaml.safe_dump(
            {
                "registries": [
                    {
                        "name": "aws",
                        "kind": "ecr",
                        "hosts": ["111122223333.dkr.ecr.eu-west-1.amazonaws.com"],
                        "endpointUrl": closed,
                        "stsEndpointUrl": closed,
                        "auth": {"mode": "default"},
                    }
                ]
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KUBERNETES_"))}
    env |= {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "not-a-real-secret"}

    result = subprocess.run(
        [sys.executable, "-m", "webhook", "doctor", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )

    assert result.returncode == 1
    assert result.stdout.startswith("FAIL aws 111122223333.dkr.ecr.eu-west-1.amazonaws.com")
    assert result.stdout.count("\n") == 1
    assert "ecr-get-authorization-token" not in result.stderr, result.stderr
