"""The GUID list: import from .xlsx/.csv, the compiled file, membership and the CLI."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import random
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openpyxl import Workbook
from python_calamine import CalamineWorkbook

from gateway.cli.guids import add_parser
from gateway.exits import Exit
from gateway.guids import (
    FORMAT_VERSION,
    HEADER_SIZE,
    MAGIC,
    GuidList,
    GuidListError,
    write_guid_list,
)
from gateway.guids_import import DuplicateGuid, InvalidRow, import_guid_list, read_guid_list

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SAMPLE = FIXTURES / "guids-sample.xlsx"
BROKEN = FIXTURES / "guids-broken.xlsx"
SAMPLE_CSV = FIXTURES / "guids-sample.csv"
IMPORTED_AT = 1_750_000_000_123

Cell = str | int | float | None

# 30,000 distinct GUIDs in the canonical (DCC) notation.
_CANON = [f"00-DB-12-34-56-{i >> 16:02X}-{(i >> 8) & 255:02X}-{i & 255:02X}" for i in range(30_000)]


def _dcc(value: int) -> str:
    return "-".join(f"{b:02X}" for b in value.to_bytes(8, "big"))


def _make_fixtures() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sample_guids() -> list[int]:
    guids = cast("list[bytes]", _make_fixtures().sample_guids())
    return [int.from_bytes(guid, "big") for guid in guids]


def _xlsx(path: Path, sheets: dict[str, dict[str, Cell]]) -> Path:
    """A workbook with the given cells (``{"B3": "GUID", ...}``) on each named sheet."""
    workbook = Workbook()
    first = workbook.active
    assert first is not None
    workbook.remove(first)
    for name, cells in sheets.items():
        sheet = workbook.create_sheet(name)
        for ref, value in cells.items():
            sheet[ref] = value
    workbook.save(path)
    return path


def _column(header: str, values: Sequence[Cell], column: str = "A") -> dict[str, Cell]:
    cells: dict[str, Cell] = {f"{column}1": header}
    for row, value in enumerate(values, start=2):
        cells[f"{column}{row}"] = value
    return cells


def _csv(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


# --- reading --------------------------------------------------------------------------


def test_sample_workbook_imports_every_guid_from_the_guids_sheet() -> None:
    guids, report = read_guid_list(SAMPLE)
    assert list(guids) == sorted(_sample_guids())
    assert report.sheet == "GUIDs"  # the "Read me" sheet before it has no GUID header
    assert (report.column, report.header, report.header_row) == ("B", "GUID", 3)
    assert report.rows_read == 201
    assert report.blank_rows == 1
    assert (report.valid_count, report.unique_count) == (200, 200)
    assert report.invalid == ()
    assert report.duplicates == ()
    assert report.sha256 == hashlib.sha256(SAMPLE.read_bytes()).hexdigest()
    assert report.output is None


def test_sample_csv_imports_the_same_guids() -> None:
    guids, report = read_guid_list(SAMPLE_CSV)
    assert list(guids) == sorted(_sample_guids())
    assert (report.sheet, report.column, report.header_row) == ("guids-sample.csv", "B", 1)
    assert (report.rows_read, report.blank_rows, report.valid_count) == (200, 0, 200)
    assert report.invalid == ()


@pytest.mark.parametrize(
    "text",
    [
        "00-DB-12-34-56-78-90-A0",
        "00-db-12-34-56-78-90-a0",
        "00DB1234567890A0",
        "00db1234567890a0",
        "00:db:12:34:56:78:90:a0",
        "00:DB:12:34:56:78:90:A0",
        "  00-DB-12-34-56-78-90-A0 ",
        "\t00DB1234567890A0",
    ],
)
def test_every_notation_parses_to_the_same_guid(tmp_path: Path, text: str) -> None:
    path = _xlsx(tmp_path / "one.xlsx", {"GUIDs": _column("GUID", [text])})
    guids, report = read_guid_list(path)
    assert list(guids) == [0x00DB1234567890A0]
    assert report.invalid == ()


def test_a_number_stored_as_text_is_a_guid_but_a_number_cell_is_not(tmp_path: Path) -> None:
    path = _xlsx(tmp_path / "n.xlsx", {"GUIDs": _column("EUI-64", ["0012345678901234", 12345])})
    guids, report = read_guid_list(path)
    assert list(guids) == [0x0012345678901234]
    assert [(bad.cell, bad.value, bad.reason) for bad in report.invalid] == [
        ("A3", "12345", "number")
    ]


def test_broken_workbook_reports_each_invalid_row_and_every_duplicate() -> None:
    guids, report = read_guid_list(BROKEN)
    assert list(guids) == sorted(_sample_guids())
    assert report.rows_read == 208
    assert report.blank_rows == 1
    assert (report.valid_count, report.unique_count) == (203, 200)
    assert [(b.sheet, b.row, b.cell, b.value, b.reason) for b in report.invalid] == [
        ("GUIDs", 17, "B17", "00-DB-12-34-56-78-9G-01", "not-eui64"),
        ("GUIDs", 206, "B206", "00-DB-12-34-56-78-9A", "not-eui64"),
        ("GUIDs", 207, "B207", "", "empty-guid"),
        ("GUIDs", 208, "B208", "1234567890123456", "number"),
    ]
    assert all(isinstance(bad, InvalidRow) and bad.detail for bad in report.invalid)
    sample = _sample_guids()
    assert report.duplicates == (
        DuplicateGuid(value=_dcc(sample[0]), rows=(4, 209)),
        DuplicateGuid(value=_dcc(sample[5]), rows=(9, 210, 211)),
    )


@pytest.mark.parametrize("column", ["GUID", "guid", " Guid ", "B", "b", "2", 2])
def test_column_can_be_named_by_header_letter_or_number(column: str | int) -> None:
    guids, report = read_guid_list(SAMPLE, column=column)
    assert len(guids) == 200
    assert (report.sheet, report.column, report.header_row) == ("GUIDs", "B", 3)


def test_column_by_header_text_finds_a_header_that_is_not_a_known_name(tmp_path: Path) -> None:
    cells = {**_column("Serial", ["S1", "S2"]), **_column("Meter EUI", _CANON[:2], "B")}
    path = _xlsx(tmp_path / "other.xlsx", {"Meters": cells})
    with pytest.raises(GuidListError) as excinfo:
        read_guid_list(path)
    assert excinfo.value.reason == "no-header"
    guids, report = read_guid_list(path, column="meter eui")
    assert len(guids) == 2
    assert (report.column, report.header) == ("B", "Meter EUI")


def test_a_column_letter_beyond_the_data_is_refused(tmp_path: Path) -> None:
    path = _xlsx(tmp_path / "narrow.xlsx", {"GUIDs": _column("GUID", _CANON[:2])})
    with pytest.raises(GuidListError) as excinfo:
        read_guid_list(path, column="F")
    assert excinfo.value.reason == "column-not-found"
    assert excinfo.value.sheet == "GUIDs"


def test_rows_and_cells_are_numbered_as_the_sheet_shows_them(tmp_path: Path) -> None:
    # Data that starts at D5 (not A1) must still be reported as D7, row 7.
    cells: dict[str, Cell] = {"D5": "ESME GUID", "E5": "Model", "D6": _CANON[0], "E6": "E470"}
    cells |= {"D7": "not a guid", "E7": "E470", "D9": _CANON[1], "F12": "note"}
    path = _xlsx(tmp_path / "offset.xlsx", {"List": cells})
    for column in (None, "D", 4, "esme guid"):
        guids, report = read_guid_list(path, column=column)
        assert len(guids) == 2
        assert (report.column, report.header_row) == ("D", 5)
        assert [(b.row, b.cell) for b in report.invalid] == [(7, "D7"), (12, "D12")]
        assert report.blank_rows == 3  # rows 8, 10 and 11; row 12 has a note in F12
        assert report.rows_read == 7


def test_a_sheet_can_be_chosen_by_name_or_number() -> None:
    for sheet in ("GUIDs", "guids", 2, "2"):
        _, report = read_guid_list(SAMPLE, sheet=sheet)
        assert report.sheet == "GUIDs"


def test_a_missing_sheet_is_refused_naming_the_sheets_there_are() -> None:
    for sheet in ("Nope", 3):
        with pytest.raises(GuidListError) as excinfo:
            read_guid_list(SAMPLE, sheet=sheet)
        assert excinfo.value.reason == "sheet-not-found"
        assert "'Read me', 'GUIDs'" in str(excinfo.value)


def test_a_file_without_a_guid_header_fails_naming_the_file_and_sheet(tmp_path: Path) -> None:
    path = _xlsx(tmp_path / "plain.xlsx", {"Data": _column("Serial", ["S1", "S2"])})
    with pytest.raises(GuidListError) as excinfo:
        read_guid_list(path)
    error = excinfo.value
    assert (error.reason, error.sheet, error.path) == ("no-header", "Data", str(path))
    assert str(error).startswith(f"{path} sheet 'Data': no GUID column header")


def test_random_bytes_named_xlsx_fail_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "random.xlsx"
    path.write_bytes(random.Random(7).randbytes(4096))
    with pytest.raises(GuidListError) as excinfo:
        read_guid_list(path)
    assert excinfo.value.reason == "corrupt"
    assert str(excinfo.value).startswith(str(path))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 11_000), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(0, 12_000),
)
def test_a_damaged_workbook_either_reads_or_raises_guid_list_error(
    flips: list[tuple[int, int]], keep: int
) -> None:
    data = bytearray(SAMPLE.read_bytes())
    for position, value in flips:
        data[position % len(data)] = value
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "damaged.xlsx"
        path.write_bytes(bytes(data[:keep]))
        error: GuidListError | None = None
        try:
            read_guid_list(path)
        except GuidListError as exc:
            error = exc
    if error is not None:
        assert error.reason in {"corrupt", "no-header", "no-guids"}
        assert str(error).startswith(str(path))


def test_a_csv_the_csv_module_cannot_parse_is_refused_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    path.write_bytes(b"GUID\n" + b"00DB1234567890A0\n" * 3 + b"x" * 200_000 + b"\n")
    with pytest.raises(GuidListError) as excinfo:
        read_guid_list(path)
    assert (excinfo.value.reason, excinfo.value.row) == ("corrupt", 5)


def test_a_missing_file_and_an_unknown_file_type_are_refused(tmp_path: Path) -> None:
    with pytest.raises(GuidListError) as excinfo:
        read_guid_list(tmp_path / "absent.xlsx")
    assert excinfo.value.reason == "unreadable"
    text = _csv(tmp_path / "list.txt", ["GUID", _CANON[0]])
    with pytest.raises(GuidListError) as excinfo:
        read_guid_list(text)
    assert excinfo.value.reason == "unsupported-format"


def test_a_list_with_no_valid_guid_is_refused_with_its_report(tmp_path: Path) -> None:
    with pytest.raises(GuidListError) as excinfo:
        read_guid_list(SAMPLE, column="Model")
    assert excinfo.value.reason == "no-guids"
    assert excinfo.value.report is not None
    assert len(excinfo.value.report.invalid) == 200


def test_one_bad_cell_in_a_large_uniform_block_is_caught(tmp_path: Path) -> None:
    # Spaces inside a cell of canonical length must not slip through the block decoder.
    cells = list(_CANON)
    cells[12_345] = "  DB1234567890A0"  # 16 characters, 14 hex digits
    cells[20_000] = "00-DB-12-34-56-78-9 -A0"  # 23 characters, separators in place
    path = _csv(tmp_path / "big.csv", ["GUID", *cells])
    guids, report = read_guid_list(path)
    assert [(b.row, b.reason) for b in report.invalid] == [
        (12_347, "not-eui64"),
        (20_002, "not-eui64"),
    ]
    assert len(guids) == len(_CANON) - 2
    # The same in a block of 16-digit cells: "0 DB1234567890A0" decodes to 7.5 bytes.
    plain = [cell.replace("-", "") for cell in _CANON]
    plain[5] = "0 DB1234567890A0"
    plain[6] = "00DB1234 567890A"
    guids, report = read_guid_list(_csv(tmp_path / "plain.csv", ["GUID", *plain]))
    assert [b.row for b in report.invalid] == [7, 8]
    assert len(guids) == len(_CANON) - 2


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, (1 << 64) - 1), st.integers(0, 6)), min_size=1, max_size=600)
)
def test_any_mix_of_notations_reads_back_the_same_guids(rows: list[tuple[int, int]]) -> None:
    notations: list[Callable[[bytes], str]] = [
        lambda b: b.hex("-").upper(),
        lambda b: b.hex(":"),
        lambda b: b.hex(),
        lambda b: b.hex().upper(),
        lambda b: f" {b.hex('-')} ",
        lambda b: b.hex(":").upper(),
        lambda b: b.hex("-"),
    ]
    lines = ["Device ID", *(notations[k](v.to_bytes(8, "big")) for v, k in rows)]
    with tempfile.TemporaryDirectory() as folder:
        guids, report = read_guid_list(_csv(Path(folder) / "mix.csv", lines))
    assert list(guids) == sorted({v for v, _ in rows})
    assert report.invalid == ()
    assert report.valid_count == len(rows)
    assert sum(len(d.rows) - 1 for d in report.duplicates) == len(rows) - len(guids)


def test_progress_is_reported_about_every_100k_rows(tmp_path: Path) -> None:
    path = _csv(tmp_path / "big.csv", ["GUID", *(_CANON * 8)[:230_000]])
    calls: list[tuple[int, int | None]] = []
    read_guid_list(path, progress=lambda done, total: calls.append((done, total)))
    assert [done // 100_000 for done, _ in calls] == [1, 2, 2]
    assert calls[-1] == (230_001, None)


def test_committed_fixtures_match_what_the_script_writes(tmp_path: Path) -> None:
    written = cast("list[Path]", _make_fixtures().write_fixtures(tmp_path))
    for path in written:
        committed = FIXTURES / path.name
        if path.suffix == ".csv":
            assert path.read_bytes() == committed.read_bytes()
            continue
        with CalamineWorkbook.from_path(path) as new, CalamineWorkbook.from_path(committed) as old:
            assert new.sheet_names == old.sheet_names
            for name in new.sheet_names:
                assert (
                    new.get_sheet_by_name(name).to_python()
                    == old.get_sheet_by_name(name).to_python()
                )
        assert committed.stat().st_size < 50_000


# --- the compiled file ----------------------------------------------------------------


@pytest.fixture
def compiled(tmp_path: Path) -> Path:
    output = tmp_path / "var" / "guid-list.bin"
    report = import_guid_list(SAMPLE, output, imported_at_ms=IMPORTED_AT)
    assert (report.output, report.imported_at_ms) == (str(output), IMPORTED_AT)
    return output


def test_compiled_list_holds_every_imported_guid_and_nothing_else(compiled: Path) -> None:
    sample = _sample_guids()
    with GuidList.open(compiled) as guids:
        assert len(guids) == 200
        assert all(g in guids for g in sample)
        assert all(g.to_bytes(8, "big") in guids for g in sample)
        absent = [g ^ 1 for g in sample if g ^ 1 not in sample]
        assert absent
        assert not any(g in guids for g in absent)
        assert -1 not in guids
        assert 1 << 64 not in guids
        assert list(guids) == sorted(sample)
        assert (guids[0], guids[-1]) == (min(sample), max(sample))
        assert guids.sha256 == hashlib.sha256(SAMPLE.read_bytes()).hexdigest()
        assert guids.imported_at_ms == IMPORTED_AT
        assert guids.path == compiled
        guids.verify()
    assert guids.closed


def test_compiled_file_is_a_64_byte_header_and_8_bytes_per_guid(compiled: Path) -> None:
    data = compiled.read_bytes()
    assert len(data) == HEADER_SIZE + 8 * 200
    magic, version, header_size, reserved, count, when, digest = struct.unpack_from(
        "<8sHHIQq32s", data
    )
    assert (magic, version, header_size, reserved, count) == (MAGIC, FORMAT_VERSION, 64, 0, 200)
    assert when == IMPORTED_AT
    assert digest == hashlib.sha256(SAMPLE.read_bytes()).digest()
    first = struct.unpack_from("<Q", data, HEADER_SIZE)[0]
    assert first == min(_sample_guids())
    assert not list(compiled.parent.glob(".*.tmp"))  # the temporary file was renamed


def test_membership_rejects_bytes_of_the_wrong_length_and_other_types(compiled: Path) -> None:
    with GuidList.open(compiled) as guids:
        with pytest.raises(ValueError, match="8 bytes"):
            _ = b"\x00\xdb" in guids
        with pytest.raises(TypeError):
            _ = "00-DB-12-34-56-78-A5-00" in guids
    with pytest.raises(ValueError, match="closed"):
        _ = 1 in guids


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda d: d[:-3], "truncated"),
        (lambda d: d[:-8], "truncated"),
        (lambda d: d + b"\x00" * 8, "truncated"),
        (lambda d: d[:20], "truncated"),
        (lambda d: b"", "truncated"),
        (lambda d: b"POAGUID0" + d[8:], "not-a-guid-list"),
        (lambda d: b"PK\x03\x04", "not-a-guid-list"),
        (lambda d: d[:8] + struct.pack("<H", 2) + d[10:], "unsupported-version"),
        (lambda d: d[:HEADER_SIZE] + _reversed_entries(d[HEADER_SIZE:]), "unsorted"),
    ],
)
def test_a_damaged_compiled_file_is_refused(
    compiled: Path, damage: Callable[[bytes], bytes], reason: str
) -> None:
    compiled.write_bytes(damage(compiled.read_bytes()))
    with pytest.raises(GuidListError) as excinfo:
        GuidList.open(compiled)
    assert excinfo.value.reason == reason
    assert str(compiled) in str(excinfo.value)


def _reversed_entries(payload: bytes) -> bytes:
    return b"".join(payload[i : i + 8] for i in range(len(payload) - 8, -1, -8))


def test_two_swapped_entries_are_caught_by_verify(compiled: Path) -> None:
    data = bytearray(compiled.read_bytes())
    a, b = HEADER_SIZE + 8, HEADER_SIZE + 16
    data[a : a + 8], data[b : b + 8] = data[b : b + 8], data[a : a + 8]
    compiled.write_bytes(bytes(data))
    for native in (True, False):
        with GuidList.open(compiled, native=native) as guids, pytest.raises(GuidListError) as e:
            guids.verify()
        assert e.value.reason == "unsorted"


def test_a_missing_compiled_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(GuidListError) as excinfo:
        GuidList.open(tmp_path / "absent.bin")
    assert excinfo.value.reason == "unreadable"


def test_strict_import_writes_nothing_and_keeps_the_report(tmp_path: Path) -> None:
    output = tmp_path / "list.bin"
    with pytest.raises(GuidListError) as excinfo:
        import_guid_list(BROKEN, output, imported_at_ms=IMPORTED_AT, strict=True)
    error = excinfo.value
    assert (error.reason, error.sheet, error.row, error.cell) == (
        "invalid-rows",
        "GUIDs",
        17,
        "B17",
    )
    assert error.report is not None
    assert len(error.report.invalid) == 4
    assert not output.exists()


def test_reimport_replaces_the_compiled_file_atomically(compiled: Path) -> None:
    with GuidList.open(compiled) as before:
        import_guid_list(SAMPLE_CSV, compiled, imported_at_ms=IMPORTED_AT + 1)
        assert before.imported_at_ms == IMPORTED_AT  # the old mapping is untouched
    with GuidList.open(compiled) as after:
        assert after.imported_at_ms == IMPORTED_AT + 1
        assert len(after) == 200


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, (1 << 64) - 1), max_size=300),
    st.lists(st.integers(0, (1 << 64) - 1), max_size=50),
)
def test_membership_matches_a_python_set(values: list[int], probes: list[int]) -> None:
    expected = set(values)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "list.bin"
        write_guid_list(path, values, sha256=bytes(32), imported_at_ms=0)
        for native in (True, False):
            with GuidList.open(path, native=native) as guids:
                assert len(guids) == len(expected)
                assert list(guids) == sorted(expected)
                for probe in [*values, *probes, 0, (1 << 64) - 1]:
                    assert (probe in guids) == (probe in expected)
                guids.verify()


def test_write_refuses_a_guid_outside_64_bits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="out of range"):
        write_guid_list(tmp_path / "x.bin", [1 << 64], sha256=bytes(32), imported_at_ms=0)
    assert not list(tmp_path.iterdir())


# --- the CLI --------------------------------------------------------------------------


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="poa-gateway")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return cast("int", args.handler(args))


def test_cli_import_prints_counts_each_invalid_row_and_duplicates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "list.bin"
    assert _run(["guids", "import", str(BROKEN), "--output", str(output)]) == 0
    out = capsys.readouterr().out
    assert "sheet 'GUIDs' row 17 cell B17: '00-DB-12-34-56-78-9G-01': not an EUI-64" in out
    assert "sheet 'GUIDs' row 207 cell B207: '': empty GUID cell" in out
    assert "00-DB-12-34-56-78-A5-00: rows 4, 209" in out
    assert "203 rows, 200 unique GUIDs" in out
    assert hashlib.sha256(BROKEN.read_bytes()).hexdigest() in out
    assert f"{output} (1,664 bytes, 8.32 bytes per GUID)" in out
    assert output.exists()


def test_cli_import_strict_refuses_a_sheet_with_invalid_rows_and_quiet_lists_no_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "list.bin"
    argv = ["guids", "import", str(BROKEN), "--output", str(output), "--strict", "--quiet"]
    assert _run(argv) == Exit.USAGE
    captured = capsys.readouterr()
    assert "invalid:     4 rows" in captured.out
    assert "row 17 cell B17:" not in captured.out
    assert captured.err.count("\n") == 1
    assert "4 invalid row(s), nothing written" in captured.err
    assert not output.exists()


def test_cli_import_of_an_unreadable_file_prints_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.xlsx"
    bad.write_bytes(b"not a zip at all")
    assert _run(["guids", "import", str(bad), "--output", str(tmp_path / "o.bin")]) == Exit.USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"poa-gateway guids import: {bad}: not a readable Excel")
    assert captured.err.count("\n") == 1


def test_cli_check_and_info_read_the_compiled_list(
    compiled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    member = _sample_guids()[0].to_bytes(8, "big").hex(":")
    assert _run(["guids", "check", member, "--list", str(compiled)]) == 0
    assert capsys.readouterr().out == "yes\n"
    assert _run(["guids", "check", "00-DB-00-00-00-00-00-00", "--list", str(compiled)]) == 1
    assert capsys.readouterr().out == "no\n"
    assert _run(["guids", "check", "00-DB-12", "--list", str(compiled)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert _run(["guids", "check", member, "--list", str(compiled.with_name("x"))]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert _run(["guids", "info", "--list", str(compiled)]) == 0
    out = capsys.readouterr().out
    assert "count:    200" in out
    assert hashlib.sha256(SAMPLE.read_bytes()).hexdigest() in out
    assert "imported: 2025-06-15T15:06:40.123Z" in out
    assert _run(["guids", "info", "--json", "--list", str(compiled)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["count"], info["imported"]) == (200, "2025-06-15T15:06:40.123Z")
    assert _run(["guids", "check", member, "--json", "--list", str(compiled)]) == 0
    assert json.loads(capsys.readouterr().out)["listed"] is True


def test_cli_import_writes_the_list_the_configuration_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "etc" / "gateway.toml"
    config.parent.mkdir()
    config.write_text('[paths]\nstate_dir = "../state"\nguid_list = "lists/guids.bin"\n')
    monkeypatch.chdir(tmp_path / "etc")  # relative paths follow the file, not the cwd
    monkeypatch.setenv("POA_GATEWAY_CONFIG", str(config))
    assert _run(["guids", "import", str(SAMPLE_CSV), "--quiet"]) == 0
    compiled = tmp_path / "state" / "lists" / "guids.bin"
    assert compiled.stat().st_size == HEADER_SIZE + 8 * 200
    assert f"output:      {compiled}" in capsys.readouterr().out
    monkeypatch.delenv("POA_GATEWAY_CONFIG")
    assert _run(["guids", "info", "--json", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 200
    assert _run(["guids", "info", "--config", str(tmp_path / "missing.toml")]) == Exit.CONFIG


@pytest.mark.parametrize(
    "argv", [["guids"], ["guids", "import"], ["guids", "check"], ["guids", "info"]]
)
def test_every_guids_subcommand_has_help(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as excinfo:
        _run([*argv, "--help"])
    assert excinfo.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: poa-gateway {' '.join(argv)}")


def test_the_daemon_and_the_command_line_load_no_spreadsheet_library() -> None:
    # In a fresh interpreter: this one has loaded both for the tests above. The daemon
    # (gateway.service, started through gateway.cli.main) maps the compiled list only;
    # python-calamine is for 'guids import', openpyxl for the optional .xlsx report copy.
    watched = "{'python_calamine', 'openpyxl', 'gateway.guids', 'gateway.guids_import'}"
    imports = "import sys, gateway.service, gateway.cli.main"
    code = f"{imports}\nprint(sorted({watched} & set(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "['gateway.guids']"
