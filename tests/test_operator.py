"""What an operator of the systemd service sees: the journal's priorities, log levels
that mean what they say, exit statuses systemd can act on, a quiet closed pipe."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from gateway.exits import Exit
from gateway.logs import JsonLog
from gateway.reports.files import write_report
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
)
from .test_faults import in_process, until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

EXE = str(Path(sys.executable).parent / "poa-gateway")


def levels(events: list[dict[str, Any]]) -> set[str]:
    return {str(e.get("level")) for e in events}


# -- the journal ---------------------------------------------------------------------------


def test_each_line_carries_its_syslog_priority_when_stdout_is_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "journal"
    with path.open("w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        log = JsonLog(stream, level="debug")
        assert log.syslog_prefix
        log.debug("d")
        log.info("i")
        log.warning("w")
        log.error("e")
    lines = path.read_text().splitlines()
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>"]
    assert [json.loads(line[3:])["event"] for line in lines] == ["d", "i", "w", "e"]


def test_no_priority_prefix_when_stdout_is_not_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")  # inherited, but not this stream
    with (tmp_path / "log").open("w") as stream:
        assert not JsonLog(stream).syslog_prefix
    buffer = io.StringIO()
    JsonLog(buffer).warning("w")
    assert buffer.getvalue().startswith('{"ts":')


def test_the_daemon_under_journald_prefixes_every_line(
    tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Home(tmp_path / "gw", broker.port)
    home.log_path.touch()
    st = home.log_path.stat()
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    daemon = Daemon(home)
    daemon.start(wait_ready=False)
    deadline = 30.0
    while deadline > 0 and "gateway.ready" not in home.log_path.read_text():
        deadline -= 0.05
        asyncio.run(asyncio.sleep(0.05))
    assert daemon.stop() == 0
    lines = home.log_path.read_text().splitlines()
    assert lines
    assert all(line[:3] in ("<3>", "<4>", "<6>", "<7>") for line in lines), lines[:3]
    ready = next(line for line in lines if '"gateway.ready"' in line)
    assert ready.startswith("<6>")


# -- levels that mean what operators expect ------------------------------------------------


@pytest.mark.asyncio
async def test_routine_refusals_are_info_and_refusals_that_may_be_attacks_are_warnings(
    tmp_path: Path, broker: Broker
) -> None:
    home = Home(tmp_path / "gw", broker.port)
    config = load_config(home.config, env={})
    client = Client(broker.port, "levels")
    await client.start()
    try:
        async with in_process(config) as (_gateway, lines, _metrics):
            await client.command(cs06(home, 10, target=UNLISTED_ESME))  # not-on-guid-list
            await client.command(cs06(home, 11, signer="none"))  # unsigned
            await client.command(cs06(home, 12, signer="attacker"))  # the Supplier's id forged
            await client.command(cs06(home, 13))  # tracked
            await client.command(cs06(home, 13))  # replay
            await until(lambda: len(lines.events("command.refused")) == 4, "four refusals")
            by_reason = {e["reason"]: e["level"] for e in lines.events("command.refused")}
    finally:
        await client.close()
    assert by_reason == {
        "not-on-guid-list": "info",
        "unsigned": "warning",
        "bad-signature": "warning",
        "replay": "warning",
    }


def test_a_clean_start_and_stop_logs_no_warning(tmp_path: Path, broker: Broker) -> None:
    home = Home(tmp_path / "gw", broker.port)
    daemon = Daemon(home)
    daemon.start()
    assert daemon.stop() == 0
    assert levels(daemon.events()) <= {"info", "debug"}, [
        e for e in daemon.events() if e["level"] not in ("info", "debug")
    ]
    assert daemon.events()[-1]["event"] == "gateway.stopped"


def test_a_broker_that_cannot_be_reached_is_a_warning_with_host_and_port(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    home = Home(tmp_path / "gw", port)
    daemon = Daemon(home)
    daemon.start(wait_ready=False)
    failed = daemon.wait_for("mqtt.connect_failed", timeout=20)
    assert failed["level"] == "warning"
    assert (failed["host"], failed["port"]) == ("127.0.0.1", port)
    assert daemon.stop() == 0  # SIGTERM still stops a daemon waiting for its broker


# -- exit statuses -------------------------------------------------------------------------


def test_an_empty_trust_store_is_an_error_the_daemon_is_never_ready_and_exits_78(
    tmp_path: Path, broker: Broker
) -> None:
    home = Home(tmp_path / "gw", broker.port)
    for pem in (home.root / "trust").glob("*.pem"):
        pem.unlink()
    daemon = Daemon(home)
    daemon.start(wait_ready=False)
    assert daemon.wait_exit() == Exit.CONFIG
    events = [e["event"] for e in daemon.events()]
    assert "gateway.ready" not in events
    failed = daemon.wait_for("gateway.failed")
    assert (failed["level"], failed["reason"]) == ("error", "trust-empty")
    assert events.index("gateway.failed") < events.index("gateway.stopped")


def test_a_missing_trust_folder_says_so_and_exits_78(tmp_path: Path, broker: Broker) -> None:
    home = Home(tmp_path / "gw", broker.port)
    shutil.rmtree(home.root / "trust")
    daemon = Daemon(home)
    daemon.start(wait_ready=False)
    assert daemon.wait_exit() == Exit.CONFIG
    failed = daemon.wait_for("gateway.failed")
    assert failed["reason"] == "trust-missing"
    assert "does not exist" in failed["detail"]
    assert "certificate" not in failed["detail"].replace("certificates (PEM)", "")


def test_a_configuration_error_exits_78_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[suppression]\nwindw = '30m'\n")
    done = subprocess.run(
        [EXE, "run", "--config", str(config)], capture_output=True, text=True, check=False
    )
    assert done.returncode == Exit.CONFIG
    assert "suppression.windw" in done.stderr
    unit = (Path(__file__).resolve().parent.parent / "systemd" / "poa-gateway.service").read_text()
    active = [line for line in unit.splitlines() if not line.startswith("#")]
    assert f"RestartPreventExitStatus={int(Exit.CONFIG)}" in active


def test_every_subcommand_without_a_configuration_exits_78(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POA_GATEWAY_CONFIG", str(tmp_path / "missing.toml"))
    for argv in (
        ["run"],
        ["status"],
        ["explain", "x"],
        ["quarantine", "list"],
        ["guids", "info"],
        ["inventory", "show", "00-DB-12-34-56-78-90-A0"],
        ["config", "check"],
    ):
        done = subprocess.run([EXE, *argv], capture_output=True, text=True, check=False)
        assert done.returncode == Exit.CONFIG, (argv, done.stderr)
        assert "missing.toml" in done.stderr
        assert "Traceback" not in done.stderr


def test_a_closed_pipe_ends_the_command_quietly(tmp_path: Path) -> None:
    records = [
        SuppressionRecord(
            v=1,
            kind="suppression",
            alert_id=f"alert-{i:06d}",
            chf_id=CHF,
            esme_id=ESME,
            raised_at=1_900_000_000_000 + i,
            received_at=1_900_000_000_100 + i,
            window_start=1_900_000_000_000,
            window_end=1_900_001_800_000,
            originator=bytes(8),
            originator_counter=i,
            activation="on-demand",
        )
        for i in range(5000)
    ]
    report = write_report(
        tmp_path,
        records,
        report_id="big",
        period_start_ms=1_900_000_000_000,
        period_end_ms=1_900_003_600_000,
        name_prefix="POA-SUPPRESSION",
        version="test",
        xlsx=False,
    )
    for argv in (
        ["report", "show", str(report.path)],
        ["report", "show", "--json", str(report.path)],
    ):
        writer = subprocess.Popen([EXE, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert writer.stdout is not None
        first = writer.stdout.readline()
        writer.stdout.close()  # what `| head -1` does
        _, err = writer.communicate(timeout=60)
        assert first
        assert err == b"", err.decode()
        assert writer.returncode == Exit.OK
