"""What the redactor hides (the values the webhook holds, token shapes) and what it keeps
readable (names, GUIDs, error codes, key ids, ARNs, ARM ids)."""

from __future__ import annotations

import base64
import json
import urllib.parse

import pytest

from webhook.telemetry.redact import REDACTED, Redactor
from webhook.telemetry.text import printable

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLE9q"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    "secret",
    [
        AWS_SECRET,
        "aB3dE5fG7hJ9kL1mN3pQ",  # 20 random characters
        base64.b64encode(json.dumps({"auths": {"r.io": {"auth": "x"}}}).encode()).decode(),
        base64.b64encode(b"AWS:123456789012-auth-token").decode(),  # an ECR token
        "0123456789abcdef" * 4,  # 64 hex characters
        JWT,
    ],
    ids=["aws-secret-key", "random-20", "dockerconfigjson-b64", "ecr-token", "hex-64", "jwt"],
)
def test_token_shaped_text_is_hidden_whoever_holds_it(secret: str) -> None:
    out = Redactor().scrub(f"the registry said: bad credential {secret}, try again")
    assert secret not in out
    assert out.startswith("the registry said: bad credential <")


@pytest.mark.parametrize(
    "kept",
    [
        "tenant-a-production-workloads/psw-acr-prod-0123456789",
        "0e8b1c2d-1234-4abc-9def-0123456789ab",
        "AADSTS700016",
        "AKIAIOSFODNN7EXAMPLE",
        "arn:aws:iam::123456789012:role/PullRole",
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/MyGroup2/"
        "providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1",
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
    ],
    ids=["names", "guid", "aadsts", "access-key-id", "arn", "arm-id", "ecr-host"],
)
def test_names_ids_and_codes_stay_readable(kept: str) -> None:
    assert Redactor().scrub(f"failed for {kept}: denied") == f"failed for {kept}: denied"


def test_a_remembered_value_is_hidden_in_every_form_it_travels_in() -> None:
    redactor = Redactor()
    password = "correct horse+battery/staple"  # words: no shape gives it away
    redactor.remember(password, username="robot$team")
    forms = [
        password,
        urllib.parse.quote(password, safe=""),
        urllib.parse.quote_plus(password),
        base64.b64encode(password.encode()).decode(),
        base64.b64encode(f"robot$team:{password}".encode()).decode(),
    ]
    for form in forms:
        out = redactor.scrub(f"echo: {form} end")
        assert form not in out and REDACTED in out, out
    assert Redactor().scrub(f"echo: {password} end") == f"echo: {password} end"


def test_a_value_with_control_characters_is_hidden_once_escaped_for_a_line() -> None:
    """Text is escaped (``printable``) before some lines are scrubbed (a clipped message,
    a context field): a password holding a tab or ESC is hidden in that form too."""
    redactor = Redactor()
    password = "correct\thorse\x1bbattery staple"
    redactor.remember(password)
    for form in (password, printable(password)):
        out = redactor.scrub(f"echo: {form} end")
        assert form not in out and out == f"echo: {REDACTED} end", out


def test_short_values_are_not_remembered_and_the_list_is_bounded() -> None:
    redactor = Redactor(capacity=8)
    redactor.remember("admin")
    assert redactor.scrub("admin logged in") == "admin logged in"
    for i in range(20):
        redactor.remember(f"password-number-{i:04d}")
    assert "password-number-0019" not in redactor.scrub("password-number-0019")
    assert redactor.scrub("password-number-0000") == "password-number-0000"  # forgotten


def test_a_value_in_use_is_kept_longest() -> None:
    """A static secret read again (every recheck) outlives credentials minted since."""
    redactor = Redactor(capacity=12)
    redactor.remember("static-secret-value")
    for i in range(10):
        redactor.remember(f"minted-number-{i:04d}")
        redactor.remember("static-secret-value")  # read again
    assert "static-secret-value" not in redactor.scrub("static-secret-value")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_request_s_context_values_are_logged_as_one_printable_cut_line(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Context values come straight from reviews (a pod's name, its namespace): each is
    made printable and cut when a line is logged, in either format."""
    import logging

    from webhook.telemetry.logs import CONTEXT_VALUE_MAX, log_context, setup_logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        setup_logging("info", fmt)
        with log_context(uid="u-1", namespace="team\na") as context:
            context.add(pod="web\r\x1b[2J\udc80" + "-web" * 100)
            logging.getLogger("webhook.test").warning("one line")
        err = capsys.readouterr().err
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    lines = err.splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert "\x1b" not in line and "\r" not in line
    fields = (
        json.loads(line)
        if fmt == "json"
        else dict(part.split("=", 1) for part in line.split(" ") if "=" in part)
    )
    assert fields["uid"] == "u-1"
    assert fields["namespace"] == "team\\na"
    # Escaped (the rest, a long run, is the redactor's to hide), and cut.
    assert fields["pod"].startswith("web\\r\\x1b[2J\\")
    assert fields["pod"].endswith("…")
    assert len(fields["pod"]) <= CONTEXT_VALUE_MAX


def test_a_text_line_s_message_and_traceback_are_printable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Whatever a message quotes (a library's message, a remote answer in an exception) is
    escaped in the text format: one line a message, the request's fields on it, and a
    traceback's own lines kept as lines, none able to move a terminal's cursor."""
    import logging

    from webhook.telemetry.logs import log_context, setup_logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        setup_logging("info", "text")
        log = logging.getLogger("webhook.test")
        with log_context(uid="u-2"):
            log.warning("remote said: %s", "ok\nFORGED level=error\x1b[31m red")
            try:
                raise RuntimeError("boom\x1b]0;title\x07")
            except RuntimeError:
                log.exception("failed")
        err = capsys.readouterr().err
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    lines = err.splitlines()
    assert all(line.isprintable() for line in lines), lines
    first = lines[0]
    assert first.endswith("remote said: ok\\nFORGED level=error\\x1b[31m red uid=u-2"), first
    assert not any(line.startswith("FORGED") for line in lines)
    failed = next(i for i, line in enumerate(lines) if "failed" in line)
    assert lines[failed].endswith("failed uid=u-2")
    assert lines[failed + 1] == "Traceback (most recent call last):"
    assert lines[-1] == "RuntimeError: boom\\x1b]0;title\\x07"


def test_log_context_blocks_nest_override_and_end() -> None:
    """A block's fields join those around it (its own win, an empty value adds nothing),
    ``add`` extends the block, its exit restores what was before, and a task started
    inside keeps the fields it was started with."""
    import asyncio

    from webhook.telemetry.logs import context_fields, log_context

    assert context_fields() == {}
    with log_context(uid="u-1", namespace="team-a", op="CREATE") as outer:
        with log_context(namespace="team-b", op=""):
            assert context_fields() == {"uid": "u-1", "namespace": "team-b", "op": "CREATE"}
        assert context_fields() == {"uid": "u-1", "namespace": "team-a", "op": "CREATE"}
        outer.add(pod="web-1")

        async def started_here() -> dict[str, str]:
            await asyncio.sleep(0)
            return context_fields()

        async def run() -> dict[str, str]:
            task = asyncio.create_task(started_here())
            outer.add(pod="changed-after-the-task-started")
            return await task

        assert asyncio.run(run()) == {
            "uid": "u-1",
            "namespace": "team-a",
            "op": "CREATE",
            "pod": "web-1",
        }
        assert context_fields()["pod"] == "web-1"  # asyncio.run ran in a copy of the context
    assert context_fields() == {}
