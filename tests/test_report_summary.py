"""A report period's summary file (issue 13, point 7): the near misses and the restoration
alerts inside a window of each closed period, beside its report; an empty period's
summary says zero; the same file when written again. The restorations table behind it
on both backends (kept, a redelivered copy once, pruned by retention, added to an older
SQLite file).

The gateway runs as in tests/test_report_periods.py (its Harness: a real SQLite store,
the in-memory transport, the clock in the test's hands)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from gateway.core.events import Activation, AlertDecision, AlertReason
from gateway.eui import format_eui64
from gateway.reports.files import format_time
from gateway.reports.summary import SUMMARY_COLUMNS, summary_name, write_summary
from gateway.state.postgresql import PostgresStore
from gateway.state.restorations import NEAR_MISS_LENGTHS, RestorationRecord
from gateway.state.rows import encode_decision
from gateway.state.sqlite import SCHEMA_VERSION, Store
from gbcs import AlertCode, builders

from .e2e_support import CHF, ESME, SUPPLIER
from .test_report_periods import HOUR, P0, Harness, harness  # noqa: F401 - a fixture

MIN = 60_000
AStore = Store | PostgresStore


def restoration_frame(counter: int, at: int) -> bytes:
    when = dt.datetime.fromtimestamp(at // 1000, dt.UTC)
    return builders.restoration_alert(
        device=ESME,
        recipient=SUPPLIER,
        alert_counter=counter,
        alert_time=when,
        outage_start=when - dt.timedelta(minutes=4),
        signer=None,
    )


async def restoration(h: Harness, counter: int, at: int) -> None:
    await h.gbcs("csp/gbcs/inbound", restoration_frame(counter, at), at)


def summary_path(h: Harness, start: int) -> Path:
    return h.home.root / "outbox" / summary_name("POA-SUPPRESSION", start, "PT1H")


def read_summary(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The SUMMARY record and the rows by column name, as a reader would load them."""
    with path.open(newline="", encoding="utf-8") as f:
        lines = list(csv.reader(f))
    assert lines[1] == list(SUMMARY_COLUMNS)
    return lines[0], [dict(zip(lines[1], row, strict=True)) for row in lines[2:]]


# -- the gateway writes them -------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_period_summary_lists_its_near_miss_and_restoration_and_the_next_does_not(
    harness: Callable[..., Harness],  # noqa: F811 - the fixture imported above
) -> None:
    h = harness()
    gateway = await h.start()
    opened = P0 + 10 * MIN
    await h.window_and_alerts(opened, 1000, ["inside"])  # a 30-minute window on CHF
    await restoration(h, 7, opened + 5 * MIN)  # inside the window: evidence against A5
    await h.alerts(opened + 35 * MIN, ["late"])  # 5 minutes after it ended: a near miss
    await restoration(h, 8, P0 + HOUR + 10 * MIN)  # the next period, no window: counted
    await h.rotate(P0 + 2 * HOUR + 2_000)

    header, rows = read_summary(summary_path(h, P0))
    name = summary_path(h, P0).stem
    near = int(header[4]), int(header[5]), int(header[6])
    assert header[:4] == ["SUMMARY", name, format_time(P0), format_time(P0 + HOUR)]
    assert near == (1, 1, 1)
    (miss, inside) = rows
    assert miss["kind"] == "near-miss"
    assert (miss["alert_id"], miss["chf_id"]) == ("late", format_eui64(CHF))
    assert miss["at"] == format_time(opened + 35 * MIN)
    assert int(miss["gap_ms"]) == 5 * MIN
    assert inside["kind"] == "restoration-in-window"
    assert (inside["esme_id"], inside["chf_id"]) == (format_eui64(ESME), format_eui64(CHF))
    assert inside["at"] == format_time(opened + 5 * MIN)
    assert inside["originator_counter"] == "7"
    assert inside["alert_code"] == f"{AlertCode.SUPPLY_OUTAGE_RESTORED_OUTAGE_3MIN:04X}"
    assert inside["request_id"].endswith(":1000")  # the CS06 whose window it fell in

    header, rows = read_summary(summary_path(h, P0 + HOUR))
    assert header[4:7] == ["0", "0", "1"]  # the out-of-window alert is counted, not listed
    assert rows == []

    # Written again (a new leader closing the period after a failover): the same bytes.
    first = summary_path(h, P0).read_bytes()
    summary_path(h, P0).unlink()
    await gateway._write_summary(P0, P0 + HOUR)
    assert summary_path(h, P0).read_bytes() == first


@pytest.mark.asyncio
async def test_an_empty_period_gets_a_summary_with_zero_counts(
    harness: Callable[..., Harness],  # noqa: F811 - the fixture imported above
) -> None:
    h = harness()
    await h.start()
    await h.rotate(P0 + HOUR + 2_000)
    header, rows = read_summary(summary_path(h, P0))
    assert header[4:7] == ["0", "0", "0"]
    assert rows == []
    assert not summary_path(h, P0 + HOUR).exists()  # the open period has none yet
    assert [r.period_start_ms for r in h.reports()] == [P0]  # and its report is there


@pytest.mark.asyncio
async def test_a_redelivered_restoration_alert_is_kept_once(
    harness: Callable[..., Harness],  # noqa: F811 - the fixture imported above
) -> None:
    h = harness()
    await h.start()
    await h.window_and_alerts(P0 + MIN, 1000, [])
    await restoration(h, 9, P0 + 2 * MIN)
    await restoration(h, 9, P0 + 3 * MIN)  # the same frame again
    await h.rotate(P0 + HOUR + 2_000)
    header, rows = read_summary(summary_path(h, P0))
    assert header[4:7] == ["0", "1", "1"]
    assert rows[0]["at"] == format_time(P0 + 2 * MIN)  # the first sighting


# -- the writer ---------------------------------------------------------------------------


def test_the_summary_is_signed_when_a_signer_is_given(tmp_path: Path) -> None:
    class Signer:
        def sign(self, data: bytes) -> bytes:
            return b"sig:" + data[:8]

    written = write_summary(
        tmp_path,
        period_start_ms=P0,
        period_end_ms=P0 + HOUR,
        period_id="PT1H",
        near_misses=[],
        restorations=[],
        version="1.0",
        signer=Signer(),  # type: ignore[arg-type]
    )
    signature = written.path.with_name(written.path.name + ".sig")
    assert signature.read_bytes() == b"sig:" + written.path.read_bytes()[:8]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([written.path.name, signature.name])


def test_only_a_near_miss_decisions_row_has_a_near_miss_length() -> None:
    a = Activation(
        esme=ESME,
        chf=CHF,
        originator=SUPPLIER,
        counter=1,
        start_ms=P0,
        end_ms=P0 + 30 * MIN,
        future_dated=False,
        seen_at=P0,
    )
    for reason in AlertReason:
        for activation in (None, a):
            for gap in (None, 5 * MIN):
                d = AlertDecision(
                    alert_id="x",
                    chf=CHF,
                    suppressed=False,
                    reason=reason,
                    judged_at=P0,
                    decided_at=P0,
                    activation=activation,
                    after_window_ms=gap,
                )
                assert (len(encode_decision(d)) in NEAR_MISS_LENGTHS) == (gap is not None)


# -- the restorations table on both backends -----------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], AStore]:
    if request.param == "sqlite":
        path = tmp_path / "state.sqlite"
        return lambda: Store.open(path)
    dsn: str = request.getfixturevalue("pg_dsn")
    return lambda: PostgresStore.open(dsn)


def kept(counter: int, at: int, *, in_window: bool = True) -> RestorationRecord:
    return RestorationRecord(
        esme=ESME,
        counter=counter,
        alert_code=0x8F36,
        chf=CHF if counter % 2 else None,
        received_at=at,
        in_window=in_window,
        request_id="req" if in_window else None,
    )


def near_miss(alert_id: str, at: int, gap: int | None) -> AlertDecision:
    return AlertDecision(
        alert_id=alert_id,
        chf=CHF,
        suppressed=False,
        reason=AlertReason.NO_WINDOW,
        judged_at=at - 10,
        decided_at=at,
        after_window_ms=gap,
    )


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_restorations_are_kept_read_by_period_and_pruned(
    open_store: Callable[[], AStore],
) -> None:
    store = open_store()
    store.put_restoration(kept(1, P0 + 1))
    store.put_restoration(kept(2, P0 + 2, in_window=False))
    store.put_restoration(kept(1, P0 + 99))  # a redelivered copy: the first stays
    store.put_restoration(kept(3, P0 + HOUR))  # the next period
    store.put_decision(near_miss("m", P0 + 5, 7 * MIN), effect_done=True)
    store.put_decision(near_miss("f", P0 + 6, None), effect_done=True)  # forwarded, no gap
    store.put_decision(near_miss("n", P0 + HOUR + 1, MIN), effect_done=True)
    await store.aclose()

    store = open_store()
    try:
        misses, restorations = await store.read_evidence(P0, P0 + HOUR)
        assert misses == [near_miss("m", P0 + 5, 7 * MIN)]
        assert restorations == [kept(1, P0 + 1), kept(2, P0 + 2, in_window=False)]
        store.prune_restorations(P0 + 2)  # retention: received before the cutoff
        await store.flush()
        _, restorations = await store.read_evidence(0, 2 * P0)
        assert restorations == [kept(2, P0 + 2, in_window=False), kept(3, P0 + HOUR)]
    finally:
        await store.aclose()


@pytest.mark.asyncio
async def test_a_version_4_state_file_gets_the_restorations_table(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite"
    with Store.open(db):
        pass
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("DROP TABLE restorations")
        conn.execute("PRAGMA user_version = 4")
        conn.commit()
    async with Store.open(db) as store:
        store.put_restoration(kept(1, P0))
        await store.flush()
        assert (await store.read_evidence(P0, P0 + 1))[1] == [kept(1, P0)]
    with closing(sqlite3.connect(db)) as conn:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
    assert version == SCHEMA_VERSION == 5


def test_the_summary_loads_in_one_step_with_the_csv_module(tmp_path: Path) -> None:
    written = write_summary(
        tmp_path,
        period_start_ms=P0,
        period_end_ms=P0 + HOUR,
        period_id="PT1H",
        near_misses=[near_miss("m,1", P0 + 5, 7 * MIN), near_miss("x", P0 + 6, None)],
        restorations=[kept(1, P0 + 1), kept(2, P0 + 2, in_window=False)],
        version="1.0",
    )
    text = written.path.read_bytes().decode("utf-8")
    assert text.endswith("\r\n")
    rows = list(csv.DictReader(io.StringIO(text.split("\r\n", 1)[1])))
    assert [(r["kind"], r["alert_id"]) for r in rows] == [
        ("near-miss", "m,1"),  # quoted, read back whole
        ("restoration-in-window", ""),
    ]
    assert (written.near_misses, written.restorations_in_window, written.restorations) == (1, 1, 2)
