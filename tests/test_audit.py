"""The audit that answers why (issue 13, point 6; docs/decisions.md D33): every CS06
judged is kept in the commands table, refused ones with their reason, on both backends,
and pruned past ``retention.refusals``; ``poa-gateway explain`` answers from it after a
restart: a forwarded AD1 with its hub's ESMEs, their latest commands and the nearest
window's gap; a suppressed one with the report file and line that hold it."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any, Protocol

import pytest

import gateway.state.common
from gateway.cli.main import main
from gateway.core.events import CommandOutcome
from gateway.eui import format_eui64
from gateway.state.audit import CommandRecord
from gateway.state.postgresql import PostgresStore
from gateway.state.sqlite import SCHEMA_VERSION, Store

from .e2e_support import CHF, ESME, SUPPLIER, cs06
from .test_report_periods import HOUR, P0, Harness
from .test_report_periods import harness as harness_fixture  # noqa: F401 - a fixture

pytestmark = pytest.mark.timeout(120)

T0 = 1_900_000_000_000
DAY = 86_400_000
OTHER_ESME = bytes.fromhex("00DB1234567890C0")


class AuditStore(Protocol):
    """What these tests use of a store."""

    def put_command(self, command: CommandRecord) -> None: ...
    def prune_commands(self, before_ms: int) -> None: ...
    def commands_for(self, device: bytes, limit: int = 1000) -> list[CommandRecord]: ...
    async def flush(self) -> None: ...
    async def aclose(self) -> None: ...


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], AuditStore]:
    if request.param == "sqlite":
        path = tmp_path / "state.sqlite"
        return lambda: Store.open(path)
    dsn: str = request.getfixturevalue("pg_dsn")
    return lambda: PostgresStore.open(dsn)


def command(
    counter: int,
    seen_at: int,
    *,
    esme: bytes = ESME,
    outcome: CommandOutcome = CommandOutcome.REFUSED,
    reason: str = "replay",
    window_end: int | None = None,
) -> CommandRecord:
    return CommandRecord(
        esme=esme,
        originator=SUPPLIER,
        counter=counter,
        outcome=outcome,
        reason=reason,
        chf=CHF,
        request_id=f"req-{counter}",
        detail="" if outcome is not CommandOutcome.REFUSED else f"{reason} of {counter}",
        seen_at=seen_at,
        last_seen_at=seen_at,
        window_start=None if window_end is None else window_end - 1_800_000,
        window_end=window_end,
    )


@pytest.mark.asyncio
async def test_commands_are_kept_once_per_outcome_and_read_by_esme_or_hub(
    open_store: Callable[[], AuditStore],
) -> None:
    store = open_store()
    tracked = command(7, T0, outcome=CommandOutcome.TRACKED, reason="on-demand", window_end=T0)
    store.put_command(tracked)
    store.put_command(command(7, T0 + 10))  # its replay: a second row beside it
    store.put_command(command(7, T0 + 30))  # the replay again, later
    store.put_command(command(7, T0 + 20))  # a redelivered copy of the first replay
    store.put_command(command(3, T0 + 5, esme=OTHER_ESME, reason="unsigned"))
    await store.flush()
    await store.aclose()

    store = open_store()  # what a restart finds
    mine = store.commands_for(ESME)
    assert [(c.outcome, c.reason) for c in mine] == [
        (CommandOutcome.REFUSED, "replay"),
        (CommandOutcome.TRACKED, "on-demand"),
    ]
    # One row for the replay, first and last sightings kept.
    assert (mine[0].seen_at, mine[0].last_seen_at) == (T0 + 10, T0 + 30)
    assert mine[0].detail == "replay of 7"
    assert mine[1] == tracked
    assert [c.esme for c in store.commands_for(CHF)] == [ESME, OTHER_ESME, ESME]
    assert store.commands_for(ESME, limit=1) == mine[:1]
    await store.aclose()


@pytest.mark.asyncio
async def test_prune_commands_deletes_past_the_cutoff_in_batches_and_keeps_windows_ahead(
    open_store: Callable[[], AuditStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway.state.common, "PRUNE_BATCH_ROWS", 3)  # the shared writes
    cutoff = T0 + 35 * DAY
    store = open_store()
    for n in range(5):
        store.put_command(command(n, cutoff - 1 - n))  # past the retention
    store.put_command(command(10, cutoff))  # at the cutoff: inside
    # Seen long ago, but its (future-dated) window is still ahead: kept.
    ahead = command(
        11, T0, outcome=CommandOutcome.TRACKED, reason="future-dated", window_end=cutoff + DAY
    )
    store.put_command(ahead)
    await store.flush()

    store.prune_commands(cutoff)
    await store.flush()
    left = {c.counter for c in store.commands_for(ESME)}
    assert left == {0, 1, 10, 11}  # the three oldest first: one batch
    store.prune_commands(cutoff)
    await store.flush()
    assert {c.counter for c in store.commands_for(ESME)} == {10, 11}
    await store.aclose()


@pytest.mark.asyncio
async def test_a_version_3_state_file_gains_the_commands_table_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    db = tmp_path / "state.sqlite"
    async with Store.open(db) as store:
        store.set_counter(SUPPLIER, ESME, 41)
        await store.flush()
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("DROP TABLE commands")  # its indexes go with it
        conn.execute("PRAGMA user_version = 3")
        conn.commit()
    async with Store.open(db) as store:
        assert store.last_counter(SUPPLIER, ESME) == 41
        store.put_command(command(42, T0))
        await store.flush()
        assert [c.counter for c in store.commands_for(CHF)] == [42]
    with closing(sqlite3.connect(db)) as conn:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        indexes = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert version == SCHEMA_VERSION == 5
    assert {"commands_chf", "commands_last_seen_at"} <= indexes


# -- the gateway and explain -------------------------------------------------------------


def explain(capsys: pytest.CaptureFixture[str], h: Harness, subject: str) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["explain", subject, "--json", "--config", str(h.home.config)]) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


@pytest.mark.asyncio
async def test_a_refused_cs06_is_kept_and_explained_after_a_restart(
    harness_fixture: Callable[..., Harness],  # noqa: F811 - the fixture imported above
    capsys: pytest.CaptureFixture[str],
) -> None:
    h = harness_fixture()
    await h.start()
    frame = cs06(h.home, 1000)
    await h.gbcs("dsp/gbcs/command", frame, P0 + 60_000)
    await h.gbcs("dsp/gbcs/command", frame, P0 + 2 * 60_000)  # the same CS06 again: a replay
    await h.gbcs("dsp/gbcs/command", cs06(h.home, 1001, signer="none"), P0 + 3 * 60_000)
    await h.stop()

    out = explain(capsys, h, format_eui64(ESME))
    got = [(c["outcome"], c["reason"], c["refused"]) for c in out["commands"]]
    assert got == [
        ("refused", "unsigned", True),
        ("refused", "replay", True),
        ("tracked", "on-demand", False),
    ]
    assert all(c["detail"] for c in out["commands"][:2])  # the engine's words on why
    assert out["commands"][1]["seen_at"].startswith("20")  # a time, as everywhere else
    assert [w["request_id"] for w in out["windows"]] == [out["commands"][2]["request_id"]]


@pytest.mark.asyncio
async def test_a_forwarded_ad1_names_the_hans_esmes_their_latest_commands_and_the_gap(
    harness_fixture: Callable[..., Harness],  # noqa: F811 - the fixture imported above
    capsys: pytest.CaptureFixture[str],
) -> None:
    h = harness_fixture()
    await h.start()
    await h.gbcs("dsp/gbcs/command", cs06(h.home, 1000), P0 + 60_000)
    # A later CS06 for the same meter, refused: the one that "should" have opened a window.
    await h.gbcs("dsp/gbcs/command", cs06(h.home, 1001, signer="attacker"), P0 + 40 * 60_000)
    await h.alerts(P0 + 50 * 60_000, ["late"])
    await h.stop()
    await h.start()  # explain answers from the store: nothing in memory
    await h.stop()

    out = explain(capsys, h, "late")
    assert (out["decision"], out["reason"]) == ("forwarded", "no-window")
    (esme,) = out["han"]["esmes"]
    assert esme["esme"] == format_eui64(ESME)
    latest = esme["latest_command"]
    assert (latest["outcome"], latest["refused"]) == ("refused", True)
    assert latest["reason"] == "bad-signature"  # not the supplier's key: the engine's word
    nearest = out["nearest_window"]
    assert nearest["position"] == "before"  # the window ended before the instant judged
    tracked = explain(capsys, h, format_eui64(ESME))["activations"]
    window_end = tracked[0]["window_end"] if tracked else nearest["window_end"]
    assert nearest["window_end"] == window_end
    judged, ended = (_ms(out["judged_at"]), _ms(nearest["window_end"]))
    assert judged > ended
    assert nearest["gap_seconds"] == (judged - ended) / 1000


@pytest.mark.asyncio
async def test_a_suppressed_ad1_names_its_report_file_and_line(
    harness_fixture: Callable[..., Harness],  # noqa: F811 - the fixture imported above
    capsys: pytest.CaptureFixture[str],
) -> None:
    h = harness_fixture()
    await h.start()
    await h.window_and_alerts(P0 + 10 * 60_000, 1000, ["s-0", "s-1", "s-2"])
    out = explain(capsys, h, "s-1")
    assert out["report"]["status"] == "not yet reported"
    await h.rotate(P0 + HOUR + 2_000)
    await h.stop()

    out = explain(capsys, h, "s-1")
    assert (out["decision"], out["reason"]) == ("suppressed", "inside-window")
    assert out["command"]["request_id"] == out["activation"]["request_id"]
    assert out["command"]["outcome"] == "tracked"
    report = out["report"]
    (written,) = h.reports()
    assert report["file"] == written.name + ".csv"
    lines = (h.home.root / "outbox" / report["file"]).read_text(encoding="utf-8").splitlines()
    assert lines[report["line"] - 1].startswith("s-1,")
    assert report["record"] == 2


def _ms(text: str) -> int:
    import datetime as dt

    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
