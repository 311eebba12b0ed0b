"""Health is true: ``poa_up`` and ``status`` follow the broker connection, a broker that
refuses the credentials stops the daemon with an error, a state store that vanished is
refused, and every frame not acted on is counted."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway import wire
from gateway.config import load_config
from gateway.state.sqlite import Store

from .conftest import vector_by_name
from .e2e_support import Broker, Client, Daemon, Home, cs06, now_ms
from .test_faults import in_process, sample, until

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio, pytest.mark.timeout(120)]


def status(home: Home) -> dict[str, Any]:
    exe = str(Path(sys.executable).parent / "poa-gateway")
    done = subprocess.run(
        [exe, "status", "--json", "--config", str(home.config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def with_username(home: Home, username: str) -> None:
    text = home.config.read_text().replace("[broker]\n", f'[broker]\nusername = "{username}"\n', 1)
    home.config.write_text(text)


def password_home(
    tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch, *, given: str
) -> Home:
    """A broker that admits user gw with password "right", and a gateway that logs in as gw
    with the password ``given``."""
    broker.require_passwords({"gw": "right"})
    broker.restart()
    home = Home(tmp_path / "gw", broker.port)
    with_username(home, "gw")
    monkeypatch.setenv("POA_MQTT_PASSWORD", given)
    return home


def errors_naming(events: list[dict[str, Any]], host: str, port: int) -> list[dict[str, Any]]:
    return [
        e
        for e in events
        if e.get("level") == "error" and host in json.dumps(e) and str(port) in json.dumps(e)
    ]


async def test_poa_up_and_status_follow_the_broker_connection(
    tmp_path: Path, broker: Broker
) -> None:
    home = Home(tmp_path / "gw", broker.port)
    config = load_config(home.config, env={})
    async with in_process(config) as (gateway, _lines, metrics):
        assert sample(metrics, "poa_up") == 1
        assert (await asyncio.to_thread(status, home))["daemon"]["broker_connected"] is True
        broker.stop()
        await until(lambda: sample(metrics, "poa_up") == 0, "poa_up to drop")
        daemon = (await asyncio.to_thread(status, home))["daemon"]
        assert daemon["running"] is True
        assert daemon["broker_connected"] is False
        broker.start()
        await until(lambda: sample(metrics, "poa_up") == 1, "poa_up to come back", limit_s=30)
        assert gateway.mqtt.connected
        assert (await asyncio.to_thread(status, home))["daemon"]["broker_connected"] is True
    daemon = (await asyncio.to_thread(status, home))["daemon"]
    assert daemon["running"] is False  # stopped cleanly


async def test_a_broker_that_refuses_the_credentials_at_start_ends_the_daemon_with_an_error(
    tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = password_home(tmp_path, broker, monkeypatch, given="wrong")
    daemon = Daemon(home)
    daemon.start(wait_ready=False)
    code = await asyncio.to_thread(daemon.wait_exit, 30)
    assert code != 0
    assert errors_naming(daemon.events(), "127.0.0.1", broker.port)
    assert not [e for e in daemon.events() if e.get("event") == "gateway.ready"]


async def test_a_broker_that_refuses_the_credentials_on_reconnect_ends_the_daemon_with_an_error(
    tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = password_home(tmp_path, broker, monkeypatch, given="right")
    daemon = Daemon(home)
    daemon.start()
    broker.require_passwords({"gw": "changed"})
    broker.restart()
    code = await asyncio.to_thread(daemon.wait_exit, 30)
    assert code != 0
    refused = daemon.wait_for("mqtt.refused")
    assert refused["level"] == "error"
    assert (refused["host"], refused["port"]) == ("127.0.0.1", broker.port)


async def test_a_state_store_emptied_after_use_is_refused_and_not_taken_as_new(
    tmp_path: Path, broker: Broker
) -> None:
    home = Home(tmp_path / "gw", broker.port)
    daemon = Daemon(home)
    daemon.start()
    client = Client(broker.port, "lost")
    await client.start()
    try:
        await client.command(cs06(home, 500))
        daemon.wait_for("activation.tracked")
    finally:
        await client.close()
    assert daemon.stop() == 0
    (home.root / "state.sqlite").write_bytes(b"")  # an operator's mistake, a bad restore
    daemon.start(wait_ready=False)
    assert await asyncio.to_thread(daemon.wait_exit, 30) != 0
    failed = daemon.wait_for("gateway.failed")
    assert "state.sqlite" in failed["detail"]
    assert (home.root / "state.sqlite").stat().st_size == 0  # left for the operator


async def test_every_frame_not_acted_on_is_counted_by_message_code_and_logged_at_debug(
    tmp_path: Path, broker: Broker
) -> None:
    home = Home(tmp_path / "gw", broker.port)
    config = load_config(home.config, env={})
    client = Client(broker.port, "ignored")
    await client.start()

    async def publish(topic: str, frame: bytes) -> None:
        env = wire.GbcsEnvelope(v=1, kind="gbcs", frame=frame, sent_at=now_ms())
        await client.adapter.publish(topic, wire.encode(env))

    try:
        async with in_process(config) as (_gateway, lines, metrics):
            await publish("dsp/gbcs/command", vector_by_name("CS08_11.2_SUCCESS_COMMAND_GBCS.HEX"))
            await publish(
                "dsp/gbcs/command", vector_by_name("CS06_11.3_IMMEDIATE_SUCCESS_RESPONSE_GBCS.HEX")
            )
            await publish(
                "csp/gbcs/inbound", vector_by_name("CS06_11.3_IMMEDIATE_SUCCESS_COMMAND_GBCS.HEX")
            )
            await publish("csp/gbcs/inbound", vector_by_name("CS11_3.3_SUCCESS_RESPONSE_GBCS.HEX"))
            await until(lambda: len(lines.events("gbcs.ignored")) == 4, "four frames ignored")
            ignored = {(e["topic"], e["reason"]) for e in lines.events("gbcs.ignored")}
            assert ignored == {
                ("dsp/gbcs/command", "not-cs06"),
                ("dsp/gbcs/command", "not-a-command"),
                ("csp/gbcs/inbound", "command-on-inbound"),
                ("csp/gbcs/inbound", "not-handled"),
            }
            assert {e["level"] for e in lines.events("gbcs.ignored")} == {"debug"}
            counted = sample(
                metrics,
                "poa_frames_ignored_total",
                topic="csp/gbcs/inbound",
                message_code="0x0012",
                reason="command-on-inbound",
            )
            assert counted == 1
            assert not lines.events("activation.tracked")
    finally:
        await client.close()


async def test_status_over_a_deleted_state_file_says_the_store_is_lost(tmp_path: Path) -> None:
    home = Home(tmp_path / "gw", 1883)
    state = home.root / "state.sqlite"
    with Store.open(state):
        pass
    state.unlink()
    exe = str(Path(sys.executable).parent / "poa-gateway")
    done = await asyncio.to_thread(
        subprocess.run,
        [exe, "status", "--config", str(home.config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "state.sqlite is missing" in done.stderr
    assert "Traceback" not in done.stderr
    assert not state.exists()  # status never creates a store


async def test_status_reads_a_mangled_daemon_status_file_without_failing(tmp_path: Path) -> None:
    home = Home(tmp_path / "gw", 1883)
    with Store.open(home.root / "state.sqlite"):
        pass
    status_file = home.root / "daemon-status.json"
    for content in ('{"pid": 1e999999, "running": true}', '{"pid": 99999999999999999999999}',
                    "[1, 2]", "\x00\xff", '{"running": true, "pid": -1, "broker": 7}'):  # fmt: skip
        status_file.write_text(content)
        daemon = (await asyncio.to_thread(status, home))["daemon"]
        assert daemon["running"] in (False, None)
