"""The StateStore behaviour every backend owes the shell, run against SQLite and against
a real PostgreSQL (a throwaway cluster: tests/pg_support.py): round trips, idempotent
writes, group commit, the counter overlay, a failed commit retried, and a gateway run
in-process on PostgreSQL (issue 12, point 1)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import msgspec
import psycopg
import pytest

from gateway.config import ConfigError, load_config
from gateway.core.engine import Engine, EngineConfig
from gateway.state.inventory import Inventory
from gateway.state.inventory_store import open_inventory
from gateway.state.postgresql import PostgresStore
from gateway.state.sqlite import QuarantineEntry, Store, StoreError, StoreReason, quarantine_id

from .e2e_support import CHF, ESME, OTHER_CHF, UNLISTED_ESME, Broker, Client, Home, cs06, now_ms
from .pg_support import Cluster
from .test_faults import in_process, until
from .test_store import SUPPLIER, T0, activation, forwarded, record, suppressed


class AnyStore(Protocol):
    """What these tests use of a store: the StateStore protocol and the CLI's reads."""

    commits: int
    commit_failures: int

    def put_activation(self, a: Any) -> None: ...
    def delete_activation(self, a: Any) -> None: ...
    def set_counter(self, originator: bytes, device: bytes, counter: int) -> None: ...
    def put_decision(self, decision: Any, *, effect_done: bool) -> None: ...
    def append_suppression(self, record: Any, encoded: bytes | None = None) -> None: ...
    def mark_reported_range(self, first: int, last: int, report_id: str) -> None: ...
    def prune_decisions(self, before_ms: int) -> None: ...
    def put_quarantine(self, entry: QuarantineEntry) -> None: ...
    def mark_replayed(self, entry_id: str, at_ms: int) -> None: ...
    async def flush(self) -> None: ...
    async def aclose(self) -> None: ...
    def close(self) -> None: ...
    def load_activations(self) -> list[Any]: ...
    def activation_fields(self) -> Iterable[Any]: ...
    def load_decisions(self, since_ms: int) -> list[tuple[Any, bool]]: ...
    def decision(self, alert_id: str) -> tuple[Any, bool] | None: ...
    def last_counter(self, originator: bytes, device: bytes) -> int | None: ...
    def unreported(self, limit: int) -> list[tuple[int, Any]]: ...
    async def read_unreported(self, limit: int) -> list[tuple[int, Any]]: ...
    def unreported_count(self) -> int: ...
    def quarantined(self, limit: int = 1000) -> list[QuarantineEntry]: ...
    def quarantine_entry(self, entry_id: str) -> QuarantineEntry | None: ...
    def counts(self) -> dict[str, int]: ...


Opener = Callable[[], AnyStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens (and reopens) one store of the backend under test."""
    if request.param == "sqlite":
        path = tmp_path / "state.sqlite"
        return lambda: Store.open(path)
    dsn: str = request.getfixturevalue("pg_dsn")
    return lambda: PostgresStore.open(dsn)


pytestmark = pytest.mark.timeout(120)


@pytest.mark.asyncio
async def test_every_kind_of_row_round_trips_and_survives_a_reopen(open_store: Opener) -> None:
    kept = activation(7, future_dated=True, start_ms=T0 + 60_000)
    dropped = activation(8)
    store = open_store()
    store.put_activation(kept)
    store.put_activation(dropped)
    store.delete_activation(dropped)
    store.set_counter(SUPPLIER, kept.esme, 2**64 - 1)
    store.put_decision(suppressed("a-1", kept), effect_done=True)
    store.put_decision(forwarded("a-2"), effect_done=False)
    store.append_suppression(record("a-1"))
    entry = QuarantineEntry(
        id=quarantine_id("t", b"\x00\xff"),
        topic="t",
        payload=b"\x00\xff",
        reason="ZeroDivisionError",
        error="boom",
        attempts=3,
        received_at=T0,
        quarantined_at=T0 + 1,
        forwarded=True,
    )
    store.put_quarantine(entry)
    await store.aclose()

    store = open_store()
    try:
        assert store.load_activations() == [kept]
        assert store.last_counter(SUPPLIER, kept.esme) == 2**64 - 1
        assert store.decision("a-1") == (suppressed("a-1", kept), True)
        assert store.decision("a-2") == (forwarded("a-2"), False)
        assert store.decision("a-3") is None
        assert [d.alert_id for d, _ in store.load_decisions(0)] == ["a-1", "a-2"]
        ((seq, rec),) = store.unreported(10)
        assert rec == record("a-1")
        assert await store.read_unreported(10) == [(seq, rec)]
        assert store.quarantined() == [entry]
        assert store.quarantine_entry(entry.id) == entry
        assert store.counts() == {
            "activations": 1,
            "counters": 1,
            "decisions": 2,
            "suppressions": 1,
            "unreported": 1,
            "quarantined": 1,
        }
    finally:
        store.close()


@pytest.mark.asyncio
async def test_writes_repeated_by_a_redelivery_change_nothing(open_store: Opener) -> None:
    a = activation(1)
    store = open_store()
    try:
        for _ in range(2):
            store.put_activation(a)
            store.set_counter(SUPPLIER, a.esme, 5)
            store.put_decision(suppressed("a-1", a), effect_done=False)
            store.put_decision(suppressed("a-1", a), effect_done=True)
            store.append_suppression(record("a-1", received_at=T0 + 1))
            store.append_suppression(record("a-1", received_at=T0 + 2))
            await store.flush()
        store.set_counter(SUPPLIER, a.esme, 3)  # lower: ignored
        store.put_decision(suppressed("a-1", a), effect_done=False)  # never lowered
        store.put_decision(forwarded("a-1", decided_at=T0), effect_done=True)  # earlier
        await store.flush()
        assert store.load_activations() == [a]
        assert store.last_counter(SUPPLIER, a.esme) == 5
        assert store.decision("a-1") == (suppressed("a-1", a), True)
        ((seq, rec),) = store.unreported(10)
        assert rec.received_at == T0 + 1
        store.mark_reported_range(seq, seq, "R-1")
        store.mark_reported_range(seq, seq, "R-2")  # already reported: stays R-1
        store.prune_decisions(T0 + 120_000)
        store.prune_decisions(T0 + 120_000)
        await store.flush()
        assert store.unreported_count() == 0
        assert store.decision("a-1") is None
        assert store.counts()["suppressions"] == 1
    finally:
        store.close()


@pytest.mark.asyncio
async def test_one_commit_covers_many_concurrent_flushes(open_store: Opener) -> None:
    store = open_store()
    try:

        async def one(i: int) -> None:
            store.append_suppression(record(f"s-{i}"))
            await store.flush()

        await asyncio.gather(*(one(i) for i in range(200)))
        assert store.unreported_count() == 200
        assert store.commits < 200
    finally:
        store.close()


@pytest.mark.asyncio
async def test_a_queued_counter_is_seen_before_its_commit(open_store: Opener) -> None:
    store = open_store()
    try:
        store.set_counter(SUPPLIER, CHF, 10)
        await store.flush()
        store.set_counter(SUPPLIER, CHF, 11)
        assert store.last_counter(SUPPLIER, CHF) == 11
        await store.flush()
        assert store.last_counter(SUPPLIER, CHF) == 11
    finally:
        store.close()


@pytest.mark.asyncio
async def test_a_failed_commit_keeps_its_writes_and_a_later_flush_commits_them(
    pg_cluster: Cluster, pg_dsn: str
) -> None:
    store = PostgresStore.open(pg_dsn)
    try:
        store.set_counter(SUPPLIER, CHF, 1)
        await store.flush()
        # The server ends the write connection, as a restart or a failover would.
        pg_cluster.execute(
            pg_dsn,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        store.append_suppression(record("kept"))
        store.set_counter(SUPPLIER, CHF, 2)
        with pytest.raises(StoreError) as failed:
            await store.flush()
        assert failed.value.reason is StoreReason.COMMIT_FAILED
        assert store.pending == 2
        assert store.last_counter(SUPPLIER, CHF) == 2  # still in the overlay
        # The reader was terminated too; the retry reconnects the writer.
        await store.flush()
        assert store.pending == 0
        with psycopg.connect(pg_dsn) as conn:
            rows = conn.execute("SELECT alert_id FROM suppressions").fetchall()
        assert rows == [("kept",)]
    finally:
        store.close()


def test_a_schema_of_another_version_is_refused_and_left_as_it_is(pg_dsn: str) -> None:
    PostgresStore.open(pg_dsn).close()
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("UPDATE store_meta SET value = '0' WHERE key = 'schema_version'")
        conn.execute("INSERT INTO counters VALUES (%s, %s, %s)", (SUPPLIER, CHF, bytes(8)))
    with pytest.raises(StoreError) as refused:
        PostgresStore.open(pg_dsn)
    assert refused.value.reason is StoreReason.UNSUPPORTED_SCHEMA
    assert "version 0 is older" in str(refused.value)
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM counters").fetchone() == (1,)
        conn.execute("UPDATE store_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="version 99 is newer"):
        PostgresStore.open(pg_dsn)


def test_another_applications_tables_are_refused(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE TABLE counters (x int)")
    with pytest.raises(StoreError) as refused:
        PostgresStore.open(pg_dsn)
    assert refused.value.reason is StoreReason.NOT_A_STORE


def test_a_dsn_that_cannot_connect_is_refused_naming_the_server_not_the_password() -> None:
    with pytest.raises(StoreError) as refused:
        PostgresStore.open("host=127.0.0.1 port=1 dbname=poa user=poa", password="s3cret-pw")
    assert refused.value.reason is StoreReason.CANNOT_OPEN
    assert "127.0.0.1:1/poa" in str(refused.value)
    assert "s3cret-pw" not in str(refused.value)
    assert refused.value.__cause__ is None  # libpq's error is summarised, not chained


def test_a_dsn_with_a_password_is_refused_by_the_config(tmp_path: Path) -> None:
    toml = tmp_path / "gateway.toml"
    toml.write_text('[state]\nbackend = "postgresql"\ndsn = "postgresql://poa:pw@db/poa"\n')
    with pytest.raises(ConfigError) as refused:
        load_config(toml, env={})
    assert refused.value.key == "state.dsn"
    assert "pw@" not in str(refused.value)
    toml.write_text('[state]\nbackend = "postgresql"\ndsn = "host=db dbname=poa"\n')
    config = load_config(toml, env={"POA_PG_PASSWORD": "from-env"})
    assert config.state_password is not None
    assert config.state_password.reveal() == "from-env"
    assert "from-env" not in repr(config.redacted_dict())


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_a_gateway_on_postgresql_suppresses_and_keeps_its_state_there(
    tmp_path: Path, broker: Broker, pg_dsn: str
) -> None:
    home = Home(tmp_path / "gw", broker.port)
    with home.config.open("a") as f:
        f.write(f'[state]\nbackend = "postgresql"\ndsn = "{pg_dsn}"\n')
    config = load_config(home.config, env={})
    # On PostgreSQL the inventory is there too: the devices Home put in its SQLite file.
    with Inventory.open(home.root / "inventory.sqlite") as local, open_inventory(config) as shared:
        shared.upsert_many([d for d in map(local.get, (ESME, UNLISTED_ESME)) if d], 0)
    client = Client(broker.port, "pg")
    await client.start()
    try:
        async with in_process(config) as (gateway, lines, _metrics):
            assert isinstance(gateway.store, PostgresStore)
            await client.command(cs06(home, 1000))
            await until(lambda: lines.events("activation.tracked"), "the window")
            now = now_ms()
            for i in range(20):
                await client.alert(f"a-{i}", CHF if i % 2 else OTHER_CHF, now)
            await client.wait_outputs(20, limit_s=30)
            assert {f"a-{i}" for i in range(1, 20, 2)} == set(client.suppressed_ids())
    finally:
        await client.close()
    assert not (home.root / "state.sqlite").exists()
    with PostgresStore.open(pg_dsn) as store:
        assert store.counts()["suppressions"] == 10
        assert len(store.load_activations()) == 1


# -- a batch of distinct keys (PostgreSQL: one statement per run; postgresql.py) ---------


@pytest.mark.asyncio
async def test_decisions_committed_together_meet_earlier_rows_as_one_by_one(
    open_store: Opener,
) -> None:
    a = activation(1)
    store = open_store()
    try:
        store.put_decision(suppressed("older-kept", a), effect_done=True)
        store.put_decision(suppressed("done-kept", a), effect_done=True)
        store.put_decision(suppressed("done-now", a), effect_done=False)
        store.put_decision(forwarded("replaced"), effect_done=True)
        await store.flush()
        # One batch, every alert id once: each row meets the committed one.
        store.put_decision(forwarded("older-kept", decided_at=T0), effect_done=False)
        store.put_decision(suppressed("done-kept", a), effect_done=False)
        store.put_decision(suppressed("done-now", a), effect_done=True)
        store.put_decision(suppressed("replaced", a, decided_at=T0 + 2 * 60_000), effect_done=False)
        for i in range(20):
            store.put_decision(forwarded(f"new-{i}", decided_at=T0 + i), effect_done=i % 2 == 0)
        await store.flush()
        assert store.decision("older-kept") == (suppressed("older-kept", a), True)
        assert store.decision("done-kept") == (suppressed("done-kept", a), True)
        assert store.decision("done-now") == (suppressed("done-now", a), True)
        assert store.decision("replaced") == (
            suppressed("replaced", a, decided_at=T0 + 2 * 60_000),
            False,
        )
        loaded = store.load_decisions(0)
        news = [(d.alert_id, done) for d, done in loaded if d.alert_id.startswith("new-")]
        assert news == [(f"new-{i}", i % 2 == 0) for i in range(20)]
        assert store.counts()["decisions"] == 24
    finally:
        store.close()


@pytest.mark.asyncio
async def test_suppressions_committed_together_keep_queue_order_and_the_first_record(
    open_store: Opener,
) -> None:
    store = open_store()
    try:
        store.append_suppression(record("logged", received_at=T0 + 1))
        await store.flush()
        # Ids not in sorted order, so an insert by id would show; one already logged.
        ids = [f"s-{(i * 7) % 30:02}" for i in range(30)]
        for n, alert_id in enumerate(ids):
            store.append_suppression(record(alert_id, received_at=T0 + 100 + n))
            if n == 10:
                store.append_suppression(record("logged", received_at=T0 + 2))
        await store.flush()
        rows = store.unreported(100)
        assert [r.alert_id for _, r in rows] == ["logged", *ids]
        assert rows[0][1].received_at == T0 + 1
        assert [seq for seq, _ in rows] == sorted(seq for seq, _ in rows)
    finally:
        store.close()


# -- loading every activation (PostgreSQL: packed records; postgresql.py) ------------------


def _varied_activations() -> list[Any]:
    """Activations whose every field differs, on ESMEs that share a 7-byte prefix and
    ESMEs that do not, several per ESME, in no particular order."""
    esmes = [bytes.fromhex(h) for h in ("00DB1000000001FF", "00DB100000000100", "00DB0FFFFFFFFFFF")]
    out = []
    for n, esme in enumerate(esmes):
        for k, (originator, counter) in enumerate(
            [(SUPPLIER, 2**64 - 1), (SUPPLIER, 0), (bytes.fromhex("90B3D51F30020000"), 7)]
        ):
            out.append(
                activation(
                    counter,
                    esme=esme,
                    originator=originator,
                    chf=bytes([0xC0 + n, k]) + bytes(6),
                    start_ms=T0 - 10**6 * n + k,
                    end_ms=T0 + 30 * 60_000 + 10 * n + k,
                    seen_at=-(n + 1) * 1000 - k,
                    future_dated=k == 0,
                    closed_early=k == 1,
                    succeeded=n == 1,
                )
            )
    return out[4:] + out[:4]


@pytest.mark.asyncio
async def test_every_activation_loads_as_stored_in_key_order(open_store: Opener) -> None:
    stored = _varied_activations()
    store = open_store()
    try:
        for a in stored:
            store.put_activation(a)
        await store.flush()
        loaded = store.load_activations()
        assert loaded == sorted(stored, key=lambda a: (a.esme, a.originator, a.counter))
        store.delete_activation(stored[0])
        await store.flush()
        assert stored[0] not in store.load_activations()
        assert len(store.load_activations()) == len(stored) - 1
    finally:
        store.close()


def test_no_activation_loads_as_an_empty_list(open_store: Opener) -> None:
    store = open_store()
    try:
        assert store.load_activations() == []
    finally:
        store.close()


@pytest.mark.asyncio
async def test_activations_load_after_the_server_ended_the_read_connection(
    pg_cluster: Cluster, pg_dsn: str
) -> None:
    stored = _varied_activations()
    store = PostgresStore.open(pg_dsn)
    try:
        for a in stored:
            store.put_activation(a)
        await store.flush()
        pg_cluster.execute(
            pg_dsn,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        loaded = store.load_activations()  # reconnects once, as every read
        assert loaded == sorted(stored, key=lambda a: (a.esme, a.originator, a.counter))
    finally:
        store.close()


@pytest.mark.asyncio
async def test_activation_fields_are_the_activations_fields_and_restore_alike(
    open_store: Opener,
) -> None:
    # The promotion's path (a plain tuple per activation, streamed by binary COPY on
    # PostgreSQL) must give the engine exactly what load_activations gives.
    stored = _varied_activations()  # counters at both ends of u64, negative times
    store = open_store()
    try:
        assert list(store.activation_fields()) == []
        for a in stored:
            store.put_activation(a)
        await store.flush()
        fields = list(store.activation_fields())
        assert sorted(fields) == sorted(msgspec.structs.astuple(a) for a in stored)
        assert all(type(f[3]) is int and type(f[6]) is bool for f in fields)
        by_fields, by_values = Engine(EngineConfig(), T0), Engine(EngineConfig(), T0)
        by_fields.restore_fields(fields, T0)
        by_values.restore(store.load_activations(), T0)
        assert sorted(map(msgspec.structs.astuple, by_fields.activations())) == sorted(
            map(msgspec.structs.astuple, by_values.activations())
        )
        assert by_fields.tracked_count == by_values.tracked_count == len(stored)
    finally:
        store.close()


@pytest.mark.asyncio
async def test_many_activations_stream_across_copy_chunks(pg_dsn: str) -> None:
    # Far more rows than one COPY chunk holds, so rows straddle chunk boundaries.
    store = PostgresStore.open(pg_dsn)
    try:
        stored = [
            activation(n, esme=n.to_bytes(8, "big"), chf=(n + 1).to_bytes(8, "big"))
            for n in range(1, 20_001)
        ]
        for a in stored:
            store.put_activation(a)
        await store.flush()
        fields = sorted(store.activation_fields())
        assert fields == sorted(msgspec.structs.astuple(a) for a in stored)
    finally:
        store.close()
