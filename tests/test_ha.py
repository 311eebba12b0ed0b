"""Two gateways on one PostgreSQL: the leader lease, fencing and failover (issue 12).

The lease tests drive gateway/state/lease.py against a real throwaway PostgreSQL; the
failover tests run two real ``poa-gateway run`` processes against it and a real
mosquitto, and kill or freeze the leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from gateway.core.events import Activation
from gateway.errors import StartupError, StartupReason
from gateway.ha import LeaseKeeper, LossReason
from gateway.logs import JsonLog
from gateway.reports.files import ReportContents, read_report
from gateway.state.errors import StoreError, StoreReason
from gateway.state.inventory import Inventory
from gateway.state.inventory_store import open_inventory
from gateway.state.lease import LeaseTable, new_run_id
from gateway.state.postgresql import PostgresStore
from gateway.state.rows import PendingReport, ReportCursor
from gateway.wire import SuppressionRecord

from .e2e_support import (
    CHF,
    ESME,
    UNLISTED_ESME,
    Broker,
    Client,
    Daemon,
    Home,
    cs06,
    free_port,
    now_ms,
)

CLIENT_ID = "poa-gateway-ha"


def table(dsn: str, name: str, *, client_id: str = CLIENT_ID, lease_ms: int = 1000) -> LeaseTable:
    return LeaseTable(
        dsn,
        None,
        run_id=new_run_id(name),
        name=name,
        client_id=client_id,
        lease_ms=lease_ms,
        lock_timeout_ms=500,
    )


def activation(n: int) -> Activation:
    return Activation(
        esme=n.to_bytes(8, "big"),
        chf=(n + 1).to_bytes(8, "big"),
        originator=bytes(8),
        counter=n,
        start_ms=1_000,
        end_ms=2_000,
        future_dated=False,
        seen_at=1_000,
    )


def suppression_record(alert_id: str) -> SuppressionRecord:
    return SuppressionRecord(
        v=1,
        kind="suppression",
        alert_id=alert_id,
        chf_id=CHF,
        esme_id=ESME,
        raised_at=1_000,
        received_at=1_100,
        window_start=0,
        window_end=1_800_000,
        request_id=None,
        originator=bytes(8),
        originator_counter=1,
        activation="on-demand",
    )


# -- the lease ------------------------------------------------------------------------


def test_one_holder_at_a_time_and_each_take_raises_the_epoch(pg_dsn: str) -> None:
    a, b = table(pg_dsn, "a", lease_ms=400), table(pg_dsn, "b", lease_ms=400)
    try:
        first = a.take()
        assert first == 1
        assert b.take() is None  # a's lease runs
        assert a.renew(1)
        time.sleep(0.5)  # a stops renewing: its lease runs out
        assert not a.renew(1)  # too late: an expired lease is not renewed back
        assert b.take() == 2
        assert not a.renew(1)
        lease = b.read()
        assert lease is not None
        assert (lease.holder, lease.epoch, lease.client_id) == (b.run_id, 2, CLIENT_ID)
    finally:
        a.close()
        b.close()


def test_a_released_lease_is_taken_at_once(pg_dsn: str) -> None:
    a, b = table(pg_dsn, "a", lease_ms=60_000), table(pg_dsn, "b", lease_ms=60_000)
    try:
        assert a.take() == 1
        assert b.take() is None
        a.release(1)
        assert b.take() == 2
    finally:
        a.close()
        b.close()


@pytest.mark.asyncio
async def test_a_commit_of_a_stale_epoch_is_refused_and_writes_nothing(pg_dsn: str) -> None:
    old, new = table(pg_dsn, "old", lease_ms=300), table(pg_dsn, "new", lease_ms=60_000)
    store = PostgresStore.open(pg_dsn)
    try:
        assert old.take() == 1
        store.fence(old.run_id, 1, idle_timeout_ms=1000)
        store.put_activation(activation(1))
        await store.flush()  # still ours: committed
        await asyncio.sleep(0.4)
        assert new.take() == 2
        store.put_activation(activation(2))
        with pytest.raises(StoreError) as caught:
            await store.flush()
        assert caught.value.reason is StoreReason.FENCED
        assert store.fenced
        with pytest.raises(StoreError):
            store.put_activation(activation(3))  # for good
    finally:
        store.close()
        old.close()
        new.close()
    with PostgresStore.open(pg_dsn) as check:
        assert [a.esme for a in check.load_activations()] == [activation(1).esme]


@pytest.mark.asyncio
async def test_a_take_waits_for_the_leaders_commit_in_progress(pg_dsn: str) -> None:
    # A commit holds the lease row FOR SHARE to its end: a take cannot slip in between
    # the fence check and the commit's writes.
    leader = table(pg_dsn, "leader", lease_ms=300)
    assert leader.take() == 1
    store = PostgresStore.open(pg_dsn)
    store.fence(leader.run_id, 1, idle_timeout_ms=5000)
    standby = table(pg_dsn, "standby", lease_ms=60_000)
    try:
        conn = store._writer
        with conn.transaction():
            conn.execute(
                "SELECT epoch FROM lease WHERE id = 1 AND holder = %s FOR SHARE",
                (leader.run_id,),
            )
            await asyncio.sleep(0.4)  # the lease expires while the commit is open
            # The lease has expired, yet the take waits for the lock (lock_timeout) and
            # gives up: the commit in progress comes first.
            assert standby.take() is None
        assert standby.take() == 2
    finally:
        store.close()
        leader.close()
        standby.close()


@pytest.mark.asyncio
async def test_a_standby_with_another_client_id_is_refused_by_name(pg_dsn: str) -> None:
    leader = table(pg_dsn, "a")
    assert leader.take() == 1
    keeper = LeaseKeeper(
        table(pg_dsn, "b", client_id="someone-else"),
        lease_ms=1000,
        renew_ms=300,
        log=JsonLog(io.StringIO()),
        version="test",
    )
    try:
        with pytest.raises(StartupError) as caught:
            await keeper.acquire()
        assert caught.value.reason is StartupReason.CLIENT_ID_CONFLICT
        assert "someone-else" in str(caught.value)
        assert CLIENT_ID in str(caught.value)
    finally:
        await keeper.close()
        leader.close()


@pytest.mark.asyncio
async def test_a_keeper_that_cannot_renew_steps_down_at_its_local_deadline(pg_dsn: str) -> None:
    clock = [100.0]
    keeper = LeaseKeeper(
        table(pg_dsn, "a", lease_ms=1000),
        lease_ms=1000,
        renew_ms=300,
        log=JsonLog(io.StringIO()),
        version="test",
        monotonic=lambda: clock[0],
    )
    lost: list[LossReason] = []
    keeper.on_lost(lambda exc: lost.append(exc.reason))
    try:
        assert await keeper.acquire() == 1
        assert keeper.valid()
        clock[0] += 0.69
        assert keeper.valid()  # sent + lease - renew = 0.7 s
        clock[0] += 0.02
        assert not keeper.valid()  # synchronously, before any timer ran
        keeper._deadline_passed()
        assert lost == [LossReason.DEADLINE]
    finally:
        await keeper.close()


# -- two daemons ----------------------------------------------------------------------


def ha_home(root: Path, broker: Broker, dsn: str, name: str) -> Home:
    home = Home(root / name, broker.port)
    text = home.config.read_text().replace(
        f'client_id = "poa-gateway-{name}"', f'client_id = "{CLIENT_ID}"'
    )
    text += (
        f'[state]\nbackend = "postgresql"\ndsn = "{dsn}"\n'
        f'[ha]\nlease = "2s"\nrenew = "500ms"\nname = "{name}"\n'
    )
    home.config.write_text(text)
    return home


def ha_status(home: Home) -> dict[str, Any]:
    """``poa-gateway status --json``'s HA section."""
    exe = Path(sys.executable).parent / "poa-gateway"
    done = subprocess.run(
        [str(exe), "status", "--json", "--config", str(home.config)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    section: dict[str, Any] = json.loads(done.stdout)["ha"]
    return section


def share_inventory(home: Home) -> None:
    config = load_config(home.config, env={})
    with Inventory.open(home.root / "inventory.sqlite") as local, open_inventory(config) as shared:
        shared.upsert_many([d for d in map(local.get, (ESME, UNLISTED_ESME)) if d], 0)


@contextlib.asynccontextmanager
async def deployment(
    tmp_path: Path, broker: Broker, dsn: str, *, max_records: int | None = None
) -> AsyncIterator[tuple[Daemon, Daemon, Client]]:
    """Two instances sharing ``dsn`` and one client id: ``a`` leads and has opened one
    window (on CHF), ``b`` waits as a standby; and a client. Everything is stopped after."""
    homes = [ha_home(tmp_path, broker, dsn, name) for name in ("a", "b")]
    if max_records is not None:
        for home in homes:
            text = home.config.read_text()
            home.config.write_text(
                text.replace("max_records = 50000", f"max_records = {max_records}")
            )
    a, b = Daemon(homes[0]), Daemon(homes[1])
    share_inventory(a.home)
    client = Client(broker.port, "ha")
    await client.start()
    try:
        a.start()
        b.start(wait_ready=False)
        b.wait_for("ha.standby", timeout=30)
        await client.command(cs06(a.home, 1000))
        a.wait_for("activation.tracked")
        yield a, b, client
    finally:
        await client.close()
        for d in (a, b):
            if d.proc is not None and d.proc.poll() is None:
                d.proc.send_signal(signal.SIGCONT)  # a frozen one must hear the SIGTERM
            d.stop()


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_a_standby_takes_over_a_killed_leader_and_nothing_is_lost(
    tmp_path: Path, broker: Broker, pg_dsn: str
) -> None:
    async with deployment(tmp_path, broker, pg_dsn) as (a, b, client):
        now = now_ms()
        for i in range(200):
            await client.alert(f"x-{i}", CHF, now)
        await client.wait_outputs(200, limit_s=30)
        assert a.proc is not None
        a.proc.send_signal(signal.SIGKILL)
        a.wait_exit()
        for i in range(200, 400):
            await client.alert(f"x-{i}", CHF, now)
        b.wait_for("gateway.ready", timeout=30)
        await client.wait_outputs(400, limit_s=30)
        # Every alert suppressed: the window came over with the state.
        assert set(client.suppressed_ids()) == {f"x-{i}" for i in range(400)}
        assert client.forwarded_ids() == []
        assert b.wait_for("ha.leader")["epoch"] == 2
        status = ha_status(b.home)
        assert status["leader"]["instance"] == "b"
        assert status["leader"]["epoch"] == 2
        assert status["leader"]["expired"] is False
        roles = {i["name"]: (i["role"], i["holds_lease"]) for i in status["instances"]}
        assert roles["b"] == ("leader", True)
        assert roles["a"] == ("leader", False)  # its last word before the SIGKILL
        a.start(wait_ready=False)  # back, as a standby
        a.wait_for("ha.standby", timeout=30)
        alive = {(i["name"], i["role"]) for i in ha_status(a.home)["instances"] if i["alive"]}
        assert ("a", "standby") in alive
        assert ("b", "leader") in alive


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_a_frozen_leader_resumed_after_the_takeover_does_nothing_and_steps_down(
    tmp_path: Path, broker: Broker, pg_dsn: str
) -> None:
    async with deployment(tmp_path, broker, pg_dsn) as (a, b, client):
        now = now_ms()
        for i in range(100):
            await client.alert(f"y-{i}", CHF, now)
        await client.wait_outputs(100, limit_s=30)
        assert a.proc is not None
        a.proc.send_signal(signal.SIGSTOP)
        b.wait_for("gateway.ready", timeout=30)
        for i in range(100, 200):
            await client.alert(f"y-{i}", CHF, now)
        await client.wait_outputs(200, limit_s=30)
        before = len(client.suppressed_ids()) + len(client.forwarded_ids())
        a.proc.send_signal(signal.SIGCONT)
        stepped = a.wait_for("ha.stepped_down", timeout=30)
        assert stepped["reason"] == LossReason.DEADLINE
        a.wait_for("ha.standby", timeout=30)
        for i in range(200, 300):
            await client.alert(f"y-{i}", CHF, now)
        await client.wait_outputs(300, limit_s=30)
        await asyncio.sleep(1)
        # The resumed process published nothing: every output after the resume is one
        # of the 100 new alerts, once each.
        after = client.suppressed_ids()[before:] + client.forwarded_ids()
        assert sorted(after) == sorted(f"y-{i}" for i in range(200, 300))
        assert b.proc is not None
        assert b.proc.poll() is None
        assert b.wait_for("ha.leader")["epoch"] == 2


# -- reports across a failover ----------------------------------------------------------


def reports_of(*homes: Home) -> dict[str, ReportContents]:
    """Every report file in the homes' outboxes, by file name. A file written again by
    a new leader (same name) must be identical to the first copy."""
    found: dict[str, ReportContents] = {}
    for home in homes:
        for path in sorted((home.root / "outbox").glob("*.csv")):
            if path.stem.endswith("-summary"):
                continue  # a period's summary, not a report (gateway/reports/summary.py)
            contents = read_report(path)
            if path.name in found:
                assert found[path.name] == contents, f"{path.name} differs between instances"
            found[path.name] = contents
    return found


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_reports_continue_across_a_failover_with_every_record_once(
    tmp_path: Path, broker: Broker, pg_dsn: str
) -> None:
    async with deployment(tmp_path, broker, pg_dsn, max_records=40) as (a, b, client):
        homes = [a.home, b.home]
        now = now_ms()
        for i in range(300):
            await client.alert(f"r-{i}", CHF, now)
        await client.wait_outputs(300, limit_s=30)
        assert a.proc is not None
        a.proc.send_signal(signal.SIGKILL)
        a.wait_exit()
        for i in range(300, 600):
            await client.alert(f"r-{i}", CHF, now)
        b.wait_for("gateway.ready", timeout=30)
        await client.wait_outputs(600, limit_s=30)
        b.stop()  # a clean stop writes nothing more, but let the last rotation finish
    reports = reports_of(*homes)
    assert any((homes[1].root / "outbox").glob("*.csv")), "the new leader wrote no report"
    ids = [r.alert_id for report in reports.values() for r in report.records]
    assert len(ids) == len(set(ids)), "a record is in two reports"
    with PostgresStore.open(pg_dsn) as store:
        unreported = {r.alert_id for _, r in store.unreported(10_000)}
        cursor = store.report_cursor()
    # Every suppression is in exactly one report, or still waiting for the next one.
    assert set(ids) | unreported == {f"r-{i}" for i in range(600)}
    assert not set(ids) & unreported
    # The periods follow on: each report starts no later than the one before it ended.
    ordered = sorted(reports.values(), key=lambda r: (r.period_end_ms, r.report_id))
    for before, after in itertools.pairwise(ordered):
        assert after.period_start_ms <= before.period_end_ms
    assert cursor is not None
    assert cursor.pending is None


@pytest.mark.asyncio
async def test_a_report_marked_but_not_written_is_written_by_the_next_leader(
    tmp_path: Path, pg_dsn: str
) -> None:
    # The last leader marked records 1..3 as report "1-3" and stopped before its file
    # was known to be written: the next one writes that report, not a new one.
    records = [suppression_record(f"p-{i}") for i in range(1, 4)]
    with PostgresStore.open(pg_dsn) as store:
        for record in records:
            store.append_suppression(record)
        await store.flush()
        pending = PendingReport(
            report_id="1-3",
            first_seq=1,
            last_seq=3,
            period_start_ms=0,
            period_end_ms=10_000,
            records=3,
        )
        store.mark_reported_range(1, 3, "1-3")
        store.set_report_cursor(ReportCursor(opened_at_ms=10_000, pending=pending))
        await store.flush()
        assert store.reported(pending) == records
    broker = Broker(tmp_path / "broker")
    broker.start()
    try:
        home = ha_home(tmp_path, broker, pg_dsn, "c")
        daemon = Daemon(home)
        daemon.start()
        written = daemon.wait_for("report.written", timeout=30)
        daemon.stop()
    finally:
        broker.stop()
    assert Path(written["file"]).name.endswith("_1-3.csv")
    contents = read_report(Path(written["file"]))
    assert [r.alert_id for r in contents.records] == ["p-1", "p-2", "p-3"]
    assert (contents.period_start_ms, contents.period_end_ms) == (0, 10_000)
    with PostgresStore.open(pg_dsn) as store:
        cursor = store.report_cursor()
    # Written and cleared; reporting then went on from where that report ended.
    assert cursor is not None
    assert cursor.pending is None
    assert cursor.opened_at_ms >= 10_000


@pytest.mark.e2e
def test_a_dsn_that_cannot_connect_is_said_and_nothing_is_taken_from_the_broker(
    tmp_path: Path, broker: Broker
) -> None:
    port = free_port()  # nothing listens there
    home = ha_home(tmp_path, broker, f"host=127.0.0.1 port={port} dbname=poa user=poa", "a")
    env_home = Daemon(home)
    os.environ["POA_PG_PASSWORD"] = "s3cret-not-logged"
    try:
        env_home.start(wait_ready=False)
        said = env_home.wait_for("ha.lease_unreachable", timeout=30)
        assert said["level"] == "error"
        assert f"127.0.0.1:{port}/poa" in said["detail"]
        env_home.stop()
    finally:
        del os.environ["POA_PG_PASSWORD"]
    log = home.log_path.read_text()
    assert "s3cret-not-logged" not in log
    assert "mqtt.connected" not in log  # a standby never connects to the broker


@pytest.mark.e2e
def test_an_instance_with_another_client_id_exits_78_and_the_leader_carries_on(
    tmp_path: Path, broker: Broker, pg_dsn: str
) -> None:
    a = Daemon(ha_home(tmp_path, broker, pg_dsn, "a"))
    other = ha_home(tmp_path, broker, pg_dsn, "b")
    other.config.write_text(
        other.config.read_text().replace(f'client_id = "{CLIENT_ID}"', 'client_id = "typo"')
    )
    b = Daemon(other)
    share_inventory(a.home)
    try:
        a.start()
        b.start(wait_ready=False)
        assert b.wait_exit() == 78
        failed = b.wait_for("gateway.failed", timeout=5)
        assert failed["reason"] == StartupReason.CLIENT_ID_CONFLICT
        assert "typo" in failed["detail"]
        assert a.proc is not None
        assert a.proc.poll() is None
        assert ha_status(a.home)["leader"]["instance"] == "a"
    finally:
        a.stop()


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_a_leader_stopped_cleanly_hands_over_at_once_and_nothing_is_lost(
    tmp_path: Path, broker: Broker, pg_dsn: str
) -> None:
    async with deployment(tmp_path, broker, pg_dsn) as (a, b, client):
        now = now_ms()
        for i in range(100):
            await client.alert(f"t-{i}", CHF, now)
        assert a.stop() == 0  # SIGTERM: the lease is released on the way out
        released = a.wait_for("ha.released", timeout=5)
        for i in range(100, 200):
            await client.alert(f"t-{i}", CHF, now)
        b.wait_for("gateway.ready", timeout=30)
        await client.wait_outputs(200, limit_s=30)
        assert set(client.suppressed_ids()) == {f"t-{i}" for i in range(200)}
        assert b.wait_for("ha.leader")["epoch"] == released["epoch"] + 1
