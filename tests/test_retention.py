"""Retention (issue 13, point 5; docs/decisions.md D31): each kind of row is pruned once
past its retention, on both backends, and nothing inside it is touched; unreported
suppression records are never pruned; the prunes are batched; the configuration refuses
a retention shorter than correctness needs; the outbox sweep deletes old report files
and nothing else."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pytest

import gateway.state.postgresql
import gateway.state.sqlite
from gateway.state.postgresql import PostgresStore
from gateway.state.rows import QuarantineEntry, StoredSuppression
from gateway.state.sqlite import Store

from .test_store import SUPPLIER, T0, activation, forwarded, record

pytestmark = pytest.mark.timeout(120)

DAY = 86_400_000
CUTOFF = T0 + 30 * DAY  # a prune's before_ms: rows at it are inside the retention
OTHER_SUPPLIER = bytes.fromhex("90B3D51F30030000")
GONE_ESME = bytes.fromhex("00DB123456780009")


class RetentionStore(Protocol):
    """What these tests use of a store."""

    def append_suppression(self, record: Any, encoded: bytes | None = None) -> None: ...
    def mark_reported_range(self, first: int, last: int, report_id: str) -> None: ...
    def put_decision(self, decision: Any, *, effect_done: bool) -> None: ...
    def put_quarantine(self, entry: QuarantineEntry) -> None: ...
    def mark_replayed(self, entry_id: str, at_ms: int) -> None: ...
    def set_counter(self, originator: bytes, device: bytes, counter: int) -> None: ...
    def prune_suppressions(self, before_ms: int) -> None: ...
    def prune_decisions(self, before_ms: int) -> None: ...
    def prune_quarantine(self, before_ms: int) -> None: ...
    def delete_counter(self, originator: bytes, device: bytes, counter: int) -> None: ...
    def counters_after(
        self, after: tuple[bytes, bytes], limit: int
    ) -> list[tuple[bytes, bytes, int]]: ...
    def unreported(self, limit: int) -> list[tuple[int, Any]]: ...
    def suppressions_for(self, alert_id: str) -> list[StoredSuppression]: ...
    def decision(self, alert_id: str) -> tuple[Any, bool] | None: ...
    def quarantine_entry(self, entry_id: str) -> QuarantineEntry | None: ...
    def last_counter(self, originator: bytes, device: bytes) -> int | None: ...
    def counts(self) -> dict[str, int]: ...
    async def flush(self) -> None: ...
    async def aclose(self) -> None: ...


Opener = Callable[[], RetentionStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens one store of the backend under test (tests/test_state_backends.py's)."""
    if request.param == "sqlite":
        path = tmp_path / "state.sqlite"
        return lambda: Store.open(path)
    dsn: str = request.getfixturevalue("pg_dsn")
    return lambda: PostgresStore.open(dsn)


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> int:
    """A prune batch of 3 rows, so that a test can show one prune stopping at it."""
    for module in (gateway.state.sqlite, gateway.state.postgresql):
        monkeypatch.setattr(module, "PRUNE_BATCH_ROWS", 3)
    return 3


def quarantined(name: str, at: int) -> QuarantineEntry:
    return QuarantineEntry(
        id=name,
        topic="dsp/gbcs/command",
        payload=name.encode(),
        reason="ZeroDivisionError",
        error="boom",
        attempts=3,
        received_at=at,
        quarantined_at=at,
        forwarded=False,
    )


# -- the stores -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_reported_records_past_the_cutoff_are_pruned_and_unreported_ones_never(
    open_store: Opener,
) -> None:
    store = open_store()
    try:
        store.append_suppression(record("outside", received_at=CUTOFF - 1))
        store.append_suppression(record("inside", received_at=CUTOFF))
        store.append_suppression(record("unreported", received_at=T0))  # far older
        await store.flush()
        (s_out,) = store.suppressions_for("outside")
        (s_in,) = store.suppressions_for("inside")
        store.mark_reported_range(s_out.seq, s_in.seq, "r-1")
        await store.flush()

        for _ in range(2):  # a second prune (a redelivered write) changes nothing
            store.prune_suppressions(CUTOFF)
            await store.flush()
        assert store.suppressions_for("outside") == []
        assert [s.seq for s in store.suppressions_for("inside")] == [s_in.seq]
        assert [r.alert_id for _, r in store.unreported(10)] == ["unreported"]

        # Whatever its age, an unreported record stays.
        store.prune_suppressions(CUTOFF + 3650 * DAY)
        await store.flush()
        assert store.suppressions_for("inside") == []
        assert [r.alert_id for _, r in store.unreported(10)] == ["unreported"]
        assert store.counts()["suppressions"] == 1
    finally:
        await store.aclose()


@pytest.mark.asyncio
async def test_decisions_past_the_cutoff_are_pruned(open_store: Opener) -> None:
    store = open_store()
    try:
        store.put_decision(forwarded("outside", decided_at=CUTOFF - 1), effect_done=True)
        store.put_decision(forwarded("inside", decided_at=CUTOFF), effect_done=True)
        store.prune_decisions(CUTOFF)
        store.prune_decisions(CUTOFF)
        await store.flush()
        assert store.decision("outside") is None
        assert store.decision("inside") == (forwarded("inside", decided_at=CUTOFF), True)
    finally:
        await store.aclose()


@pytest.mark.asyncio
async def test_quarantine_entries_are_kept_for_the_retention_after_their_last_event(
    open_store: Opener,
) -> None:
    store = open_store()
    try:
        store.put_quarantine(quarantined("old", CUTOFF - 1))
        store.put_quarantine(quarantined("recent", CUTOFF))
        store.put_quarantine(quarantined("replayed-long-ago", T0))
        store.put_quarantine(quarantined("replayed-lately", T0))
        await store.flush()
        store.mark_replayed("replayed-long-ago", CUTOFF - 1)
        store.mark_replayed("replayed-lately", CUTOFF)
        await store.flush()
        store.prune_quarantine(CUTOFF)
        await store.flush()
        kept = {
            name
            for name in ("old", "recent", "replayed-long-ago", "replayed-lately")
            if store.quarantine_entry(name) is not None
        }
        assert kept == {"recent", "replayed-lately"}
    finally:
        await store.aclose()


@pytest.mark.asyncio
async def test_a_counter_is_deleted_only_at_the_value_the_sweep_read(open_store: Opener) -> None:
    esme = activation().esme
    store = open_store()
    try:
        store.set_counter(SUPPLIER, esme, 5)
        store.set_counter(SUPPLIER, GONE_ESME, 7)
        store.set_counter(OTHER_SUPPLIER, GONE_ESME, 9)
        await store.flush()
        page = store.counters_after((b"", b""), 2)
        assert (
            page
            == sorted(
                [(SUPPLIER, esme, 5), (SUPPLIER, GONE_ESME, 7), (OTHER_SUPPLIER, GONE_ESME, 9)]
            )[:2]
        )
        rest = store.counters_after(page[-1][:2], 2)
        assert len(rest) == 1
        assert store.counters_after(rest[-1][:2], 2) == []

        store.set_counter(OTHER_SUPPLIER, GONE_ESME, 10)  # raised after the sweep read 9
        store.delete_counter(SUPPLIER, GONE_ESME, 7)
        store.delete_counter(OTHER_SUPPLIER, GONE_ESME, 9)
        await store.flush()
        assert store.last_counter(SUPPLIER, GONE_ESME) is None
        assert store.last_counter(OTHER_SUPPLIER, GONE_ESME) == 10
        assert store.last_counter(SUPPLIER, esme) == 5
    finally:
        await store.aclose()


@pytest.mark.asyncio
async def test_one_prune_deletes_at_most_a_batch(open_store: Opener, small_batches: int) -> None:
    store = open_store()
    try:
        for i in range(small_batches + 2):
            store.put_decision(forwarded(f"d-{i}", decided_at=T0 + i), effect_done=True)
            store.append_suppression(record(f"s-{i}", received_at=T0 + i))
            store.put_quarantine(quarantined(f"q-{i}", T0 + i))
        await store.flush()
        (first,) = store.suppressions_for("s-0")
        (last,) = store.suppressions_for(f"s-{small_batches + 1}")
        store.mark_reported_range(first.seq, last.seq, "r-1")
        await store.flush()

        store.prune_decisions(CUTOFF)
        store.prune_suppressions(CUTOFF)
        store.prune_quarantine(CUTOFF)
        await store.flush()
        counts = store.counts()
        assert (counts["decisions"], counts["suppressions"], counts["quarantined"]) == (2, 2, 2)
        # The oldest go first.
        assert store.decision("d-0") is None
        assert store.decision(f"d-{small_batches + 1}") is not None
        assert store.suppressions_for(f"s-{small_batches + 1}") != []

        store.prune_decisions(CUTOFF)
        store.prune_suppressions(CUTOFF)
        store.prune_quarantine(CUTOFF)
        await store.flush()
        counts = store.counts()
        assert (counts["decisions"], counts["suppressions"], counts["quarantined"]) == (0, 0, 0)
    finally:
        await store.aclose()
