"""Report content (issue 13, point 2): the MPAN, distributor and alert code of each
record, the HEADER's rules in force, the DNO layout without the Supplier's identity,
distributors' files, and the layout as a declared profile changeable without code."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import msgspec
import pytest

from gateway.core.mpan import GB_AREAS
from gateway.exits import Exit
from gateway.reports.files import (
    by_distributor,
    read_report,
    verify_report,
    write_report,
)
from gateway.reports.profile import (
    BUILTIN_PROFILES,
    COLUMN_FIELDS,
    HEADER_FIELDS,
    TRAILER_FIELDS,
    ProfileError,
    builtin_profile,
    load_profile,
)

from .test_reports import END, ESME, MPAN, START, SUPPLIER, _cli, record

OTHER_ESME = bytes.fromhex("00DB1234567890B0")
OTHER_MPAN = "2312345678900"  # Yorkshire (NPg)
IDNO_MPAN = "2412345678904"  # an IDNO's id: valid, not a GB area
GUIDS = "ab" * 32

EXPECTED_DNO = (
    "HEADER,POA-SUPPRESSION_20300114T090000Z_PT1H-001,PT1H-001,2030-01-14T09:00:00.000Z,"
    f"2030-01-14T10:00:00.000Z,poa-gateway,0.1.0,dno,all,all distributors,{GUIDS},PT30M,"
    "PT2M\r\n"
    "alert_id,alert_code,mpan,distributor_id,distributor,chf_id,esme_id,raised_at,"
    "received_at,window_start,window_end,activation\r\n"
    "AD1-0001,AD1,1012345678903,10,Eastern (UKPN),00-DB-12-34-56-78-90-A0,"
    "00-DB-12-34-56-78-90-01,2030-01-14T09:01:01.234Z,2030-01-14T09:01:01.484Z,"
    "2030-01-14T09:00:00.000Z,2030-01-14T09:30:00.000Z,on-demand\r\n"
    "AD1-0002,AD1,,,,00-DB-12-34-56-78-90-A0,00-DB-12-34-56-78-90-B0,"
    "2030-01-14T09:01:01.234Z,2030-01-14T09:01:01.484Z,2030-01-14T09:00:00.000Z,"
    "2030-01-14T09:30:00.000Z,on-demand\r\n"
)


def dno_report(outbox: Path, **kwargs: object) -> Path:
    other = msgspec.structs.replace(record("AD1-0002"), esme_id=OTHER_ESME)
    options: dict[str, object] = {
        "report_id": "PT1H-001",
        "period_start_ms": START,
        "period_end_ms": END,
        "version": "0.1.0",
        "mpans": {ESME: MPAN},  # OTHER_ESME has none
        "guid_list_sha256": GUIDS,
        "window_ms": 30 * 60_000,
        "lead_ms": 2 * 60_000,
        **kwargs,
    }
    return write_report(outbox, [record("AD1-0001"), other], **options).path  # type: ignore[arg-type]


def test_the_dno_report_is_keyed_on_mpan_and_distributor_and_names_the_rules_in_force(
    tmp_path: Path,
) -> None:
    path = dno_report(tmp_path)
    data = path.read_bytes().decode()
    body = EXPECTED_DNO.split("\r\n", 2)[2].encode()
    # One record's meter has no MPAN: empty cells, counted in the TRAILER, not dropped.
    assert data == f"{EXPECTED_DNO}TRAILER,2,{hashlib.sha256(body).hexdigest()},1\r\n"
    # The Supplier's identity, request id and counter are the DSP's, not the DNO's.
    for private in ("request_id", "originator", "90-B3-D5-1F-30-01-00-00"):
        assert private not in data
    contents = read_report(path)
    assert contents.header["guid_list_sha256"] == GUIDS
    assert (contents.header["window"], contents.header["lead"]) == ("PT30M", "PT2M")
    assert contents.trailer["records_without_mpan"] == "1"
    first, second = contents.records
    assert (first.mpan, first.distributor_id, first.distributor) == (MPAN, "10", "Eastern (UKPN)")
    assert (second.mpan, second.distributor_id, second.distributor) == (None, None, None)
    assert first.alert_code == second.alert_code == "AD1"
    assert first.originator is None  # not in the file


def test_the_dsp_profile_keeps_the_supplier_columns(tmp_path: Path) -> None:
    path = dno_report(tmp_path, profile=builtin_profile("dsp"))
    contents = read_report(path)  # the HEADER names the profile: no --profile needed
    assert contents.header["profile"] == "dsp"
    assert contents.records[0].originator == SUPPLIER
    assert contents.records[0].originator_counter == 1000
    assert contents.records[0].request_id is not None


def _tamper(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new, 1))


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        (b",10,Eastern (UKPN),", b",12,Eastern (UKPN),", "does not agree with the MPAN"),
        (b",10,Eastern (UKPN),", b",10,London (UKPN),", "does not name distributor id"),
        (b"1012345678903", b"1012345678904", "check digit is 4"),
        (b"1012345678903", b"1012 3456 789", "is not 13 digits"),
        (b",PT30M,", b",30 minutes,", "window: '30 minutes' is not a duration"),
        (b",dno,all,", b",dno,99,", "scope_name: 'all distributors' does not name scope 99"),
    ],
)
def test_verify_checks_the_mpan_the_distributor_and_the_header(
    tmp_path: Path, old: bytes, new: bytes, problem: str
) -> None:
    path = dno_report(tmp_path)
    _tamper(path, old, new)
    problems = verify_report(path).problems
    assert any(problem in p for p in problems), problems


def test_a_trailer_with_the_wrong_count_of_records_without_mpan_fails(tmp_path: Path) -> None:
    path = dno_report(tmp_path)
    lines = path.read_bytes().split(b"\r\n")
    lines[-2] = lines[-2][:-1] + b"0"  # "...,1" -> "...,0": the count is not in the digest
    path.write_bytes(b"\r\n".join(lines))
    assert verify_report(path).problems == [
        "line 5: TRAILER says 0 records without an MPAN, the file has 1"
    ]


def test_each_distributor_gets_a_file_every_period_and_records_without_mpan_stay_out(
    tmp_path: Path,
) -> None:
    third = bytes.fromhex("00DB1234567890C0")
    fourth = bytes.fromhex("00DB1234567890D0")
    records = [
        record("a"),
        msgspec.structs.replace(record("b"), esme_id=OTHER_ESME),
        msgspec.structs.replace(record("c"), esme_id=third),
        record("d"),
        msgspec.structs.replace(record("e"), esme_id=fourth),
    ]
    mpans = {ESME: MPAN, OTHER_ESME: OTHER_MPAN, third: IDNO_MPAN}  # fourth: none
    split = by_distributor(records, mpans)
    assert set(GB_AREAS) <= set(split)  # every GB area, with records or without
    assert [r.alert_id for r in split["10"]] == ["a", "d"]
    assert [r.alert_id for r in split["23"]] == ["b"]
    assert [r.alert_id for r in split["24"]] == ["c"]  # an IDNO's id gets its file too
    assert split["12"] == []
    assert sum(len(v) for v in split.values()) == 4  # "e" has no MPAN: in no distributor's
    path = write_report(
        tmp_path,
        split["23"],
        report_id="PT1H-001-D23",
        period_start_ms=START,
        period_end_ms=END,
        version="1",
        mpans=mpans,
        distributor="23",
    ).path
    contents = read_report(path)
    assert (contents.header["scope"], contents.header["scope_name"]) == ("23", "Yorkshire (NPg)")
    assert [r.alert_id for r in contents.records] == ["b"]
    # A record of another distributor in a distributor's file is found.
    _tamper(path, b",2312345678900,23,Yorkshire (NPg),", b",1012345678903,10,Eastern (UKPN),")
    assert any("in the file of distributor 23" in p for p in verify_report(path).problems)


# ---------------------------------------------------------------------------------------
# Profiles


def test_the_built_in_profiles_use_only_known_names_and_the_dno_one_has_no_supplier_identity() -> (
    None
):
    for name in BUILTIN_PROFILES:
        profile = builtin_profile(name)
        assert set(profile.header) <= set(HEADER_FIELDS)
        assert set(profile.columns) <= set(COLUMN_FIELDS)
        assert set(profile.trailer) <= set(TRAILER_FIELDS)
    dno = builtin_profile("dno")
    assert not {"request_id", "originator", "originator_counter"} & set(dno.columns)
    assert {"mpan", "distributor_id", "distributor", "alert_code"} <= set(dno.columns)
    assert {"guid_list_sha256", "window", "lead"} <= set(dno.header)


ESI = """\
name = "esi-draft"
header_tag = "HDR"
trailer_tag = "TRL"
header = ["report_id", "period_start", "period_end", "scope"]
columns = ["mpan", "alert_id", "raised_at"]
trailer = ["sha256", "records"]
"""


def test_a_profile_file_changes_the_layout_without_code(tmp_path: Path) -> None:
    (tmp_path / "esi.toml").write_text(ESI)
    profile = load_profile("esi.toml", tmp_path)
    path = dno_report(tmp_path / "out", profile=profile)
    rows = list(csv.reader(io.StringIO(path.read_text(), newline="")))
    assert rows[0] == [
        "HDR",
        "PT1H-001",
        "2030-01-14T09:00:00.000Z",
        "2030-01-14T10:00:00.000Z",
        "all",
    ]
    assert rows[1] == ["mpan", "alert_id", "raised_at"]
    assert rows[2] == [MPAN, "AD1-0001", "2030-01-14T09:01:01.234Z"]
    assert rows[-1][0] == "TRL"
    assert rows[-1][2] == "2"
    assert verify_report(path, profile).ok
    # Read with the wrong profile, it fails plainly rather than misreading.
    assert verify_report(path).problems[0].startswith("line 1: expected a HEADER record")
    assert _cli(["report", "verify", "--profile", str(tmp_path / "esi.toml"), str(path)]) == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ('columns = ["alert_id", "mpna"]', "columns[1]: 'mpna' is not a report column"),
        ('columns = ["alert_id", "alert_id"]', "columns[1]: 'alert_id' appears twice"),
        ('columns = ["mpan"]', "columns: must include 'alert_id'"),
        ('trailer = ["records"]', "trailer: must include 'sha256'"),
        ('header = ["report_id", "period_start"]', "header: must include 'period_end'"),
        ('trailer_tag = "HDR"', "trailer_tag: must differ from header_tag"),
        ('name = "a b"', "name: 'a b'"),
        ("colour = 1", "colour: unknown key"),
        ("columns = 3", "columns"),
    ],
)
def test_a_broken_profile_is_refused_naming_the_key(
    tmp_path: Path, change: str, message: str
) -> None:
    key = change.split(" = ", maxsplit=1)[0]
    kept = [line for line in ESI.splitlines() if not line.startswith(f"{key} =")]
    (tmp_path / "p.toml").write_text("\n".join([*kept, change]) + "\n")
    with pytest.raises(ProfileError) as info:
        load_profile(str(tmp_path / "p.toml"))
    assert message in str(info.value)
    assert str(tmp_path / "p.toml") in str(info.value)


def test_an_unknown_profile_name_or_unreadable_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="not a built-in profile"):
        load_profile("esi")
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(str(tmp_path / "missing.toml"))
    (tmp_path / "bad.toml").write_text("name = [")
    with pytest.raises(ProfileError, match="invalid TOML"):
        load_profile(str(tmp_path / "bad.toml"))


def test_report_verify_refuses_a_bad_profile_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = dno_report(tmp_path)
    assert _cli(["report", "verify", "--profile", "esi", str(path)]) == Exit.USAGE
    assert "--profile esi: not a built-in profile" in capsys.readouterr().err
    assert _cli(["report", "verify", str(path)]) == Exit.OK
