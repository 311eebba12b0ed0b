"""Suppression report files: layout, verification, atomic writes, xlsx copy, rotation, CLI."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, NoReturn, cast

import msgspec
import openpyxl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cli.report import add_parser
from gateway.exits import Exit
from gateway.reports.files import (
    EMPTY_SHA256,
    REPORT_SHEET_TITLE,
    SHEET_TITLE,
    XLSX_TIME_FORMAT,
    ReportError,
    ReportRow,
    Rotation,
    format_time,
    parse_time,
    read_report,
    verify_report,
    write_report,
)
from gateway.reports.profile import builtin_profile
from gateway.wire import SuppressionRecord

HOUR = 3_600_000
START = 1_894_611_600_000  # 2030-01-14T09:00:00Z
END = START + HOUR
CHF = bytes.fromhex("00DB1234567890A0")
ESME = bytes.fromhex("00DB123456789001")
SUPPLIER = bytes.fromhex("90B3D51F30010000")
MPAN = "1012345678903"  # Eastern (UKPN); check digit 3
MPANS = {ESME: MPAN}
DSP = builtin_profile("dsp")  # every column: these tests exercise each one
COLUMNS = DSP.columns


def record(
    alert_id: str = "AD1-0001",
    *,
    request_id: str | None = "90-B3-D5-1F-30-01-00-00:00-DB-12-34-56-78-90-01:1000",
    raised_at: int = START + 61_234,
    counter: int = 1000,
) -> SuppressionRecord:
    return SuppressionRecord(
        v=1,
        kind="suppression",
        alert_id=alert_id,
        chf_id=CHF,
        esme_id=ESME,
        raised_at=raised_at,
        received_at=raised_at + 250,
        window_start=START,
        window_end=START + 30 * 60_000,
        request_id=request_id,
        originator=SUPPLIER,
        originator_counter=counter,
        activation="on-demand",
    )


TWO = [record("AD1-0001"), record("AD1-0002", request_id=None, counter=2**63 + 5)]

EXPECTED_TWO = (
    "HEADER,POA-SUPPRESSION_20300114T090000Z_42-43,42-43,2030-01-14T09:00:00.000Z,"
    "2030-01-14T10:00:00.000Z,poa-gateway,0.1.0,dsp,all,all distributors,,,\r\n"
    "alert_id,alert_code,mpan,distributor_id,distributor,chf_id,esme_id,raised_at,"
    "received_at,window_start,window_end,activation,request_id,originator,"
    "originator_counter\r\n"
    "AD1-0001,AD1,1012345678903,10,Eastern (UKPN),00-DB-12-34-56-78-90-A0,"
    "00-DB-12-34-56-78-90-01,2030-01-14T09:01:01.234Z,2030-01-14T09:01:01.484Z,"
    "2030-01-14T09:00:00.000Z,2030-01-14T09:30:00.000Z,on-demand,"
    "90-B3-D5-1F-30-01-00-00:00-DB-12-34-56-78-90-01:1000,90-B3-D5-1F-30-01-00-00,1000\r\n"
    "AD1-0002,AD1,1012345678903,10,Eastern (UKPN),00-DB-12-34-56-78-90-A0,"
    "00-DB-12-34-56-78-90-01,2030-01-14T09:01:01.234Z,2030-01-14T09:01:01.484Z,"
    "2030-01-14T09:00:00.000Z,2030-01-14T09:30:00.000Z,on-demand,,"
    "90-B3-D5-1F-30-01-00-00,9223372036854775813\r\n"
)


def write(
    outbox: Path, records: list[SuppressionRecord], *, report_id: str = "42-43", xlsx: bool = False
) -> Path:
    return write_report(
        outbox,
        records,
        report_id=report_id,
        period_start_ms=START,
        period_end_ms=END,
        version="0.1.0",
        xlsx=xlsx,
        profile=DSP,
        mpans=MPANS,
    ).path


def as_row(r: SuppressionRecord, mpan: str | None = MPAN) -> ReportRow:
    """What a dsp-profile report holds of a record (and what read_report gives back)."""
    return ReportRow(
        alert_id=r.alert_id,
        alert_code="AD1",
        mpan=mpan,
        distributor_id=None if mpan is None else mpan[:2],
        distributor=None if mpan is None else "Eastern (UKPN)",
        chf_id=r.chf_id,
        esme_id=r.esme_id,
        raised_at=r.raised_at,
        received_at=r.received_at,
        window_start=r.window_start,
        window_end=r.window_end,
        activation=r.activation,
        request_id=r.request_id,
        originator=r.originator,
        originator_counter=r.originator_counter,
    )


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


# ---------------------------------------------------------------------------------------
# Layout


def test_a_report_of_two_records_has_header_columns_records_and_trailer(tmp_path: Path) -> None:
    written = write_report(
        tmp_path / "outbox",
        TWO,
        report_id="42-43",
        period_start_ms=START,
        period_end_ms=END,
        version="0.1.0",
        profile=DSP,
        mpans=MPANS,
    )
    data = written.path.read_bytes()
    records = EXPECTED_TWO.split("\r\n", 2)[2].encode()
    digest = hashlib.sha256(records).hexdigest()
    assert data.decode() == f"{EXPECTED_TWO}TRAILER,2,{digest},0\r\n"
    assert not data.startswith(b"\xef\xbb\xbf")
    assert written.name == "POA-SUPPRESSION_20300114T090000Z_42-43.csv"
    assert written.path == tmp_path / "outbox" / written.name
    assert (written.records, written.sha256, written.report_id) == (2, digest, "42-43")
    assert (written.period_start_ms, written.period_end_ms, written.xlsx_path) == (START, END, None)
    assert written.notice() == msgspec.convert(
        {
            "v": 1,
            "kind": "report",
            "name": written.name,
            "report_id": "42-43",
            "period_start": START,
            "period_end": END,
            "records": 2,
            "sha256": digest,
        },
        type(written.notice()),
    )


def test_the_trailer_digest_is_over_lines_3_to_the_one_before_the_trailer(tmp_path: Path) -> None:
    path = write(tmp_path, TWO)
    body = b"".join(lines(path)[2:-1])
    assert lines(path)[-1] == f"TRAILER,2,{hashlib.sha256(body).hexdigest()},0\r\n".encode()


def test_name_prefix_generator_and_version_go_into_the_name_and_header(tmp_path: Path) -> None:
    written = write_report(
        tmp_path,
        [],
        report_id="S000001-S000000",
        period_start_ms=START + 123,
        period_end_ms=END,
        name_prefix="DNO-EPN",
        generator="poa gateway, site A",
        version="1.2.3",
    )
    assert written.name == "DNO-EPN_20300114T090000Z_S000001-S000000.csv"
    header = next(csv.reader(io.StringIO(written.path.read_text(), newline="")))
    assert header == [
        "HEADER",
        "DNO-EPN_20300114T090000Z_S000001-S000000",
        "S000001-S000000",
        "2030-01-14T09:00:00.123Z",
        "2030-01-14T10:00:00.000Z",
        "poa gateway, site A",
        "1.2.3",
        "dno",
        "all",
        "all distributors",
        "",
        "",
        "",
    ]
    assert verify_report(written.path).ok


def test_an_empty_period_gives_a_valid_report_of_zero_records(tmp_path: Path) -> None:
    written = write_report(
        tmp_path, [], report_id="none", period_start_ms=START, period_end_ms=END, version="0.1.0"
    )
    assert lines(written.path)[2:] == [f"TRAILER,0,{EMPTY_SHA256},0\r\n".encode()]
    assert written.records == 0
    assert written.sha256 == EMPTY_SHA256 == hashlib.sha256(b"").hexdigest()
    check = verify_report(written.path)
    assert (check.ok, check.records, check.sha256, check.problems) == (True, 0, EMPTY_SHA256, [])
    assert read_report(written.path).records == []


def test_writing_the_same_inputs_again_gives_the_same_file(tmp_path: Path) -> None:
    first = write(tmp_path, TWO)
    before = first.read_bytes()
    second = write(tmp_path, TWO)
    assert second == first
    assert second.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]


def test_the_outbox_is_created_and_not_world_readable(tmp_path: Path) -> None:
    path = write(tmp_path / "a" / "outbox", TWO)
    assert path.parent.stat().st_mode & 0o007 == 0
    assert path.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"report_id": "../etc"}, "report_id '../etc'"),
        ({"report_id": ".hidden"}, "report_id '.hidden'"),
        ({"report_id": ""}, "report_id ''"),
        ({"name_prefix": "a b"}, "name_prefix 'a b'"),
        ({"period_end_ms": START - 1}, "need 0 <= start <= end"),
        ({"period_start_ms": 253_402_300_800_000, "period_end_ms": 253_402_300_800_000}, "9999"),
        ({"version": ""}, "version ''"),
        ({"generator": "a\nb"}, "generator 'a\\nb'"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_written(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    kwargs: dict[str, Any] = {
        "report_id": "1-2",
        "period_start_ms": START,
        "period_end_ms": END,
        "version": "0.1.0",
        **change,
    }
    with pytest.raises(ValueError, match=message.replace("\\", "\\\\").replace(".", r"\.")):
        write_report(tmp_path / "outbox", TWO, **kwargs)
    assert not (tmp_path / "outbox").exists()


def test_a_record_that_cannot_be_written_is_named_by_position_and_alert_id(tmp_path: Path) -> None:
    bad = msgspec.structs.replace(record("AD1-bad"), esme_id=b"\x00\xdb\x12")
    with pytest.raises(ValueError, match=r"record 1 \(alert_id 'AD1-bad'\): esme_id is 3 bytes"):
        write_report(
            tmp_path, [TWO[0], bad], report_id="1", period_start_ms=START, period_end_ms=END,
            version="0.1.0",
        )  # fmt: skip
    too_long = record("AD1-long", request_id="x" * 40_000)
    with pytest.raises(ValueError, match=r"AD1-long.*40,000 characters"):
        write(tmp_path, [too_long])
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------
# Verification


def test_a_written_report_verifies(tmp_path: Path) -> None:
    written = write_report(
        tmp_path, TWO, report_id="42-43", period_start_ms=START, period_end_ms=END, version="1"
    )
    check = verify_report(written.path)
    assert check.ok
    assert check.problems == []
    assert (check.records, check.sha256) == (2, written.sha256)


def _tamper(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, new))


def test_a_changed_data_byte_fails_on_the_digest_naming_the_trailer_line(tmp_path: Path) -> None:
    path = write(tmp_path, TWO)
    _tamper(path, b"AD1-0002", b"AD1-0003")
    check = verify_report(path)
    assert not check.ok
    assert check.records == 2
    assert len(check.problems) == 1
    assert check.problems[0].startswith("line 5: SHA-256 of the data records (lines 3-4) is ")
    assert "the records were changed" in check.problems[0]


def test_a_changed_eui_is_named_by_its_own_line_too(tmp_path: Path) -> None:
    path = write(tmp_path, TWO)
    data = lines(path)
    data[3] = data[3].replace(b"00-DB-12-34-56-78-90-01", b"00-DB-12-34-56-78-90-0G")
    path.write_bytes(b"".join(data))
    problems = verify_report(path).problems
    assert (
        problems[0] == "line 4: esme_id: EUI-64 '00-DB-12-34-56-78-90-0G': 'G' is not a hex digit"
    )
    assert problems[1].startswith("line 5: SHA-256 of the data records")


def test_a_removed_data_line_fails_on_count_and_digest(tmp_path: Path) -> None:
    path = write(tmp_path, TWO)
    data = lines(path)
    path.write_bytes(b"".join(data[:3] + data[4:]))
    check = verify_report(path)
    assert not check.ok
    assert check.records == 1
    assert check.problems[0] == "line 4: TRAILER says 2 records, the file has 1"
    assert check.problems[1].startswith("line 4: SHA-256 of the data records (lines 3-3)")


def test_a_changed_count_fails_naming_the_trailer_line(tmp_path: Path) -> None:
    path = write(tmp_path, TWO)
    _tamper(path, b"TRAILER,2,", b"TRAILER,3,")
    assert verify_report(path).problems == ["line 5: TRAILER says 3 records, the file has 2"]


def test_a_missing_trailer_fails_naming_the_last_line(tmp_path: Path) -> None:
    path = write(tmp_path, TWO)
    path.write_bytes(b"".join(lines(path)[:-1]))
    check = verify_report(path)
    assert not check.ok
    assert check.problems == [
        "line 4: the last record is not a TRAILER record: the file is incomplete "
        "(it ends at line 4)"
    ]


def test_a_file_cut_inside_a_record_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, TWO)
    path.write_bytes(path.read_bytes()[:-100])
    assert verify_report(path).problems == [
        "line 4: the last record is not a TRAILER record: the file is incomplete "
        "(it ends at line 4)",
        "line 4: a data record has 15 fields, found 14 fields",
    ]


def test_a_trailer_that_is_not_last_fails(tmp_path: Path) -> None:
    path = write(tmp_path, TWO)
    data = lines(path)
    path.write_bytes(b"".join([*data, data[2]]))
    problems = verify_report(path).problems
    assert "line 5: a TRAILER record that is not the last record" in problems
    assert any(p.startswith("line 6: the last record is not a TRAILER") for p in problems)


def test_a_damaged_header_and_column_line_are_named(tmp_path: Path) -> None:
    path = write(tmp_path, TWO)
    _tamper(path, b"2030-01-14T10:00:00.000Z,", b"2030-01-14T10:00:00Z,")
    _tamper(path, b"raised_at,", b"raised,")
    problems = verify_report(path).problems
    assert problems[0] == (
        "line 1: HEADER: period_end: '2030-01-14T10:00:00Z' is not a time like "
        "2030-01-15T09:00:00.000Z"
    )
    assert problems[1].startswith("line 2: expected the column names alert_id,alert_code,mpan,")
    assert len(problems) == 2


def test_a_file_that_is_not_a_report_is_refused_at_line_1(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"")
    assert verify_report(path).problems == ["line 1: the file is empty: expected a HEADER record"]
    path.write_bytes(b"alert_id,chf_id\r\n")
    assert verify_report(path).problems[0] == "line 1: expected a HEADER record, found 'alert_id'"
    path.write_bytes(b"PK\x03\x04rest")
    assert verify_report(path).problems == [
        "line 1: this is a zip file (an .xlsx copy?); verify the .csv report"
    ]


def test_line_endings_converted_to_lf_are_reported(tmp_path: Path) -> None:
    path = write(tmp_path, TWO)
    path.write_bytes(path.read_bytes().replace(b"\r\n", b"\n"))
    problems = verify_report(path).problems
    assert (
        "line 1: record ends with LF, not CRLF (and 4 more): were the line endings converted?"
        in problems
    )


def test_data_records_with_the_wrong_number_of_columns_are_named(tmp_path: Path) -> None:
    path = write(tmp_path, TWO)
    data = lines(path)
    data[2] = b"AD1-0001,00-DB-12-34-56-78-90-A0\r\n"
    data[3] = b"\r\n"
    path.write_bytes(b"".join(data))
    problems = verify_report(path).problems
    assert problems[:2] == [
        "line 3: a data record has 15 fields, found 2 fields",
        "line 4: a data record has 15 fields, found an empty line",
    ]


def test_an_alert_id_spelled_like_a_record_type_is_just_data(tmp_path: Path) -> None:
    path = write(tmp_path, [record("TRAILER"), record("HEADER")])
    assert verify_report(path).ok
    assert [r.alert_id for r in read_report(path).records] == ["TRAILER", "HEADER"]


def test_read_report_refuses_a_report_that_fails_verification(tmp_path: Path) -> None:
    path = write(tmp_path, TWO)
    _tamper(path, b"TRAILER,2,", b"TRAILER,3,")
    with pytest.raises(ReportError) as info:
        read_report(path)
    assert info.value.problems == ["line 5: TRAILER says 3 records, the file has 2"]
    assert str(info.value) == f"{path}: line 5: TRAILER says 3 records, the file has 2"


# ---------------------------------------------------------------------------------------
# Atomic writes


def test_a_failed_rename_leaves_neither_a_final_nor_a_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(src: object, dst: object) -> NoReturn:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        write(tmp_path, TWO)
    assert list(tmp_path.iterdir()) == []


def test_a_failure_while_writing_leaves_no_temporary_file_and_keeps_the_old_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, TWO)
    before = path.read_bytes()

    def fail(fd: int) -> NoReturn:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="Input/output error"):
        write(tmp_path, TWO[:1])
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert path.read_bytes() == before


def test_the_temporary_file_is_a_dot_name_in_the_outbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        renames.append((src, dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    path = write(tmp_path, TWO, xlsx=True)
    assert [Path(dst).name for _, dst in renames] == [path.with_suffix(".xlsx").name, path.name]
    for src, _ in renames:
        assert Path(src).parent == tmp_path
        assert Path(src).name.startswith(".")
        assert Path(src).name.endswith(".tmp")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [path.name, path.with_suffix(".xlsx").name]
    )


# ---------------------------------------------------------------------------------------
# Awkward values and the xlsx copy

AWKWARD = [
    record("AD1,comma", request_id='a,"quoted", value'),
    record('AD1 "quote"', request_id="line one\r\nline two\nthree\rfour"),
    record("AD1-ünïcödé", request_id="Zähler — 計器 🔌 ,;"),
    record("=1+1", request_id='=HYPERLINK("http://x")'),
    record("AD1-plain", request_id=None),
]


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="poa-gateway")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return cast("int", args.handler(args))


def test_awkward_values_round_trip_through_report_show(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, AWKWARD)
    assert verify_report(path).ok
    assert read_report(path).records == [as_row(r) for r in AWKWARD]
    assert _cli(["report", "show", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    shown = [json.loads(line) for line in out.splitlines()]
    assert [(s["alert_id"], s["request_id"]) for s in shown] == [
        (r.alert_id, r.request_id) for r in AWKWARD
    ]
    assert list(shown[0]) == list(COLUMNS)
    assert shown[0]["chf_id"] == "00-DB-12-34-56-78-90-A0"
    assert shown[0]["raised_at"] == "2030-01-14T09:01:01.234Z"
    assert shown[0]["originator_counter"] == 1000


def test_the_xlsx_copy_has_typed_cells_named_columns_a_filter_and_a_report_sheet(
    tmp_path: Path,
) -> None:
    records = [*AWKWARD, record("AD1-big", counter=2**63 + 5)]
    written = write_report(
        tmp_path,
        records,
        report_id="42-46",
        period_start_ms=START,
        period_end_ms=END,
        version="0.1.0",
        xlsx=True,
        profile=DSP,
        mpans=MPANS,
    )
    assert written.xlsx_path == written.path.with_suffix(".xlsx")
    rows = list(csv.reader(io.StringIO(written.path.read_text(encoding="utf-8"), newline="")))
    workbook = openpyxl.load_workbook(written.xlsx_path)
    try:
        assert workbook.sheetnames == [SHEET_TITLE, REPORT_SHEET_TITLE]
        sheet = workbook[SHEET_TITLE]
        cells = [list(row) for row in sheet.iter_rows(values_only=True)]
        assert sheet.auto_filter.ref == f"A1:O{len(records) + 1}"  # 15 columns
        assert sheet.freeze_panes == "A2"
        raised = sheet["H2"]  # raised_at, the 8th column
        assert raised.number_format == XLSX_TIME_FORMAT
        about = [list(row) for row in workbook[REPORT_SHEET_TITLE].iter_rows(values_only=True)]
    finally:
        workbook.close()
    assert cells[0] == list(COLUMNS)  # the column names first: any reader finds them
    assert len(cells) == len(records) + 1
    at = {name: COLUMNS.index(name) for name in COLUMNS}
    for line, record_, row in zip(rows[2:-1], records, cells[1:], strict=True):
        # Times are dates (UTC, to the ms), the counter a number (text past 2**53,
        # which a spreadsheet would round), everything else the CSV's text.
        assert row[at["raised_at"]] == dt.datetime(2030, 1, 14, 9, 1, 1, 234_000)  # noqa: DTZ001 - UTC, naive
        assert row[at["received_at"]] == _naive(record_.received_at)
        assert row[at["window_start"]] == _naive(record_.window_start)
        assert row[at["window_end"]] == _naive(record_.window_end)
        counter = record_.originator_counter
        position = at["originator_counter"]
        assert row[position] == (counter if counter <= 2**53 else line[position])
        texts = [
            at[n]
            for n in COLUMNS
            if n not in {"raised_at", "received_at", "window_start", "window_end"}
            and n != "originator_counter"
        ]
        # XML turns a CR into a line feed: the CSV is the exact record.
        expected = [line[i].replace("\r\n", "\n").replace("\r", "\n") for i in texts]
        assert [row[i] if row[i] is not None else "" for i in texts] == expected
    assert about == [
        ["record", "HEADER"],
        *([label, value or None] for label, value in zip(DSP.header, rows[0][1:], strict=True)),
        ["record", "TRAILER"],
        ["records", len(records)],
        ["sha256", written.sha256],
        ["records_without_mpan", 0],
    ]
    with zipfile.ZipFile(written.xlsx_path) as archive:
        sheet_xml = archive.read("xl/worksheets/sheet1.xml")
    assert b"<f>" not in sheet_xml  # "=1+1" and "=HYPERLINK(...)" are text, not formulas


def _naive(ms: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=ms)  # noqa: DTZ001


def test_the_csv_loads_with_one_documented_step(tmp_path: Path) -> None:
    # docs/reports.md: skip the first line (HEADER) and the last (TRAILER); what is left
    # is a CSV with the column names first. This is what pandas' read_csv(skiprows=1,
    # skipfooter=1, engine="python", dtype=str) and Excel's "skip 1 row" do.
    written = write_report(
        tmp_path, AWKWARD, report_id="7-9", period_start_ms=START, period_end_ms=END, version="1",
        profile=DSP,
    )  # fmt: skip
    with written.path.open(newline="", encoding="utf-8") as f:
        lines = f.read().splitlines(keepends=True)
    # Quoted fields may hold line breaks: read the whole body as CSV, then drop the
    # first and last record.
    body = list(csv.reader(io.StringIO("".join(lines), newline="")))[1:-1]
    table = [dict(zip(body[0], row, strict=True)) for row in body[1:]]
    assert list(table[0]) == list(COLUMNS)
    assert [row["alert_id"] for row in table] == [r.alert_id for r in AWKWARD]
    assert table[1]["request_id"] == "line one\r\nline two\nthree\rfour"


def test_control_characters_in_the_xlsx_copy_are_replaced_not_refused(tmp_path: Path) -> None:
    written = write_report(
        tmp_path,
        [record("AD1-ctl", request_id="a\x00b\x1bc")],
        report_id="1",
        period_start_ms=START,
        period_end_ms=END,
        version="0.1.0",
        xlsx=True,
        profile=DSP,
    )
    assert read_report(written.path).records[0].request_id == "a\x00b\x1bc"
    assert written.xlsx_path is not None
    workbook = openpyxl.load_workbook(written.xlsx_path, read_only=True)
    try:
        first_record = next(workbook[SHEET_TITLE].iter_rows(min_row=2, values_only=True))
    finally:
        workbook.close()
    assert first_record[COLUMNS.index("request_id")] == "a\ufffdb\ufffdc"


# ---------------------------------------------------------------------------------------
# Times

_DATETIME_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (START + 61_234, "2030-01-14T09:01:01.234Z"),
        (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        (_DATETIME_MAX_MS, "9999-12-31T23:59:59.999Z"),
        (_DATETIME_MAX_MS + 1, "+010000-01-01T00:00:00.000Z"),
        (2**64 - 1, "+584556019-04-03T14:25:51.615Z"),
    ],
)
def test_times_are_iso_8601_utc_with_milliseconds(ms: int, text: str) -> None:
    assert format_time(ms) == text
    assert parse_time(text) == ms


@pytest.mark.parametrize(
    "text",
    [
        "2030-01-14T09:00:00Z",
        "2030-01-14T09:00:00.000+00:00",
        "2030-01-14 09:00:00.000Z",
        "2031-02-29T00:00:00.000Z",
        "2030-04-31T00:00:00.000Z",
        "2030-01-14T24:00:00.000Z",
        "+002030-01-14T09:00:00.000Z",
        "+584556019-04-03T14:25:51.616Z",
        "2030-01-14T09:00:00.000Z\n",
        "٢٠٣٠-01-14T09:00:00.000Z",
    ],
)
def test_other_spellings_of_a_time_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"time like|not a valid date|canonical"):
        parse_time(text)


@settings(max_examples=500, deadline=None)
@given(ms=st.integers(min_value=0, max_value=2**64 - 1))
def test_any_uint64_time_formats_and_parses_back(ms: int) -> None:
    assert parse_time(format_time(ms)) == ms


@settings(max_examples=500, deadline=None)
@given(ms=st.integers(min_value=0, max_value=_DATETIME_MAX_MS))
def test_times_agree_with_datetime_up_to_the_year_9999(ms: int) -> None:
    when = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)
    assert format_time(ms) == when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------
# Any valid records

_eui = st.binary(min_size=8, max_size=8)
_time = st.integers(min_value=0, max_value=2**64 - 1)
_text = st.text(st.characters(codec="utf-8"), max_size=40)
_records = st.builds(
    SuppressionRecord,
    v=st.just(1),
    kind=st.just("suppression"),
    alert_id=st.text(st.characters(codec="utf-8"), min_size=1, max_size=128),
    chf_id=_eui,
    esme_id=_eui,
    raised_at=_time,
    received_at=_time,
    window_start=_time,
    window_end=_time,
    request_id=st.none() | _text.filter(bool),
    originator=_eui,
    originator_counter=st.integers(min_value=0, max_value=2**64 - 1),
    activation=st.sampled_from(["on-demand", "future-dated"]),
)


@settings(max_examples=60, deadline=None)
@given(records=st.lists(_records, max_size=6))
def test_any_valid_records_make_a_report_that_verifies_and_reads_back(
    records: list[SuppressionRecord],
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        written = write_report(
            Path(folder), records, report_id="p", period_start_ms=START, period_end_ms=END,
            version="0.1.0", profile=DSP,
        )  # fmt: skip
        check = verify_report(written.path)
        assert check.problems == []
        assert (check.records, check.sha256) == (len(records), written.sha256)
        assert read_report(written.path).records == [as_row(r, None) for r in records]


# ---------------------------------------------------------------------------------------
# Rotation


def test_hourly_periods_start_on_the_hour_utc() -> None:
    rotation = Rotation(HOUR, 10_000)
    assert rotation.period_start(START) == START
    assert rotation.period_start(START + 1) == START
    assert rotation.period_start(END - 1) == START
    assert rotation.period_start(END) == END
    assert format_time(rotation.period_start(START + 59 * 60_000)) == "2030-01-14T09:00:00.000Z"


def test_the_next_boundary_is_strictly_after_now() -> None:
    rotation = Rotation(HOUR, 10_000)
    assert rotation.next_boundary(START) == END
    assert rotation.next_boundary(END - 1) == END
    assert rotation.next_boundary(END) == END + HOUR
    daily = Rotation(24 * HOUR, 10_000)
    assert format_time(daily.next_boundary(START)) == "2030-01-15T00:00:00.000Z"


def test_a_period_is_due_once_it_has_ended_and_settled_even_if_empty() -> None:
    rotation = Rotation(HOUR, 10_000, settle_ms=2_000)
    assert not rotation.due(END - 1, START)
    assert not rotation.due(END + 1_999, START)
    assert rotation.due(END + 2_000, START)
    assert rotation.due(END + 5 * HOUR, START)
    assert rotation.closes_at(START + 17 * 60_000) == END + 2_000


def test_report_names_follow_from_the_period_and_part_alone() -> None:
    assert Rotation(HOUR, 10).report_id(START, 1) == "PT1H-001"
    assert Rotation(HOUR, 10).report_id(START, 12) == "PT1H-012"
    assert Rotation(15 * 60_000, 10).report_id(START, 2) == "PT15M-002"
    assert Rotation(24 * HOUR, 10).report_id(START, 1) == "PT24H-001"
    assert Rotation(90_500, 10).report_id(START, 1) == "PT90.500S-001"
    with pytest.raises(ValueError, match="part"):
        Rotation(HOUR, 10).report_id(START, 0)


@pytest.mark.parametrize(("period", "size"), [(0, 1), (-HOUR, 1), (HOUR, 0)])
def test_a_rotation_without_a_positive_period_and_size_is_refused(period: int, size: int) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        Rotation(period, size)


# ---------------------------------------------------------------------------------------
# Command line


def test_cli_verify_prints_ok_with_count_and_digest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written = write_report(
        tmp_path, TWO, report_id="42-43", period_start_ms=START, period_end_ms=END, version="1"
    )
    empty = write(tmp_path, [], report_id="empty")
    assert _cli(["report", "verify", str(written.path), str(empty)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{written.path}: ok, 2 records, sha256 {written.sha256}",
        f"{empty}: ok, 0 records, sha256 {EMPTY_SHA256}",
    ]


def test_cli_verify_prints_each_problem_and_fails_if_any_file_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path, TWO, report_id="good")
    bad = write(tmp_path, TWO, report_id="bad")
    _tamper(bad, b"TRAILER,2,", b"TRAILER,1,")
    missing = tmp_path / "missing.csv"
    # A file that does not verify fails (1); one that cannot be read is bad input (2).
    assert _cli(["report", "verify", str(good), str(bad)]) == Exit.FAILED
    assert _cli(["report", "verify", str(good), str(bad), str(missing)]) == Exit.USAGE
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert out[0].startswith(f"{good}: ok, 2 records")
    assert out[1] == f"{bad}: line 5: TRAILER says 1 records, the file has 2"
    assert captured.err == (
        f"poa-gateway report verify: {missing}: cannot read: No such file or directory\n"
    )
    assert _cli(["report", "verify", "--json", str(good), str(bad)]) == Exit.FAILED
    checks = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(c["file"], c["ok"], c["records"]) for c in checks] == [
        (str(good), True, 2),
        (str(bad), False, 2),
    ]


def test_cli_show_refuses_a_report_that_fails_verification(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, TWO)
    path.write_bytes(b"".join(lines(path)[:-1]))
    assert _cli(["report", "show", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"poa-gateway report show: {path}: line 4: the last record")


@pytest.mark.parametrize("argv", [["report"], ["report", "verify"], ["report", "show"]])
def test_every_report_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _cli([*argv, "--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out
