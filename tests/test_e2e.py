"""End to end: the real daemon on a real mosquitto, every rule of MP102B, restarts,
a crash between effect and acknowledgement, and a broker restart mid-stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from .e2e_support import (
    CHF,
    ESME,
    MIN,
    OTHER_CHF,
    UNLISTED_CHF,
    UNLISTED_ESME,
    Broker,
    Client,
    Daemon,
    Home,
    cs06,
    now_ms,
)

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio, pytest.mark.timeout(120)]


@pytest.fixture
def home(tmp_path: Path, broker: Broker) -> Home:
    return Home(tmp_path / "gw", broker.port)


@pytest.fixture
def daemon(home: Home) -> Iterator[Daemon]:
    d = Daemon(home)
    d.start()
    yield d
    d.stop()


@pytest_asyncio.fixture
async def client(broker: Broker, daemon: Daemon) -> AsyncIterator[Client]:
    c = Client(broker.port, "e2e")
    await c.start()
    yield c
    await c.close()


async def test_on_demand_activation_suppresses_its_chf_and_nothing_else(
    client: Client, daemon: Daemon, home: Home
) -> None:
    await client.command(cs06(home, 1000))
    daemon.wait_for("activation.tracked", counter=1000)
    now = now_ms()
    await client.alert("a-in", CHF, now)
    await client.alert("a-other", OTHER_CHF, now)
    await client.alert("a-code", CHF, now, code="AD2")
    await client.wait_outputs(3)
    assert client.suppressed_ids() == ["a-in"]
    assert sorted(client.forwarded_ids()) == ["a-code", "a-other"]


async def test_future_dated_window_opens_at_its_execution_time(
    client: Client, daemon: Daemon, home: Home
) -> None:
    start = now_ms() + 60 * MIN
    await client.command(cs06(home, 1000, execution_ms=start))
    daemon.wait_for("activation.tracked", activation="future-dated")
    # raised_at is trusted up to the skew (5 min) ahead, so windows a little ahead can
    # be probed without waiting: move the window instead.
    await client.alert("before", CHF, now_ms())
    await client.wait_outputs(1)
    assert client.forwarded_ids() == ["before"]


async def test_cancelled_and_replaced_activations(
    client: Client, daemon: Daemon, home: Home
) -> None:
    soon = now_ms() + 3 * MIN  # inside the skew tolerance: probe-able now
    await client.command(cs06(home, 1000, execution_ms=soon))
    daemon.wait_for("activation.tracked", counter=1000)
    await client.alert("inside-first", CHF, soon + 1000)
    await client.wait_outputs(1)
    assert client.suppressed_ids() == ["inside-first"]

    await client.command(cs06(home, 1001, cancel=True))
    daemon.wait_for("activation.cancelled", counter=1001)
    await client.alert("after-cancel", CHF, soon + 2000)
    await client.wait_outputs(2)
    assert client.forwarded_ids() == ["after-cancel"]

    later = now_ms() + 4 * MIN
    await client.command(cs06(home, 1002, execution_ms=soon))
    daemon.wait_for("activation.tracked", counter=1002)
    await client.command(cs06(home, 1003, execution_ms=later))
    replaced = daemon.wait_for("activation.tracked", counter=1003)
    assert replaced["replaced"] is not None
    await client.alert("old-slot", CHF, soon - 3 * MIN)  # before `later` minus lead
    await client.alert("new-slot", CHF, later + 1000)
    await client.wait_outputs(4)
    assert "old-slot" in client.forwarded_ids()
    assert "new-slot" in client.suppressed_ids()


@pytest.mark.parametrize(
    "case",
    [
        ("none", ESME, "unsigned"),
        ("attacker", ESME, "bad-signature"),  # trusted originator, wrong key: forged
        ("supplier", UNLISTED_ESME, "not-on-guid-list"),
    ],
)
async def test_refused_commands_open_no_window(
    client: Client, daemon: Daemon, home: Home, case: tuple[str, bytes, str]
) -> None:
    signer, target, reason = case
    await client.command(cs06(home, 1000, signer=signer, target=target))
    daemon.wait_for("command.refused", reason=reason)
    chf = UNLISTED_CHF if target == UNLISTED_ESME else CHF
    await client.alert("a", chf, now_ms())
    await client.wait_outputs(1)
    assert client.forwarded_ids() == ["a"]


async def test_command_from_an_unknown_party_is_refused(
    client: Client, daemon: Daemon, home: Home
) -> None:
    from .e2e_support import ATTACKER

    await client.command(cs06(home, 1000, signer="attacker", originator=ATTACKER))
    daemon.wait_for("command.refused", reason="untrusted-signer")


async def test_replayed_command_is_refused(client: Client, daemon: Daemon, home: Home) -> None:
    soon = now_ms() + 3 * MIN
    original = cs06(home, 1000, execution_ms=soon)
    await client.command(original)
    daemon.wait_for("activation.tracked", counter=1000)
    await client.command(cs06(home, 1001, cancel=True))
    daemon.wait_for("activation.cancelled", counter=1001)
    await client.command(original)  # the attacker replays the captured bytes
    daemon.wait_for("command.refused", reason="replay")
    await client.alert("a", CHF, soon + 1000)
    await client.wait_outputs(1)
    assert client.forwarded_ids() == ["a"]


async def test_feature_switch_off_forwards_everything(tmp_path: Path, broker: Broker) -> None:
    home = Home(tmp_path / "off", broker.port, suppression={"enabled": False})
    daemon = Daemon(home)
    daemon.start()
    client = Client(broker.port, "off")
    try:
        await client.start()
        await client.command(cs06(home, 1000))
        daemon.wait_for("command.refused", reason="feature-off")
        await client.alert("a", CHF, now_ms())
        await client.wait_outputs(1)
        assert client.forwarded_ids() == ["a"]
    finally:
        await client.close()
        daemon.stop()


async def test_restart_in_the_middle_of_a_window_keeps_suppressing(
    client: Client, daemon: Daemon, home: Home
) -> None:
    await client.command(cs06(home, 1000))
    daemon.wait_for("activation.tracked", counter=1000)
    assert daemon.stop() == 0
    daemon.start()
    loaded = daemon.wait_for("state.loaded")
    assert loaded["activations"] == 1
    await client.alert("after-restart", CHF, now_ms())
    await client.wait_outputs(1)
    assert client.suppressed_ids() == ["after-restart"]


@pytest.mark.parametrize("chf", [CHF, OTHER_CHF], ids=["suppressed", "forwarded"])
async def test_sigkill_between_effect_and_ack_gives_the_output_once(
    client: Client, daemon: Daemon, home: Home, chf: bytes
) -> None:
    await client.command(cs06(home, 1000))
    daemon.wait_for("activation.tracked", counter=1000)
    daemon.stop()
    daemon.start(kill_before_ack="victim")
    await client.alert("victim", chf, now_ms())
    daemon.wait_for("fault.injected")
    assert daemon.wait_exit() != 0  # killed before acknowledging
    daemon.start()  # the broker redelivers "victim" to the new process
    daemon.wait_for("alert.duplicate", alert_id="victim", timeout=20)
    await client.alert("next", chf, now_ms())
    await client.wait_outputs(2)
    await asyncio.sleep(0.5)
    outputs = client.forwarded_ids() + client.suppressed_ids()
    assert outputs.count("victim") == 1
    assert outputs.count("next") == 1


async def test_broker_restart_mid_stream_loses_nothing(
    client: Client, daemon: Daemon, home: Home, broker: Broker
) -> None:
    await client.command(cs06(home, 1000))
    daemon.wait_for("activation.tracked", counter=1000)
    now = now_ms()
    for i in range(100):
        await client.alert(f"s-{i}", CHF if i % 2 else OTHER_CHF, now)
    broker.restart()
    # Both sides reconnect to their persistent sessions before the second half.
    await asyncio.to_thread(daemon.wait_for, "mqtt.connected", 30, reconnect=True)
    deadline = asyncio.get_running_loop().time() + 30
    while client.adapter.reconnects < 1 or not client.adapter.connected:
        assert asyncio.get_running_loop().time() < deadline, "test client did not reconnect"
        await asyncio.sleep(0.05)
    for i in range(100, 200):
        await client.alert(f"s-{i}", CHF if i % 2 else OTHER_CHF, now)
    await client.wait_outputs(200, limit_s=60)
    outputs = client.forwarded_ids() + client.suppressed_ids()
    assert sorted(set(outputs)) == sorted(f"s-{i}" for i in range(200))


async def test_suppression_log_rotates_into_a_verified_report(
    tmp_path: Path, broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway import wire
    from gateway.cli.main import main
    from gateway.reports.files import verify_report

    home = Home(tmp_path / "rep", broker.port, reports={"max_records": 3})
    daemon = Daemon(home)
    daemon.start()
    client = Client(broker.port, "rep")
    try:
        await client.start()
        await client.command(cs06(home, 1000))
        daemon.wait_for("activation.tracked", counter=1000)
        for i in range(3):
            await client.alert(f"r-{i}", CHF, now_ms())
        await client.alert("fwd", OTHER_CHF, now_ms())
        await client.wait_outputs(4)
        written = daemon.wait_for("report.written", records=3)
        check = verify_report(Path(written["file"]))
        assert check.ok, check.problems
        assert check.records == 3
        deadline = asyncio.get_running_loop().time() + 10
        while not client.received["gateway/reports"]:
            assert asyncio.get_running_loop().time() < deadline, "no report notice"
            await asyncio.sleep(0.05)
        notice = wire.decode_report_notice(client.received["gateway/reports"][0])
        assert (notice.records, notice.sha256) == (3, check.sha256)

        # status and explain read the state database while the daemon runs.
        capsys.readouterr()
        assert main(["status", "--json", "--config", str(home.config)]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["windows_active"] == 1
        assert main(["status", "--config", str(home.config)]) == 0  # for a person
        assert "windows_active:" in capsys.readouterr().out
        assert main(["explain", "r-0", "--json", "--config", str(home.config)]) == 0
        explained = json.loads(capsys.readouterr().out)
        assert explained["decision"] == "suppressed"
        assert explained["activation"]["request_id"].endswith(":1000")
        assert main(["explain", "fwd", "--json", "--config", str(home.config)]) == 0
        assert json.loads(capsys.readouterr().out)["reason"] == "no-window"
    finally:
        await client.close()
        daemon.stop()


async def test_unreadable_alert_is_forwarded_and_counted_as_rejected(
    client: Client, daemon: Daemon
) -> None:
    await client.adapter.publish("csp/dcc/alert", b"\xa1\x61v\x02")  # v = 2: not ours
    daemon.wait_for("alert.rejected", reason="bad-version")
    deadline = asyncio.get_running_loop().time() + 10
    while not client.received["dno/dcc/alert"]:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert client.received["dno/dcc/alert"] == [b"\xa1\x61v\x02"]


async def test_metrics_endpoint_counts_decisions_by_outcome(tmp_path: Path, broker: Broker) -> None:
    import urllib.request

    from .e2e_support import free_port

    port = free_port()
    home = Home(tmp_path / "met", broker.port)
    home.config.write_text(
        home.config.read_text().replace(
            "[metrics]\nenabled = false", f"[metrics]\nenabled = true\nport = {port}"
        )
    )
    daemon = Daemon(home)
    daemon.start()
    client = Client(broker.port, "met")
    try:
        await client.start()
        await client.command(cs06(home, 1000))
        daemon.wait_for("activation.tracked", counter=1000)
        await client.alert("m-1", CHF, now_ms())
        await client.alert("m-2", OTHER_CHF, now_ms())
        await client.wait_outputs(2)
        url = f"http://127.0.0.1:{port}/metrics"
        text = await asyncio.to_thread(
            lambda: urllib.request.urlopen(url, timeout=5).read().decode()
        )
        assert 'poa_alerts_total{outcome="suppressed",reason="inside-window"} 1.0' in text
        assert 'poa_alerts_total{outcome="forwarded",reason="no-window"} 1.0' in text
        assert "poa_windows_active 1.0" in text
        assert "poa_up 1.0" in text
    finally:
        await client.close()
        daemon.stop()


async def test_sigterm_stops_a_daemon_still_waiting_for_its_broker(tmp_path: Path) -> None:
    from .e2e_support import free_port

    home = Home(tmp_path / "nobroker", free_port())  # nothing listens there
    daemon = Daemon(home)
    daemon.start(wait_ready=False)
    daemon.wait_for("mqtt.connect_failed", timeout=20)
    assert daemon.stop() == 0
    assert daemon.events()[-1]["event"] == "gateway.stopped"
