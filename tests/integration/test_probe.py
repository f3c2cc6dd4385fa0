"""`python -m webhook probe` (what `helm test` runs) against a real `serve` process over TLS:
it passes when the webhook answers as the API server expects, and fails, saying why, when
the certificate is not the caBundle's or nothing answers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from devenv.serve import Serve, free_port
from devenv.support.configs import sample_document
from devenv.support.serving import write_serving_pair
from webhook.certs.pki import make_ca

REPO = Path(__file__).resolve().parents[2]
#: A cold interpreter imports aiohttp, azure and boto3 before it listens.
READY_TIMEOUT_SECONDS = 20.0
#: One probe is one request on loopback.
PROBE_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Served:
    url: str
    ca_file: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("probe")
    (tmp / "config.yaml").write_text(yaml.safe_dump(sample_document()))
    ca = make_ca()
    (tmp / "ca.crt").write_bytes(ca.cert_pem)
    write_serving_pair(ca, tmp)
    port, health = free_port(), free_port()
    serve = Serve(
        tmp / "config.yaml", tmp / "tls.crt", tmp / "tls.key", port, health, names_only=True
    )
    process = subprocess.Popen(
        serve.command(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        serve.wait_ready(process, timeout=READY_TIMEOUT_SECONDS)
        yield Served(url=f"https://127.0.0.1:{port}/mutate", ca_file=tmp / "ca.crt")
    finally:
        process.terminate()
        process.wait(timeout=30)


def probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", "probe", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT_SECONDS,
        check=False,
    )


def test_the_probe_passes_against_a_serving_webhook(served: Served) -> None:
    result = probe("--url", served.url, "--ca-file", str(served.ca_file))

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"ok   {served.url} allowed dry-run probe ")
    assert result.stderr == ""


def test_the_probe_fails_when_the_certificate_is_not_from_the_ca_bundle(
    served: Served, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.crt"
    other.write_bytes(make_ca().cert_pem)

    result = probe("--url", served.url, "--ca-file", str(other))

    assert result.returncode == 1
    assert result.stderr.startswith(f"FAIL {served.url}: cannot reach")
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr


def test_the_probe_fails_when_nothing_answers(served: Served) -> None:
    url = f"https://127.0.0.1:{free_port()}/mutate"

    result = probe("--url", url, "--ca-file", str(served.ca_file), "--timeout", "2")

    assert result.returncode == 1
    assert result.stderr.startswith(f"FAIL {url}: cannot reach")


def test_the_probe_fails_on_a_path_that_is_not_the_webhook(served: Served) -> None:
    url = served.url.replace("/mutate", "/not-mutate")

    result = probe("--url", url, "--ca-file", str(served.ca_file))

    assert result.returncode == 1
    assert result.stderr.startswith(f"FAIL {url}: HTTP 404")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--url", "http://127.0.0.1:1/mutate"], "only calls https://", id="http"),
        pytest.param(["--ca-file", "/nonexistent/ca.crt"], "--ca-file /nonexistent", id="ca"),
    ],
)
def test_unusable_arguments_are_refused_with_exit_code_2(args: list[str], message: str) -> None:
    result = probe(*args)

    assert result.returncode == 2
    assert message in result.stderr
