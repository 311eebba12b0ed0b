"""``poa-gateway state copy`` (issue 12, point 6): a deployment's state moved between SQLite
and PostgreSQL, either way, every row compared through the stores' own read API; the
suppression log's numbering continued; a non-empty target refused unless --force; counts
verified, and a copy whose counts differ rolled back; bad input and an unreachable server
said in one line, never the password. PostgreSQL is a throwaway cluster (tests/pg_support.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway.cli.main import main
from gateway.core.events import CommandOutcome
from gateway.exits import Exit
from gateway.state import copy as state_copy
from gateway.state.audit import CommandRecord
from gateway.state.copy import NOT_COPIED, TABLES, Table
from gateway.state.lease import LeaseTable
from gateway.state.pg_inventory import PostgresInventory
from gateway.state.postgresql import PostgresStore
from gateway.state.restorations import RestorationRecord
from gateway.state.rows import PendingReport, ReportCursor
from gateway.state.sqlite import QuarantineEntry, Store, quarantine_id

from .test_store import SUPPLIER, T0, activation, forwarded, record, suppressed

pytestmark = pytest.mark.timeout(180)

AStore = Store | PostgresStore

N = 2_000  # rows per table, the quarantine's a tenth of it


def eui(i: int) -> bytes:
    return b"\x00\xdb" + i.to_bytes(6, "big")


def alert_id(i: int) -> str:
    return f"ad1-{i:05d}"


def entry(i: int) -> QuarantineEntry:
    # Bytes and text that COPY's text format must escape: every byte value, tabs,
    # newlines, backslashes, non-ASCII.
    topic = "csp/dcc/alert" if i % 2 else "csp/dcc/command"
    payload = bytes(range(256)) + i.to_bytes(4, "big")
    return QuarantineEntry(
        id=quarantine_id(topic, payload),
        topic=topic,
        payload=payload,
        reason="ValueError",
        error=f"line one\n\tline two \\N é ☃ {i}",
        attempts=3,
        received_at=T0 + i - 10,
        quarantined_at=T0 + i,
        forwarded=i % 2 == 1,
    )


def command(i: int) -> CommandRecord:
    """A command judged, every optional field both ways."""
    tracked = i % 2 == 0
    return CommandRecord(
        esme=eui(i),
        originator=SUPPLIER,
        counter=2**64 - 1 - i,
        outcome=CommandOutcome.TRACKED if tracked else CommandOutcome.REFUSED,
        reason="on-demand" if tracked else "replay",
        chf=eui(i + 1) if i % 3 else None,
        request_id=f"req-{i}" if i % 5 else None,
        detail="" if tracked else f"counter {i} already seen",
        seen_at=T0 + i,
        last_seen_at=T0 + 2 * i,
        window_start=T0 + i if tracked else None,
        window_end=T0 + i + 1_800_000 if tracked else None,
    )


def restoration(i: int) -> RestorationRecord:
    """A restoration alert kept, every optional field both ways."""
    return RestorationRecord(
        esme=eui(i),
        counter=2**64 - 1 - i,
        alert_code=0x8F35 + i % 2,
        chf=eui(i + 1) if i % 3 else None,
        received_at=T0 + i,
        in_window=i % 2 == 0,
        request_id=f"req-{i}" if i % 2 == 0 else None,
    )


async def fill(store: AStore, n: int = N) -> None:
    """``n`` rows of each kind, with every flag both ways, some reported, some replayed."""
    try:
        for i in range(n):
            a = activation(
                i + 1,
                esme=eui(i),
                start_ms=T0 + i,
                future_dated=i % 2 == 0,
                closed_early=i % 3 == 0,
                succeeded=i % 5 == 0,
            )
            store.put_activation(a)
            store.set_counter(SUPPLIER, eui(i), 2**64 - 1 - i)  # the full unsigned range
            if i % 2:
                store.put_decision(suppressed(alert_id(i), a, T0 + i), effect_done=i % 3 != 0)
            else:
                store.put_decision(forwarded(alert_id(i), T0 + i), effect_done=i % 4 != 0)
            store.append_suppression(record(alert_id(i), T0 + i))
        for i in range(n // 10):
            store.put_quarantine(entry(i))
            store.put_command(command(i))
            store.put_restoration(restoration(i))
        await store.flush()
        # The report cursor: one report written, one marked but not yet written (a
        # new leader writes it again from the same records), the rest unreported.
        store.mark_reported_range(1, n // 3, "POA-SUPPRESSION_1")
        store.mark_reported_range(n // 3 + 1, n // 2, "POA-SUPPRESSION_2")
        store.set_report_cursor(CURSOR(n))
        for i in range(0, n // 10, 3):
            store.mark_replayed(entry(i).id, T0 + 10 * i)
        await store.flush()
    finally:
        store.close()


def CURSOR(n: int) -> ReportCursor:  # noqa: N802 - a constant of n
    pending = PendingReport(
        report_id="POA-SUPPRESSION_2",
        first_seq=n // 3 + 1,
        last_seq=n // 2,
        period_start_ms=T0,
        period_end_ms=T0 + 3_600_000,
        records=n // 2 - n // 3,
    )
    return ReportCursor(opened_at_ms=T0 + 3_600_000, pending=pending)


def snapshot(store: AStore, n: int = N) -> dict[str, Any]:
    """Everything the store holds, read through its own API (no SQL)."""
    by_id: dict[str, Any] = {}
    for i in range(n):
        by_id[alert_id(i)] = store.suppressions_for(alert_id(i))
    return {
        "counts": store.counts(),
        "activations": sorted(
            store.load_activations(), key=lambda a: (a.esme, a.originator, a.counter)
        ),
        "decisions": sorted(store.load_decisions(0), key=lambda d: d[0].alert_id),
        "counters": [store.last_counter(SUPPLIER, eui(i)) for i in range(n)],
        "unreported": store.unreported(10 * n + 10),
        "unreported_count": store.unreported_count(),
        "log": by_id,
        "quarantined": sorted(store.quarantined(10 * n + 10), key=lambda e: e.id),
        "commands": [store.commands_for(eui(i)) for i in range(n // 10)],
        "evidence": asyncio.run(store.read_evidence(0, 2**62)),
        "report_cursor": store.report_cursor(),
    }


def sqlite_store(path: Path) -> Callable[[], AStore]:
    return lambda: Store.open(path)


def pg_store(dsn: str) -> Callable[[], AStore]:
    return lambda: PostgresStore.open(dsn)


def read(open_store: Callable[[], AStore], n: int = N) -> dict[str, Any]:
    store = open_store()
    try:
        return snapshot(store, n)
    finally:
        store.close()


def copy(*argv: str) -> int:
    return main(["state", "copy", *argv])


def test_every_row_round_trips_from_sqlite_to_postgresql_and_back(
    tmp_path: Path, pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "state.sqlite"
    asyncio.run(fill(Store.open(source)))
    expected = read(sqlite_store(source))
    # The fill holds what the comparison is about (a comparison of empties passes).
    assert expected["counts"] == {
        "activations": N,
        "counters": N,
        "decisions": N,
        "suppressions": N,
        "unreported": N - N // 2,
        "quarantined": N // 10,
    }
    assert {e.replayed_at is None for e in expected["quarantined"]} == {True, False}
    assert expected["report_cursor"] == CURSOR(N)
    assert all(command(i) in expected["commands"][i] for i in range(N // 10))
    assert expected["evidence"][1] == [restoration(i) for i in range(N // 10)]

    assert copy("--from", f"sqlite:{source}", "--to", f"postgresql:{pg_dsn}", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verified"] is True
    assert out["next_numbers"] == {"suppressions.seq": N + 1}
    assert {t["table"]: (t["source"], t["target"]) for t in out["tables"]} == {
        "activations": (N, N),
        "counters": (N, N),
        "decisions": (N, N),
        "suppressions": (N, N),
        "quarantine": (N // 10, N // 10),
        "commands": (N // 10, N // 10),
        "restorations": (N // 10, N // 10),
        "store_meta": (1, 1),  # the report cursor's row
    }
    assert read(pg_store(pg_dsn)) == expected

    back = tmp_path / "back" / "state.sqlite"
    back.parent.mkdir()
    assert copy("--from", f"postgresql:{pg_dsn}", "--to", f"sqlite:{back}") == 0
    text = capsys.readouterr().out
    assert "copied postgresql:127.0.0.1:" in text
    assert f"suppressions.seq continues at {N + 1:,}" in text
    assert "verified" in text
    assert read(sqlite_store(back)) == expected


def test_a_copy_between_two_postgresql_databases_keeps_every_row(
    pg_cluster: Any, pg_dsn: str, tmp_path: Path
) -> None:
    asyncio.run(fill(PostgresStore.open(pg_dsn), 300))
    other = pg_cluster.new_database()
    assert copy("--from", f"postgresql:{pg_dsn}", "--to", f"postgresql:{other}") == 0
    assert read(pg_store(other), 300) == read(pg_store(pg_dsn), 300)


def append(open_store: Callable[[], AStore], alert: str) -> int:
    """Append one suppression through the store; its sequence number."""

    async def run() -> int:
        store = open_store()
        try:
            store.append_suppression(record(alert))
            await store.flush()
            (stored,) = store.suppressions_for(alert)
            return int(stored.seq)
        finally:
            store.close()

    return asyncio.run(run())


def test_an_append_after_a_copy_continues_the_numbering_and_never_reuses_a_number(
    tmp_path: Path, pg_dsn: str
) -> None:
    source = tmp_path / "state.sqlite"
    asyncio.run(fill(Store.open(source), 5))
    assert copy("--from", f"sqlite:{source}", "--to", f"postgresql:{pg_dsn}") == 0
    assert append(pg_store(pg_dsn), "after-1") == 6  # the max + 1

    # Entries deleted at the end of the log (as a prune might) leave their numbers used:
    # the next copy carries the high-water mark, not the highest number still stored.
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("DELETE FROM suppressions WHERE seq >= 5")
    back = tmp_path / "back.sqlite"
    assert copy("--from", f"postgresql:{pg_dsn}", "--to", f"sqlite:{back}") == 0
    assert append(sqlite_store(back), "after-2") == 7

    with contextlib.closing(sqlite3.connect(back)) as lite, lite:
        lite.execute("DELETE FROM suppressions WHERE seq >= 6")
    again = tmp_path / "again.sqlite"
    assert copy("--from", f"sqlite:{back}", "--to", f"sqlite:{again}") == 0
    assert append(sqlite_store(again), "after-3") == 8


def test_a_target_that_holds_rows_is_refused_naming_them_unless_forced(
    tmp_path: Path, pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "state.sqlite"
    asyncio.run(fill(Store.open(source), 30))

    async def occupy() -> None:
        store = PostgresStore.open(pg_dsn)
        try:
            store.set_counter(SUPPLIER, eui(900), 1)
            store.set_counter(SUPPLIER, eui(901), 1)
            store.put_quarantine(entry(900))
            store.set_report_cursor(ReportCursor(opened_at_ms=T0 - 1))
            await store.flush()
        finally:
            store.close()

    asyncio.run(occupy())
    held = read(pg_store(pg_dsn), 30)

    assert copy("--from", f"sqlite:{source}", "--to", f"postgresql:{pg_dsn}") == Exit.USAGE
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert "already holds rows (counters 2, quarantine 1, store_meta 1)" in err
    assert "--force" in err
    assert read(pg_store(pg_dsn), 30) == held  # untouched

    assert copy("--from", f"sqlite:{source}", "--to", f"postgresql:{pg_dsn}", "--force") == 0
    out = capsys.readouterr().out
    assert "replaced" in out.splitlines()[1]
    assert read(pg_store(pg_dsn), 30) == read(sqlite_store(source), 30)
    with PostgresStore.open(pg_dsn) as store:
        assert store.last_counter(SUPPLIER, eui(900)) is None  # the old rows are gone


@pytest.mark.parametrize("target_kind", ["sqlite", "postgresql"])
def test_counts_that_differ_after_the_copy_roll_the_whole_copy_back(
    target_kind: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "state.sqlite"
    asyncio.run(fill(Store.open(source), 40))
    if target_kind == "sqlite":
        target, open_target = (
            f"sqlite:{tmp_path / 'new.sqlite'}",
            sqlite_store(tmp_path / "new.sqlite"),
        )
    else:
        dsn: str = request.getfixturevalue("pg_dsn")
        target, open_target = f"postgresql:{dsn}", pg_store(dsn)

    # A reader that loses one decision on the way, as a bug would.
    rows = state_copy._SqliteReader.rows

    def lossy(self: Any, table: Table) -> Iterator[Sequence[Any]]:
        found = rows(self, table)
        if table.name == "decisions":
            next(found)
        yield from found

    monkeypatch.setattr(state_copy._SqliteReader, "rows", lossy)
    assert copy("--from", f"sqlite:{source}", "--to", target) == Exit.FAILED
    err = capsys.readouterr().err
    assert "decisions 40 -> 39" in err
    assert "nothing was committed" in err
    assert set(read(open_target, 40)["counts"].values()) == {0}


@pytest.mark.parametrize(
    ("option", "spec", "says"),
    [
        ("--from", "foo:bar", "'foo' is not a store"),
        ("--from", "state.sqlite", "is not a store: give sqlite:PATH or postgresql:DSN"),
        ("--from", "sqlite:", "sqlite: needs a path"),
        ("--to", "postgresql:", "postgresql: needs a DSN"),
        ("--to", "postgresql:host=db password=hunter2secret", "must not contain a password"),
        ("--to", "postgresql://poa:hunter2secret@db/poa", "must not contain a password"),
        ("--to", "postgresql:host='db", "not a valid PostgreSQL connection string"),
    ],
)
def test_a_store_named_wrongly_is_a_usage_error_that_never_echoes_a_password(
    option: str, spec: str, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = f"sqlite:{tmp_path / 'never-created.sqlite'}"
    argv = ["--from", spec, "--to", good] if option == "--from" else ["--from", good, "--to", spec]
    assert copy(*argv) == Exit.USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"poa-gateway state copy: {option}: ")
    assert says in err
    assert len(err.splitlines()) == 1
    assert "hunter2secret" not in err
    assert not (tmp_path / "never-created.sqlite").exists()


def test_a_source_that_is_not_a_store_is_refused_and_nothing_is_created(
    tmp_path: Path, pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.sqlite"
    target = tmp_path / "target.sqlite"
    assert copy("--from", f"sqlite:{missing}", "--to", f"sqlite:{target}") == Exit.USAGE
    assert "no state database there" in capsys.readouterr().err
    assert not missing.exists()
    assert not target.exists()

    # An empty database is not given a schema by being named as a source.
    assert copy("--from", f"postgresql:{pg_dsn}", "--to", f"sqlite:{target}") == Exit.USAGE
    assert "no poa-gateway state store in this database" in capsys.readouterr().err
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT to_regclass('store_meta')").fetchone() == (None,)
        # Nor is a database whose store_meta records no state schema (another store's
        # mark, as the inventory's).
        conn.execute("CREATE TABLE store_meta (key text PRIMARY KEY, value text NOT NULL)")
        conn.execute("INSERT INTO store_meta VALUES ('inventory_version', '1')")
    assert copy("--from", f"postgresql:{pg_dsn}", "--to", f"sqlite:{target}") == Exit.USAGE
    assert "no poa-gateway state store in this database" in capsys.readouterr().err
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT to_regclass('activations')").fetchone() == (None,)


def test_the_same_store_as_source_and_target_is_refused(
    tmp_path: Path, pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "state.sqlite"
    asyncio.run(fill(Store.open(path), 3))
    assert copy("--from", f"sqlite:{path}", "--to", f"sqlite:{tmp_path}/./state.sqlite") == 2
    assert "are the same store" in capsys.readouterr().err
    asyncio.run(fill(PostgresStore.open(pg_dsn), 3))
    assert copy("--from", f"postgresql:{pg_dsn}", "--to", f"postgresql:{pg_dsn} ") == 2
    assert "are the same store" in capsys.readouterr().err
    assert read(pg_store(pg_dsn), 3)["counts"]["suppressions"] == 3


def test_an_unreachable_server_is_one_line_naming_it_and_never_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "state.sqlite"
    asyncio.run(fill(Store.open(source), 3))
    monkeypatch.setenv("COPY_PW", "s3cret-pw-value")
    status = copy(
        "--from",
        f"sqlite:{source}",
        "--to",
        "postgresql:host=127.0.0.1 port=1 dbname=poa user=poa",
        "--password-env",
        "COPY_PW",
    )
    assert status == Exit.FAILED
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert "127.0.0.1:1/poa" in err
    assert "s3cret-pw-value" not in err

    assert copy("--from", f"sqlite:{source}", "--to", "sqlite:x", "--password-env", "A-B") == 2
    assert "--password-env: 'A-B' is not a variable name" in capsys.readouterr().err


def _sqlite_tables(path: Path) -> dict[str, tuple[str, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {
            n: tuple(c[1] for c in conn.execute(f"PRAGMA table_info({n})").fetchall())
            for n in names
        }


def _pg_tables(dsn: str) -> dict[str, tuple[str, ...]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
        ).fetchall()
    tables: dict[str, tuple[str, ...]] = {}
    for table, column in rows:
        tables[table] = (*tables.get(table, ()), column)
    return tables


def test_every_table_of_both_stores_is_copied_whole_or_named_as_not_copied(
    tmp_path: Path, pg_dsn: str
) -> None:
    # A table added to a store's schema without its line in TABLES fails here. The
    # PostgreSQL database holds whatever shares it too: the inventory, the HA tables.
    Store.open(tmp_path / "state.sqlite").close()
    PostgresStore.open(pg_dsn).close()
    PostgresInventory.open(pg_dsn).close()
    lease = LeaseTable(
        pg_dsn, None, run_id="r", name="n", client_id="c", lease_ms=1000, lock_timeout_ms=1000
    )
    lease.read()  # creates its tables
    lease.close()
    copied = {t.name: t.column_names for t in TABLES}
    assert "suppressions" in copied  # guards the comparison below
    for schema in (_sqlite_tables(tmp_path / "state.sqlite"), _pg_tables(pg_dsn)):
        assert {n: cols for n, cols in schema.items() if n not in NOT_COPIED} == copied
    assert {"lease", "instances", "inventory"} <= _pg_tables(pg_dsn).keys()
    assert not NOT_COPIED & copied.keys()
    # Of store_meta only the report cursor: the target keeps its own id and version.
    assert [t.where for t in TABLES if t.where] == ["key = 'report_cursor'"]


def test_state_copy_has_help_naming_both_forms_and_the_password_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["state", "copy", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "sqlite:PATH or postgresql:DSN" in text
    assert "POA_PG_PASSWORD" in text
    assert "Moving a deployment between SQLite and PostgreSQL" in text
    operations = (Path(__file__).parent.parent / "docs" / "operations.md").read_text()
    assert "### Moving a deployment between SQLite and PostgreSQL\n" in operations
