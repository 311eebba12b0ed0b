"""The Smart Metering Inventory on PostgreSQL (issue 12): the inventory behaviour run
against the SQLite file and a real PostgreSQL (a throwaway cluster: tests/pg_support.py),
the same import of the same file giving the same records and report, the schema and its
mark, a connection ended by the server, ``poa-gateway inventory`` on a postgresql
configuration, and a gateway that finds in PostgreSQL the device another instance was
told about."""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import msgspec
import psycopg
import pytest

from gateway.cli.inventory import add_parser
from gateway.config import load_config
from gateway.core.devices import DeviceRecord, DeviceStatus, DeviceType
from gateway.eui import format_eui64
from gateway.exits import Exit
from gateway.state.errors import StoreError, StoreReason
from gateway.state.inventory import Inventory, InventoryError, InventoryStore, write_inventory_csv
from gateway.state.inventory_store import open_inventory
from gateway.state.lease import LeaseTable
from gateway.state.pg_inventory import PostgresInventory
from gateway.state.postgresql import PostgresStore
from gateway.wire import InventoryEnvelope, encode

from . import e2e_support
from .e2e_support import CHF, ESME, Broker, Client, Home, cs06
from .pg_support import Cluster
from .test_faults import in_process, until
from .test_inventory import (
    CHF_A,
    CHF_B,
    ESME_A,
    ESME_B,
    GSME_A,
    HEADER,
    MPAN,
    MPAN_B,
    PPMID_A,
    SUPPLIER,
    T0,
    chf,
    esme,
    write_csv,
)

pytestmark = pytest.mark.timeout(120)

Opener = Callable[[], InventoryStore]


class _Closable(Protocol):
    def close(self) -> None: ...


_APP = "poa-gateway inventory"  # the application_name of the inventory's connection


@pytest.fixture(params=["sqlite", "postgresql"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens (and reopens) one inventory of the backend under test."""
    if request.param == "sqlite":
        path = tmp_path / "inventory.sqlite"
        return lambda: Inventory.open(path)
    dsn: str = request.getfixturevalue("pg_dsn")
    return lambda: PostgresInventory.open(dsn)


@pytest.fixture
def inventory(opener: Opener) -> Iterator[InventoryStore]:
    with opener() as inv:
        yield inv


def backend_pids(dsn: str) -> set[int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            (_APP,),
        ).fetchall()
    return {int(pid) for (pid,) in rows}


def terminate_inventory_connections(dsn: str) -> set[int]:
    """End the inventory's connections from the server side, waiting until they are gone."""
    pids = backend_pids(dsn)
    assert pids, "no inventory connection to end"
    with psycopg.connect(dsn, autocommit=True) as conn:
        for pid in pids:
            # The timeout makes the call wait until the backend has exited.
            conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
    return pids


def meta(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return dict(conn.execute("SELECT key, value FROM store_meta").fetchall())


def tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
    return {name for (name,) in rows}


# Storage, on both backends ----------------------------------------------------------------


def test_upserted_device_is_returned_by_get_and_counted(inventory: InventoryStore) -> None:
    record = esme(ESME_A, CHF_A, supplier_id=SUPPLIER)
    inventory.upsert(record, T0)
    assert inventory.get(ESME_A) == record
    assert inventory.count() == 1
    inventory.upsert(esme(ESME_A, CHF_A), T0 + 1)  # the DSP no longer names a supplier
    assert inventory.get(ESME_A) == esme(ESME_A, CHF_A)
    assert inventory.count() == 1


def test_mpan_is_stored_as_its_thirteen_digits_and_can_be_cleared(
    inventory: InventoryStore,
) -> None:
    inventory.upsert(esme(ESME_A, CHF_A, mpan=MPAN), T0)
    assert inventory.get(ESME_A) == esme(ESME_A, CHF_A, mpan=MPAN)
    assert inventory.devices_on_chf(CHF_A) == [esme(ESME_A, CHF_A, mpan=MPAN)]
    inventory.upsert(esme(ESME_A, CHF_A, mpan="18 0002 1679 848"), T0 + 1)  # as on a bill
    assert inventory.get(ESME_A) == esme(ESME_A, CHF_A, mpan=MPAN_B)
    inventory.upsert_many([chf(CHF_A), esme(ESME_A, CHF_A)], T0 + 2)  # no longer named
    assert inventory.get(ESME_A) == esme(ESME_A, CHF_A)


@pytest.mark.parametrize(
    ("mpan", "why"),
    [("1312345678900", "check digit is 0"), ("13123", "got 5"), ("13123456789O7", "'O'")],
)
def test_an_invalid_mpan_is_refused_naming_it_and_nothing_is_written(
    inventory: InventoryStore, mpan: str, why: str
) -> None:
    with pytest.raises(InventoryError) as refused:
        inventory.upsert(esme(ESME_A, CHF_A, mpan=mpan), T0)
    assert (refused.value.reason, refused.value.column) == ("invalid-record", "mpan")
    assert why in str(refused.value)
    with pytest.raises(InventoryError):
        inventory.upsert_many([chf(CHF_A), esme(ESME_A, CHF_A, mpan=mpan)], T0)
    assert inventory.count() == 0


def test_mpans_gives_the_mpan_of_each_device_that_has_one(inventory: InventoryStore) -> None:
    # The report writer's batch lookup (docs/decisions.md D34).
    inventory.upsert_many([esme(ESME_A, CHF_A, mpan=MPAN), esme(ESME_B, CHF_A), chf(CHF_A)], T0)
    unknown = bytes.fromhex("00DB1234567890FF")
    assert inventory.mpans([ESME_A, ESME_B, unknown, CHF_A]) == {ESME_A: MPAN}
    assert inventory.mpans([]) == {}
    with pytest.raises(ValueError, match="at most 500"):
        inventory.mpans([unknown] * 501)


def test_unknown_device_is_none(inventory: InventoryStore) -> None:
    assert inventory.get(ESME_A) is None
    assert inventory.chf_of(ESME_A) is None
    assert inventory.devices_on_chf(CHF_A) == []
    assert inventory.count() == 0


def test_upsert_replaces_every_field_of_a_known_device(inventory: InventoryStore) -> None:
    inventory.upsert(esme(ESME_A, CHF_A), T0)
    moved = DeviceRecord(
        device_id=ESME_A,
        device_type=DeviceType.ESME,
        smets=1,
        manufacturer="Secure",
        status=DeviceStatus.DECOMMISSIONED,
        chf_id=CHF_B,
        model=None,
    )
    inventory.upsert(moved, T0 + 1)
    assert inventory.get(ESME_A) == moved
    assert inventory.chf_of(ESME_A) == CHF_B
    assert inventory.devices_on_chf(CHF_A) == []
    assert inventory.count() == 1


def test_devices_on_chf_lists_that_han_only_in_eui_order(inventory: InventoryStore) -> None:
    gsme = DeviceRecord(
        device_id=GSME_A,
        device_type=DeviceType.GSME,
        smets=2,
        manufacturer="Itron",
        status=DeviceStatus.INSTALLED_NOT_COMMISSIONED,
        chf_id=CHF_A,
    )
    inventory.upsert_many(
        [chf(CHF_A), chf(CHF_B), gsme, esme(ESME_B, CHF_B), esme(ESME_A, CHF_A)], T0
    )
    assert inventory.devices_on_chf(CHF_A) == [esme(ESME_A, CHF_A), gsme]
    assert [r.device_id for r in inventory.devices_on_chf(CHF_B)] == [ESME_B]
    assert inventory.chf_of(CHF_A) is None  # a CHF sits on no other CHF's HAN


def test_upsert_many_counts_what_it_wrote_and_the_later_record_wins(
    inventory: InventoryStore,
) -> None:
    written = inventory.upsert_many([chf(CHF_A), esme(ESME_A, CHF_A), esme(ESME_A, CHF_B)], T0)
    assert written == 3
    assert inventory.count() == 2
    assert inventory.get(ESME_A) == esme(ESME_A, CHF_B)


def test_upsert_many_writes_nothing_if_one_record_is_invalid(inventory: InventoryStore) -> None:
    bad = msgspec.structs.replace(esme(ESME_B, CHF_B), smets=3)
    with pytest.raises(InventoryError) as info:
        inventory.upsert_many([chf(CHF_A), bad], T0)
    assert (info.value.reason, info.value.column) == ("invalid-record", "smets")
    assert inventory.count() == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"device_id": b"\x00" * 7}, "device_id"),
        ({"chf_id": b"\x00" * 9}, "chf_id"),
        ({"supplier_id": b"\x00" * 7}, "supplier_id"),
        ({"smets": 3}, "smets"),
        ({"smets": True}, "smets"),
        ({"manufacturer": "  "}, "manufacturer"),
        ({"device_type": "METER"}, "device_type"),
        ({"status": "lost"}, "status"),
    ],
)
def test_invalid_record_is_refused_naming_the_field(
    inventory: InventoryStore, change: dict[str, object], field: str
) -> None:
    bad = msgspec.structs.replace(esme(ESME_A, CHF_A), **change)
    with pytest.raises(InventoryError) as info:
        inventory.upsert(bad, T0)
    assert (info.value.reason, info.value.column) == ("invalid-record", field)
    assert inventory.count() == 0


def test_data_survives_closing_and_reopening(opener: Opener) -> None:
    with opener() as inv:
        inv.upsert_many([chf(CHF_A), esme(ESME_A, CHF_A)], T0)
    with opener() as inv:
        assert inv.count() == 2
        assert inv.get(ESME_A) == esme(ESME_A, CHF_A)


def test_a_closed_inventory_refuses_with_a_database_error(opener: Opener) -> None:
    inv = opener()
    inv.close()
    inv.close()  # idempotent
    with pytest.raises(InventoryError) as info:
        inv.get(ESME_A)
    assert info.value.reason == "database-error"


# CSV import, on both backends --------------------------------------------------------------


def test_csv_import_upserts_good_rows_and_reports_each_bad_row(
    inventory: InventoryStore, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path / "inv.csv",
        HEADER,
        "00-DB-12-34-56-78-90-A0,CHF,2,Toshiba,,,commissioned",
        "00-DB-12-34-56-78-90-ZZ,ESME,2,Landis+Gyr,E470,00-DB-12-34-56-78-90-A0,commissioned",
        "00-DB-12-34-56-78-90-A1,ESME,2,Landis+Gyr,E470,00-DB-12-34-56-78-90-A0,commissioned",
        "00-DB-12-34-56-78-90-A2,WATER,2,Itron,,00-DB-12-34-56-78-90-A0,commissioned",
        "00-DB-12-34-56-78-90-A3,PPMID,3,Chameleon,,00-DB-12-34-56-78-90-A0,commissioned",
        "00-DB-12-34-56-78-90-A4,GSME,2,,,00-DB-12-34-56-78-90-A0,commissioned",
    )
    report = inventory.import_csv(path, T0)
    assert (report.rows_read, report.rows_imported, report.rows_invalid) == (6, 2, 4)
    assert [(i.line, i.column, i.value, i.reason) for i in report.issues] == [
        (3, "device_id", "00-DB-12-34-56-78-90-ZZ", "bad-eui64"),
        (5, "device_type", "WATER", "unknown-device-type"),
        (6, "smets", "3", "bad-smets"),
        (7, "manufacturer", "", "missing-value"),
    ]
    assert inventory.count() == 2
    assert inventory.get(ESME_A) == esme(ESME_A, CHF_A)
    assert inventory.get(PPMID_A) is None


def test_csv_mpan_column_is_optional_and_a_bad_mpan_is_a_row_issue(
    inventory: InventoryStore, tmp_path: Path
) -> None:
    esme_row = "ESME,2,Landis+Gyr,E470,00-DB-12-34-56-78-90-A0,commissioned,"
    path = write_csv(
        tmp_path / "inv.csv",
        HEADER + ",supplier_id,MPAN",
        "00-DB-12-34-56-78-90-A0,CHF,2,Toshiba,,,commissioned,,",
        f"00-DB-12-34-56-78-90-A1,{esme_row},{MPAN}",
        f"00-DB-12-34-56-78-90-B1,{esme_row},18 0002 1679 848",
        f"00-DB-12-34-56-78-90-A2,{esme_row},1312345678900",
        f"00-DB-12-34-56-78-90-A3,{esme_row},131234567890",
        f"00-DB-12-34-56-78-90-A4,{esme_row},13-1234-5678-907",
    )
    report = inventory.import_csv(path, T0)
    assert (report.rows_read, report.rows_imported, report.rows_invalid) == (6, 3, 3)
    assert [(i.line, i.column, i.value, i.reason) for i in report.issues] == [
        (5, "mpan", "1312345678900", "bad-mpan"),
        (6, "mpan", "131234567890", "bad-mpan"),
        (7, "mpan", "13-1234-5678-907", "bad-mpan"),
    ]
    details = [i.detail for i in report.issues]
    assert "check digit is 0, the first 12 digits give 7" in details[0]
    assert "has 13 digits, got 12" in details[1]
    assert "only the digits 0-9" in details[2]
    assert inventory.get(CHF_A) == chf(CHF_A)
    assert inventory.get(ESME_A) == esme(ESME_A, CHF_A, mpan=MPAN)
    assert inventory.get(ESME_B) == esme(ESME_B, CHF_A, mpan=MPAN_B)
    assert inventory.get(GSME_A) is None


def test_csv_rows_that_are_not_well_formed_are_reported_and_skipped(
    inventory: InventoryStore, tmp_path: Path
) -> None:
    path = tmp_path / "inv.csv"
    path.write_bytes(
        (HEADER + "\n").encode()
        + b"00-DB-12-34-56-78-90-A0,CHF,2,Toshiba\n"  # too few fields
        + b"00-DB-12-34-56-78-90-A1,ESME,2,Landis\xff,,,commissioned\n"  # not UTF-8
        + b'00-DB-12-34-56-78-90-A2,GSME,2,"Itron"x,,,commissioned\n'  # bad quoting
        + b'00-DB-12-34-56-78-90-A3,ESME,2,"Landis,\nGyr",,,commissioned\n'  # two lines
        + "00-DB-12-34-56-78-90-B0,CHF,2,Énergie,,,commissioned\n".encode()
    )
    report = inventory.import_csv(path, T0)
    assert [(i.line, i.column, i.reason) for i in report.issues] == [
        (2, None, "field-count"),
        (3, "manufacturer", "not-utf8"),
        (4, None, "bad-csv"),
    ]
    assert (report.rows_read, report.rows_imported) == (5, 2)
    multiline = inventory.get(PPMID_A)
    assert multiline is not None
    assert multiline.manufacturer == "Landis,\nGyr"
    assert inventory.get(CHF_B) == msgspec.structs.replace(chf(CHF_B), manufacturer="Énergie")


@pytest.mark.parametrize(
    ("header", "reason", "column"),
    [
        ("device_id,device_type,manufacturer,status", "missing-column", "smets"),
        (HEADER + ",SMETS", "duplicate-column", "smets"),
        ("", "missing-column", "device_id"),
    ],
)
def test_csv_whose_header_is_wrong_is_refused_and_nothing_is_written(
    inventory: InventoryStore, tmp_path: Path, header: str, reason: str, column: str
) -> None:
    path = write_csv(tmp_path / "inv.csv", header, "00-DB-12-34-56-78-90-A0,CHF,2,T,commissioned")
    with pytest.raises(InventoryError) as info:
        inventory.import_csv(path, T0)
    assert (info.value.reason, info.value.column) == (reason, column)
    assert str(path) in str(info.value)
    assert inventory.count() == 0


def test_unreadable_csv_names_the_file(inventory: InventoryStore, tmp_path: Path) -> None:
    path = tmp_path / "absent.csv"
    with pytest.raises(InventoryError) as info:
        inventory.import_csv(path, T0)
    assert info.value.reason == "unreadable-file"
    assert str(path) in str(info.value)


def test_import_over_several_batches_keeps_every_row_and_the_later_of_a_device(
    inventory: InventoryStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.state.inventory.IMPORT_BATCH_ROWS", 7)
    records = [
        chf(i.to_bytes(8, "big")) if i % 2 else esme(i.to_bytes(8, "big"), CHF_A)
        for i in range(1, 51)
    ]
    # Device 2 again in the same batch of 7 (rows 1-7), device 4 again three batches on:
    # each time the later row must win.
    again = [esme((2).to_bytes(8, "big"), CHF_B), esme((4).to_bytes(8, "big"), CHF_B)]
    rows = [*records[:5], again[0], *records[5:20], again[1], *records[20:]]
    path = tmp_path / "many.csv"
    write_inventory_csv(path, rows)
    report = inventory.import_csv(path, T0)
    assert (report.rows_read, report.rows_imported, report.issues) == (52, 52, ())
    assert inventory.count() == 50
    assert inventory.get((2).to_bytes(8, "big")) == again[0]
    assert inventory.get((4).to_bytes(8, "big")) == again[1]
    assert len(inventory.devices_on_chf(CHF_A)) == 23


def test_both_backends_import_one_file_to_the_same_records_and_report(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.state.inventory.IMPORT_BATCH_ROWS", 100)
    lines = [HEADER + ",supplier_id,mpan"]
    makers = ["Landis+Gyr", " Itron ", "Énergie", "", "Secure"]
    types = ["ESME", "gsme", "CHF", "WATER", "PPMID"]
    for i in range(1000):
        device = f"00-DB-00-00-00-00-{i % 700 // 256:02X}-{i % 700 % 256:02X}"  # some twice
        if i % 97 == 0:
            device = device[:-1] + "Z"
        smets = "3" if i % 89 == 0 else str(1 + i % 2)
        chf_id = "" if i % 3 else f"00-DB-12-34-56-78-90-{i % 200:02X}"
        supplier = "90-B3-D5-1F-30-01-00-00" if i % 5 == 0 else ("90-B3" if i % 83 == 0 else "")
        status = "lost" if i % 101 == 0 else "commissioned"
        mpan = MPAN if i % 7 == 0 else ("1312345678900" if i % 79 == 0 else "")
        lines.append(
            f"{device},{types[i % 5]},{smets},{makers[i % 5]},M{i % 7},{chf_id},{status},"
            f"{supplier},{mpan}"
        )
    path = write_csv(tmp_path / "mixed.csv", *lines)
    with Inventory.open(tmp_path / "inventory.sqlite") as sqlite_inv:
        expected = sqlite_inv.import_csv(path, T0)
        devices = [bytes.fromhex("00DB00000000") + i.to_bytes(2, "big") for i in range(700)]
        want = [sqlite_inv.get(d) for d in devices]
    with PostgresInventory.open(pg_dsn) as pg_inv:
        got = pg_inv.import_csv(path, T0)
        assert got == expected
        assert [pg_inv.get(d) for d in devices] == want
        assert pg_inv.count() == sum(r is not None for r in want)
    assert expected.rows_invalid > 0  # the file exercised the report
    assert expected.rows_imported > sum(r is not None for r in want)  # and duplicates


# PostgreSQL only ----------------------------------------------------------------------------


def test_the_schema_is_created_once_by_openers_at_the_same_time(pg_dsn: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(5)

    def open_one(opener: Callable[[], _Closable]) -> None:
        start.wait()
        try:
            opened = opener()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        else:
            opened.close()

    openers: list[Callable[[], _Closable]] = [lambda: PostgresInventory.open(pg_dsn)] * 4
    openers.append(lambda: PostgresStore.open(pg_dsn))  # store_meta is the store's too
    threads = [threading.Thread(target=open_one, args=(o,)) for o in openers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert meta(pg_dsn)["inventory_schema_version"] == "2"
    assert meta(pg_dsn)["schema_version"] == "1"


@pytest.mark.parametrize("first", ["inventory", "state store"])
def test_inventory_and_state_store_share_a_fresh_database_whichever_opens_first(
    pg_dsn: str, first: str
) -> None:
    opened: list[Callable[[], _Closable]] = [
        lambda: PostgresInventory.open(pg_dsn),
        lambda: PostgresStore.open(pg_dsn),
    ]
    if first == "state store":
        opened.reverse()
    for opener in opened:
        opener().close()
    assert {"store_meta", "inventory", "activations"} <= tables(pg_dsn)
    assert meta(pg_dsn)["schema_version"] == "1"
    assert meta(pg_dsn)["inventory_schema_version"] == "2"
    with PostgresStore.open(pg_dsn) as store, PostgresInventory.open(pg_dsn) as inv:
        assert store.counts()["activations"] == 0
        assert inv.count() == 0


def test_reads_and_writes_carry_on_after_the_server_ends_the_connection(
    pg_dsn: str, tmp_path: Path
) -> None:
    with PostgresInventory.open(pg_dsn) as inv:
        inv.upsert(esme(ESME_A, CHF_A), T0)
        ended = terminate_inventory_connections(pg_dsn)
        assert inv.get(ESME_A) == esme(ESME_A, CHF_A)
        assert backend_pids(pg_dsn).isdisjoint(ended)  # a new connection answered

        ended = terminate_inventory_connections(pg_dsn)
        inv.upsert(esme(ESME_B, CHF_B), T0)
        assert backend_pids(pg_dsn).isdisjoint(ended)

        terminate_inventory_connections(pg_dsn)
        assert inv.upsert_many([chf(CHF_A), chf(CHF_B)], T0) == 2

        terminate_inventory_connections(pg_dsn)
        write_inventory_csv(tmp_path / "inv.csv", [esme(GSME_A, CHF_A)])
        assert inv.import_csv(tmp_path / "inv.csv", T0).rows_imported == 1

        terminate_inventory_connections(pg_dsn)
        assert inv.count() == 5


def test_a_dsn_that_cannot_connect_is_refused_naming_the_server_not_the_password() -> None:
    with pytest.raises(InventoryError) as refused:
        PostgresInventory.open("host=127.0.0.1 port=1 dbname=poa user=poa", password="s3cret-pw")
    assert refused.value.reason == "cannot-open"
    assert "127.0.0.1:1/poa" in str(refused.value)
    assert "s3cret-pw" not in str(refused.value)
    assert refused.value.__cause__ is None  # libpq's error is summarised, not chained


def test_another_inventory_schema_version_is_refused_and_left_as_it_is(pg_dsn: str) -> None:
    with PostgresInventory.open(pg_dsn) as inv:
        inv.upsert(chf(CHF_A), T0)
    for version, age in (("3", "newer"), ("0", "older")):
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(
                "UPDATE store_meta SET value = %s WHERE key = 'inventory_schema_version'",
                (version,),
            )
        with pytest.raises(InventoryError) as refused:
            PostgresInventory.open(pg_dsn)
        assert refused.value.reason == "unsupported-schema"
        assert f"version {version} is {age}" in str(refused.value)
        assert meta(pg_dsn)["inventory_schema_version"] == version
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM inventory").fetchall() == [(1,)]


def columns(dsn: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'inventory' ORDER BY ordinal_position"
        ).fetchall()
    return [(name, kind) for name, kind in rows]


def test_version_1_inventory_is_migrated_keeping_its_rows(pg_dsn: str) -> None:
    with PostgresInventory.open(pg_dsn) as inv:
        inv.upsert_many([chf(CHF_A), esme(ESME_A, CHF_A, supplier_id=SUPPLIER)], T0)
    fresh = columns(pg_dsn)
    # Back to what version 1 made: no mpan column, the mark at 1.
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE inventory DROP COLUMN mpan")
        conn.execute("UPDATE store_meta SET value = '1' WHERE key = 'inventory_schema_version'")
    assert "mpan" not in dict(columns(pg_dsn))
    with PostgresInventory.open(pg_dsn, create=False) as inv:
        assert inv.count() == 2
        assert inv.get(ESME_A) == esme(ESME_A, CHF_A, supplier_id=SUPPLIER)  # no MPAN known
        inv.upsert(esme(ESME_A, CHF_A, supplier_id=SUPPLIER, mpan=MPAN), T0 + 1)
    assert meta(pg_dsn)["inventory_schema_version"] == "2"
    assert columns(pg_dsn) == fresh
    with PostgresInventory.open(pg_dsn) as inv:
        assert inv.get(ESME_A) == esme(ESME_A, CHF_A, supplier_id=SUPPLIER, mpan=MPAN)
        assert inv.get(CHF_A) == chf(CHF_A)


def test_a_table_called_inventory_that_is_not_ours_is_refused(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE inventory (sku text PRIMARY KEY, shelf int)")
    with pytest.raises(InventoryError) as refused:
        PostgresInventory.open(pg_dsn)
    assert refused.value.reason == "not-an-inventory"
    assert "store_meta" not in tables(pg_dsn)


def test_open_without_create_on_a_database_without_inventory_creates_nothing(
    pg_dsn: str,
) -> None:
    with pytest.raises(InventoryError) as refused:
        PostgresInventory.open(pg_dsn, create=False)
    assert refused.value.reason == "cannot-open"
    assert "no inventory" in str(refused.value)
    assert tables(pg_dsn) == set()


def test_a_database_not_in_utf8_is_refused(pg_cluster: Cluster) -> None:
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE latin TEMPLATE template0 ENCODING 'LATIN1' LOCALE 'C'")
    dsn = pg_cluster.dsn("latin")
    with pytest.raises(InventoryError) as refused:
        PostgresInventory.open(dsn)
    assert refused.value.reason == "cannot-open"
    assert "LATIN1" in str(refused.value)
    assert "UTF8" in str(refused.value)


def test_a_nul_character_postgresql_cannot_store_is_refused_by_name(
    pg_dsn: str, tmp_path: Path
) -> None:
    with PostgresInventory.open(pg_dsn) as inv:
        for field in ("manufacturer", "model"):
            bad = msgspec.structs.replace(esme(ESME_A, CHF_A), **{field: "Lan\x00dis"})
            with pytest.raises(InventoryError) as refused:
                inv.upsert(bad, T0)
            assert (refused.value.reason, refused.value.column) == ("invalid-record", field)
            with pytest.raises(InventoryError):
                inv.upsert_many([chf(CHF_A), bad], T0)
        assert inv.count() == 0
        path = write_csv(
            tmp_path / "inv.csv",
            HEADER,
            "00-DB-12-34-56-78-90-A0,CHF,2,Toshiba,,,commissioned",
            "00-DB-12-34-56-78-90-A1,ESME,2,Landis+Gyr,E4\x0070,,commissioned",
            "00-DB-12-34-56-78-90-B0,CHF,2,Toshiba,,,commissioned",
        )
        report = inv.import_csv(path, T0)
        assert (report.rows_read, report.rows_imported) == (3, 2)
        assert [(i.line, i.column, i.reason) for i in report.issues] == [(3, None, "bad-csv")]
        assert "NUL character in model" in report.issues[0].detail
        assert inv.get(CHF_B) == chf(CHF_B)


# poa-gateway inventory on a postgresql configuration ---------------------------------------


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="poa-gateway")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["inventory", *argv])
    status: int = args.handler(args)
    return status


def pg_config(tmp_path: Path, dsn: str) -> Path:
    config = tmp_path / "etc" / "gateway.toml"
    config.parent.mkdir()
    config.write_text(
        f'[paths]\nstate_dir = "../state"\n[state]\nbackend = "postgresql"\ndsn = "{dsn}"\n'
    )
    return config


def test_cli_import_with_a_postgresql_config_fills_the_shared_inventory(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = pg_config(tmp_path, pg_dsn)
    monkeypatch.setenv("POA_PG_PASSWORD", "pw-from-the-environment")
    path = write_csv(
        tmp_path / "inv.csv",
        HEADER,
        "00-DB-12-34-56-78-90-A0,CHF,2,Toshiba,,,commissioned",
        "00-DB-12-34-56-78-90-A1,ESME,3,Landis+Gyr,E470,00-DB-12-34-56-78-90-A0,commissioned",
        "00-DB-12-34-56-78-90-A1,ESME,2,Landis+Gyr,E470,00-DB-12-34-56-78-90-A0,commissioned",
    )
    assert run_cli("import", str(path), "--config", str(config)) == Exit.OK
    out = capsys.readouterr().out
    with PostgresInventory.open(pg_dsn) as inv:
        where = inv.path
    first, *rest = out.splitlines()
    assert "3 rows read, 2 imported, 1 invalid" in first
    assert f"{where} now holds 2 devices" in first
    assert rest == [f"{path}:3: smets '3': bad-smets: expected 1 or 2"]
    assert "pw-from-the-environment" not in out
    assert not (tmp_path / "state").exists()  # no SQLite inventory beside it
    with PostgresInventory.open(pg_dsn, create=False) as inv:
        assert inv.get(ESME_A) == esme(ESME_A, CHF_A)

    assert run_cli("show", "--json", format_eui64(ESME_A), "--config", str(config)) == 0
    assert json.loads(capsys.readouterr().out)["chf_id"] == format_eui64(CHF_A)
    assert run_cli("show", format_eui64(ESME_B), "--config", str(config)) == Exit.FAILED
    assert f"is not in the inventory {where}" in capsys.readouterr().err


def test_cli_show_on_a_postgresql_database_without_inventory_fails_and_creates_nothing(
    tmp_path: Path, pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = pg_config(tmp_path, pg_dsn)
    assert run_cli("show", format_eui64(ESME_A), "--config", str(config)) == Exit.FAILED
    captured = capsys.readouterr()
    assert captured.err.startswith("poa-gateway inventory show: ")
    assert "no inventory" in captured.err
    assert captured.err.count("\n") == 1
    assert tables(pg_dsn) == set()


def test_open_inventory_follows_the_state_backend(tmp_path: Path, pg_dsn: str) -> None:
    sqlite_toml = tmp_path / "sqlite.toml"
    sqlite_toml.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n')
    (tmp_path / "state").mkdir()
    with open_inventory(load_config(sqlite_toml, env={})) as inv:
        assert isinstance(inv, Inventory)
        assert inv.path == str(tmp_path / "state" / "inventory.sqlite")
    pg_toml = pg_config(tmp_path, pg_dsn)
    with open_inventory(load_config(pg_toml, env={})) as inv:
        assert isinstance(inv, PostgresInventory)


# The daemon ---------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_a_device_one_instance_was_told_about_is_known_to_the_next(
    tmp_path: Path, broker: Broker, pg_dsn: str
) -> None:
    # Two instances on one database, one after the other, as across a failover. Each
    # home has its own inventory.sqlite listing ESME: on PostgreSQL neither is read.
    homes = [Home(tmp_path / name, broker.port) for name in ("first", "second")]
    for home in homes:
        with home.config.open("a") as f:
            f.write(f'[state]\nbackend = "postgresql"\ndsn = "{pg_dsn}"\n')
    client = Client(broker.port, "pg-inventory")
    await client.start()
    envelope = InventoryEnvelope(
        v=1,
        kind="inventory",
        device_id=ESME,
        device_type=DeviceType.ESME,
        smets=2,
        manufacturer="Landis+Gyr",
        status=DeviceStatus.COMMISSIONED,
        chf_id=CHF,
    )
    try:
        async with in_process(load_config(homes[0].config, env={})) as (gateway, lines, _m):
            assert isinstance(gateway.inventory, PostgresInventory)
            await client.command(cs06(homes[0], 1000))
            await until(lambda: lines.events("command.refused"), "the refusal")
            assert lines.events("command.refused")[0]["reason"] == "unknown-device"
            await client.adapter.publish("dsp/inventory", encode(envelope))
            await until(lambda: lines.events("inventory.updated"), "the inventory update")
        async with in_process(load_config(homes[1].config, env={})) as (_gateway, lines, _m):
            await client.command(cs06(homes[1], 1001))
            await until(lambda: lines.events("activation.tracked"), "the window")
            await client.alert("a-1", CHF, e2e_support.now_ms())
            await client.wait_outputs(1)
            assert client.suppressed_ids() == ["a-1"]
    finally:
        await client.close()


def test_writes_of_an_instance_that_lost_the_lease_are_refused_and_change_nothing(
    pg_dsn: str,
) -> None:
    old = LeaseTable(
        pg_dsn, None, run_id="old", name="old", client_id="c", lease_ms=60_000, lock_timeout_ms=500
    )
    new = LeaseTable(
        pg_dsn, None, run_id="new", name="new", client_id="c", lease_ms=60_000, lock_timeout_ms=500
    )
    try:
        assert old.take() == 1
        with PostgresInventory.open(pg_dsn) as inventory:
            inventory.fence("old", 1)
            inventory.upsert(esme(ESME_A, CHF_A), T0)  # still the leader: written
            old.release(1)
            assert new.take() == 2
            with pytest.raises(StoreError) as caught:
                inventory.upsert(esme(ESME_A, CHF_B), T0 + 1)
            assert caught.value.reason is StoreReason.FENCED
            with pytest.raises(StoreError):
                inventory.upsert_many([esme(ESME_B, CHF_B)], T0 + 1)
            assert inventory.get(ESME_A) == esme(ESME_A, CHF_A)
            assert inventory.get(ESME_B) is None
    finally:
        old.close()
        new.close()
