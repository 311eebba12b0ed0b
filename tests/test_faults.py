"""Faults: a message that makes the gateway raise is quarantined and holds back nothing;
a state store that cannot commit (a full disk) loses no alert and no window.

The quarantine tests run the gateway in this process (on a real mosquitto, with real
SQLite files) so that a handler can be made to raise on one chosen message; the full
disk is a real tmpfs filled to the last byte under the real daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import wire
from gateway.cli.main import main
from gateway.config import Config, load_config
from gateway.core.devices import DeviceRecord, DeviceStatus, DeviceType
from gateway.core.engine import Engine
from gateway.core.events import AlertDecision
from gateway.guids import write_guid_list
from gateway.logs import JsonLog
from gateway.metrics import Metrics
from gateway.quarantine import HANDLER_ATTEMPTS
from gateway.service import Gateway, sqlite_and_mqtt
from gateway.state.inventory import Inventory
from gateway.state.sqlite import Store
from gateway.transport.mqtt import MqttAdapter

from .e2e_support import CHF, ESME, OTHER_CHF, Broker, Client, Daemon, Home, cs06, now_ms

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio, pytest.mark.timeout(180)]


class _Lines(io.StringIO):
    """A log stream whose JSON lines the test can read back."""

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = [json.loads(line) for line in self.getvalue().splitlines() if line.strip()]
        return [e for e in out if name is None or e.get("event") == name]


@contextlib.asynccontextmanager
async def in_process(config: Config) -> AsyncIterator[tuple[Gateway, _Lines, Metrics]]:
    """The gateway of ``poa-gateway run``, started in this event loop."""
    lines = _Lines()
    metrics = Metrics()
    open_store, make_transport = sqlite_and_mqtt(config)
    gateway = Gateway(
        config,
        log=JsonLog(lines, level="debug"),
        metrics=metrics,
        open_store=open_store,
        make_transport=make_transport,
    )
    await gateway.start()
    running = asyncio.create_task(gateway.run_forever())
    try:
        yield gateway, lines, metrics
    finally:
        gateway.stop()
        with contextlib.suppress(Exception):
            await running
        await gateway.close()
        # Shown by pytest when the test fails: what the gateway said.
        print(lines.getvalue())


async def until(check: Callable[[], object], what: str, limit_s: float = 30) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``limit_s`` seconds."""
    deadline = time.monotonic() + limit_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def run_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    """``poa-gateway ARGS`` as a user runs it (a separate process)."""
    exe = str(Path(sys.executable).parent / "poa-gateway")
    return subprocess.run([exe, *args], capture_output=True, check=False)


def sqlite(gateway: Gateway) -> Store:
    """The gateway's state store, which these tests know is the SQLite one."""
    assert isinstance(gateway.store, Store)
    return gateway.store


def mqtt(gateway: Gateway) -> MqttAdapter:
    """The gateway's transport, which these tests know is the MQTT adapter."""
    assert isinstance(gateway.mqtt, MqttAdapter)
    return gateway.mqtt


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_an_alert_whose_handling_raises_is_quarantined_once_and_every_other_alert_comes_out(
    tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Home(tmp_path / "gw", broker.port)
    real = Engine.on_dcc_alert
    calls = {"poison": 0}

    def flaky(self: Engine, alert: wire.DccAlertEnvelope, now: int) -> AlertDecision:
        if alert.alert_id == "poison":
            calls["poison"] += 1
            raise ZeroDivisionError("injected: a bug that only this alert reaches")
        return real(self, alert, now)

    monkeypatch.setattr(Engine, "on_dcc_alert", flaky)
    config = load_config(home.config, env={})
    client = Client(broker.port, "faults")
    await client.start()
    try:
        async with in_process(config) as (gateway, lines, metrics):
            await client.command(cs06(home, 1000))
            await until(lambda: lines.events("activation.tracked"), "the window")
            now = now_ms()
            sent = []
            for i in range(300):
                alert_id = "poison" if i == 150 else f"s-{i}"
                sent.append(alert_id)
                await client.alert(alert_id, CHF if i % 2 else OTHER_CHF, now)
            await client.wait_outputs(len(sent), limit_s=30)
            await until(lambda: client.received["gateway/quarantine"], "the notice")
            await asyncio.sleep(0.3)  # anything repeated would arrive by now

            # Every other alert was judged as usual; the poison one was forwarded
            # unjudged (the safety direction), not held back and not suppressed.
            forwarded, suppressed = client.forwarded_ids(), client.suppressed_ids()
            assert set(forwarded) | set(suppressed) == set(sent)
            assert "poison" in forwarded
            assert "poison" not in suppressed
            assert {f"s-{i}" for i in range(1, 300, 2)} == set(suppressed)
            assert calls["poison"] == HANDLER_ATTEMPTS

            (notice_bytes,) = client.received["gateway/quarantine"]
            notice = wire.decode_quarantine_notice(notice_bytes)
            assert notice.topic == "csp/dcc/alert"
            assert wire.decode_dcc_alert(notice.payload).alert_id == "poison"
            assert notice.reason == "ZeroDivisionError"
            assert notice.attempts == HANDLER_ATTEMPTS
            assert notice.forwarded
            (logged,) = lines.events("message.quarantined")
            assert logged["level"] == "error"
            assert logged["id"] == notice.id
            labels = {"topic": "csp/dcc/alert", "reason": "ZeroDivisionError"}
            assert sample(metrics, "poa_quarantined_total", **labels) == 1
            (entry,) = sqlite(gateway).quarantined()
            assert entry.payload == notice.payload
            assert entry.id == notice.id
    finally:
        await client.close()


async def test_a_command_whose_handling_raises_is_quarantined_and_later_commands_still_count(
    tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Home(tmp_path / "gw", broker.port)
    real = Gateway._on_gbcs_command
    poison = cs06(home, 2000)

    async def flaky(self: Gateway, payload: bytes, received: int) -> None:
        if wire.decode_gbcs(payload).frame == poison:
            raise KeyError("injected")
        await real(self, payload, received)

    monkeypatch.setattr(Gateway, "_on_gbcs_command", flaky)
    config = load_config(home.config, env={})
    client = Client(broker.port, "faults-cmd")
    await client.start()
    try:
        async with in_process(config) as (gateway, lines, metrics):
            await client.command(poison)
            await client.command(cs06(home, 2001))
            await until(lambda: lines.events("activation.tracked"), "the second command")
            await until(lambda: client.received["gateway/quarantine"], "the notice")
            (tracked,) = lines.events("activation.tracked")
            assert tracked["counter"] == 2001
            (entry,) = sqlite(gateway).quarantined()
            assert entry.topic == "dsp/gbcs/command"
            assert wire.decode_gbcs(entry.payload).frame == poison
            assert (entry.reason, entry.forwarded) == ("KeyError", False)
            labels = {"topic": "dsp/gbcs/command", "reason": "KeyError"}
            assert sample(metrics, "poa_quarantined_total", **labels) == 1
    finally:
        await client.close()

    # The operator's view: list, show (the exact bytes), replay (the daemon is gone
    # now; the message waits on the broker for the next one).
    listed = await asyncio.to_thread(run_cli, "quarantine", "list", "--config", str(home.config))
    assert listed.returncode == 0
    assert entry.id.encode() in listed.stdout
    assert b"dsp/gbcs/command" in listed.stdout
    shown = await asyncio.to_thread(
        run_cli, "quarantine", "show", entry.id, "--raw", "--config", str(home.config)
    )
    assert shown.stdout == entry.payload
    replay = await asyncio.to_thread(
        run_cli, "quarantine", "replay", entry.id, "--config", str(home.config)
    )
    assert replay.returncode == 0, replay.stderr
    with Store.open(home.root / "state.sqlite") as store:
        replayed = store.quarantine_entry(entry.id)
    assert replayed is not None
    assert replayed.replayed_at is not None
    assert main(["quarantine", "show", "q-none", "--config", str(home.config)]) != 0


# -- a full disk -------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs: room for the database and its WAL (SQLite checkpoints the WAL at
    about 4 MiB), none for anything else once filled. Mounting needs root, as in CI;
    skipped with the reason otherwise."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the last byte; returns the filler file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return filler


def meters(home: Home, count: int) -> list[tuple[bytes, bytes]]:
    """``count`` more listed Landis+Gyr meters (ESME, CHF) in the inventory and GUID list."""
    pairs = [
        ((0x00DB000000100000 + i).to_bytes(8, "big"), (0x00DB000000200000 + i).to_bytes(8, "big"))
        for i in range(count)
    ]
    with Inventory.open(home.root / "inventory.sqlite") as inventory:
        for esme, chf in pairs:
            record = DeviceRecord(
                device_id=esme,
                device_type=DeviceType.ESME,
                smets=2,
                manufacturer="Landis+Gyr",
                status=DeviceStatus.COMMISSIONED,
                chf_id=chf,
            )
            inventory.upsert(record, 0)
    write_guid_list(
        home.root / "guid-list.bin",
        sorted(int.from_bytes(e, "big") for e in [ESME, *(esme for esme, _ in pairs)]),
        sha256=bytes(32),
        imported_at_ms=0,
    )
    return pairs


async def test_a_full_disk_mid_stream_loses_no_alert_and_no_window(
    tmp_path: Path, broker: Broker, small_fs: Path
) -> None:
    home = Home(tmp_path / "gw", broker.port, paths={"state": str(small_fs / "state.sqlite")})
    devices = meters(home, 40)
    daemon = Daemon(home)
    daemon.start()
    client = Client(broker.port, "full-disk")
    await client.start()
    sent: list[str] = []

    async def stream(tag: str, count: int) -> None:
        now = now_ms()
        for i in range(count):
            alert_id = f"{tag}-{i}"
            sent.append(alert_id)
            await client.alert(alert_id, devices[i % len(devices)][1], now)

    try:
        # Windows on the first 20 meters, then alerts on all 40 while the disk is fine.
        for i in range(20):
            await client.command(cs06(home, 10 + i, target=devices[i][0]))
        await stream("before", 200)
        await client.wait_outputs(len(sent), limit_s=30)

        filler = fill(small_fs)
        for i in range(20, 40):  # windows opened while nothing can be committed
            await client.command(cs06(home, 10 + i, target=devices[i][0]))
        await stream("full", 400)
        failed = daemon.wait_for("store.failed", timeout=30)
        assert failed["level"] == "error"
        await asyncio.sleep(3)  # the disk stays full a while; intake is held meanwhile
        assert daemon.proc is not None
        assert daemon.proc.poll() is None

        filler.unlink()
        daemon.wait_for("store.recovered", timeout=30)
        await stream("after", 200)
        await client.wait_outputs(len(sent), limit_s=60)
        await asyncio.sleep(0.5)
    finally:
        await client.close()
        code = daemon.stop()
    assert code == 0

    outputs = client.forwarded_ids() + client.suppressed_ids()
    assert set(outputs) == set(sent), "an alert was lost"
    duplicates = len(outputs) - len(set(outputs))
    # Nothing was redelivered: the messages waited for the store instead.
    assert duplicates == 0
    events = daemon.events()
    assert not [e for e in events if e.get("event") == "housekeeping.failed"]
    assert len([e for e in events if e.get("event") == "store.failed"]) == 1
    with Store.open(small_fs / "state.sqlite") as store:
        windows = {a.esme for a in store.load_activations()}
        logged = store.counts()["suppressions"]
    assert windows == {esme for esme, _ in devices}, "a window was lost"
    assert logged == len(set(client.suppressed_ids()))


async def test_the_store_failing_holds_intake_and_housekeeping_resumes_when_it_recovers(
    tmp_path: Path, broker: Broker, small_fs: Path
) -> None:
    home = Home(tmp_path / "gw", broker.port, paths={"state": str(small_fs / "state.sqlite")})
    config = load_config(home.config, env={})
    client = Client(broker.port, "hk")
    await client.start()
    try:
        async with in_process(config) as (gateway, lines, metrics):
            filler = fill(small_fs)
            await client.command(cs06(home, 3000))  # its commit fails
            await until(lambda: sample(metrics, "poa_store_ok") == 0, "the store to fail")
            assert mqtt(gateway).paused  # intake held
            await asyncio.sleep(2.5)  # two passes of housekeeping meet the failed store
            assert sqlite(gateway).pending > 0
            filler.unlink()
            await until(lambda: sample(metrics, "poa_store_ok") == 1, "the store to recover")
            await until(lambda: lines.events("activation.tracked"), "the window")
            assert not mqtt(gateway).paused
            assert sample(metrics, "poa_housekeeping_failures_total") == 0
            assert sample(metrics, "poa_store_commit_failures_total") >= 1
            assert sqlite(gateway).pending == 0
            seen = len(lines.events())
            await asyncio.sleep(1.5)
            # Housekeeping still runs: its gauges follow the window tracked late.
            assert sample(metrics, "poa_tracked_activations") == 1
            assert len(lines.events()) >= seen
            (failed,) = lines.events("store.failed")
            assert failed["level"] == "error"
            assert lines.events("store.recovered")
    finally:
        await client.close()


async def test_a_payload_above_max_payload_is_refused_unread_and_an_alert_is_still_forwarded(
    tmp_path: Path, broker: Broker
) -> None:
    home = Home(tmp_path / "gw", broker.port)
    config = load_config(home.config, env={})
    big = b"\xa1\x61v" + b"\x5a" + (70_000).to_bytes(4, "big") + b"\0" * 70_000  # {"v": bstr}
    client = Client(broker.port, "big")
    await client.start()
    try:
        async with in_process(config) as (_gateway, lines, metrics):
            assert len(big) > config.broker.max_payload
            await client.adapter.publish("csp/dcc/alert", big)
            await client.adapter.publish("dsp/gbcs/command", big)
            await until(lambda: client.received["dno/dcc/alert"], "the alert forwarded")
            assert client.received["dno/dcc/alert"] == [big]  # byte for byte
            await until(lambda: lines.events("gbcs.rejected"), "the command refused")
            (refused,) = lines.events("gbcs.rejected")
            assert refused["reason"] == "too-large"
            rejected = {"outcome": "rejected", "reason": "too-large"}
            await until(lambda: sample(metrics, "poa_alerts_total", **rejected) == 1, "counted")
            labels = {"topic": "dsp/gbcs/command", "reason": "too-large"}
            assert sample(metrics, "poa_decode_errors_total", **labels) == 1
    finally:
        await client.close()
