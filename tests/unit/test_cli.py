"""The command line: `explain` shows how images resolve; `serve` refuses a broken config."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from devenv.support.configs import sample_document
from webhook.cli import main


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(sample_document()))
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_explain_shows_reference_entry_identity_and_secret(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        capsys, "explain", "--config", str(config_file), "contoso.azurecr.io/team/app:2.0"
    )
    assert code == 0
    assert "domain:   contoso.azurecr.io" in out
    assert "path:     team/app" in out
    assert "tag:      2.0" in out
    assert "registry: contoso (kind acr" in out
    assert "identity: wi:11111111-2222-3333-4444-555555555555" in out
    assert "scope:    repository:app:pull" in out
    assert "secret:   psw-contoso-azurecr-io-" in out


def test_explain_says_why_nothing_matches(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        capsys,
        "explain",
        "--config",
        str(config_file),
        "nginx",
        "contoso.azurecr.io.evil.com/app",
        "999999999999.dkr.ecr.us-east-1.amazonaws.com/app",
    )
    assert code == 0
    assert "domain:   docker.io" in out
    assert "path:     library/nginx" in out
    assert "no registry entry matches docker.io" in out
    assert "no registry entry matches contoso.azurecr.io.evil.com" in out
    # The sample's ECR entry has anyRegistry with an accounts filter: that is the cause,
    # not a missing anyRegistry.
    assert "entry aws covers any ECR host, but only of the accounts it lists" in out
    assert "add 999999999999 to accounts" in out
    assert "set anyRegistry: true" not in out


def test_explain_suggests_any_registry_only_when_no_entry_covers_the_family(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "registries": [
                    {
                        "name": "mine",
                        "kind": "ecr",
                        "hosts": ["111122223333.dkr.ecr.eu-west-1.amazonaws.com"],
                    }
                ]
            }
        )
    )

    code, out, _ = run_cli(
        capsys,
        "explain",
        "--config",
        str(config),
        "999999999999.dkr.ecr.us-east-1.amazonaws.com/app",
    )

    assert code == 0
    assert "it is an ECR host: add it to an ecr entry's hosts or set anyRegistry: true" in out


def test_explain_gives_google_registry_images_the_gar_entry_and_spoofs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    gar = {"name": "google", "kind": "gar", "hosts": ["europe-west1-docker.pkg.dev", "gcr.io"]}
    config.write_text(yaml.safe_dump({"registries": [gar]}))
    code, out, _ = run_cli(
        capsys,
        "explain",
        "--config",
        str(config),
        "europe-west1-docker.pkg.dev/my-project/images/app:1.0",
        "gcr.io/my-project/app",
        "us-docker.pkg.dev/my-project/images/app",
        "europe-west1-docker.pkg.dev.evil.com/my-project/images/app",
        "evil.com/gcr.io/my-project/app",
    )
    assert code == 0
    assert "registry: google (kind gar; covers europe-west1-docker.pkg.dev, gcr.io)" in out
    assert "identity: gce:default (auth mode metadataServer)" in out
    assert "secret:   psw-europe-west1-docker-pkg-dev-" in out
    assert "secret:   psw-gcr-io-" in out
    assert (
        "no registry entry matches us-docker.pkg.dev (it is a GAR host: add it to a gar "
        "entry's hosts or set anyRegistry: true)" in out
    )
    assert "no registry entry matches europe-west1-docker.pkg.dev.evil.com\n" in out
    assert "no registry entry matches evil.com\n" in out


def test_explain_fails_on_an_invalid_reference(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "explain", "--config", str(config_file), "x.azurecr.io@evil")
    assert code == 1
    assert "invalid reference: invalid digest 'evil'" in out


def test_explain_json_output_is_machine_readable(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        capsys,
        "explain",
        "--config",
        str(config_file),
        "-o",
        "json",
        "--service-account",
        "builder",
        "210987654321.dkr.ecr.eu-west-1.amazonaws.com/app:1",
    )
    assert code == 0
    [item] = json.loads(out)
    assert item["registry"] == "tenant-ecr"
    assert item["identity"] == "sa:builder"
    assert item["tag"] == "1"


def test_serve_refuses_a_broken_config_listing_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        yaml.safe_dump(
            {
                "registries": [{"name": "a", "kind": "acr", "auth": {"mode": "x"}}],
                "admission": {"timeoutSeconds": 99},
            }
        )
    )
    code, _, err = run_cli(
        capsys, "serve", "--config", str(broken), "--cert-file", "/nonexistent", "--names-only"
    )
    assert code == 2
    assert "3 problem(s)" in err
    assert "registries[0].hosts" in err
    assert "registries[0].auth.mode: got 'x'" in err
    assert "admission.timeoutSeconds: got 99" in err


def test_serve_explains_a_missing_certificate(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(
        capsys,
        "serve",
        "--config",
        str(config_file),
        "--cert-file",
        "/nonexistent/tls.crt",
        "--names-only",
    )
    assert code == 2
    assert "TLS file /nonexistent/tls.crt not found" in err
    assert "python -m webhook certs" in err


def serve_argv(config_file: Path, tmp_path: Path) -> list[str]:
    """`serve` with the config and (empty) TLS files in ``tmp_path``: what it checks first."""
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).write_text("")
    return [
        "serve", "--config", str(config_file),
        "--cert-file", str(tmp_path / "tls.crt"), "--key-file", str(tmp_path / "tls.key"),
    ]  # fmt: skip


def test_serve_refuses_to_start_without_kubernetes_credentials(
    config_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    code, _, err = run_cli(capsys, *serve_argv(config_file, tmp_path))
    assert code == 2
    assert f"no Kubernetes credentials: no kubeconfig at {tmp_path / 'absent'}" in err
    assert "Traceback" not in err


def test_serve_imports_the_providers_before_it_forks_its_workers(
    config_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """So that the workers share them, and no event loop ever waits for their import."""
    from webhook.cli import serve

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    steps: list[str] = []

    class Forked(Exception):
        pass

    def fork(workers: int) -> None:
        steps.append("fork")
        raise Forked

    monkeypatch.setattr(serve, "import_providers", lambda config: steps.append("providers"))
    monkeypatch.setattr(serve, "fork_workers", fork)
    # serve sets up logging (a handler on this test's captured stderr, closed after it):
    # the root logger gets its own handlers and level back when the test ends.
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    with pytest.raises(Forked):
        run_cli(capsys, *serve_argv(config_file, tmp_path), "--kubeconfig", str(kubeconfig))
    assert steps == ["providers", "fork"]


def test_unknown_config_file_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "explain", "--config", str(tmp_path / "none.yaml"), "nginx")
    assert code == 2
    assert "cannot read" in err


def test_certs_help_describes_the_command_and_every_default(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # argparse wraps (and hyphen-splits) at the width
    with pytest.raises(SystemExit) as exit_:
        main(["certs", "--help"])
    out = " ".join(capsys.readouterr().out.split())

    assert exit_.value.code == 0
    assert "Make the webhook's serving certificate, signed by a private CA" in out
    # --out-dir writes the CA's private key too: the help must say so.
    assert "ca.crt, ca.key (the CA's private key: keep it safe), tls.crt, tls.key" in out
    for default in (
        "(default: pull-secret-webhook)",
        "serving certificate lifetime in days (default: 365)",
    ):
        assert default in out
    # Options without a meaningful default show none (no "default: None" noise).
    assert "default: None" not in out
    assert "default: False" not in out


def test_probe_help_names_its_defaults(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit):
        main(["probe", "--help"])
    out = " ".join(capsys.readouterr().out.split())

    assert "https://pull-secret-webhook.pull-secret-webhook.svc:443/mutate" in out
    assert "/etc/pull-secret-webhook/tls/ca.crt" in out


def test_validate_and_doctor_know_the_gar_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from webhook.cli import doctor
    from webhook.config.load import load_config

    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"registries": [{"name": "google", "kind": "gar", "anyRegistry": True}]})
    )
    code, out, _ = run_cli(capsys, "validate", "--config", str(config))
    assert code == 0 and "google (gar)" in out
    loaded = load_config(config)
    # One Google token serves every Google host: a family entry is tried on a stand-in
    # host, and --image adds the image's host with the repository to read there.
    [target] = doctor.targets(loaded, {})
    assert (target.host, target.repositories) == ("us-docker.pkg.dev", ())
    hosts, repositories = doctor.parse_images(loaded, ["europe-docker.pkg.dev/p/r/app:1"])
    assert hosts == {"google": ["europe-docker.pkg.dev"]}
    [image_target] = doctor.targets(loaded, hosts, repositories)
    assert (image_target.host, image_target.repositories) == ("europe-docker.pkg.dev", ("p/r/app",))
    with pytest.raises(ValueError, match=r"no gar registry entry covers docker\.io"):
        doctor.parse_images(loaded, ["nginx"])
