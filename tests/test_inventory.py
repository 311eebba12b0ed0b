"""The Smart Metering Inventory: SQLite storage, CSV import, envelopes, and its CLI.

The behaviour every inventory backend shares (upserts, reads, CSV import and its report)
is tested once, on SQLite and PostgreSQL alike, in tests/test_pg_inventory.py; this file
keeps what is SQLite's own (the file, its schema and migration) and the rest."""

from __future__ import annotations

import argparse
import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.cli.inventory import add_parser
from gateway.core.devices import DeviceRecord, DeviceStatus, DeviceType
from gateway.eui import format_eui64
from gateway.exits import Exit
from gateway.state.inventory import (
    APPLICATION_ID,
    CSV_COLUMNS,
    SCHEMA_VERSION,
    ImportIssue,
    Inventory,
    InventoryError,
    _header_index,
    _RowParser,
    from_envelope,
    write_inventory_csv,
)
from gateway.wire import InventoryEnvelope, decode_inventory, encode

CHF_A = bytes.fromhex("00DB1234567890A0")
CHF_B = bytes.fromhex("00DB1234567890B0")
ESME_A = bytes.fromhex("00DB1234567890A1")
GSME_A = bytes.fromhex("00DB1234567890A2")
PPMID_A = bytes.fromhex("00DB1234567890A3")
ESME_B = bytes.fromhex("00DB1234567890B1")

SUPPLIER = bytes.fromhex("90B3D51F30010000")
# MPAN cores published as examples (sources in tests/test_mpan.py), distributors 13 and 18.
MPAN = "1312345678907"
MPAN_B = "1800021679848"

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
# An extract without the optional supplier_id column, as DSP extracts were before it.
HEADER = "device_id,device_type,smets,manufacturer,model,chf_id,status"


def chf(device_id: bytes) -> DeviceRecord:
    return DeviceRecord(
        device_id=device_id,
        device_type=DeviceType.CHF,
        smets=2,
        manufacturer="Toshiba",
        status=DeviceStatus.COMMISSIONED,
    )


def esme(
    device_id: bytes,
    chf_id: bytes,
    manufacturer: str = "Landis+Gyr",
    supplier_id: bytes | None = None,
    mpan: str | None = None,
) -> DeviceRecord:
    return DeviceRecord(
        device_id=device_id,
        device_type=DeviceType.ESME,
        smets=2,
        manufacturer=manufacturer,
        status=DeviceStatus.COMMISSIONED,
        chf_id=chf_id,
        model="E470",
        supplier_id=supplier_id,
        mpan=mpan,
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "inventory.sqlite"


@pytest.fixture
def inventory(db_path: Path) -> Iterator[Inventory]:
    with Inventory.open(db_path) as inv:
        yield inv


def write_csv(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# Storage -------------------------------------------------------------------------------


def test_registered_supplier_is_kept_and_can_be_cleared(inventory: Inventory) -> None:
    inventory.upsert(esme(ESME_A, CHF_A, supplier_id=SUPPLIER), T0)
    found = inventory.get(ESME_A)
    assert found is not None
    assert found.supplier_id == SUPPLIER
    assert inventory.devices_on_chf(CHF_A) == [esme(ESME_A, CHF_A, supplier_id=SUPPLIER)]
    inventory.upsert(esme(ESME_A, CHF_A), T0 + 1)  # the DSP no longer names one
    assert inventory.get(ESME_A) == esme(ESME_A, CHF_A)


def test_esme_maps_to_the_chf_on_its_han(inventory: Inventory) -> None:
    inventory.upsert(chf(CHF_A), T0)
    inventory.upsert(esme(ESME_A, CHF_A), T0)
    assert inventory.chf_of(ESME_A) == CHF_A
    found = inventory.get(ESME_A)
    assert found is not None
    assert found.chf_id == CHF_A
    assert inventory.chf_of(CHF_A) is None  # a CHF sits on no other CHF's HAN


def test_new_file_has_the_schema_version_wal_and_the_chf_index(db_path: Path) -> None:
    with Inventory(db_path) as inv:
        inv.upsert(esme(ESME_A, CHF_A), T0)
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT device_id FROM devices WHERE chf_id = ?", (CHF_A,)
        ).fetchall()
        assert "devices_chf_id" in str(plan)
        assert conn.execute("SELECT updated_at FROM devices").fetchall() == [(T0,)]


@pytest.mark.parametrize(
    ("status", "supplier_id", "mpan"),
    [("lost", None, None), ("commissioned", b"\x01" * 7, None), ("commissioned", None, "131")],
    ids=["status", "supplier_id", "mpan"],
)
def test_database_checks_refuse_rows_that_bypass_the_module(
    db_path: Path, status: str, supplier_id: bytes | None, mpan: str | None
) -> None:
    Inventory(db_path).close()
    with closing(sqlite3.connect(db_path)) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO devices (device_id, device_type, smets, manufacturer, status, "
            "supplier_id, mpan, updated_at) VALUES (?, 'ESME', 2, 'X', ?, ?, ?, 0)",
            (ESME_A, status, supplier_id, mpan),
        )


# The devices table of schema version 1, before supplier_id (the CHECKs on device_type
# and status left out: they are not what the migration is about).
_V1_SCHEMA = f"""
CREATE TABLE devices (
    device_id BLOB PRIMARY KEY CHECK (length(device_id) = 8),
    device_type TEXT NOT NULL,
    smets INTEGER NOT NULL CHECK (smets = 1 OR smets = 2),
    manufacturer TEXT NOT NULL,
    model TEXT,
    chf_id BLOB CHECK (chf_id IS NULL OR length(chf_id) = 8),
    status TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX devices_chf_id ON devices (chf_id);
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = 1;
"""


def _columns(path: Path) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute("PRAGMA table_info(devices)").fetchall()


# Version 2 added supplier_id, as the migration from version 1 did, and nothing else.
_V2_SCHEMA = (
    _V1_SCHEMA.replace("PRAGMA user_version = 1;", "PRAGMA user_version = 2;")
    + "ALTER TABLE devices ADD COLUMN supplier_id BLOB;"
)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("create", [True, False], ids=["daemon", "read-only-tool"])
def test_older_inventory_is_migrated_keeping_its_rows(
    tmp_path: Path, db_path: Path, create: bool, version: int
) -> None:
    supplier = {1: (), 2: (SUPPLIER,)}[version]
    with closing(sqlite3.connect(db_path)) as conn:
        conn.executescript({1: _V1_SCHEMA, 2: _V2_SCHEMA}[version])
        conn.executemany(
            "INSERT INTO devices VALUES "
            f"(?, ?, 2, ?, ?, ?, 'commissioned', ?{', ?' * len(supplier)})",
            [
                (CHF_A, "CHF", "Toshiba", None, None, T0, *(None,) * len(supplier)),
                (ESME_A, "ESME", "Landis+Gyr", "E470", CHF_A, T0, *supplier),
            ],
        )
        conn.commit()
    known = SUPPLIER if version == 2 else None
    with Inventory.open(db_path, create=create) as inv:
        assert inv.count() == 2
        assert inv.get(CHF_A) == chf(CHF_A)
        # the supplier kept (version 2) or not known yet (1); no MPAN known yet
        assert inv.get(ESME_A) == esme(ESME_A, CHF_A, supplier_id=known)
        inv.upsert(esme(ESME_A, CHF_A, supplier_id=SUPPLIER, mpan=MPAN), T0 + 1)
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (3,)
        assert conn.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
        assert conn.execute(
            "SELECT mpan FROM devices WHERE device_id = ?", (CHF_A,)
        ).fetchall() == [(None,)]
    with Inventory.open(db_path, create=False) as inv:
        assert inv.get(ESME_A) == esme(ESME_A, CHF_A, supplier_id=SUPPLIER, mpan=MPAN)
    # A migrated file and a new one have the same columns in the same order.
    fresh = tmp_path / "fresh.sqlite"
    Inventory(fresh).close()
    assert _columns(db_path) == _columns(fresh)


def test_sqlite_file_of_another_application_is_refused(db_path: Path) -> None:
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute("CREATE TABLE windows (chf_id BLOB)")
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
    with pytest.raises(InventoryError) as info:
        Inventory(db_path)
    assert info.value.reason == "not-an-inventory"
    assert str(db_path) in str(info.value)


def test_inventory_from_a_newer_gateway_is_refused(db_path: Path) -> None:
    Inventory(db_path).close()
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(InventoryError) as info:
        Inventory(db_path)
    assert info.value.reason == "unsupported-schema"


def test_file_that_is_not_sqlite_is_refused(db_path: Path) -> None:
    db_path.write_bytes(b"device_id,device_type\n" * 100)
    with pytest.raises(InventoryError) as info:
        Inventory(db_path)
    assert info.value.reason == "cannot-open"
    assert str(db_path) in str(info.value)


def test_open_without_create_does_not_make_a_file(db_path: Path) -> None:
    with pytest.raises(InventoryError) as info:
        Inventory.open(db_path, create=False)
    assert info.value.reason == "cannot-open"
    assert not db_path.exists()


# Envelopes -----------------------------------------------------------------------------


def test_envelope_from_the_wire_becomes_a_device_record() -> None:
    env = InventoryEnvelope(
        v=1,
        kind="inventory",
        device_id=ESME_A,
        device_type=DeviceType.ESME,
        smets=2,
        manufacturer="Landis+Gyr",
        model="E470",
        chf_id=CHF_A,
        status=DeviceStatus.COMMISSIONED,
    )
    record = Inventory.from_envelope(decode_inventory(encode(env)))
    assert record == esme(ESME_A, CHF_A)
    assert isinstance(record.device_type, DeviceType)
    assert isinstance(record.status, DeviceStatus)


def test_envelope_supplier_id_is_the_records_registered_supplier() -> None:
    env = InventoryEnvelope(
        v=1,
        kind="inventory",
        device_id=ESME_A,
        device_type=DeviceType.ESME,
        smets=2,
        manufacturer="Landis+Gyr",
        model="E470",
        chf_id=CHF_A,
        status=DeviceStatus.COMMISSIONED,
        supplier_id=SUPPLIER,
    )
    data = encode(env)
    assert decode_inventory(data) == env
    assert from_envelope(decode_inventory(data)) == esme(ESME_A, CHF_A, supplier_id=SUPPLIER)


def test_envelope_of_a_chf_has_no_chf_id_and_no_model() -> None:
    env = InventoryEnvelope(
        v=1,
        kind="inventory",
        device_id=CHF_A,
        device_type=DeviceType.CHF,
        smets=2,
        manufacturer="Toshiba",
        status=DeviceStatus.COMMISSIONED,
    )
    assert from_envelope(decode_inventory(encode(env))) == chf(CHF_A)


def test_envelope_like_object_with_bad_values_is_refused() -> None:
    class Duck(msgspec.Struct):
        device_id: bytes = ESME_A
        device_type: str = "ESME"
        smets: int = 2
        manufacturer: str = "Landis+Gyr"
        model: str | None = None
        chf_id: bytes | None = CHF_A
        status: str = "commissioned"
        supplier_id: bytes | None = None
        mpan: str | None = None

    assert from_envelope(Duck()).device_id == ESME_A
    assert from_envelope(Duck(mpan="13 1234 5678 907")).mpan == MPAN  # as printed on a bill
    for duck, field in [
        (Duck(device_type="esme-ish"), "device_type"),
        (Duck(status="gone"), "status"),
        (Duck(chf_id=b"\x01"), "chf_id"),
        (Duck(supplier_id=b"\x01" * 9), "supplier_id"),
        (Duck(mpan="1312345678900"), "mpan"),  # check digit wrong
        (Duck(mpan="131234567890"), "mpan"),
    ]:
        with pytest.raises(InventoryError) as info:
            from_envelope(duck)
        assert (info.value.reason, info.value.column) == ("invalid-record", field)


# CSV import ----------------------------------------------------------------------------


def test_csv_row_with_several_faults_reports_each_of_them(
    inventory: Inventory, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "inv.csv", HEADER, "nonsense,meter,0,,,00-DB,lost")
    report = inventory.import_csv(path, T0)
    assert report.rows_invalid == 1
    assert [(i.line, i.column) for i in report.issues] == [
        (2, "device_id"),
        (2, "device_type"),
        (2, "smets"),
        (2, "manufacturer"),
        (2, "chf_id"),
        (2, "status"),
    ]


def test_csv_accepts_every_eui_notation_header_case_and_extra_columns(
    inventory: Inventory, tmp_path: Path
) -> None:
    path = tmp_path / "inv.csv"
    path.write_text(
        "\ufeffStatus, Device_ID ,DEVICE_TYPE,SMETS,Manufacturer,CHF_ID,Region\r\n"
        "Commissioned,00:db:12:34:56:78:90:a1,esme,2,Landis+Gyr,00DB1234567890A0,North\r\n"
        "\r\n"
        "commissioned, 00-DB-12-34-56-78-90-A0 ,chf,2,Toshiba,,South\r\n",
        encoding="utf-8",
    )
    report = inventory.import_csv(path, T0)
    assert report.issues == ()
    assert (report.rows_read, report.rows_imported) == (2, 2)
    assert inventory.get(ESME_A) == msgspec.structs.replace(esme(ESME_A, CHF_A), model=None)
    assert inventory.get(CHF_A) == chf(CHF_A)


def test_csv_supplier_id_column_is_optional_and_read_like_other_euis(
    inventory: Inventory, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path / "inv.csv",
        HEADER + ",Supplier_ID",
        "00-DB-12-34-56-78-90-A0,CHF,2,Toshiba,,,commissioned,",
        "00-DB-12-34-56-78-90-A1,ESME,2,Landis+Gyr,E470,00-DB-12-34-56-78-90-A0,commissioned,"
        "90-B3-D5-1F-30-01-00-00",
        "00-DB-12-34-56-78-90-B1,ESME,2,Landis+Gyr,E470,00-DB-12-34-56-78-90-B0,commissioned,"
        " 90:b3:d5:1f:30:01:00:00 ",
        "00-DB-12-34-56-78-90-A2,ESME,2,Landis+Gyr,E470,00-DB-12-34-56-78-90-A0,commissioned,"
        "90-B3-D5-1F",
    )
    report = inventory.import_csv(path, T0)
    assert (report.rows_read, report.rows_imported) == (4, 3)
    assert [(i.line, i.column, i.value, i.reason) for i in report.issues] == [
        (5, "supplier_id", "90-B3-D5-1F", "bad-eui64"),
    ]
    assert inventory.get(CHF_A) == chf(CHF_A)
    assert inventory.get(ESME_A) == esme(ESME_A, CHF_A, supplier_id=SUPPLIER)
    assert inventory.get(ESME_B) == esme(ESME_B, CHF_B, supplier_id=SUPPLIER)
    assert inventory.get(GSME_A) is None


def test_csv_missing_column_error_names_the_file_and_column(
    inventory: Inventory, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path / "inv.csv",
        "device_id,device_type,manufacturer,status",
        "00-DB-12-34-56-78-90-A0,CHF,Toshiba,commissioned",
    )
    with pytest.raises(InventoryError) as info:
        inventory.import_csv(path, T0)
    assert info.value.reason == "missing-column"
    assert info.value.column == "smets"
    assert str(path) in str(info.value)
    assert "'smets'" in str(info.value)
    assert inventory.count() == 0


def test_csv_with_a_column_twice_is_refused(inventory: Inventory, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "inv.csv", HEADER + ",SMETS")
    with pytest.raises(InventoryError) as info:
        inventory.import_csv(path, T0)
    assert (info.value.reason, info.value.column) == ("duplicate-column", "smets")


def test_empty_csv_is_missing_every_column(inventory: Inventory, tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(InventoryError) as info:
        inventory.import_csv(path, T0)
    assert info.value.reason == "missing-column"
    assert "no header row" in str(info.value)


def test_written_csv_imports_back_to_the_same_records(inventory: Inventory, tmp_path: Path) -> None:
    records = [
        chf(CHF_A),
        esme(ESME_A, CHF_A, manufacturer='Landis, "Gyr"'),
        chf(CHF_B),
        esme(ESME_B, CHF_B, supplier_id=SUPPLIER, mpan=MPAN),
    ]
    path = tmp_path / "out.csv"
    write_inventory_csv(path, records)
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS) == HEADER + ",supplier_id,mpan"
    assert lines[-1].endswith(",commissioned,90-B3-D5-1F-30-01-00-00,1312345678907")
    assert lines[1].endswith(",commissioned,,")
    report = inventory.import_csv(path, T0)
    assert (report.rows_imported, report.issues) == (4, ())
    assert [inventory.get(r.device_id) for r in records] == records


_FIELD_VALUES = {
    "device_id": ["00-DB-12-34-56-78-90-A1", "00db1234567890a1", " 00:DB:12:34:56:78:90:A1", ""],
    "device_type": ["ESME", "esme", " Chf ", "TYPE2", "Type 2", ""],
    "smets": ["1", "2", " 2", "3", "02", ""],
    "manufacturer": ["Landis+Gyr", " Itron ", "Énergie", "", "Bad\udcff"],
    "model": ["E470", "", " ", "Mödel"],
    "chf_id": ["", "00-DB-12-34-56-78-90-A0", "00DB1234567890A0", "00-DB-12", "00 DB"],
    "status": ["commissioned", "Withdrawn", "installed-not-commissioned", "lost", ""],
    "supplier_id": ["", "90-B3-D5-1F-30-01-00-00", "90b3d51f30010000", "90-B3", " "],
    "mpan": ["", MPAN, " 1312345678907", "13 1234 5678 907", "1312345678900", "131234567890"],
}


@given(
    st.fixed_dictionaries(
        {
            column: st.sampled_from(values) | st.text(max_size=24)
            for column, values in _FIELD_VALUES.items()
        }
    )
)
def test_fast_row_parser_agrees_with_the_full_check(row: dict[str, str]) -> None:
    parser = _RowParser(*_header_index(list(CSV_COLUMNS), "x.csv"))
    fields = [row[column] for column in CSV_COLUMNS]
    issues: list[ImportIssue] = []
    checked = parser.check(fields, 2, issues)
    fast = parser.parse(fields)
    if fast is not None:
        assert fast == checked
    assert (checked is None) == bool(issues)


# CLI -----------------------------------------------------------------------------------


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="poa-gateway")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["inventory", *argv])
    status: int = args.handler(args)
    return status


@pytest.mark.parametrize("argv", [[], ["import"], ["show"]])
def test_inventory_subcommands_have_help(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        run_cli(*argv, "--help")
    assert info.value.code == 0
    assert "usage: poa-gateway inventory" in capsys.readouterr().out


def test_cli_import_prints_counts_and_every_invalid_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "var" / "inv.sqlite"
    path = write_csv(
        tmp_path / "inv.csv",
        HEADER,
        "00-DB-12-34-56-78-90-A0,CHF,2,Toshiba,,,commissioned",
        "00-DB-12-34-56-78-90-A1,ESME,3,Landis+Gyr,E470,00-DB-12-34-56-78-90-A0,commissioned",
        "00-DB-12-34-56-78-90-A2,GSME,2,Itron,,00-DB-12-34-56-78-90-A0,lost",
    )
    assert run_cli("import", str(path), "--db", str(db)) == 0
    out = capsys.readouterr().out.splitlines()
    assert "3 rows read, 1 imported, 2 invalid" in out[0]
    assert "now holds 1 devices" in out[0]
    assert out[1:] == [
        f"{path}:3: smets '3': bad-smets: expected 1 or 2",
        f"{path}:4: status 'lost': unknown-status: expected commissioned, "
        "installed-not-commissioned, decommissioned or withdrawn",
    ]
    with Inventory.open(db, create=False) as inv:
        assert inv.get(CHF_A) == chf(CHF_A)


def test_cli_import_writes_the_inventory_the_configuration_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "etc" / "gateway.toml"
    config.parent.mkdir()
    config.write_text('[paths]\nstate_dir = "../state"\n')
    monkeypatch.chdir(tmp_path)
    write_inventory_csv(tmp_path / "inv.csv", [chf(CHF_A)])
    assert run_cli("import", "inv.csv", "--config", str(config)) == 0
    assert (tmp_path / "state" / "inventory.sqlite").is_file()
    capsys.readouterr()
    monkeypatch.setenv("POA_GATEWAY_CONFIG", str(config))
    assert run_cli("show", "--json", format_eui64(CHF_A)) == 0
    assert json.loads(capsys.readouterr().out)["device_type"] == "CHF"


def test_cli_import_of_a_file_without_a_column_fails_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_csv(tmp_path / "inv.csv", "device_id,device_type,smets,manufacturer")
    assert run_cli("import", str(path), "--db", str(tmp_path / "inv.sqlite")) == Exit.USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("poa-gateway inventory import: ")
    assert str(path) in captured.err
    assert "'status'" in captured.err


def test_cli_show_prints_the_record_as_json(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Inventory(db_path) as inv:
        inv.upsert(esme(ESME_A, CHF_A), T0)
        inv.upsert(esme(ESME_B, CHF_B, supplier_id=SUPPLIER, mpan=MPAN_B), T0)
    assert run_cli("show", "00db1234567890a1", "--db", str(db_path)) == 0
    human = capsys.readouterr().out
    assert "manufacturer: Landis+Gyr" in human
    assert "supplier_id:  -" in human
    assert "mpan:         -" in human
    assert run_cli("show", "--json", "00db1234567890a1", "--db", str(db_path)) == 0
    assert json.loads(capsys.readouterr().out) == {
        "device_id": "00-DB-12-34-56-78-90-A1",
        "device_type": "ESME",
        "smets": 2,
        "manufacturer": "Landis+Gyr",
        "model": "E470",
        "chf_id": "00-DB-12-34-56-78-90-A0",
        "status": "commissioned",
        "supplier_id": None,
        "mpan": None,
        "distributor": None,
    }
    assert run_cli("show", "--json", "00-DB-12-34-56-78-90-B1", "--db", str(db_path)) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["supplier_id"] == "90-B3-D5-1F-30-01-00-00"
    assert (shown["mpan"], shown["distributor"]) == (MPAN_B, "South of Scotland (SPEN)")
    assert run_cli("show", "00-DB-12-34-56-78-90-B1", "--db", str(db_path)) == 0
    assert "distributor:  South of Scotland (SPEN)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("eui", "create", "message", "status"),
    [
        (
            "00-DB-12-34-56-78-90-B1",
            True,
            "00-DB-12-34-56-78-90-B1 is not in the inventory",
            Exit.FAILED,
        ),
        ("00-DB-12-34", True, "expected 8 groups", Exit.USAGE),
        ("00-DB-12-34-56-78-90-B1", False, "no such inventory file", Exit.FAILED),
    ],
)
def test_cli_show_fails_with_one_line(
    db_path: Path,
    capsys: pytest.CaptureFixture[str],
    *,
    eui: str,
    create: bool,
    message: str,
    status: Exit,
) -> None:
    if create:
        Inventory(db_path).close()
    assert run_cli("show", eui, "--db", str(db_path)) == status
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("poa-gateway inventory show: ")
    assert message in captured.err
    assert captured.err.count("\n") == 1
    assert db_path.exists() == create
