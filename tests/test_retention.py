"""Retention (issue 13, point 5; docs/decisions.md D31): each kind of row is pruned once
past its retention, on both backends, and nothing inside it is touched; unreported
suppression records are never pruned; the prunes are batched; the configuration refuses
a retention shorter than correctness needs; the outbox sweep deletes old report files
and nothing else."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pytest

import gateway.state.common
from gateway.config import ConfigError, load_config
from gateway.retention import PRUNE_EVERY_MS, sweep_outbox
from gateway.state.postgresql import PostgresStore
from gateway.state.rows import QuarantineEntry, StoredSuppression
from gateway.state.sqlite import Store

from .e2e_support import ESME
from .test_shell import Shell
from .test_shell import shell as shell_fixture  # noqa: F401 - a fixture, by this name
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
    # The shared writes queue the prunes (gateway/state/common.py).
    monkeypatch.setattr(gateway.state.common, "PRUNE_BATCH_ROWS", 3)
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


# -- the configuration -------------------------------------------------------------------


def test_the_defaults_are_written_down_and_loaded() -> None:
    r = load_config(None, env={}).retention
    assert (r.suppressions, r.decisions, r.refusals, r.counters, r.outbox) == (
        400 * DAY,
        35 * DAY,
        35 * DAY,
        30 * DAY,
        35 * DAY,
    )


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[retention]\ndecisions = '1h'\n", "retention.decisions"),  # under a day
        ("[retention]\nsuppressions = '400m'\n", "retention.suppressions"),
        ("[retention]\nrefusals = '12h'\n", "retention.refusals"),
        ("[retention]\ncounters = '0d'\n", "retention.counters"),
        # Shorter than the dedupe horizon: a redelivery would miss its decision.
        ("[suppression]\ndedupe = '3d'\n[retention]\ndecisions = '2d'\n", "retention.decisions"),
        ("[reports]\nperiod = '2d'\n[retention]\noutbox = '1d'\n", "retention.outbox"),
    ],
)
def test_a_retention_shorter_than_correctness_needs_is_refused_by_name(
    tmp_path: Path, text: str, key: str
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert (caught.value.reason, caught.value.key) == ("out-of-range", key)
    assert key in str(caught.value)


def test_a_retention_at_its_floor_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text("[suppression]\ndedupe = '3d'\n[retention]\ndecisions = '3d'\noutbox = '1d'\n")
    assert load_config(path, env={}).retention.decisions == 3 * DAY


# -- the outbox ----------------------------------------------------------------------------


def aged(path: Path, written_ms: int, text: str = "x") -> Path:
    path.write_text(text)
    os.utime(path, ns=(written_ms * 1_000_000, written_ms * 1_000_000))
    return path


def test_the_outbox_sweep_deletes_old_report_files_and_leaves_the_rest(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = aged(elsewhere / "P_20260101T000000Z_1-9.csv", CUTOFF - DAY)
    old = "P_20260101T000000Z_1-9"
    for name in (f"{old}.csv", f"{old}.csv.sig", f"{old}.xlsx"):
        aged(outbox / name, CUTOFF - 1)
    aged(outbox / "P_20260131T000000Z_10-12.csv", CUTOFF)  # inside the retention
    aged(outbox / "notes.txt", CUTOFF - DAY)  # not a report
    aged(outbox / f".{old}.csv.abc.tmp", CUTOFF - DAY)  # a write in progress
    (outbox / "P_link.csv").symlink_to(target)  # a link out of the outbox
    os.utime(outbox / "P_link.csv", ns=(0, 0), follow_symlinks=False)
    (outbox / "P_folder").mkdir()

    removed = sweep_outbox(outbox, "P", CUTOFF)

    assert removed == sorted([f"{old}.csv", f"{old}.csv.sig", f"{old}.xlsx"])
    assert sorted(p.name for p in outbox.iterdir()) == sorted(
        [
            "P_20260131T000000Z_10-12.csv",
            "notes.txt",
            f".{old}.csv.abc.tmp",
            "P_link.csv",
            "P_folder",
        ]
    )
    assert target.read_text() == "x"  # the link's target untouched
    assert sweep_outbox(tmp_path / "missing", "P", CUTOFF) == []


def test_the_outbox_sweep_ages_out_delivered_reports_in_sent_too(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    sent = outbox / "sent"
    sent.mkdir(parents=True)
    aged(sent / "P_20260101T000000Z_PT1H-001.csv", CUTOFF - 1)
    aged(sent / "P_20260101T000000Z_PT1H-001.csv.sig", CUTOFF - 1)
    aged(sent / "P_20260131T000000Z_PT1H-001.csv", CUTOFF)  # inside the retention
    aged(sent / "notes.txt", CUTOFF - DAY)
    (sent / "P_deeper").mkdir()
    aged(sent / "P_deeper" / "P_20260101T000000Z_PT1H-002.csv", CUTOFF - DAY)  # one level only
    assert sweep_outbox(outbox, "P", CUTOFF) == [
        "sent/P_20260101T000000Z_PT1H-001.csv",
        "sent/P_20260101T000000Z_PT1H-001.csv.sig",
    ]
    assert sorted(p.name for p in sent.iterdir()) == [
        "P_20260131T000000Z_PT1H-001.csv",
        "P_deeper",
        "notes.txt",
    ]
    # A "sent" that is a link out of the outbox is not followed.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    aged(elsewhere / "P_20260101T000000Z_PT1H-003.csv", CUTOFF - DAY)
    other = tmp_path / "outbox2"
    other.mkdir()
    (other / "sent").symlink_to(elsewhere)
    assert sweep_outbox(other, "P", CUTOFF) == []
    assert (elsewhere / "P_20260101T000000Z_PT1H-003.csv").exists()


# -- housekeeping ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_housekeeping_prunes_each_kind_past_its_retention(
    shell_fixture: Shell,  # noqa: F811 - the fixture imported above
) -> None:
    gateway, store = shell_fixture.gateway, shell_fixture.store
    r = gateway.config.retention
    store.counters[(SUPPLIER, ESME)] = 4  # ESME is in the inventory
    store.counters[(SUPPLIER, GONE_ESME)] = 7  # GONE_ESME is not
    outbox = gateway.config.paths.outbox
    outbox.mkdir(parents=True, exist_ok=True)
    prefix = gateway.config.reports.name_prefix
    first = shell_fixture.clock[0] + PRUNE_EVERY_MS  # the gateway started at clock[0]

    await gateway._prune(first - 1)  # not due yet
    assert [k for k, _ in store.committed if k.startswith(("prune", "delete"))] == []

    await gateway._prune(first)
    pruned = {k: v for k, v in store.committed if k.startswith("prune")}
    assert pruned == {
        "prune-suppressions": first - r.suppressions,
        "prune": first - r.decisions,
        "prune-quarantine": first - r.refusals,
        "prune-commands": first - r.refusals,
        "prune-restorations": first - r.decisions,
    }
    # The gone device's counter is first seen absent now; dropped only after r.counters.
    assert set(store.counters) == {(SUPPLIER, ESME), (SUPPLIER, GONE_ESME)}

    inside = first + r.counters - 1
    await gateway._prune(inside)  # absent for just under r.counters: kept
    assert set(store.counters) == {(SUPPLIER, ESME), (SUPPLIER, GONE_ESME)}

    last = inside + PRUNE_EVERY_MS  # the next pass
    aged(outbox / f"{prefix}_old.csv", last - r.outbox - 1)
    aged(outbox / f"{prefix}_new.csv", last - r.outbox)
    await gateway._prune(last)
    assert set(store.counters) == {(SUPPLIER, ESME)}
    assert ("delete-counter", (SUPPLIER, GONE_ESME, 7)) in store.committed
    assert sorted(p.name for p in outbox.iterdir()) == [f"{prefix}_new.csv"]
