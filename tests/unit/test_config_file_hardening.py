"""A hostile or broken config file is refused quickly, every problem listed, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devenv.support.configs import sample_document
from webhook.certs.pki import make_ca
from webhook.cli import main
from webhook.config.files import MAX_EXPANDED_NODES, MAX_FILE_BYTES
from webhook.config.load import ConfigError, load_config

GENERIC = """\
registries:
  - name: harbor
    kind: generic
    hosts: [harbor.example.com]
    auth: {secretRef: {name: harbor-creds}}
"""

#: "Billion laughs": 9 levels of 9 aliases, a few hundred bytes that expand to 9^9 strings.
ALIAS_BOMB = "a: &a [" + ",".join(['"lol"'] * 9) + "]\n"
for _prev, _name in zip("abcdefgh", "bcdefghi", strict=True):
    ALIAS_BOMB += f"{_name}: &{_name} [" + ",".join([f"*{_prev}"] * 9) + "]\n"


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "config.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_an_alias_bomb_is_refused_within_a_second(tmp_path: Path) -> None:
    assert len(ALIAS_BOMB) < 600
    started = time.monotonic()
    problems = problems_of(write(tmp_path, GENERIC + ALIAS_BOMB))
    assert time.monotonic() - started < 5  # generous: ~0.1 s here; unbounded was minutes
    assert problems == [
        f"not a usable config: expands to more than {MAX_EXPANDED_NODES} values through "
        "aliases (a config needs a few hundred)"
    ]


def test_a_modest_alias_is_still_accepted(tmp_path: Path) -> None:
    text = """\
auth: &wi {mode: workloadIdentity}
registries:
  - {name: a, kind: acr, hosts: [a.azurecr.io], auth: *wi}
  - {name: b, kind: acr, hosts: [b.azurecr.io], auth: *wi}
"""
    path = write(tmp_path, text)
    # 'auth' at the top level is an unknown key: refused for that, not for the alias.
    [problem] = problems_of(path)
    assert problem.startswith("auth: got {'mode': 'workloadIdentity'}, expected no such key")


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, GENERIC + "x: &x [*x]\n"))
    assert "through aliases" in problems[0]


def test_non_utf8_is_refused_with_the_line(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, GENERIC.encode() + b"namespace: caf\xe9\n"))
    assert problems == [f"{tmp_path / 'config.yaml'} is not UTF-8 text: byte 0xe9 at line 6"]


@pytest.mark.parametrize("digits", [400, 5000])
def test_huge_numbers_are_named_with_their_key_among_other_problems(
    tmp_path: Path, digits: int
) -> None:
    text = GENERIC + f"admission:\n  timeoutSeconds: 1{'0' * digits}\nsecretPrefix: BAD\n"
    problems = problems_of(write(tmp_path, text))
    assert problems == [
        "secretPrefix: got 'BAD', expected 1-20 lowercase letters, digits or '-'",
        f"admission.timeoutSeconds: got '<a number of {digits + 1} characters>', "
        "expected a number from 1 to 30",
    ]


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, GENERIC + "x: " + "[" * 5000 + "]" * 5000 + "\n"))
    assert problems == ["not a usable config: nested deeper than 32 levels (line 6)"]


def test_duplicate_keys_are_listed_with_other_problems(tmp_path: Path) -> None:
    text = GENERIC.replace("    kind: generic\n", "    kind: generic\n    name: other\n")
    text += "namespace: a\nnamespace: b\n"
    problems = problems_of(write(tmp_path, text))
    assert sorted(problems) == [
        "line 4: duplicate key 'name' (first at line 2); YAML keeps only the last",
        "line 8: duplicate key 'namespace' (first at line 7); YAML keeps only the last",
    ]


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    assert problems_of(fifo) == [f"{fifo} is not a regular file (a FIFO)"]


def test_a_directory_is_refused(tmp_path: Path) -> None:
    assert problems_of(tmp_path) == [f"{tmp_path} is not a regular file (a directory)"]


def test_a_file_over_a_configmaps_size_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, GENERIC + "#" * MAX_FILE_BYTES + "\n")
    assert "a config is at most 1048576 bytes" in problems_of(path)[0]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hosts", "[harbor.example.com:99999]"),
        ("hosts", "[harbor.example.com:0]"),
    ],
)
def test_out_of_range_ports_are_refused(tmp_path: Path, field: str, value: str) -> None:
    text = GENERIC.replace("hosts: [harbor.example.com]", f"{field}: {value}")
    problems = problems_of(write(tmp_path, text))
    assert problems == [
        f"registries[0].hosts: got '{value[1:-1]}', expected a port from 1 to 65535"
    ]


def test_out_of_range_endpoint_port_is_refused(tmp_path: Path) -> None:
    text = """\
registries:
  - {name: aws, kind: ecr, anyRegistry: true, endpointUrl: "http://127.0.0.1:70000",
     auth: {mode: default}}
"""
    assert problems_of(write(tmp_path, text)) == [
        "registries[0].endpointUrl: got 'http://127.0.0.1:70000', expected a port from 1 to 65535"
    ]


def test_ca_file_must_be_readable_pem(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("hello\n")
    missing = tmp_path / "missing.pem"
    for ca, reason in ((not_pem, "PEM CA certificates"), (missing, "No such file")):
        problems = problems_of(write(tmp_path, GENERIC + f"caFile: {ca}\n"))
        assert len(problems) == 1
        assert problems[0].startswith(f"caFile: got '{ca}', expected")
        assert reason in problems[0]


def test_a_pem_ca_file_is_accepted(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(make_ca().cert_pem)
    config = load_config(write(tmp_path, GENERIC + f"caFile: {ca}\n"))
    assert config.ca_file == str(ca)


def test_validate_command_lists_every_problem_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GENERIC + "namespace: a\nnamespace: B\n")
    assert main(["validate", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err
    assert "duplicate key 'namespace'" in err
    assert "namespace: got 'B', expected a namespace name" in err
    assert "Traceback" not in err


def test_validate_command_accepts_a_good_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    path = write(tmp_path, yaml.safe_dump(sample_document()))
    assert main(["validate", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "valid; 5 registry entries: contoso (acr), any-acr (acr)" in out


@pytest.mark.parametrize(
    "command",
    [["validate"], ["explain", "harbor.example.com/app:1"], ["serve", "--names-only"]],
    ids=["validate", "explain", "serve"],
)
@pytest.mark.parametrize(
    "text",
    [b"registries: [\x01]\n", b"registries:\n  - name: \x1b[31mred\n", b"a: \x7f\n"],
    ids=["SOH", "ESC", "DEL"],
)
def test_a_control_character_is_refused_with_exit_2_and_a_reason_by_every_command(
    tmp_path: Path, command: list[str], text: bytes
) -> None:
    # The real command line in its own process: what an operator runs and sees.
    path = write(tmp_path, text)
    done = subprocess.run(
        [sys.executable, "-m", "webhook", *command, "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "invalid configuration" in done.stderr
    assert "not valid YAML: unacceptable character" in done.stderr
