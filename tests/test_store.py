"""The durable state store: round trips, group commit, durability and failures."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import msgspec
import pytest

import gateway.state.sqlite
from gateway.core.events import Activation, AlertDecision, AlertReason
from gateway.state.inventory import Inventory
from gateway.state.sqlite import (
    APPLICATION_ID,
    MARKER_SUFFIX,
    SCHEMA_VERSION,
    QuarantineEntry,
    Store,
    StoreError,
    quarantine_id,
)
from gateway.wire import SuppressionRecord

ROOT = Path(__file__).resolve().parent.parent

CHF = bytes.fromhex("00DB1234567890A0")
ESME = bytes.fromhex("00DB1234567890A1")
ESME_2 = bytes.fromhex("00DB1234567890B1")
SUPPLIER = bytes.fromhex("90B3D51F30010000")
NETWORK_OPERATOR = bytes.fromhex("90B3D51F30020000")

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MIN = 60_000


def activation(counter: int = 1, *, esme: bytes = ESME, **changes: Any) -> Activation:
    base = Activation(
        esme=esme,
        chf=CHF,
        originator=SUPPLIER,
        counter=counter,
        start_ms=T0,
        end_ms=T0 + 30 * MIN,
        future_dated=False,
        seen_at=T0 - 5,
    )
    return msgspec.structs.replace(base, **changes)


def suppressed(alert_id: str, a: Activation, decided_at: int = T0 + MIN) -> AlertDecision:
    return AlertDecision(
        alert_id=alert_id,
        chf=a.chf,
        suppressed=True,
        reason=AlertReason.INSIDE_WINDOW,
        judged_at=decided_at - 100,
        decided_at=decided_at,
        activation=a,
    )


def forwarded(alert_id: str, decided_at: int = T0 + MIN) -> AlertDecision:
    return AlertDecision(
        alert_id=alert_id,
        chf=CHF,
        suppressed=False,
        reason=AlertReason.NO_WINDOW,
        judged_at=decided_at - 100,
        decided_at=decided_at,
    )


def record(alert_id: str, received_at: int = T0 + MIN) -> SuppressionRecord:
    a = activation()
    return SuppressionRecord(
        v=1,
        kind="suppression",
        alert_id=alert_id,
        chf_id=CHF,
        esme_id=a.esme,
        raised_at=received_at - 100,
        received_at=received_at,
        window_start=a.start_ms,
        window_end=a.end_ms,
        request_id=a.request_id,
        originator=a.originator,
        originator_counter=a.counter,
        activation="on-demand",
    )


def plain_rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Rows read through a separate, plain sqlite3 connection."""
    with closing(sqlite3.connect(path)) as conn:
        return list(conn.execute(sql).fetchall())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.sqlite"


# -- activations ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_activations_put_and_deleted_survive_close_and_reopen(db: Path) -> None:
    kept = activation(7, future_dated=True, start_ms=T0 + 60 * MIN, end_ms=T0 + 90 * MIN)
    gone = activation(8, esme=ESME_2)
    async with Store.open(db) as store:
        store.put_activation(kept)
        store.put_activation(gone)
        store.delete_activation(gone)
        store.delete_activation(activation(99))  # never recorded: nothing happens
        await store.flush()
        assert store.load_activations() == [kept]
    with Store.open(db) as store:
        assert store.load_activations() == [kept]


@pytest.mark.asyncio
async def test_put_activation_replaces_the_one_with_the_same_key(db: Path) -> None:
    closed = activation(3, end_ms=T0 + 2 * MIN, closed_early=True, succeeded=True)
    other_originator = activation(3, originator=NETWORK_OPERATOR)
    async with Store.open(db) as store:
        store.put_activation(activation(3))
        store.put_activation(other_originator)
        store.put_activation(closed)
        await store.flush()
        assert sorted(store.load_activations(), key=lambda a: a.originator) == [
            closed,
            other_originator,
        ]


def test_full_64_bit_originator_counters_round_trip(db: Path) -> None:
    top = activation((1 << 64) - 1)

    async def write() -> None:
        async with Store.open(db) as store:
            store.put_activation(top)
            store.set_counter(SUPPLIER, ESME, (1 << 64) - 1)
            store.set_counter(SUPPLIER, ESME, 1 << 63)

    asyncio.run(write())
    with Store.open(db) as store:
        assert store.load_activations() == [top]
        assert store.last_counter(SUPPLIER, ESME) == (1 << 64) - 1


# -- counters ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_counter_keeps_the_maximum_across_commits_and_reopen(db: Path) -> None:
    async with Store.open(db) as store:
        assert store.last_counter(SUPPLIER, ESME) is None
        store.set_counter(SUPPLIER, ESME, 5)
        store.set_counter(SUPPLIER, ESME, 9)
        store.set_counter(SUPPLIER, ESME, 3)
        assert store.last_counter(SUPPLIER, ESME) == 9
        await store.flush()
        store.set_counter(SUPPLIER, ESME, 4)  # lower than the committed 9
        await store.flush()
        assert store.last_counter(SUPPLIER, ESME) == 9
        store.set_counter(NETWORK_OPERATOR, ESME, 2)
    with Store.open(db) as store:
        assert store.last_counter(SUPPLIER, ESME) == 9
        assert store.last_counter(NETWORK_OPERATOR, ESME) == 2
        assert store.last_counter(SUPPLIER, ESME_2) is None


@pytest.mark.asyncio
async def test_counter_is_visible_before_it_is_committed(db: Path) -> None:
    async with Store.open(db) as store:
        store.set_counter(SUPPLIER, ESME, 41)
        await store.flush()
        store.set_counter(SUPPLIER, ESME, 42)
        # No await since the write: the commit task has not run yet.
        assert store.pending == 1
        assert plain_rows(db, "SELECT hex(counter) FROM counters") == [(f"{41:016X}",)]
        assert store.last_counter(SUPPLIER, ESME) == 42
        await store.flush()
        assert store.pending == 0
        assert store.last_counter(SUPPLIER, ESME) == 42
        assert plain_rows(db, "SELECT hex(counter) FROM counters") == [(f"{42:016X}",)]


def test_writes_queued_without_an_event_loop_are_lost_by_close(db: Path) -> None:
    with Store.open(db) as store:
        store.set_counter(SUPPLIER, ESME, 42)
        store.put_activation(activation())
        assert store.last_counter(SUPPLIER, ESME) == 42
        assert store.pending == 2
    with Store.open(db) as store:
        assert store.last_counter(SUPPLIER, ESME) is None
        assert store.load_activations() == []


# -- decisions -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_decisions_with_and_without_activation_round_trip(db: Path) -> None:
    window = activation(5, closed_early=True)
    inside = suppressed("alert-1", window)
    outside = forwarded("alert-2", decided_at=T0 + 2 * MIN)
    async with Store.open(db) as store:
        store.put_decision(inside, effect_done=True)
        store.put_decision(outside, effect_done=False)
        store.put_activation(window)
        store.delete_activation(window)  # the window expires; the decision keeps its copy
    with Store.open(db) as store:
        assert store.decision("alert-1") == (inside, True)
        assert store.decision("alert-2") == (outside, False)
        assert store.decision("alert-3") is None
        assert store.load_decisions(since_ms=0) == [(inside, True), (outside, False)]
        assert store.load_decisions(since_ms=T0 + 2 * MIN) == [(outside, False)]


@pytest.mark.asyncio
async def test_the_same_decision_again_only_raises_effect_done(db: Path) -> None:
    first = suppressed("alert-1", activation())
    async with Store.open(db) as store:
        store.put_decision(first, effect_done=False)
        await store.flush()
        assert store.decision("alert-1") == (first, False)
        store.put_decision(first, effect_done=True)  # the forward was acknowledged
        await store.flush()
        assert store.decision("alert-1") == (first, True)
        # A redelivery re-records the same decision as pending: done stays done.
        store.put_decision(first, effect_done=False)
        store.put_decision(msgspec.structs.replace(first, duplicate=True), effect_done=False)
        await store.flush()
        assert store.decision("alert-1") == (first, True)


@pytest.mark.asyncio
async def test_a_later_decision_replaces_and_an_earlier_one_is_ignored(db: Path) -> None:
    first = forwarded("alert-1", decided_at=T0)
    later = suppressed("alert-1", activation(), decided_at=T0 + 180 * MIN)
    async with Store.open(db) as store:
        store.put_decision(first, effect_done=True)
        store.put_decision(later, effect_done=False)
        await store.flush()
        assert store.decision("alert-1") == (later, False)
        store.put_decision(first, effect_done=True)
        await store.flush()
        assert store.decision("alert-1") == (later, False)


@pytest.mark.asyncio
async def test_prune_forgets_decisions_made_before_the_horizon(db: Path) -> None:
    decisions = [forwarded(f"alert-{i}", decided_at=T0 + i * MIN) for i in range(5)]
    async with Store.open(db) as store:
        for d in decisions:
            store.put_decision(d, effect_done=True)
        store.prune_decisions(before_ms=T0 + 3 * MIN)
        await store.flush()
        assert [d for d, _ in store.load_decisions(since_ms=0)] == decisions[3:]
        assert store.decision("alert-2") is None
        assert store.counts()["decisions"] == 2


# -- the suppression log ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_report_batch_read_in_a_thread_is_marked_and_later_entries_are_not(
    db: Path,
) -> None:
    records = [record(f"alert-{i}", received_at=T0 + i) for i in range(5)]
    async with Store.open(db) as store:
        for r in records[:3]:
            store.append_suppression(r)
        await store.flush()
        batch = await store.read_unreported(limit=10)
        assert batch == store.unreported(limit=10)
        assert [r for _, r in batch] == records[:3]
        for r in records[3:]:  # committed after the batch was read
            store.append_suppression(r)
        await store.flush()
        store.mark_reported_range(batch[0][0], batch[-1][0], "report-1")
        await store.flush()
        assert [r for _, r in store.unreported(limit=10)] == records[3:]
        assert store.unreported_count() == 2


@pytest.mark.asyncio
async def test_suppression_records_round_trip_and_are_marked_reported(db: Path) -> None:
    records = [record(f"alert-{i}", received_at=T0 + i) for i in range(4)]
    async with Store.open(db) as store:
        for r in records:
            store.append_suppression(r)
        await store.flush()
        entries = store.unreported(limit=10)
        assert [r for _, r in entries] == records
        seqs = [seq for seq, _ in entries]
        assert seqs == sorted(seqs)
        store.mark_reported_range(seqs[0], seqs[1], "report-1")
        await store.flush()
        store.mark_reported_range(seqs[0], seqs[2], "report-2")  # the first two keep report-1
        await store.flush()
    with Store.open(db) as store:
        assert store.unreported(limit=10) == [(seqs[3], records[3])]
        assert store.unreported_count() == 1
        (entry,) = store.suppressions_for("alert-1")
        assert (entry.seq, entry.record, entry.report_id) == (seqs[1], records[1], "report-1")
        assert store.suppressions_for("alert-2")[0].report_id == "report-2"
        assert store.suppressions_for("alert-9") == []
        assert store.counts() == {
            "activations": 0,
            "counters": 0,
            "decisions": 0,
            "suppressions": 4,
            "unreported": 1,
            "quarantined": 0,
        }


@pytest.mark.asyncio
async def test_unreported_is_in_log_order_and_limited(db: Path) -> None:
    # Alert ids in an order unrelated to the log order.
    ids = [f"alert-{n}" for n in (7, 2, 9, 1, 5)]
    async with Store.open(db) as store:
        for alert_id in ids[:3]:
            store.append_suppression(record(alert_id))
        await store.flush()
        for alert_id in ids[3:]:
            store.append_suppression(record(alert_id))
        await store.flush()
        assert [r.alert_id for _, r in store.unreported(limit=10)] == ids
        assert [r.alert_id for _, r in store.unreported(limit=2)] == ids[:2]
        assert store.unreported_count() == 5


@pytest.mark.asyncio
async def test_a_second_record_for_an_alert_id_keeps_the_first(db: Path) -> None:
    first = record("alert-1", received_at=T0)
    async with Store.open(db) as store:
        store.append_suppression(first)
        await store.flush()
        store.append_suppression(record("alert-1", received_at=T0 + 5 * MIN))  # redelivery
        await store.flush()
        assert [r for _, r in store.unreported(limit=10)] == [first]


# -- durability and group commit -------------------------------------------------------


@pytest.mark.asyncio
async def test_flushed_rows_are_seen_by_another_connection(db: Path) -> None:
    async with Store.open(db) as store:
        store.append_suppression(record("alert-1"))
        store.put_decision(suppressed("alert-1", activation()), effect_done=True)
        store.set_counter(SUPPLIER, ESME, 12)
        await store.flush()
        assert plain_rows(db, "SELECT alert_id, report_id FROM suppressions") == [("alert-1", None)]
        assert plain_rows(db, "SELECT alert_id, effect_done FROM decisions") == [("alert-1", 1)]
        assert plain_rows(db, "SELECT hex(counter) FROM counters") == [(f"{12:016X}",)]


@pytest.mark.asyncio
async def test_many_concurrent_flushes_are_all_resolved_in_fewer_commits(db: Path) -> None:
    tasks, rounds = 300, 3
    async with Store.open(db) as store:

        async def handle(task: int) -> None:
            for n in range(rounds):
                alert_id = f"alert-{task}-{n}"
                store.append_suppression(record(alert_id))
                store.put_decision(suppressed(alert_id, activation()), effect_done=True)
                await store.flush()
                # flush() covers every write queued before it: this one is committed.
                assert store.suppressions_for(alert_id)
                assert store.decision(alert_id) is not None

        await asyncio.gather(*(handle(t) for t in range(tasks)))
        assert store.pending == 0
        assert 0 < store.commits < tasks * rounds
        assert store.counts()["suppressions"] == tasks * rounds
        assert store.counts()["decisions"] == tasks * rounds


@pytest.mark.asyncio
async def test_flush_with_nothing_queued_commits_nothing(db: Path) -> None:
    async with Store.open(db) as store:
        await store.flush()
        assert store.commits == 0
        store.set_counter(SUPPLIER, ESME, 1)
        await store.flush()
        await store.flush()
        assert store.commits == 1


@pytest.mark.asyncio
async def test_aclose_commits_what_is_queued(db: Path) -> None:
    store = Store.open(db, synchronous="NORMAL")
    store.append_suppression(record("alert-1"))
    await store.aclose()
    await store.aclose()  # idempotent
    assert plain_rows(db, "SELECT alert_id FROM suppressions") == [("alert-1",)]


def test_flushed_writes_survive_sigkill(db: Path, tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, sys
            from gateway.state.sqlite import Store
            from tests.test_store import activation, record, suppressed

            async def main() -> None:
                store = Store.open(sys.argv[1])
                for i in range(100):
                    store.append_suppression(record(f"alert-{i:03}"))
                    store.put_decision(suppressed(f"alert-{i:03}", activation()), effect_done=True)
                store.set_counter(bytes(8), bytes(8), 77)
                await store.flush()
                print("flushed", flush=True)
                for i in range(100, 1000):  # never flushed: may or may not survive
                    store.append_suppression(record(f"alert-{i:03}"))
                    if i % 50 == 0:
                        await asyncio.sleep(0)
                await asyncio.sleep(600)

            asyncio.run(main())
            """
        )
    )
    with subprocess.Popen(
        [sys.executable, str(script), str(db)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    assert line == "flushed\n", err
    assert proc.returncode == -signal.SIGKILL
    with Store.open(db) as store:
        logged = [r.alert_id for _, r in store.unreported(limit=10_000)]
        # Batches commit whole and in queue order: what survived is a prefix.
        assert logged == [f"alert-{i:03}" for i in range(len(logged))]
        assert len(logged) >= 100
        assert len(store.load_decisions(since_ms=0)) == 100
        assert store.last_counter(bytes(8), bytes(8)) == 77


# -- failures ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_commit_failure_fails_every_waiter_and_the_batch_is_retried(db: Path) -> None:
    async with Store.open(db, busy_timeout_s=0.05) as store:
        with closing(sqlite3.connect(db, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock

            async def handle(n: int) -> None:
                store.append_suppression(record(f"alert-{n}"))
                store.set_counter(SUPPLIER, ESME, n)
                await store.flush()

            results = await asyncio.gather(
                *(handle(n) for n in range(1, 11)), return_exceptions=True
            )
            assert all(isinstance(r, StoreError) for r in results), results
            assert {r.reason for r in results if isinstance(r, StoreError)} == {"commit-failed"}
            assert store.commit_failures >= 1
            assert store.last_error is not None
            assert isinstance(store.last_error.__cause__, sqlite3.OperationalError)
            # Nothing committed, nothing dropped: the counters are still seen.
            assert store.pending == 20
            assert store.unreported_count() == 0
            assert store.last_counter(SUPPLIER, ESME) == 10
            other.execute("ROLLBACK")

        await store.flush()  # the retained batch is retried
        assert store.pending == 0
        assert store.last_error is None
        assert store.unreported_count() == 10
        assert store.last_counter(SUPPLIER, ESME) == 10


@pytest.mark.asyncio
async def test_close_fails_a_waiting_flush_with_closed(db: Path) -> None:
    store = Store.open(db, busy_timeout_s=0.5)
    with closing(sqlite3.connect(db, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        store.append_suppression(record("alert-1"))
        waiting = asyncio.create_task(store.flush())
        await asyncio.sleep(0.05)  # the commit is now waiting for the lock
        store.close()
        with pytest.raises(StoreError) as caught:
            await waiting
        assert caught.value.reason == "closed"
        other.execute("ROLLBACK")
    with pytest.raises(StoreError) as caught:
        store.append_suppression(record("alert-2"))
    assert caught.value.reason == "closed"


def test_invalid_values_are_refused_when_queued(db: Path) -> None:
    with Store.open(db) as store:
        writes: list[Callable[[], None]] = [
            lambda: store.put_activation(activation(esme=b"\x00" * 7)),
            lambda: store.put_activation(activation(1 << 64)),
            lambda: store.set_counter(SUPPLIER, ESME, -1),
            lambda: store.prune_decisions(1 << 63),
            lambda: store.put_decision(suppressed("a", activation(1 << 64)), effect_done=True),
            lambda: store.put_decision(
                suppressed("b", activation(esme=b"\x00" * 9)), effect_done=True
            ),
            lambda: store.put_decision(
                msgspec.structs.replace(forwarded("c"), judged_at=1 << 63), effect_done=True
            ),
        ]
        for write in writes:
            with pytest.raises(StoreError) as caught:
                write()
            assert caught.value.reason == "invalid-value"
        assert store.pending == 0


def test_a_new_file_is_marked_as_a_store_in_wal_mode(db: Path) -> None:
    Store.open(db).close()
    assert plain_rows(db, "PRAGMA application_id") == [(APPLICATION_ID,)]
    assert plain_rows(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert plain_rows(db, "PRAGMA journal_mode") == [("wal",)]
    with Store.open(db) as store:  # reopening our own file is fine
        assert store.counts()["activations"] == 0


def test_another_applications_sqlite_file_is_refused_untouched(db: Path) -> None:
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.commit()
    with pytest.raises(StoreError) as caught:
        Store.open(db)
    assert caught.value.reason == "not-a-store"
    assert "notes" in caught.value.detail
    assert plain_rows(db, "SELECT name FROM sqlite_master") == [("notes",)]


def test_the_inventory_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "inventory.sqlite"
    Inventory.open(path).close()
    with pytest.raises(StoreError) as caught:
        Store.open(path)
    assert caught.value.reason == "not-a-store"
    assert "application_id" in caught.value.detail


def test_a_newer_schema_is_refused(db: Path) -> None:
    Store.open(db).close()
    with closing(sqlite3.connect(db)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError) as caught:
        Store.open(db)
    assert caught.value.reason == "unsupported-schema"


def test_a_file_that_is_not_sqlite_cannot_be_opened(db: Path) -> None:
    db.write_bytes(b"this is not a database, just text " * 100)
    with pytest.raises(StoreError) as caught:
        Store.open(db)
    assert caught.value.reason == "cannot-open"


def test_an_unknown_synchronous_level_is_refused(db: Path) -> None:
    with pytest.raises(StoreError) as caught:
        Store.open(db, synchronous="OFF")  # type: ignore[arg-type]
    assert caught.value.reason == "invalid-value"
    assert not db.exists()


# -- schema version 1 -------------------------------------------------------------------

_V1_DECISIONS = """
CREATE TABLE decisions (
    alert_id TEXT PRIMARY KEY,
    chf BLOB NOT NULL,
    suppressed INTEGER NOT NULL,
    reason TEXT NOT NULL,
    judged_at INTEGER NOT NULL,
    decided_at INTEGER NOT NULL,
    effect_done INTEGER NOT NULL,
    a_esme BLOB, a_originator BLOB, a_counter BLOB, a_chf BLOB, a_start_ms INTEGER,
    a_end_ms INTEGER, a_future_dated INTEGER, a_seen_at INTEGER, a_closed_early INTEGER,
    a_succeeded INTEGER
) WITHOUT ROWID;
CREATE INDEX decisions_decided_at ON decisions (decided_at);
PRAGMA user_version = 1;
"""


def test_a_version_1_state_file_is_migrated_with_its_decisions(db: Path) -> None:
    with Store.open(db):
        pass
    a = activation(2**64 - 1, future_dated=True, closed_early=True)
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("DROP TABLE decisions")
        conn.executescript(_V1_DECISIONS)
        conn.execute(
            "INSERT INTO decisions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            ("in", CHF, 1, "inside-window", T0 + MIN - 100, T0 + MIN, 1, a.esme,
             a.originator, a.counter.to_bytes(8, "big"), a.chf, a.start_ms, a.end_ms,
             1, a.seen_at, 1, 0),
        )  # fmt: skip
        conn.execute(
            "INSERT INTO decisions (alert_id, chf, suppressed, reason, judged_at, decided_at,"
            " effect_done) VALUES (?,?,?,?,?,?,?)",
            ("out", CHF, 0, "no-window", T0 + 2 * MIN - 100, T0 + 2 * MIN, 0),
        )
        conn.commit()
    with Store.open(db) as store:
        assert store.decision("in") == (suppressed("in", a), True)
        assert store.decision("out") == (forwarded("out", T0 + 2 * MIN), False)
        assert [d.alert_id for d, _ in store.load_decisions(since_ms=T0 + 2 * MIN)] == ["out"]
    with closing(sqlite3.connect(db)) as conn:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        columns = [row[1] for row in conn.execute("PRAGMA table_info(decisions)")]
    assert version == SCHEMA_VERSION == 5
    assert columns == ["alert_id", "decided_at", "effect_done", "decision"]


@pytest.mark.asyncio
async def test_a_version_2_state_file_gains_the_quarantine_table_and_keeps_its_rows(
    db: Path,
) -> None:
    async with Store.open(db) as store:
        store.put_activation(activation(5))
        await store.flush()
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("DROP TABLE quarantine")
        conn.execute("PRAGMA user_version = 2")
        conn.commit()
    async with Store.open(db) as store:
        assert store.load_activations() == [activation(5)]
        store.put_quarantine(quarantined("csp/dcc/alert", b"x"))
        await store.flush()
        assert [e.payload for e in store.quarantined()] == [b"x"]
    with closing(sqlite3.connect(db)) as conn:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
    assert version == SCHEMA_VERSION


def quarantined(topic: str, payload: bytes, at: int = T0) -> QuarantineEntry:
    return QuarantineEntry(
        id=quarantine_id(topic, payload),
        topic=topic,
        payload=payload,
        reason="ZeroDivisionError",
        error="division by zero",
        attempts=3,
        received_at=at - 10,
        quarantined_at=at,
        forwarded=topic == "csp/dcc/alert",
    )


@pytest.mark.asyncio
async def test_a_quarantined_message_is_kept_once_with_its_bytes_and_can_be_marked_replayed(
    db: Path,
) -> None:
    first = quarantined("dsp/gbcs/command", b"\xa1\x00poison")
    again = msgspec.structs.replace(first, quarantined_at=T0 + MIN, attempts=1)
    other = quarantined("csp/dcc/alert", b"\xa1\x00other", at=T0 + 2 * MIN)
    async with Store.open(db) as store:
        store.put_quarantine(first)
        store.put_quarantine(again)  # a redelivered copy: the first entry stays
        store.put_quarantine(other)
        await store.flush()
        assert store.quarantined() == [other, first]  # newest first
        assert store.quarantine_entry(first.id) == first
        assert store.quarantine_entry("q-missing") is None
        store.mark_replayed(first.id, T0 + 3 * MIN)
        await store.flush()
    async with Store.open(db) as store:
        replayed = store.quarantine_entry(first.id)
        assert replayed is not None
        assert replayed.replayed_at == T0 + 3 * MIN
        assert store.counts()["quarantined"] == 2
        # The replayed message failed again: quarantined afresh, no longer "replayed".
        store.put_quarantine(again)
        await store.flush()
        assert store.quarantine_entry(first.id) == again
    assert quarantine_id("a", b"x") != quarantine_id("b", b"x")
    assert quarantine_id("a", b"x") != quarantine_id("a", b"y")


@pytest.mark.asyncio
async def test_every_shape_of_decision_round_trips_through_its_packed_row(db: Path) -> None:
    shapes = [
        forwarded("f"),
        msgspec.structs.replace(forwarded("n"), reason=AlertReason.NOT_AD1),
        suppressed("s", activation(7)),
        suppressed("t", activation(2**64 - 1, future_dated=True, succeeded=True)),
    ]
    async with Store.open(db) as store:
        for d in shapes:
            store.put_decision(d, effect_done=True)
        await store.flush()
        assert [store.decision(d.alert_id) for d in shapes] == [(d, True) for d in shapes]


# The decision BLOB of a decisions row as schema 2 and 3 files hold it (docs/decisions.md
# D21): the store's own row format, spelled out so that a change to it (or to the
# engine's in-memory memo, which it no longer shares code with) cannot pass unnoticed.
FORWARDED_ROW = bytes.fromhex(
    "00db1234567890a0"  # chf
    "00"  # not suppressed
    "fc91db769b010000"  # judged_at T0 + MIN - 100
    "6092db769b010000"  # decided_at T0 + MIN
    "09"  # the reason's length
    "6e6f2d77696e646f77"  # its ASCII text: no-window
)
SUPPRESSED_ROW = bytes.fromhex(
    "00db1234567890a0"  # chf
    "01"  # suppressed
    "fc91db769b010000"  # judged_at
    "6092db769b010000"  # decided_at
    "0d"  # the reason's length
    "696e736964652d77696e646f77"  # its ASCII text: inside-window
    # the activation: esme, chf, originator, counter, start, end, seen_at, flags
    "00db1234567890a1"
    "00db1234567890a0"
    "90b3d51f30010000"
    "0700000000000000"  # counter 7
    "00a8da769b010000"  # start_ms T0
    "401ff6769b010000"  # end_ms T0 + 30 min
    "fba7da769b010000"  # seen_at T0 - 5
    "03"  # future-dated (1) and closed early (2)
)


@pytest.mark.asyncio
async def test_a_decision_row_holds_the_bytes_of_schema_2_and_decodes_as_written(
    db: Path,
) -> None:
    window = activation(7, future_dated=True, closed_early=True)
    expected = {
        "f": (forwarded("f"), FORWARDED_ROW),
        "s": (suppressed("s", window), SUPPRESSED_ROW),
    }
    async with Store.open(db) as store:
        for decision, _ in expected.values():
            store.put_decision(decision, effect_done=True)
        await store.flush()
        for alert_id, (decision, _) in expected.items():
            assert store.decision(alert_id) == (decision, True)
    rows = plain_rows(db, "SELECT alert_id, decision FROM decisions ORDER BY alert_id")
    assert rows == [(alert_id, blob) for alert_id, (_, blob) in sorted(expected.items())]
    # And a row an earlier gateway wrote, bytes as above, reads as that decision.
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("DELETE FROM decisions")
        for alert_id, (decision, blob) in expected.items():
            conn.execute(
                "INSERT INTO decisions (alert_id, decided_at, effect_done, decision) "
                "VALUES (?, ?, 0, ?)",
                (alert_id, decision.decided_at, blob),
            )
    with Store.open(db) as store:
        for alert_id, (decision, _) in expected.items():
            assert store.decision(alert_id) == (decision, False)


# -- a lost store is not a new one (D22) ----------------------------------------------------


def marker_of(db: Path) -> Path:
    return db.with_name(db.name + MARKER_SUFFIX)


def marker_id(db: Path) -> str:
    ids = [
        line.partition("=")[2].strip()
        for line in marker_of(db).read_text().splitlines()
        if line.startswith("store_id")
    ]
    assert len(ids) == 1
    return ids[0]


def used_store(db: Path) -> str:
    """A store with a window in it, closed; returns its id."""

    async def use() -> str:
        async with Store.open(db) as store:
            store.put_activation(activation())
            await store.flush()
            return store.store_id

    return asyncio.run(use())


def test_a_new_store_is_made_whole_with_a_marker_naming_its_id(db: Path) -> None:
    with Store.open(db) as store:
        assert store.marker == str(marker_of(db))
        assert marker_id(db) == store.store_id
        assert plain_rows(db, "SELECT value FROM store_meta WHERE key = 'store_id'") == [
            (store.store_id,)
        ]
    assert sorted(p.name for p in db.parent.iterdir()) == [db.name, marker_of(db).name]
    with Store.open(db) as again:
        assert again.store_id == marker_id(db)


def test_a_creation_that_fails_leaves_no_empty_state_file_to_be_refused_later(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(_conn: sqlite3.Connection, _path: str) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(gateway.state.sqlite, "_prepare", fail)
    with pytest.raises(StoreError) as caught:
        Store.open(db)
    assert caught.value.reason == "cannot-open"
    assert list(db.parent.iterdir()) == []
    monkeypatch.undo()
    with Store.open(db) as store:  # the next start makes the store
        assert store.counts()["activations"] == 0


def test_a_leftover_of_a_creation_cut_short_is_not_taken_for_the_store(db: Path) -> None:
    creating = db.with_name(db.name + ".creating")
    creating.write_bytes(b"half a database")
    with Store.open(db) as store:
        assert store.counts()["activations"] == 0
    assert not creating.exists()


def test_a_store_truncated_to_zero_bytes_is_refused_and_left_as_it_is(db: Path) -> None:
    used_store(db)
    db.write_bytes(b"")
    with pytest.raises(StoreError) as caught:
        Store.open(db)
    assert caught.value.reason == "state-empty"
    assert str(db) in caught.value.detail
    assert str(marker_of(db)) in caught.value.detail  # restore both, or delete both
    assert db.stat().st_size == 0


def test_a_zero_length_state_file_is_refused_even_without_a_marker(db: Path) -> None:
    db.write_bytes(b"")
    with pytest.raises(StoreError) as caught:
        Store.open(db)
    assert caught.value.reason == "state-empty"
    assert db.stat().st_size == 0
    assert not marker_of(db).exists()


def test_a_deleted_state_file_is_refused_as_lost_and_not_recreated(db: Path) -> None:
    used_store(db)
    db.unlink()
    with pytest.raises(StoreError) as caught:
        Store.open(db)
    assert caught.value.reason == "state-lost"
    detail = caught.value.detail
    assert str(db) in detail
    assert f"delete {marker_of(db)}" in detail
    assert "every tracked window" in detail  # what starting afresh costs
    assert not db.exists()


def test_a_state_file_replaced_by_an_empty_database_is_refused_as_lost(db: Path) -> None:
    used_store(db)
    db.unlink()
    with closing(sqlite3.connect(db)) as conn:  # SQLite's idea of a new database
        conn.execute("CREATE TABLE t (x)")
        conn.execute("DROP TABLE t")
    assert db.stat().st_size > 0
    with pytest.raises(StoreError) as caught:
        Store.open(db)
    assert caught.value.reason == "state-lost"
    assert plain_rows(db, "SELECT name FROM sqlite_master") == []  # no schema made


def test_deleting_the_marker_after_a_loss_starts_a_new_store_deliberately(
    db: Path,
) -> None:
    lost = used_store(db)
    db.unlink()
    marker_of(db).unlink()
    with Store.open(db) as store:
        assert store.store_id != lost
        assert store.load_activations() == []
    assert marker_id(db) != lost


def test_a_store_without_a_marker_from_an_older_gateway_is_given_one(db: Path) -> None:
    used_store(db)
    marker_of(db).unlink()
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("DROP TABLE store_meta")
    with Store.open(db) as store:
        assert store.load_activations() == [activation()]
        assert marker_id(db) == store.store_id
        assert plain_rows(db, "SELECT value FROM store_meta") == [(store.store_id,)]


def test_a_deleted_marker_is_written_again_with_the_stores_own_id(db: Path) -> None:
    first = used_store(db)
    marker_of(db).unlink()
    with Store.open(db) as store:
        assert store.store_id == first
    assert marker_id(db) == first


def test_another_stores_state_file_is_refused_as_a_mismatch(db: Path, tmp_path: Path) -> None:
    mine = used_store(db)
    other = tmp_path / "other" / "state.sqlite"
    other.parent.mkdir()
    theirs = used_store(other)
    db.write_bytes(other.read_bytes())
    with pytest.raises(StoreError) as caught:
        Store.open(db)
    assert caught.value.reason == "state-mismatch"
    assert mine in caught.value.detail
    assert theirs in caught.value.detail
    assert marker_id(db) == mine  # nothing rewritten


def test_a_backup_older_than_the_marker_is_refused_as_a_mismatch(db: Path) -> None:
    used_store(db)
    with closing(sqlite3.connect(db)) as conn:  # as an older gateway wrote it
        conn.execute("DROP TABLE store_meta")
    with pytest.raises(StoreError) as caught:
        Store.open(db)
    assert caught.value.reason == "state-mismatch"
    assert f"delete {marker_of(db)}" in caught.value.detail


def test_a_marker_without_a_store_id_is_refused(db: Path) -> None:
    used_store(db)
    marker_of(db).write_text("store_id = not-an-id\n")
    with pytest.raises(StoreError) as caught:
        Store.open(db)
    assert caught.value.reason == "state-mismatch"
    assert str(marker_of(db)) in caught.value.detail
