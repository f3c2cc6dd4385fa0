"""``python -m webhook certs`` with ``--out-dir``: CA reuse, rotation, and a live reload."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import socket
import ssl
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from devenv.support.configs import sample_config
from devenv.support.serving import loopback_options
from webhook.certs import pki, rotation
from webhook.cli import build_parser
from webhook.cli import certs as certs_command
from webhook.config.store import ConfigStore
from webhook.server.app import NamesOnlySource, start_server

SERVICE_NAMES = pki.service_dns_names("pull-secret-webhook", "pull-secret-webhook")
#: The name the API server dials for a Service-backed webhook.
API_SERVER_DIALS = "pull-secret-webhook.pull-secret-webhook.svc"
#: The webhook rereads its certificate files every 2 s (tlsreload.POLL_SECONDS).
RELOAD_TIMEOUT_SECONDS = 10.0


def run_certs(argv: Sequence[str], *, rotate_ca: bool = False) -> tuple[int, str, str]:
    args = build_parser().parse_args(["certs", *argv])
    # --rotate-ca as the CLI declares it; set directly so the test does not depend on
    # the parser's help text.
    args.rotate_ca = rotate_ca
    out, err = io.StringIO(), io.StringIO()
    code = certs_command.main(args, out, err)
    return code, out.getvalue(), err.getvalue()


def files_only(out_dir: Path, *extra: str) -> list[str]:
    return ["--out-dir", str(out_dir), "--webhook-config", "", *extra]


def bundle(path: Path) -> list[x509.Certificate]:
    return rotation.load_certs(path.read_bytes())


def fp(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


def sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return ext.get_values_for_type(x509.DNSName), [
        str(i) for i in ext.get_values_for_type(x509.IPAddress)
    ]


def test_a_first_run_writes_a_ca_and_a_serving_pair_for_the_service_names(
    tmp_path: Path,
) -> None:
    code, out, err = run_certs(files_only(tmp_path))

    assert code == 0, err
    [ca] = bundle(tmp_path / "ca.crt")
    serving = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    assert rotation.issued_by(serving, ca)
    assert sans(serving) == (SERVICE_NAMES, [])
    assert "CA: created" in out and "no CA yet" in out


def test_private_keys_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    run_certs(files_only(tmp_path))

    for name in ("ca.key", "tls.key"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((tmp_path / "tls.crt").stat().st_mode) == 0o644


def test_the_output_names_fingerprints_but_never_key_material(tmp_path: Path) -> None:
    code, out, err = run_certs(files_only(tmp_path))

    assert code == 0
    for key_file in ("ca.key", "tls.key"):
        key_pem = (tmp_path / key_file).read_text()
        body = "".join(key_pem.strip().splitlines()[1:-1])
        assert body[:40] not in out + err
    assert "PRIVATE KEY" not in out + err
    assert "sha256:" in out


def test_a_rerun_reuses_the_ca_and_reissues_only_the_serving_pair(tmp_path: Path) -> None:
    run_certs(files_only(tmp_path))
    [ca_before] = bundle(tmp_path / "ca.crt")
    serving_before = (tmp_path / "tls.crt").read_bytes()

    code, out, _ = run_certs(files_only(tmp_path))

    assert code == 0
    assert [fp(c) for c in bundle(tmp_path / "ca.crt")] == [fp(ca_before)]
    assert (tmp_path / "tls.crt").read_bytes() != serving_before
    assert "CA: reused" in out


def test_extra_dns_names_and_ip_addresses_are_added_to_the_service_names(
    tmp_path: Path,
) -> None:
    run_certs(files_only(tmp_path, "--dns", "webhook.example.com", "--ip", "10.0.0.7"))

    serving = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    assert sans(serving) == ([*SERVICE_NAMES, "webhook.example.com"], ["10.0.0.7"])


def test_rotate_ca_keeps_the_old_ca_trusted_next_to_the_new_one(tmp_path: Path) -> None:
    run_certs(files_only(tmp_path))
    [old] = bundle(tmp_path / "ca.crt")

    code, out, _ = run_certs(files_only(tmp_path), rotate_ca=True)

    assert code == 0
    new, kept = bundle(tmp_path / "ca.crt")
    assert fp(kept) == fp(old) and fp(new) != fp(old)
    serving = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    assert rotation.issued_by(serving, new)
    assert "--rotate-ca" in out and "keeps previous CA" in out


def test_a_ca_close_to_expiry_is_replaced_and_stays_trusted_meanwhile(tmp_path: Path) -> None:
    # 20 days left: inside the 30-day window in which a CA is no longer reused.
    old = pki.make_ca(days=20)
    (tmp_path / "ca.crt").write_bytes(old.cert_pem)
    (tmp_path / "ca.key").write_bytes(old.key_pem)

    code, out, _ = run_certs(files_only(tmp_path))

    assert code == 0
    new, kept = bundle(tmp_path / "ca.crt")
    assert fp(kept) == fp(old.certificate) and fp(new) != fp(old.certificate)
    assert "expires in" in out


def test_a_ca_key_that_does_not_belong_to_the_ca_is_not_used(tmp_path: Path) -> None:
    run_certs(files_only(tmp_path))
    (tmp_path / "ca.key").write_bytes(pki.make_ca().key_pem)

    code, out, _ = run_certs(files_only(tmp_path))

    assert code == 0
    assert "does not belong to the CA certificate" in out
    new = bundle(tmp_path / "ca.crt")[0]
    serving = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    assert rotation.issued_by(serving, new)


def test_the_old_ca_is_dropped_once_the_new_pair_has_been_in_place_long_enough() -> None:
    old = pki.make_ca()
    first = rotation.issue(
        rotation.Existing(ca=old, bundle=(old.certificate,)),
        dns_names=SERVICE_NAMES,
        ip_addresses=(),
        days=365,
        rotate_ca=True,
    )
    after_rotation = rotation.Existing(
        ca=first.ca, serving=first.serving.certificate, bundle=first.bundle
    )
    now = dt.datetime.now(dt.UTC)

    soon = rotation.issue(
        after_rotation, dns_names=SERVICE_NAMES, ip_addresses=(), days=365, rotate_ca=False, now=now
    )
    later = rotation.issue(
        after_rotation,
        dns_names=SERVICE_NAMES,
        ip_addresses=(),
        days=365,
        rotate_ca=False,
        now=now + rotation.PROPAGATION_GRACE,
    )

    assert [fp(c) for c in soon.bundle] == [fp(first.ca.certificate), fp(old.certificate)]
    assert [fp(c) for c in later.bundle] == [fp(first.ca.certificate)]
    assert [fp(c) for c in later.dropped] == [fp(old.certificate)]


def test_a_previous_ca_stays_while_the_pair_in_place_was_signed_by_it() -> None:
    # A rotation that wrote the CA but was interrupted before the serving pair: replicas
    # still present a certificate of the old CA, however long ago it was issued.
    old = pki.make_ca()
    current = pki.make_ca()
    in_place = pki.make_serving_cert(old, SERVICE_NAMES).certificate
    existing = rotation.Existing(
        ca=current, serving=in_place, bundle=(current.certificate, old.certificate)
    )

    issued = rotation.issue(
        existing,
        dns_names=SERVICE_NAMES,
        ip_addresses=(),
        days=365,
        rotate_ca=False,
        now=dt.datetime.now(dt.UTC) + dt.timedelta(days=2),
    )

    assert [fp(c) for c in issued.bundle] == [fp(current.certificate), fp(old.certificate)]


def test_the_serving_certificate_never_outlives_its_ca() -> None:
    ca = pki.make_ca(days=100)

    issued = rotation.issue(
        rotation.Existing(ca=ca),
        dns_names=SERVICE_NAMES,
        ip_addresses=(),
        days=365,
        rotate_ca=False,
    )

    serving = issued.serving.certificate
    assert serving.not_valid_after_utc <= ca.certificate.not_valid_after_utc
    assert any("shortened" in n for n in issued.notes)


def test_bad_arguments_are_all_reported_with_exit_code_2(tmp_path: Path) -> None:
    code, out, err = run_certs(
        files_only(tmp_path, "--ip", "not-an-ip", "--dns", "bad_name!", "--days", "0")
    )

    assert code == 2 and out == ""
    assert "--ip 'not-an-ip'" in err and "--dns 'bad_name!'" in err and "--days 0" in err
    assert not list(tmp_path.iterdir())


def test_a_run_with_nothing_to_write_is_refused() -> None:
    code, _, err = run_certs(["--webhook-config", ""])

    assert code == 2
    assert "nothing to write" in err


def test_without_a_kubeconfig_the_error_says_how_to_only_write_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))

    code, _, err = run_certs(["--out-dir", str(tmp_path / "tls")])

    assert code == 1
    assert "--webhook-config ''" in err
    assert not (tmp_path / "tls").exists()


def handshake(port: int, cafile: Path) -> bytes:
    """The DER certificate the server presents, verified against ``cafile``."""
    context = ssl.create_default_context(cafile=str(cafile))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=API_SERVER_DIALS) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


async def test_the_running_webhook_serves_a_rotated_ca_pair_without_a_restart(
    tmp_path: Path,
) -> None:
    certs_dir = tmp_path / "tls"
    # In a thread: the command runs its own event loop, as it does from the CLI.
    assert (await asyncio.to_thread(run_certs, files_only(certs_dir)))[0] == 0
    old_ca = tmp_path / "old-ca.crt"
    old_ca.write_bytes((certs_dir / "ca.crt").read_bytes())
    server = await start_server(
        ConfigStore(sample_config()),
        NamesOnlySource(),
        loopback_options(certs_dir),
    )
    try:
        before = await asyncio.to_thread(handshake, server.port, old_ca)

        rotated = await asyncio.to_thread(run_certs, files_only(certs_dir), rotate_ca=True)
        assert rotated[0] == 0
        new_pair = x509.load_pem_x509_certificate((certs_dir / "tls.crt").read_bytes())
        wanted = new_pair.public_bytes(Encoding.DER)

        # The published bundle (new CA + old CA) verifies both the pair still served and
        # the one the webhook switches to: no moment in which the API server refuses it.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RELOAD_TIMEOUT_SECONDS
        served = before
        while served != wanted:
            assert loop.time() < deadline, "the webhook did not reload its certificate"
            served = await asyncio.to_thread(handshake, server.port, certs_dir / "ca.crt")
            await asyncio.sleep(0.2)
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.to_thread(handshake, server.port, old_ca)
    finally:
        await server.stop()


def test_renew_before_changes_nothing_while_the_pair_has_time_left(tmp_path: Path) -> None:
    assert run_certs(files_only(tmp_path, "--days", "90"))[0] == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    code, out, _ = run_certs(files_only(tmp_path, "--days", "90", "--renew-before", "30"))
    assert code == 0
    assert "nothing to renew" in out
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_renew_before_renews_a_pair_inside_the_window_with_the_same_ca(tmp_path: Path) -> None:
    assert run_certs(files_only(tmp_path, "--days", "20"))[0] == 0
    old_ca = bundle(tmp_path / "ca.crt")[0]
    old = rotation.load_certs((tmp_path / "tls.crt").read_bytes())[0]
    code, out, _ = run_certs(files_only(tmp_path, "--days", "90", "--renew-before", "30"))
    assert code == 0
    assert "nothing to renew" not in out
    new = rotation.load_certs((tmp_path / "tls.crt").read_bytes())[0]
    assert fp(new) != fp(old)
    assert new.not_valid_after_utc > old.not_valid_after_utc
    assert fp(bundle(tmp_path / "ca.crt")[0]) == fp(old_ca)  # the CA is reused


def test_renew_before_must_be_below_days(tmp_path: Path) -> None:
    code, _, err = run_certs(files_only(tmp_path, "--days", "30", "--renew-before", "30"))
    assert code == 2
    assert "--renew-before 30: expected 1 to 29" in err


def test_a_scheduled_run_drops_the_previous_ca_only_after_the_propagation_grace() -> None:
    old = pki.make_ca()
    rotated = rotation.issue(
        rotation.Existing(ca=old, bundle=(old.certificate,)),
        dns_names=SERVICE_NAMES,
        ip_addresses=(),
        days=365,
        rotate_ca=True,
    )
    after = rotation.Existing(
        ca=rotated.ca, serving=rotated.serving.certificate, bundle=rotated.bundle
    )
    now = dt.datetime.now(dt.UTC)

    assert rotation.stale_cas(after, now) == ()
    assert [fp(c) for c in rotation.stale_cas(after, now + rotation.PROPAGATION_GRACE)] == [
        fp(old.certificate)
    ]
    # A pair still signed by the previous CA (its rotation was interrupted) keeps it.
    interrupted = rotation.Existing(
        ca=rotated.ca,
        serving=pki.make_serving_cert(old, SERVICE_NAMES).certificate,
        bundle=rotated.bundle,
    )
    assert rotation.stale_cas(interrupted, now + dt.timedelta(days=30)) == ()


def test_renew_before_drops_a_stale_ca_from_the_files_and_changes_nothing_else(
    tmp_path: Path,
) -> None:
    old = pki.make_ca("old-ca")
    current = pki.make_ca("current-ca")
    # The state a finished CA rotation leaves: a pair of the current CA, issued more than
    # the propagation grace ago, and both CAs still trusted.
    issued_at = dt.datetime.now(dt.UTC) - rotation.PROPAGATION_GRACE - dt.timedelta(minutes=1)
    serving = pki.make_serving_cert(current, SERVICE_NAMES, issued_at=issued_at)
    (tmp_path / "ca.crt").write_bytes(current.cert_pem + old.cert_pem)
    (tmp_path / "ca.key").write_bytes(current.key_pem)
    serving.write(tmp_path / "tls.crt", tmp_path / "tls.key")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    code, out, _ = run_certs(files_only(tmp_path, "--days", "365", "--renew-before", "30"))
    again = run_certs(files_only(tmp_path, "--days", "365", "--renew-before", "30"))

    assert code == 0, out
    assert "caBundle drops previous CA old-ca" in out
    assert [fp(c) for c in bundle(tmp_path / "ca.crt")] == [fp(current.certificate)]
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert {n for n in after if after[n] != before[n]} == {"ca.crt"}
    assert again[0] == 0 and "drops" not in again[1] and "nothing to renew" in again[1]
