"""End-to-end test support: a real mosquitto on a free loopback port, a real
``poa-gateway run`` process, and a QoS 1 client built on the gateway's own MQTT adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gbcs
from gateway import pki, wire
from gateway.core.devices import DeviceRecord, DeviceStatus, DeviceType
from gateway.guids import write_guid_list
from gateway.state.inventory import Inventory
from gateway.transport.mqtt import MqttAdapter, MqttSettings
from gbcs import builders

SUPPLIER = bytes.fromhex("90B3D51F30010000")
ATTACKER = bytes.fromhex("90B3D51F30019999")
ESME = bytes.fromhex("00DB1234567890A0")
CHF = bytes.fromhex("00DB123456789001")
UNLISTED_ESME = bytes.fromhex("00DB1234567890B0")
UNLISTED_CHF = bytes.fromhex("00DB123456789002")
OTHER_CHF = bytes.fromhex("00DB123456789003")
MIN = 60_000


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def mosquitto_binary() -> str:
    """Path of the mosquitto broker (./dev test installs it)."""
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        raise RuntimeError("mosquitto is not installed: run ./dev test, which installs it")
    return found


class Broker:
    """A mosquitto process on a free loopback port, with persistence (for restarts)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        self.conf = root / "mosquitto.conf"
        self.conf.write_text(
            # Started as root, mosquitto would switch to the "mosquitto" user and then
            # could not write its persistence file here: keep the invoking user.
            f"user {getpass.getuser()}\n"
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {root}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 2000000\n"
            "max_inflight_messages 100\n"
            "set_tcp_nodelay true\n"
            f"log_dest file {root}/mosquitto.log\n"
        )

    def add_config(self, *lines: str) -> None:
        """Append lines to the broker's configuration (read at the next start)."""
        self.conf.write_text(self.conf.read_text() + "".join(f"{line}\n" for line in lines))

    def require_passwords(self, users: dict[str, str]) -> None:
        """Admit only these users, with these passwords, from the next start on; calling
        it again replaces them all (a password change)."""
        passwd = self.root / "passwd"
        passwd.write_text("")
        tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        for user, password in users.items():
            subprocess.run([tool, "-b", str(passwd), user, password], check=True)
        conf = self.conf.read_text().replace("allow_anonymous true", "allow_anonymous false")
        if "password_file" not in conf:
            conf += f"password_file {passwd}\n"
        self.conf.write_text(conf)

    def command(self) -> list[str]:
        """The command line that runs the broker."""
        return [mosquitto_binary(), "-c", str(self.conf)]

    def start(self) -> None:
        """Start and wait until the port accepts connections."""
        self.proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start on port {self.port}")

    def stop(self) -> None:
        """Stop (SIGTERM: mosquitto saves its persistence file)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same port, keeping persisted sessions."""
        self.stop()
        self.start()


class Home:
    """A gateway's configuration, trust store, GUID list and inventory in a folder."""

    def __init__(self, root: Path, broker_port: int, **settings: Any) -> None:
        self.root = root
        self.supplier = pki.remote_party(SUPPLIER)
        self.attacker = pki.remote_party(ATTACKER)  # never trusted
        trust = root / "trust"
        trust.mkdir(parents=True)
        (trust / "supplier.pem").write_bytes(self.supplier.certificate_pem)
        write_guid_list(
            root / "guid-list.bin",
            sorted(int.from_bytes(e, "big") for e in (ESME,)),
            sha256=bytes(32),
            imported_at_ms=0,
        )
        with Inventory.open(root / "inventory.sqlite") as inventory:
            for device_id, chf, maker in (
                (ESME, CHF, "Landis+Gyr"),
                (UNLISTED_ESME, UNLISTED_CHF, "Landis+Gyr"),
            ):
                inventory.upsert(
                    DeviceRecord(
                        device_id=device_id,
                        device_type=DeviceType.ESME,
                        smets=2,
                        manufacturer=maker,
                        status=DeviceStatus.COMMISSIONED,
                        chf_id=chf,
                    ),
                    0,
                )
        suppression = {"window": "30m", "lead": "2m", "skew": "5m"} | settings.pop(
            "suppression", {}
        )
        reports = {"period": "1h", "max_records": 50000} | settings.pop("reports", {})
        paths = {"state_dir": str(root)} | settings.pop("paths", {})
        self.config = root / "gateway.toml"
        lines = [
            "[broker]",
            f"port = {broker_port}",
            f'client_id = "poa-gateway-{root.name}"',
            'reconnect_min = "100ms"',
            'reconnect_max = "1s"',
            "[suppression]",
            *(_toml(k, v) for k, v in suppression.items()),
            "[paths]",
            *(_toml(k, v) for k, v in paths.items()),
            "[reports]",
            *(_toml(k, v) for k, v in reports.items()),
            "[metrics]",
            "enabled = false",
        ]
        self.config.write_text("\n".join(lines) + "\n")
        self.log_path = root / "gateway.log"


def _toml(key: str, value: object) -> str:
    if isinstance(value, bool):
        return f"{key} = {'true' if value else 'false'}"
    if isinstance(value, str):
        return f'{key} = "{value}"'
    return f"{key} = {value}"


class Daemon:
    """``poa-gateway run`` as a child process, its JSON log collected in a file."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, kill_before_ack: str | None = None, wait_ready: bool = True) -> None:
        """Start ``poa-gateway run``; with ``kill_before_ack``, the same daemon whose state
        store SIGKILLs the process once that alert's decision is durable and before it
        is acknowledged (tests/faulty_daemon.py)."""
        exe = Path(sys.executable).parent / "poa-gateway"
        command = [str(exe), "run", "--config", str(self.home.config)]
        if kill_before_ack is not None:
            command = [sys.executable, "-m", "tests.faulty_daemon"]
            command += ["--config", str(self.home.config), "--kill-before-ack", kill_before_ack]
        self._offset = self.home.log_path.stat().st_size if self.home.log_path.exists() else 0
        with self.home.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parent.parent,  # where `tests` is a package
            )
        if wait_ready:
            self.wait_for("gateway.ready", timeout=30)

    def events(self) -> list[dict[str, Any]]:
        """Every JSON log line written so far (all runs)."""
        out = []
        if self.home.log_path.exists():
            for line in self.home.log_path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def wait_for(self, event: str, timeout: float = 10, **fields: Any) -> dict[str, Any]:
        """The first log event (since this start) with that name and those fields."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self._since_start():
                if e.get("event") == event and all(e.get(k) == v for k, v in fields.items()):
                    return e
            if self.proc is not None and self.proc.poll() is not None and event != "exit":
                break
            time.sleep(0.05)
        tail = "\n".join(json.dumps(e) for e in self._since_start()[-15:])
        raise AssertionError(f"no {event} {fields} in the gateway log; last lines:\n{tail}")

    def _since_start(self) -> list[dict[str, Any]]:
        out = []
        if self.home.log_path.exists():
            with self.home.log_path.open("rb") as f:
                f.seek(self._offset)
                for line in f.read().decode().splitlines():
                    with contextlib.suppress(ValueError):
                        out.append(json.loads(line))
        return out

    def stop(self) -> int | None:
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self.proc = None
        return code

    def wait_exit(self, timeout: float = 30) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout=timeout)
        self.proc = None
        return code


class Client:
    """A test client: publishes inputs and collects the gateway's outputs."""

    OUTPUTS = ("dno/dcc/alert", "gateway/suppressed", "gateway/reports", "gateway/quarantine")

    def __init__(self, port: int, name: str) -> None:
        self.received: dict[str, list[bytes]] = {t: [] for t in self.OUTPUTS}
        self.adapter = MqttAdapter(
            MqttSettings(
                port=port, client_id=f"test-{name}", reconnect_min_s=0.1, reconnect_max_s=1
            ),
            self._on_message,
        )

    async def _on_message(self, topic: str, payload: bytes) -> None:
        self.received.setdefault(topic, []).append(payload)

    async def start(self) -> None:
        await self.adapter.connect()
        await self.adapter.subscribe(list(self.OUTPUTS))

    async def close(self) -> None:
        await self.adapter.close()

    async def command(self, frame: bytes, *, sent_at: int | None = None) -> None:
        env = wire.GbcsEnvelope(
            v=1, kind="gbcs", frame=frame, sent_at=sent_at if sent_at is not None else now_ms()
        )
        await self.adapter.publish("dsp/gbcs/command", wire.encode(env))

    async def inbound(self, frame: bytes) -> None:
        env = wire.GbcsEnvelope(v=1, kind="gbcs", frame=frame, sent_at=now_ms())
        await self.adapter.publish("csp/gbcs/inbound", wire.encode(env))

    async def alert(self, alert_id: str, chf: bytes, raised_at: int, code: str = "AD1") -> bytes:
        payload = wire.encode(
            wire.DccAlertEnvelope(
                v=1,
                kind="dcc-alert",
                code=code,
                alert_id=alert_id,
                device_id=chf,
                raised_at=raised_at,
                sent_at=now_ms(),
            )
        )
        await self.adapter.publish("csp/dcc/alert", payload)
        return payload

    def forwarded_ids(self) -> list[str]:
        return [wire.decode_dcc_alert(p).alert_id for p in self.received["dno/dcc/alert"]]

    def suppressed_ids(self) -> list[str]:
        return [
            wire.decode_suppression_record(p).alert_id for p in self.received["gateway/suppressed"]
        ]

    async def wait_outputs(self, count: int, limit_s: float = 15) -> None:
        """Until ``count`` distinct alert ids came out, forwarded or suppressed
        (at least once: a redelivered output must not stand in for a missing one)."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if len(set(self.forwarded_ids()) | set(self.suppressed_ids())) >= count:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(
            f"expected {count} outputs, got forwarded={self.forwarded_ids()} "
            f"suppressed={self.suppressed_ids()}"
        )


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def cs06(
    home: Home,
    counter: int,
    *,
    execution_ms: int | None = None,
    cancel: bool = False,
    target: bytes = ESME,
    signer: str = "supplier",
    originator: bytes = SUPPLIER,
) -> bytes:
    """A CS06 command frame; ``signer`` is supplier, attacker or none."""
    import datetime as dt

    when = None
    if cancel:
        when = gbcs.CANCELLATION_TIME
    elif execution_ms is not None:
        when = dt.datetime.fromtimestamp(execution_ms // 1000, dt.UTC)
    key = {"supplier": home.supplier.key, "attacker": home.attacker.key, "none": None}[signer]
    return builders.cs06_command(
        originator=originator, target=target, counter=counter, signer=key, execution_time=when
    )


@contextlib.contextmanager
def running(daemon: Daemon) -> Iterator[Daemon]:
    try:
        yield daemon
    finally:
        daemon.stop()
