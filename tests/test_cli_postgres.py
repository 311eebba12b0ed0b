"""``explain``, ``quarantine list|show`` and ``status`` read the store ``[state]`` names:
on PostgreSQL (a throwaway cluster, tests/pg_support.py) they answer exactly as on SQLite
for the same rows, and a server that cannot be reached is one line naming host:port/db,
never the password, with exit status 1."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway.cli.main import main
from gateway.eui import format_eui64
from gateway.exits import Exit
from gateway.state.postgresql import PostgresStore
from gateway.state.sqlite import Store

from .test_state_backends import AnyStore
from .test_state_copy import entry
from .test_store import ESME, T0, activation, forwarded, suppressed

pytestmark = pytest.mark.timeout(120)

WINDOW = activation(7)


async def fill(store: AnyStore) -> None:
    try:
        store.put_activation(WINDOW)
        store.put_decision(suppressed("ad1-in", WINDOW, T0 + 60_000), effect_done=True)
        store.put_decision(forwarded("ad1-out", T0 + 61_000), effect_done=False)
        for i in range(3):
            store.put_quarantine(entry(i))
        await store.flush()
        store.mark_replayed(entry(1).id, T0 + 99)
        await store.flush()
    finally:
        store.close()


def home(root: Path, state: str = "") -> Path:
    (root / "var").mkdir(parents=True)
    config = root / "gateway.toml"
    config.write_text('[paths]\nstate_dir = "var"\n' + state)
    return config


@pytest.fixture
def homes(tmp_path: Path, pg_dsn: str) -> tuple[Path, Path]:
    """Two configurations, one on SQLite and one on PostgreSQL, whose stores hold the same
    rows, written through each store's own API."""
    lite = home(tmp_path / "sqlite")
    asyncio.run(fill(Store.open(tmp_path / "sqlite" / "var" / "state.sqlite")))
    pg = home(tmp_path / "pg", f'[state]\nbackend = "postgresql"\ndsn = "{pg_dsn}"\n')
    asyncio.run(fill(PostgresStore.open(pg_dsn)))
    return lite, pg


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_explain_on_postgresql_answers_as_on_sqlite(
    homes: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pg = homes[1]
    for subject in ("ad1-in", "ad1-out", format_eui64(ESME)):
        answers = [run(capsys, "explain", subject, "--json", "--config", str(c)) for c in homes]
        assert answers[0][0] == 0
        assert answers[1] == answers[0]
    status, out, _ = run(capsys, "explain", "ad1-in", "--json", "--config", str(pg))
    explained = json.loads(out)
    assert (explained["decision"], explained["reason"]) == ("suppressed", "inside-window")
    assert explained["activation"]["request_id"] == WINDOW.request_id
    assert not (pg.parent / "var" / "state.sqlite").exists()  # nothing read or made there

    status, _, err = run(capsys, "explain", "nobody", "--config", str(pg))
    assert status == Exit.FAILED
    assert err == "poa-gateway explain: nothing known about 'nobody'\n"


def test_quarantine_list_and_show_on_postgresql_answer_as_on_sqlite(
    homes: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    lite, pg = homes
    for argv in (
        ["quarantine", "list"],
        ["quarantine", "list", "--json"],
        ["quarantine", "show", entry(1).id, "--json"],
    ):
        on_sqlite = run(capsys, *argv, "--config", str(lite))
        on_postgresql = run(capsys, *argv, "--config", str(pg))
        assert on_sqlite[0] == 0
        assert on_postgresql == on_sqlite
    _, out, _ = run(capsys, "quarantine", "list", "--json", "--config", str(pg))
    listed = json.loads(out)
    assert sorted(e["id"] for e in listed) == sorted(entry(i).id for i in range(3))
    assert [e["replayed_at"] is not None for e in listed if e["id"] == entry(1).id] == [True]


def test_status_counts_come_from_postgresql(
    homes: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    lite = homes[0]
    summaries: list[dict[str, Any]] = []
    for config in homes:
        status, out, _ = run(capsys, "status", "--windows", "--json", "--config", str(config))
        assert status == 0
        summaries.append(json.loads(out))
    sqlite_summary, pg_summary = summaries
    assert sqlite_summary["state"] == str(lite.parent / "var" / "state.sqlite")
    assert pg_summary["state"].startswith("postgresql:127.0.0.1:")
    assert pg_summary["counts"] == {
        "activations": 1,
        "counters": 0,
        "decisions": 2,
        "suppressions": 0,
        "unreported": 0,
        "quarantined": 3,
    }
    for key in ("counts", "windows_active", "windows_pending", "active", "pending"):
        assert pg_summary[key] == sqlite_summary[key], key


def test_an_unreachable_postgresql_is_one_line_naming_the_server_never_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = home(
        tmp_path, '[state]\nbackend = "postgresql"\ndsn = "host=127.0.0.1 port=1 dbname=poa"\n'
    )
    monkeypatch.setenv("POA_PG_PASSWORD", "s3cret-pw-value")
    for argv in (
        ["explain", "ad1-in"],
        ["quarantine", "list"],
        ["quarantine", "show", "q-0"],
        ["quarantine", "replay", "q-0"],
        ["status"],
    ):
        status, out, err = run(capsys, *argv, "--config", str(config))
        assert status == Exit.FAILED, argv
        assert out == ""
        assert len(err.splitlines()) == 1, err
        command = " ".join(argv[:2] if argv[0] == "quarantine" else argv[:1])
        assert err.startswith(f"poa-gateway {command}: cannot connect to the PostgreSQL ")
        assert "127.0.0.1:1/poa" in err
        assert "s3cret-pw-value" not in err


@pytest.mark.parametrize("command", [["status"], ["explain", "ad1-in"], ["quarantine", "list"]])
def test_a_database_with_no_store_is_said_and_left_as_it_is(
    tmp_path: Path, pg_dsn: str, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    config = home(tmp_path, f'[state]\nbackend = "postgresql"\ndsn = "{pg_dsn}"\n')
    status, out, err = run(capsys, *command, "--config", str(config))
    assert status == Exit.FAILED
    assert "no poa-gateway state store in this database yet" in err
    assert out == ""
    with psycopg.connect(pg_dsn) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert tables == (0,)  # a question about the state created nothing
