"""Detached signatures of report files (issue 13, point 3): written beside each report by
write_report and the daemon, checked by ``report verify --key`` and by plain OpenSSL; an
edited row with a recomputed TRAILER passes the TRAILER check and fails the signature."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.cli.main import main
from gateway.config import ConfigError, load_config
from gateway.errors import StartupError, StartupReason
from gateway.exits import Exit
from gateway.logs import JsonLog
from gateway.metrics import Metrics
from gateway.reports.files import verify_report, write_report
from gateway.reports.signing import (
    SignatureStatus,
    Signer,
    SigningKeyError,
    check_signature,
    fingerprint,
    load_public_key,
    signature_path,
    startup_signer,
)
from gateway.service import Gateway, sqlite_and_mqtt
from gateway.wire import SuppressionRecord

from .e2e_support import Broker, Home
from .test_faults import in_process, until

START = 1_894_611_600_000  # 2030-01-14T09:00:00Z
END = START + 3_600_000


def record(alert_id: str) -> SuppressionRecord:
    return SuppressionRecord(
        v=1,
        kind="suppression",
        alert_id=alert_id,
        chf_id=bytes.fromhex("00DB1234567890A0"),
        esme_id=bytes.fromhex("00DB123456789001"),
        raised_at=START + 61_234,
        received_at=START + 61_484,
        window_start=START,
        window_end=START + 1_800_000,
        request_id=None,
        originator=bytes.fromhex("90B3D51F30010000"),
        originator_counter=1000,
        activation="on-demand",
    )


RECORDS = [record("AD1-0001"), record("AD1-0002")]


def private_pem(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class Keys:
    """A DSP key pair generated for the test, in PEM files under ``folder``."""

    def __init__(self, folder: Path, name: str = "dsp") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.private = folder / f"{name}.key.pem"
        self.private.write_bytes(private_pem(self.key))
        self.private.chmod(0o600)
        self.public = folder / f"{name}.pub.pem"
        self.public.write_bytes(public_pem(self.key))
        self.signer = Signer.from_pem_file(self.private)


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "keys")


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(args)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def signed_report(outbox: Path, keys: Keys, *, xlsx: bool = False) -> Path:
    return write_report(
        outbox,
        RECORDS,
        report_id="1-2",
        period_start_ms=START,
        period_end_ms=END,
        version="0.1.0",
        xlsx=xlsx,
        signer=keys.signer,
    ).path


def forge(path: Path) -> None:
    """Edit a data row and recompute the TRAILER, as anyone can without the key."""
    lines = path.read_bytes().split(b"\r\n")
    assert lines[2].startswith(b"AD1-0001,")
    lines[2] = lines[2].replace(b"AD1-0001,", b"AD1-9999,", 1)
    trailer = next(i for i, line in enumerate(lines) if line.startswith(b"TRAILER,"))
    digest = hashlib.sha256(b"".join(line + b"\r\n" for line in lines[2:trailer])).hexdigest()
    without_mpan = lines[trailer].split(b",")[3].decode()  # the rest of the TRAILER, as it was
    lines[trailer] = f"TRAILER,{trailer - 2},{digest},{without_mpan}".encode()
    path.write_bytes(b"\r\n".join(lines))


# ---------------------------------------------------------------------------------------
# Writing and checking


def test_write_report_puts_a_signature_of_the_exact_bytes_beside_the_csv(
    tmp_path: Path, keys: Keys
) -> None:
    path = signed_report(tmp_path / "outbox", keys)
    sig = signature_path(path)
    assert sig.name == path.name + ".sig"
    # DER ECDSA over SHA-256 of the whole file, as `openssl dgst -sha256 -sign` writes.
    keys.key.public_key().verify(sig.read_bytes(), path.read_bytes(), ec.ECDSA(hashes.SHA256()))
    assert check_signature(path, keys.key.public_key()) == (SignatureStatus.OK, None)
    assert sig.stat().st_mode & 0o777 == 0o640  # like the report: the transfer group reads it
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, sig.name]


def test_writing_the_same_report_again_gives_the_same_signature(tmp_path: Path, keys: Keys) -> None:
    path = signed_report(tmp_path / "outbox", keys)
    first = signature_path(path).read_bytes()
    signed_report(tmp_path / "outbox", keys)
    assert signature_path(path).read_bytes() == first  # RFC 6979: idempotent, like the CSV


def test_an_xlsx_copy_gets_its_own_signature(tmp_path: Path, keys: Keys) -> None:
    path = signed_report(tmp_path / "outbox", keys, xlsx=True)
    xlsx = path.with_suffix(".xlsx")
    assert check_signature(xlsx, keys.key.public_key()) == (SignatureStatus.OK, None)
    assert check_signature(path, keys.key.public_key())[0] is SignatureStatus.OK


def test_without_a_signer_no_signature_is_written(tmp_path: Path) -> None:
    written = write_report(
        tmp_path, RECORDS, report_id="1-2", period_start_ms=START, period_end_ms=END, version="1"
    )
    assert not signature_path(written.path).exists()


def test_openssl_checks_the_signature_without_our_software(tmp_path: Path, keys: Keys) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl on this machine")
    path = signed_report(tmp_path / "outbox", keys)
    command = [openssl, "dgst", "-sha256", "-verify", str(keys.public)]
    command += ["-signature", str(signature_path(path)), str(path)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "Verified OK")
    forge(path)
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 1


# ---------------------------------------------------------------------------------------
# report verify --key


def test_verify_with_the_key_checks_the_trailer_and_the_signature(
    tmp_path: Path, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    path = signed_report(tmp_path / "outbox", keys)
    status, out, _ = cli(["report", "verify", str(path), "--key", str(keys.public)], capsys)
    assert status == Exit.OK
    assert re.fullmatch(
        rf"{re.escape(str(path))}: ok, 2 records, sha256 [0-9a-f]{{64}}, signature ok\n", out
    )
    status, out, _ = cli(
        ["report", "verify", "--json", "--key", str(keys.public), str(path)], capsys
    )
    result = json.loads(out)
    assert (status, result["ok"], result["signature"], result["problems"]) == (0, True, "ok", [])
    assert result["signature_file"] == str(signature_path(path))


def test_an_edited_row_with_a_recomputed_trailer_fails_only_the_signature(
    tmp_path: Path, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    path = signed_report(tmp_path / "outbox", keys)
    forge(path)
    # The forgery is good enough for the TRAILER: without the key, verify says ok ...
    assert verify_report(path).ok
    status, out, _ = cli(["report", "verify", str(path)], capsys)
    assert status == Exit.OK
    # ... and with the key it fails.
    status, out, _ = cli(["report", "verify", str(path), "--key", str(keys.public)], capsys)
    assert status == Exit.FAILED
    assert out == (
        f"{path}: signature {path.name}.sig does not match: the file was changed after it "
        "was signed, or signed with another key\n"
    )
    status, out, _ = cli(
        ["report", "verify", "--json", str(path), "--key", str(keys.public)], capsys
    )
    result = json.loads(out)
    assert (status, result["ok"], result["signature"]) == (Exit.FAILED, False, "bad")


def test_a_report_signed_with_another_key_fails(
    tmp_path: Path, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    path = signed_report(tmp_path / "outbox", keys)
    other = Keys(tmp_path / "other", "other")
    status, out, _ = cli(["report", "verify", str(path), "--key", str(other.public)], capsys)
    assert status == Exit.FAILED
    assert "does not match" in out
    assert check_signature(path, other.key.public_key())[0] is SignatureStatus.BAD


def test_a_missing_signature_fails_saying_so(
    tmp_path: Path, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    path = signed_report(tmp_path / "outbox", keys)
    signature_path(path).unlink()
    status, out, _ = cli(["report", "verify", str(path), "--key", str(keys.public)], capsys)
    assert status == Exit.FAILED
    assert out == f"{path}: no signature: {path.name}.sig is missing\n"
    status, out, _ = cli(
        ["report", "verify", "--json", str(path), "--key", str(keys.public)], capsys
    )
    assert json.loads(out)["signature"] == "missing"


def test_a_truncated_or_garbage_signature_fails(tmp_path: Path, keys: Keys) -> None:
    path = signed_report(tmp_path / "outbox", keys)
    sig = signature_path(path)
    good = sig.read_bytes()
    for bad in (good[:-1], b"", b"\x00" * 64, good + b"\x00"):
        sig.write_bytes(bad)
        assert check_signature(path, keys.key.public_key())[0] is SignatureStatus.BAD, bad


def test_a_trailer_problem_and_a_bad_signature_are_both_listed(
    tmp_path: Path, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    path = signed_report(tmp_path / "outbox", keys)
    path.write_bytes(path.read_bytes().replace(b"TRAILER,2,", b"TRAILER,1,"))
    status, out, _ = cli(["report", "verify", str(path), "--key", str(keys.public)], capsys)
    assert status == Exit.FAILED
    assert out.splitlines() == [
        f"{path}: line 5: TRAILER says 1 records, the file has 2",
        f"{path}: signature {path.name}.sig does not match: the file was changed after it "
        "was signed, or signed with another key",
    ]


def test_a_certificate_serves_as_the_public_key(tmp_path: Path, keys: Keys) -> None:
    import datetime as dt

    from cryptography import x509

    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "DSP reports")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(keys.key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(keys.key, hashes.SHA256())
    )
    pem = tmp_path / "dsp.crt.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    assert fingerprint(load_public_key(pem)) == fingerprint(keys.key.public_key())


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (None, "cannot read: No such file or directory"),
        (b"not a key", "not a PEM public key or certificate"),
        ("private", "a private key: give the public key (openssl pkey -pubout)"),
        ("p384", "not an ECDSA P-256 public key"),
    ],
)
def test_an_unusable_public_key_is_bad_input(
    tmp_path: Path,
    keys: Keys,
    capsys: pytest.CaptureFixture[str],
    content: bytes | str | None,
    why: str,
) -> None:
    path = signed_report(tmp_path / "outbox", keys)
    pub = tmp_path / "given.pem"
    if content == "private":
        pub.write_bytes(keys.private.read_bytes())
    elif content == "p384":
        pub.write_bytes(public_pem(ec.generate_private_key(ec.SECP384R1())))
    elif isinstance(content, bytes):
        pub.write_bytes(content)
    status, out, err = cli(["report", "verify", str(path), "--key", str(pub)], capsys)
    assert (status, out) == (Exit.USAGE, "")
    assert err == f"poa-gateway report verify: --key {pub}: {why}\n"
    assert "PRIVATE" not in err


# ---------------------------------------------------------------------------------------
# The DSP's private key


def test_unusable_private_keys_are_refused_naming_the_file(tmp_path: Path) -> None:
    cases: dict[str, bytes] = {
        "p384": private_pem(ec.generate_private_key(ec.SECP384R1())),
        "ed25519": private_pem(ed25519.Ed25519PrivateKey.generate()),
        "encrypted": ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        ),
        "garbage": b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    }
    expected = {
        "p384": "an ECDSA key on secp384r1, not P-256 (secp256r1)",
        "ed25519": "not an ECDSA key: reports are signed with P-256",
        "encrypted": "the key is encrypted; give the daemon an unencrypted key readable only "
        "by its user",
        "garbage": "not a PEM private key",
        "missing": "cannot read: No such file or directory",
    }
    for name, why in expected.items():
        path = tmp_path / f"{name}.pem"
        if name in cases:
            path.write_bytes(cases[name])
        with pytest.raises(SigningKeyError) as info:
            Signer.from_pem_file(path)
        assert str(info.value) == f"{path}: {why}"


def test_the_signer_never_shows_its_key(keys: Keys) -> None:
    secret = keys.key.private_numbers().private_value
    assert str(secret) not in repr(keys.signer)
    assert f"{secret:x}" not in repr(keys.signer)
    assert fingerprint(keys.key.public_key())[:16] in repr(keys.signer)


def _log() -> tuple[JsonLog, io.StringIO]:
    out = io.StringIO()
    return JsonLog(out, level="debug"), out


def _events(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_no_signing_key_leaves_reports_unsigned_and_says_so() -> None:
    log, out = _log()
    assert startup_signer("", log) is None
    log.flush()
    (event,) = _events(out)
    assert (event["event"], event["level"]) == ("reports.unsigned", "info")


def test_a_signing_key_is_logged_by_its_fingerprint_only(keys: Keys) -> None:
    log, out = _log()
    signer = startup_signer(str(keys.private), log)
    assert signer is not None
    log.flush()
    (event,) = _events(out)
    assert event["event"] == "reports.signing"
    assert event["fingerprint"] == fingerprint(keys.key.public_key())
    pem_body = keys.private.read_text().splitlines()[1]
    assert pem_body not in out.getvalue()


def test_an_unusable_signing_key_stops_the_start_naming_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "dsp.key.pem"
    path.write_bytes(private_pem(ed25519.Ed25519PrivateKey.generate()))
    log, _ = _log()
    with pytest.raises(StartupError) as info:
        startup_signer(str(path), log)
    assert info.value.reason is StartupReason.SIGNING_KEY
    assert str(info.value) == (
        f"reports.signing_key: {path}: not an ECDSA key: reports are signed with P-256"
    )


def test_the_signing_key_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "gateway.toml"
    config.parent.mkdir()
    config.write_text('[reports]\nsigning_key = "keys/dsp.key.pem"\n')
    loaded = load_config(config, env={})
    assert loaded.reports.signing_key == str(tmp_path / "etc" / "keys" / "dsp.key.pem")
    assert load_config(None, env={}).reports.signing_key == ""
    config.write_text('[reports]\nsigning_key = "a\\nb"\n')
    with pytest.raises(ConfigError) as info:
        load_config(config, env={})
    assert info.value.key == "reports.signing_key"


# ---------------------------------------------------------------------------------------
# The daemon


def test_the_gateway_refuses_to_load_with_an_unusable_signing_key(
    tmp_path: Path, keys: Keys
) -> None:
    bad = tmp_path / "p384.pem"
    bad.write_bytes(private_pem(ec.generate_private_key(ec.SECP384R1())))
    home = Home(tmp_path / "gw", 1, reports={"signing_key": str(bad)})
    config = load_config(home.config, env={})
    open_store, make_transport = sqlite_and_mqtt(config)
    log, _ = _log()
    gateway = Gateway(
        config, log=log, metrics=Metrics(), open_store=open_store, make_transport=make_transport
    )
    with pytest.raises(StartupError) as info:
        gateway.load()
    assert info.value.reason is StartupReason.SIGNING_KEY
    assert "reports.signing_key" in str(info.value)


@pytest.mark.e2e
@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_the_daemon_signs_every_report_it_writes(
    tmp_path: Path, broker: Broker, keys: Keys
) -> None:
    # A one-second period: the daemon writes (empty) reports within seconds, whatever
    # their records, and each must carry a signature that verifies with the DSP's key.
    home = Home(
        tmp_path / "gw", broker.port, reports={"period": "1s", "signing_key": str(keys.private)}
    )
    config = load_config(home.config, env={})
    outbox = config.paths.outbox
    async with in_process(config) as (_gateway, lines, _metrics):
        assert [e["fingerprint"] for e in lines.events("reports.signing")] == [
            fingerprint(keys.key.public_key())
        ]
        assert lines.events("reports.unsigned") == []
        await until(lambda: lines.events("report.written"), "a report")
    reports = sorted(outbox.glob("*.csv"))
    assert reports
    for path in reports:
        # Summaries (gateway/reports/summary.py) are signed too, but are not reports.
        assert path.stem.endswith("-summary") or verify_report(path).ok
        assert check_signature(path, keys.key.public_key()) == (SignatureStatus.OK, None)


# ---------------------------------------------------------------------------------------
# The hand-off to the DCC's file transfer (issue 13, point 8): the example units

UNITS = Path(__file__).resolve().parent.parent / "systemd"


def test_the_delivery_units_are_sound_for_systemd(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("no systemd-analyze on this machine")
    names = ["poa-gateway-reports.path", "poa-gateway-reports.service"]
    for name in names:
        shutil.copy(UNITS / name, tmp_path / name)
    done = subprocess.run(
        [analyze, "verify", *(str(tmp_path / name) for name in names)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert (done.returncode, done.stderr) == (0, "")


def _delivery_script() -> str:
    # The service's ExecStart, as systemd hands it to sh: continuations joined, "$$" a "$".
    unit = (UNITS / "poa-gateway-reports.service").read_text()
    match = re.search(r"^ExecStart=/bin/sh -eu -c '(.*?)'$", unit, re.MULTILINE | re.DOTALL)
    assert match is not None
    return match[1].replace("\\\n", " ").replace("$$", "$")


def test_the_delivery_service_sends_each_report_with_its_signature_then_moves_it(
    tmp_path: Path, keys: Keys
) -> None:
    outbox = tmp_path / "outbox"
    first = signed_report(outbox, keys, xlsx=True)
    log = tmp_path / "delivered"
    deliver = tmp_path / "deliver"
    # A stand-in for the transfer: records its arguments, fails while "refuse" exists.
    deliver.write_text(f'#!/bin/sh\n[ -e {tmp_path}/refuse ] && exit 1\necho "$@" >> {log}\n')
    deliver.chmod(0o755)
    env = {"OUTBOX": str(outbox), "DELIVER": str(deliver), "PATH": "/usr/bin:/bin"}

    def run() -> int:
        done = subprocess.run(
            ["/bin/sh", "-eu", "-c", _delivery_script()], env=env, check=False, timeout=60
        )
        return done.returncode

    (tmp_path / "refuse").touch()
    assert run() != 0  # not confirmed: nothing moves, nothing is deleted
    assert sorted(p.name for p in outbox.iterdir()) == sorted(
        [first.name, first.name + ".sig", first.stem + ".xlsx", first.stem + ".xlsx.sig", "sent"]
    )
    assert list((outbox / "sent").iterdir()) == []
    (tmp_path / "refuse").unlink()
    assert run() == 0
    sent = outbox / "sent"
    assert log.read_text().split() == [
        str(first),
        str(outbox / (first.name + ".sig")),
        str(outbox / (first.stem + ".xlsx")),
        str(outbox / (first.stem + ".xlsx.sig")),
    ]
    assert [p.name for p in outbox.iterdir()] == ["sent"]
    assert check_signature(sent / first.name, keys.key.public_key())[0] is SignatureStatus.OK
    assert run() == 0  # a wake-up with nothing new sends nothing again
    assert len(log.read_text().splitlines()) == 1


def test_a_signature_of_the_digest_is_the_signature_of_the_bytes(keys: Keys) -> None:
    # The report writer hashes a CSV as it streams it and signs the digest: the .sig
    # must be what signing the file's bytes gives (RFC 6979: deterministic).
    signer = Signer(keys.key)
    data = b"HEADER,...\r\n" * 1000
    by_digest = signer.sign_digest(hashlib.sha256(data).digest())
    assert by_digest == signer.sign(data)
    keys.key.public_key().verify(by_digest, data, ec.ECDSA(hashes.SHA256()))
