"""End-to-end throughput benchmark: the real daemon on a real mosquitto, against
mosquitto's own bridge (issue 4's goals).

Every part starts what it needs in a fresh temporary directory: tuned mosquitto brokers
(``max_inflight_messages 1000``, ``max_queued_messages`` 2,000,000 or more,
``set_tcp_nodelay``, persistence in the directory) on free loopback ports, and
``poa-gateway run`` as its own process (metrics off) whose home lists ``--windowed``
Landis+Gyr SMETS2 ESMEs, each on its own CHF. The load comes from a publisher process
and the outputs are counted by a sink process (``bench/throughput_clients.py``: MQTT
3.1.1 on asyncio.Protocol under uvloop, QoS 1, publisher pipelined with up to
``--pub-window`` unacknowledged messages), so that neither shares a CPU budget with the
daemon. Half of the alerts (even sequence numbers) come from the windowed CHFs and must
be suppressed, half from 10,000 other CHFs and must be forwarded; every alert has a
unique ``alert_id`` and ``raised_at`` = ``sent_at`` = the time it was written (ms).

1. **storm**: signed on-demand CS06 commands open windows on the ``--windowed`` CHFs,
   then ``--alerts`` AD1s are published as fast as the publisher can. Alerts per second
   at the sink (first to last receipt, and first publish to last receipt), receipt
   latency, lost and duplicated ids, the suppressed/forwarded split, the daemon's CPU
   per alert and peak RSS (VmHWM). Outputs can run ahead of the acknowledgements (a
   forward is published before its decision is committed), so the daemon's
   ``alert.suppressed`` log lines, written after the commit, are also followed: "to
   durability" is first publish -> last suppression committed. ``--storm-runs`` storms
   on fresh brokers and daemons; the median is the figure.
2. **bridge**: the same stream through mosquitto's own C bridge instead of the gateway:
   broker B holds a bridge connection to broker A that subscribes to ``csp/dcc/alert``
   there at QoS 1 and republishes it on B as ``dno/dcc/alert`` (``topic alert in 1
   dno/dcc/ csp/dcc/``); the publisher writes to A, the sink reads from B.
   ``--bridge-runs`` runs on fresh brokers (this 2-CPU VM is noisy); the median is the
   reference for the ratio gateway / bridge.
3. **latency**: ``--latency-rate`` alerts per second, paced, for ``--latency-seconds``:
   p50/p99/max of sink receipt minus ``sent_at`` (ms field), and of sink receipt minus
   the publisher's exact write time (ns). Through a fresh daemon (the goal figure) and,
   when the storm ran too, through the storm's daemon just after it.
4. **backlog**: the daemon is started once (session and subscriptions exist, windows
   opened), stopped with SIGTERM; ``--backlog`` AD1s are queued by the broker for its
   session; the daemon is started again and timed until the sink has every output,
   with progress (outputs, RSS, CPU of daemon and broker) every 10 s. It gives up after
   ``--backlog-max`` s of draining or beyond ``--rss-abort`` MB, and reports how far it
   got, the daemon's other log events and keepalive disconnections.

**State backend** (issue 12, point 5): ``--state sqlite`` (the default) keeps the
daemon's state in its SQLite file (``synchronous=FULL``: the WAL fsynced at every
commit); ``--state postgresql`` puts it in a throwaway PostgreSQL cluster that the bench
starts itself (tests/pg_support.py's ``Cluster``, imported as the e2e helpers are, but
started with PostgreSQL's durable defaults: ``fsync=on``, ``synchronous_commit=on``,
``full_page_writes=on``; the tests turn them off for speed), a fresh database per
daemon, on the same disk as the SQLite files. ``--state both`` (or
``sqlite,postgresql``) alternates the storms, SQLite then PostgreSQL, ``--storm-runs``
pairs, so that the machine's drift hits both alike, and reports each backend's median
and the ratio PostgreSQL / SQLite against the 0.8 goal (and the median of the paired
ratios). Each PostgreSQL storm also reports the server's CPU (it shares the machine's
cores with the daemon, the broker and the clients, as SQLite's work is in the daemon's
own CPU figure). The latency and backlog parts use the first backend listed.
``--pg-statements`` loads pg_stat_statements and prints the statements that took the
server's time after each PostgreSQL storm.

Every process started here is stopped by PID at the end, and runs under ``setpriv
--pdeathsig KILL`` so that it cannot outlive a benchmark killed outright. The
PostgreSQL server (pg_ctl's daemon) is stopped and its folder deleted at the end and on
SIGTERM; only a benchmark killed with SIGKILL leaves it running.

Latencies use the wall clock of one host on both sides. Run from the repository root:
``.venv/bin/python bench/throughput.py`` (``--quick`` for a small smoke run,
``--parts storm,latency`` to choose, ``--json`` for a JSON object at the end,
``--profile-daemon d.prof`` to run each part's daemon under cProfile, writing
``d-storm0.prof`` and so on, and print its top functions). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import getpass
import json
import math
import os
import platform
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from throughput_clients import esme_id, read_records, windowed_chf

from gateway import wire
from gateway.core.devices import DeviceRecord, DeviceStatus, DeviceType
from gateway.guids import write_guid_list
from gateway.state.inventory import Inventory
from gateway.state.pg_inventory import PostgresInventory
from tests.e2e_support import Broker, Client, Daemon, Home, cs06
from tests.pg_support import USER as PG_USER
from tests.pg_support import Cluster, find_pg_bin

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = Path(__file__).resolve().parent / "throughput_clients.py"
PY = sys.executable
IN_TOPIC = "csp/dcc/alert"
OUT_TOPICS = ["dno/dcc/alert", "gateway/suppressed"]

GOALS = {
    "storm_rate": 10_000.0,  # AD1/s at QoS 1, 0 lost (issue 4)
    "bridge_ratio": 0.5,  # gateway / mosquitto's C bridge (issue 14; issue 4 asked 0.35)
    # Daemon CPU per alert in a storm: half of the 119 us measured at e760e74 on gmqtt
    # (issue 14). Machines differ: compare with the old code run in the same sitting.
    "cpu_us_per_alert": 119.0 / 2,
    "latency_p99_ms": 2.0,  # at 1,000 alerts/s through a fresh daemon (issue 14)
    "latency_after_storm_p99_ms": 5.0,  # the same just after a storm (issue 14)
    "backlog_rss_mb": 150.0,  # peak RSS draining 1,000,000 queued alerts (issue 14)
    "pg_sqlite_ratio": 0.8,  # storm rate on PostgreSQL / on SQLite, same machine and run
}

STATES = ("sqlite", "postgresql")
STATE_LABELS = {
    "sqlite": "SQLite (synchronous=FULL)",
    "postgresql": "PostgreSQL (fsync=on, synchronous_commit=on)",
}


def log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


# -- processes ---------------------------------------------------------------------------


def dies_with_us(argv: list[str]) -> list[str]:
    """``argv`` run so that the kernel SIGKILLs it if this benchmark dies first.

    Without it a benchmark killed outright (or by a process-group SIGTERM that the
    daemon, busy with a huge backlog, takes minutes to act on) leaves a daemon or a
    broker behind, loading the machine for every later measurement.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else argv


class TunedBroker(Broker):
    """The test suite's broker with the benchmark's tuning (and optionally a bridge)."""

    def __init__(
        self, root: Path, *, queue_limit: int = 2_000_000, bridge_to: int | None = None
    ) -> None:
        super().__init__(root)
        lines = [
            f"user {getpass.getuser()}",  # see Broker: keeps persistence writable
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {root}/",
            f"max_queued_messages {queue_limit}",
            "max_inflight_messages 1000",
            "set_tcp_nodelay true",
            f"log_dest file {root}/mosquitto.log",
        ]
        if bridge_to is not None:
            lines += [
                "connection bench-bridge",
                f"address 127.0.0.1:{bridge_to}",
                "topic alert in 1 dno/dcc/ csp/dcc/",  # remote csp/dcc/alert -> dno/dcc/alert
                "topic bench/probe in 1",
                "bridge_protocol_version mqttv311",
                "cleansession true",
                "try_private true",
                "notifications false",
                "start_type automatic",
                "restart_timeout 1",
                "keepalive_interval 60",
            ]
        self.conf.write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        # As Broker's, but the broker dies with the benchmark.
        return dies_with_us(super().command())

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class DurableCluster(Cluster):
    """tests/pg_support.py's throwaway cluster with PostgreSQL's durable defaults.

    The tests start theirs with ``fsync=off`` and ``synchronous_commit=off`` for speed;
    a benchmark compared with SQLite at ``synchronous=FULL`` must not: a commit here
    waits for its WAL flush (``fsync=on``, ``synchronous_commit=on``,
    ``full_page_writes=on``, each set explicitly rather than trusted to the defaults).
    """

    def __init__(self, bin_dir: Path, *, statements: bool = False) -> None:
        super().__init__(bin_dir)
        self.statements = statements

    def start(self) -> None:
        """initdb and start, waiting until it accepts connections."""
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", PG_USER, "-E", "UTF8")
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.root} -c fsync=on "
            "-c full_page_writes=on -c synchronous_commit=on"
        )
        if self.statements:
            options += " -c shared_preload_libraries=pg_stat_statements"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-o", options, "-w",
            "start",
        )  # fmt: skip
        if self.statements:
            self.execute(self.dsn(), "CREATE EXTENSION pg_stat_statements")

    def cpu_seconds(self) -> float:
        """The server's CPU time so far: the postmaster, the children it has reaped
        (closed connections) and those running (backends, WAL writer, checkpointer)."""
        tick = os.sysconf("SC_CLK_TCK")
        try:
            postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
            fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            return 0.0
        total = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                child = stat.read_text().rsplit(")", 1)[1].split()
                if int(child[1]) == postmaster:  # the parent's pid
                    total += int(child[11]) + int(child[12])
        return total / tick

    def settings(self) -> str:
        """The server's durability settings, as it reports them (for the output)."""
        names = ("fsync", "synchronous_commit", "full_page_writes", "wal_sync_method")
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(names),)
            ).fetchall()
            version = conn.execute("SELECT current_setting('server_version')").fetchall()
        shown: dict[str, str] = dict(rows)
        return f"PostgreSQL {version[0][0]}: " + ", ".join(f"{n}={shown.get(n)}" for n in names)

    def top_statements(self, dsn: str, limit: int = 8) -> list[str]:
        """The statements that took the most server time in ``dsn``'s database (the
        view is in the database the extension was created in, ``postgres``)."""
        query = """
            SELECT calls, rows, total_exec_time, mean_exec_time,
                regexp_replace(left(query, 90), '\\s+', ' ', 'g')
            FROM pg_stat_statements
            WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s)
            ORDER BY total_exec_time DESC LIMIT %s
        """
        dbname = conninfo_to_dict(dsn)["dbname"]
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            rows = conn.execute(query, (dbname, limit)).fetchall()
        return [
            f"{total:8.0f} ms {calls:>8,} calls {nrows:>8,} rows {mean * 1000:7.1f} us/call  {q}"
            for calls, nrows, total, mean, q in rows
        ]


class BenchDaemon(Daemon):
    """``poa-gateway run``, optionally under cProfile (``--profile-daemon``)."""

    def __init__(self, home: Home, profile: Path | None = None) -> None:
        super().__init__(home)
        self.profile = profile

    def start(self, *, kill_before_ack: str | None = None, wait_ready: bool = True) -> None:
        # As Daemon.start, but it dies with the benchmark, and optionally under cProfile.
        if kill_before_ack is not None:
            raise ValueError("the benchmark daemon injects no fault")
        self._offset = self.home.log_path.stat().st_size if self.home.log_path.exists() else 0
        if self.profile is None:
            argv = [str(Path(PY).parent / "poa-gateway")]
        else:
            argv = [PY, "-m", "cProfile", "-o", str(self.profile), "-m", "gateway"]
        with self.home.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                dies_with_us([*argv, "run", "--config", str(self.home.config)]),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        if wait_ready:
            self.wait_for("gateway.ready", timeout=30)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def timed_stop(self, timeout: float = 300) -> float:
        """SIGTERM; seconds until it exited (SIGKILL after ``timeout``)."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"  daemon still running {timeout:.0f} s after SIGTERM: SIGKILL")
            self.kill()
        self.proc = None
        return time.monotonic() - started

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


class DecisionLog:
    """The daemon's ``alert.*`` log lines, read as they are written.

    ``alert.forwarded`` / ``alert.suppressed`` are logged after the decision's durable
    commit, just before the handler returns and the PUBACK is written: their count and
    the last one's timestamp say when the inputs were done with, not only when the
    outputs appeared.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self.partial = b""
        self.decided = 0
        self.duplicates = 0
        self.last_ms = 0
        self.events: Counter[str] = Counter()  # every event name seen

    def poll(self) -> int:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        last = b""
        names: Counter[bytes] = Counter()
        for line in lines:
            at = line.find(b'"event":"') + 9
            if at < 9:
                names[b"(not json)"] += 1
                continue
            name = line[at : line.find(b'"', at)]
            names[name] += 1
            if name.startswith(b"alert."):
                last = line
        for name, n in names.items():
            self.events[name.decode(errors="replace")] += n
        self.duplicates = self.events["alert.duplicate"]
        self.decided = sum(n for e, n in self.events.items() if e.startswith("alert.")) - (
            self.duplicates
        )
        if last:
            stamp = json.loads(last)["ts"]
            when = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
            self.last_ms = int(when.timestamp() * 1000)
        return self.decided

    def others(self) -> str:
        """The events other than per-alert decisions, with their counts."""
        rest = [f"{e} x{n:,}" for e, n in self.events.most_common() if not e.startswith("alert.")]
        return ", ".join(rest) or "none"

    @property
    def forwarded_logged(self) -> bool:
        """Whether forwarded alerts are logged (at info) at all, or only suppressed ones."""
        return self.events["alert.forwarded"] > 0

    def wait(self, total: int, suppressed: int, idle_s: float) -> bool:
        """Until the ``total`` alerts (or the ``suppressed`` ones, if forwarded alerts are
        not logged) are decided and logged (True), or no progress for ``idle_s`` (False)."""
        seen, since = self.poll(), time.monotonic()
        while seen < (total if self.forwarded_logged else suppressed):
            time.sleep(0.2)
            now = self.poll()
            if now != seen:
                seen, since = now, time.monotonic()
            elif time.monotonic() - since > idle_s:
                return False
        return True


class Child:
    """A client process (publisher or sink); a thread reads its stdout lines."""

    def __init__(self, argv: list[str], stderr: Path) -> None:
        self.name = stderr.stem
        self._stderr_path = stderr
        with stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                dies_with_us(argv), stdout=subprocess.PIPE, stderr=err, cwd=ROOT
            )
        self.seen: dict[str, list[str]] = {}
        self.progress = 0
        self.progress_at = time.monotonic()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            word, *fields = raw.decode().split()
            with self._changed:
                if word == "PROGRESS":
                    value = int(fields[0])
                    if value != self.progress:
                        self.progress_at = time.monotonic()
                    self.progress = value
                else:
                    self.seen[word] = fields
                self._changed.notify_all()
        with self._changed:
            self.seen.setdefault("EOF", [])
            self._changed.notify_all()

    def wait_for(self, word: str, timeout: float) -> list[str]:
        with self._changed:
            self._changed.wait_for(lambda: word in self.seen or "EOF" in self.seen, timeout)
            if word not in self.seen:
                tail = self._stderr_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.name}: no {word} line; stderr:\n{tail}")
            return self.seen[word]

    def has(self, word: str) -> bool:
        with self._changed:
            return word in self.seen

    def stop(self, timeout: float = 60) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._thread.join(timeout=5)


class Run:
    """Everything one benchmark run starts, stopped by PID in :meth:`close`."""

    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        self.root = root
        self.args = args
        self.brokers: list[TunedBroker] = []
        self.daemons: list[BenchDaemon] = []
        self.children: list[Child] = []
        self.pg: DurableCluster | None = None  # started by main() when a state needs it
        self.dsns: dict[Path, str] = {}  # a home's folder -> its PostgreSQL database

    def broker(self, name: str, **kw: Any) -> TunedBroker:
        broker = TunedBroker(self.root / name, **kw)
        self.brokers.append(broker)
        broker.start()
        return broker

    def child(self, argv: list[str], name: str) -> Child:
        child = Child(argv, self.root / f"{name}.stderr")
        self.children.append(child)
        return child

    def sink(self, port: int, name: str, expect: int) -> tuple[Child, Path]:
        out = self.root / f"{name}.sink"
        argv = [PY, str(CLIENTS), "sink", "--port", str(port), "--out", str(out)]
        argv += ["--expect", str(expect), "--name", name]
        for topic in OUT_TOPICS:
            argv += ["--topic", topic]
        sink = self.child(argv, f"{name}-sink")
        sink.wait_for("READY", 30)
        return sink, out

    def publisher(
        self, port: int, name: str, count: int, *, rate: float = 0.0, prefix: str | None = None
    ) -> tuple[Child, Path]:
        times = self.root / f"{name}.times"
        argv = [PY, str(CLIENTS), "pub", "--port", str(port), "--count", str(count)]
        argv += ["--prefix", prefix or name, "--windowed", str(self.args.windowed)]
        argv += ["--window", str(self.args.pub_window), "--times", str(times)]
        argv += ["--topic", IN_TOPIC, "--rate", str(rate)]
        return self.child(argv, f"{name}-pub"), times

    def close(self) -> None:
        for child in self.children:
            if child.proc.poll() is None:
                child.proc.kill()
                child.proc.wait()
        for daemon in self.daemons:
            daemon.kill()
        for broker in self.brokers:
            broker.kill()
        if self.pg is not None:
            pg, self.pg = self.pg, None
            pg.stop()


# -- the gateway's home ------------------------------------------------------------------


def make_home(run: Run, name: str, port: int, state: str | None = None) -> Home:
    """A home whose GUID list and inventory hold ``--windowed`` listed ESMEs, one per CHF,
    its state in SQLite or in a fresh database of the bench's PostgreSQL cluster
    (``state``; the first of ``--state`` when not given)."""
    state = state or run.args.states[0]
    home = Home(run.root / name, port)
    n = run.args.windowed
    write_guid_list(
        home.root / "guid-list.bin",
        [int.from_bytes(esme_id(i), "big") for i in range(n)],
        sha256=bytes(32),
        imported_at_ms=0,
    )
    devices = [
        DeviceRecord(
            device_id=esme_id(i),
            device_type=DeviceType.ESME,
            smets=2,
            manufacturer="Landis+Gyr",
            status=DeviceStatus.COMMISSIONED,
            chf_id=windowed_chf(i),
        )
        for i in range(n)
    ]
    with Inventory.open(home.root / "inventory.sqlite") as inventory:
        inventory.upsert_many(devices, 0)
    text = home.config.read_text()
    if run.args.gateway_inflight:
        text = text.replace("[broker]\n", f"[broker]\ninflight = {run.args.gateway_inflight}\n", 1)
    if state == "postgresql":
        assert run.pg is not None, "main() starts the cluster for --state postgresql"
        dsn = run.dsns[home.root] = run.pg.new_database()
        text += f'[state]\nbackend = "postgresql"\ndsn = "{dsn}"\n'
        # On PostgreSQL the daemon reads the inventory from that database.
        with PostgresInventory.open(dsn) as shared:
            shared.upsert_many(devices, 0)
    home.config.write_text(text)
    return home


def start_daemon(run: Run, home: Home, *, profile: Path | None = None) -> BenchDaemon:
    daemon = BenchDaemon(home, profile)
    run.daemons.append(daemon)
    daemon.start()
    return daemon


def open_windows(run: Run, home: Home, daemon: BenchDaemon, port: int) -> None:
    """Signed on-demand CS06 commands to every listed ESME; waits until all are tracked."""
    n = run.args.windowed

    async def send() -> None:
        client = Client(port, f"cs06-{home.root.name}")
        await client.start()
        try:
            for i in range(n):
                await client.command(cs06(home, 1000, target=esme_id(i)))
        finally:
            await client.close()

    asyncio.run(send())
    deadline = time.monotonic() + 60
    tracked = 0
    while time.monotonic() < deadline:
        tracked = sum(1 for e in daemon.events() if e.get("event") == "activation.tracked")
        if tracked >= n:
            return
        time.sleep(0.1)
    raise RuntimeError(f"only {tracked} of {n} CS06 commands opened a window")


# -- /proc --------------------------------------------------------------------------------


def proc_status_kb(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (VmHWM, VmRSS), 0 if gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- measuring ----------------------------------------------------------------------------


@dataclass
class Outputs:
    """What the sink saw for one stream of ``sent`` alerts."""

    sent: int
    received: int = 0
    unique: int = 0
    lost: int = 0
    duplicates: int = 0
    forwarded: int = 0
    suppressed: int = 0
    wrong_outcome: int = 0  # suppressed from an unwindowed CHF, or forwarded from a windowed
    undecodable: int = 0
    first_pub_ns: int = 0
    last_pub_ns: int = 0
    first_rx_ns: int = 0
    last_rx_ns: int = 0
    complete: bool = False
    pub_cpu_s: float = 0.0
    sink_cpu_s: float = 0.0
    latency_ms: list[float] = field(default_factory=list, repr=False)  # rx - sent_at field
    exact_ms: list[float] = field(default_factory=list, repr=False)  # rx - exact write time
    exact_by_topic: dict[str, list[float]] = field(default_factory=dict, repr=False)

    @property
    def rate_rx(self) -> float:
        """Alerts per second, first receipt to last receipt."""
        span = (self.last_rx_ns - self.first_rx_ns) / 1e9
        return (self.unique - 1) / span if span > 0 else 0.0

    @property
    def rate_pub(self) -> float:
        """Alerts per second, first publish to last receipt."""
        span = (self.last_rx_ns - self.first_pub_ns) / 1e9
        return self.unique / span if span > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if not isinstance(v, list | dict)}
        out["rate_rx"] = round(self.rate_rx, 1)
        out["rate_pub"] = round(self.rate_pub, 1)
        out["latency_ms"] = percentiles(self.latency_ms)
        out["exact_latency_ms"] = percentiles(self.exact_ms)
        out["exact_latency_ms_by_topic"] = {
            t: percentiles(v) for t, v in self.exact_by_topic.items()
        }
        return out


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    s = sorted(values)

    def at(q: float) -> float:
        return round(s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))], 3)

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": round(s[-1], 3)}


def wait_outputs(
    sink: Child,
    pub: Child,
    expect: int,
    *,
    idle_s: float,
    every_s: float = 0.0,
    label: str = "",
    note: Callable[[], str] = str,
    abort: Callable[[], str | None] = lambda: None,
) -> bool:
    """Until the sink has ``expect`` messages (True), stops making progress or ``abort``
    gives a reason (False). Every ``every_s`` seconds, a progress line ending in ``note()``."""
    started = time.monotonic()
    shown = started
    last_count, last_at = 0, started
    while True:
        if sink.has("ALL"):
            return True
        time.sleep(0.05)
        now = time.monotonic()
        if every_s and now - shown >= every_s:
            count = sink.progress
            rate = (count - last_count) / (now - last_at)
            log(f"  {label}{count:,} of {expect:,} outputs ({rate:,.0f}/s){note()}")
            shown, last_count, last_at = now, count, now
            reason = abort()
            if reason:
                log(f"  giving up: {reason}")
                return False
        if pub.has("DONE") and now - max(sink.progress_at, started) > idle_s:
            return False
        if sink.has("EOF") or (pub.has("EOF") and not pub.has("DONE")):
            return False


def collect(
    sink: Child,
    sink_out: Path,
    pub: Child,
    times_path: Path,
    *,
    prefix: str,
    sent: int,
    judged: bool = True,
) -> Outputs:
    """Stop the sink (after a short grace for late duplicates) and decode what it saw."""
    time.sleep(0.5)
    done = pub.wait_for("DONE", 600)
    pub.proc.wait(timeout=60)
    sink_cpu = cpu_seconds(sink.proc.pid)
    sink.stop()
    pub.stop()
    times = array("q")
    times.frombytes(times_path.read_bytes())
    out = Outputs(
        sent=sent,
        first_pub_ns=int(done[0]),
        last_pub_ns=int(done[1]),
        pub_cpu_s=round(float(done[3]), 2),
        sink_cpu_s=round(sink_cpu, 2),
    )
    seen: Counter[int] = Counter()
    head = prefix + "-"
    first, last = 0, 0
    for topic, rx, payload in read_records(sink_out, OUT_TOPICS):
        try:
            if topic == "dno/dcc/alert":
                alert = wire.decode_dcc_alert(payload)
                alert_id, sent_at, suppressed = alert.alert_id, alert.sent_at, False
            else:
                record = wire.decode_suppression_record(payload)
                alert_id, sent_at, suppressed = record.alert_id, record.raised_at, True
        except wire.WireError:
            out.undecodable += 1
            continue
        if not alert_id.startswith(head):
            continue
        seq = int(alert_id[len(head) :])
        out.received += 1
        seen[seq] += 1
        if seen[seq] > 1:
            continue
        first = rx if not first else min(first, rx)
        last = max(last, rx)
        if suppressed:
            out.suppressed += 1
        else:
            out.forwarded += 1
        if judged and suppressed != (seq % 2 == 0):  # even numbers: from windowed CHFs
            out.wrong_outcome += 1
        out.latency_ms.append(rx / 1e6 - sent_at)
        if 0 <= seq < len(times) and times[seq]:
            exact = (rx - times[seq]) / 1e6
            out.exact_ms.append(exact)
            out.exact_by_topic.setdefault(topic, []).append(exact)
    out.unique = len(seen)
    out.duplicates = out.received - out.unique
    out.lost = sum(1 for seq in range(sent) if seq not in seen)
    out.first_rx_ns, out.last_rx_ns = first, last
    out.complete = out.lost == 0
    return out


def show(name: str, o: Outputs) -> None:
    lat, exact = percentiles(o.latency_ms), percentiles(o.exact_ms)
    log(
        f"{name}: {o.unique:,} of {o.sent:,} alerts out; {o.rate_rx:,.0f}/s first->last "
        f"receipt, {o.rate_pub:,.0f}/s first publish->last receipt "
        f"({(o.last_rx_ns - o.first_pub_ns) / 1e9:.2f} s)"
    )
    log(
        f"  lost {o.lost:,}, duplicates {o.duplicates:,}, forwarded {o.forwarded:,}, "
        f"suppressed {o.suppressed:,}, wrong outcome {o.wrong_outcome:,}, "
        f"undecodable {o.undecodable}; CPU publisher {o.pub_cpu_s:.1f} s, "
        f"sink {o.sink_cpu_s:.1f} s"
    )
    if lat:
        log(
            f"  receipt - sent_at (ms field): p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, "
            f"max {lat['max']:.1f} ms; receipt - exact write time: p50 {exact['p50']:.2f} ms, "
            f"p99 {exact['p99']:.2f} ms"
        )


# -- the parts ---------------------------------------------------------------------------


def part_storm(run: Run, results: dict[str, Any]) -> None:
    """``--storm-runs`` storms (fresh broker and daemon each); the median is reported,
    as for the bridge: this 2-CPU VM's speed wanders by +-20 % from run to run.

    With more than one ``--state``, each run is a round of one storm per backend, in
    the order given (SQLite, PostgreSQL, SQLite, PostgreSQL, ...), so that a slow spell
    of the machine falls on both rather than on one backend's storms.
    ``results["storm"]`` is the first backend's median (the figure of a one-backend
    run); ``results["storms"]`` holds every backend's."""
    args = run.args
    states: list[str] = args.states
    runs: dict[str, list[dict[str, Any]]] = {state: [] for state in states}
    for i in range(args.storm_runs):
        for state in states:
            last = i == args.storm_runs - 1 and state == states[-1]
            runs[state].append(storm_once(run, i, state, last=last))
    medians: dict[str, dict[str, Any]] = {}
    for state, done in runs.items():
        ranked = sorted(done, key=lambda r: float(r["rate_rx"]))
        medians[state] = ranked[len(ranked) // 2] | {"runs_rate_rx": [r["rate_rx"] for r in done]}
    results["storm"] = medians[states[0]]
    if len(states) > 1:
        results["storms"] = medians
        show_state_ratio(medians)
    if "latency" in args.parts and "latency_after_storm" in runs[states[-1]][-1]:
        results["latency_after_storm"] = runs[states[-1]][-1].pop("latency_after_storm")


def show_state_ratio(medians: dict[str, dict[str, Any]]) -> None:
    """Print each backend's storm rates and median, and PostgreSQL / SQLite."""
    log("storm rates by state backend (alternated, same machine and run):")
    for state, median in medians.items():
        rates = ", ".join(f"{r:,.0f}" for r in median["runs_rate_rx"])
        log(f"  {STATE_LABELS[state]}: {rates} /s; median {median['rate_rx']:,.0f}/s")
    if "sqlite" in medians and "postgresql" in medians:
        pg, lite = medians["postgresql"], medians["sqlite"]
        ratio = pg["rate_rx"] / lite["rate_rx"] if lite["rate_rx"] else 0.0
        pairs = [p / q for p, q in zip(pg["runs_rate_rx"], lite["runs_rate_rx"], strict=True) if q]
        paired = sorted(pairs)[len(pairs) // 2] if pairs else 0.0
        goal = GOALS["pg_sqlite_ratio"]
        log(
            f"  PostgreSQL / SQLite: {ratio:.2f} (ratio of the medians; median of the "
            f"{len(pairs)} paired runs {paired:.2f}), goal >= {goal}: "
            f"{'met' if ratio >= goal else 'MISSED'}"
        )
        medians["postgresql"]["ratio_to_sqlite"] = round(ratio, 3)
        medians["postgresql"]["paired_ratios_to_sqlite"] = [round(r, 3) for r in pairs]


def storm_once(run: Run, index: int, state: str, *, last: bool) -> dict[str, Any]:
    """One storm with the state in ``state``; after the last one, the latency part runs
    through the same daemon."""
    args = run.args
    several = len(args.states) > 1
    on = f", state on {STATE_LABELS[state]}" if several or state != "sqlite" else ""
    log(f"storm run {index + 1}: {args.alerts:,} AD1s, {args.windowed} windows{on}")
    # One backend: the names of a run before --state existed (storm0, ...).
    name = f"storm{index}" + (f"-{state}" if several else "")
    broker = run.broker(f"{name}-broker")
    home = make_home(run, f"{name}-gw", broker.port, state)
    daemon = start_daemon(run, home, profile=profile_path(args, name))
    open_windows(run, home, daemon, broker.port)
    log(f"  daemon pid {daemon.pid} ready, {args.windowed} windows open")
    sink, sink_out = run.sink(broker.port, name, args.alerts)
    cpu0, bcpu0 = cpu_seconds(daemon.pid), cpu_seconds(broker.proc.pid if broker.proc else 0)
    pg = run.pg if state == "postgresql" else None
    pgcpu0 = pg.cpu_seconds() if pg is not None else 0.0
    decisions = DecisionLog(home.log_path)
    t0 = time.monotonic()
    pub, times = run.publisher(broker.port, name, args.alerts)
    wait_outputs(sink, pub, args.alerts, idle_s=args.idle, every_s=5, label="storm ")
    t_outputs = time.monotonic()
    settled = decisions.wait(args.alerts, (args.alerts + 1) // 2, args.idle)
    wall = (time.monotonic() if settled else t_outputs) - t0
    cpu = cpu_seconds(daemon.pid) - cpu0
    bcpu = cpu_seconds(broker.proc.pid if broker.proc else 0) - bcpu0
    pgcpu = pg.cpu_seconds() - pgcpu0 if pg is not None else 0.0
    hwm = proc_status_kb(daemon.pid, "VmHWM")
    out = collect(sink, sink_out, pub, times, prefix=name, sent=args.alerts)
    label = f"storm run {index + 1} (gateway{', ' + state if several else ''})"
    show(label, out)
    durable_s = show_durable(decisions, out)
    log(f"  other daemon log events during the storm: {decisions.others()}")
    log(
        f"  daemon CPU {cpu:.1f} s ({100 * cpu / wall:.0f}% of one core over {wall:.1f} s, "
        f"{1e6 * cpu / max(out.unique, 1):.0f} us/alert); broker CPU {bcpu:.1f} s; "
        f"daemon peak RSS {hwm / 1024:.0f} MB"
        + (f"; PostgreSQL server CPU {pgcpu:.1f} s" if pg is not None else "")
    )
    if state == "postgresql" and run.pg is not None and run.pg.statements:
        log("  PostgreSQL's time by statement (pg_stat_statements):")
        for line in run.pg.top_statements(run.dsns[home.root]):
            log(f"    {line}")
    result = out.summary() | {
        "state": state,
        "daemon_cpu_s": round(cpu, 2),
        "daemon_us_per_alert": round(1e6 * cpu / max(out.unique, 1), 1),
        "broker_cpu_s": round(bcpu, 2),
        "pg_server_cpu_s": round(pgcpu, 2),
        "daemon_peak_rss_mb": round(hwm / 1024, 1),
        "decided_logged": decisions.decided,
        "durable_s": round(durable_s, 3),
        "log_events": dict(decisions.events),
        "durable_rate": round(out.unique / durable_s, 1) if durable_s > 0 else 0.0,
    }
    if last and "latency" in args.parts:
        after: dict[str, Any] = {}
        part_latency(run, after, broker.port, "the storm's daemon", "latency_after_storm")
        result["latency_after_storm"] = after["latency_after_storm"]
    daemon.timed_stop(60)
    if daemon.profile is not None:
        show_profile(daemon.profile)
    broker.kill()
    return result


def show_durable(decisions: DecisionLog, out: Outputs) -> float:
    """Print (and return) first publish -> last decision logged after its commit, in s."""
    span = (decisions.last_ms - out.first_pub_ns // 1_000_000) / 1000
    lag = decisions.last_ms - out.last_rx_ns // 1_000_000
    which = "decisions" if decisions.forwarded_logged else "suppressions (forwards log at debug)"
    log(
        f"  durable: {decisions.decided:,} {which} logged after their commit "
        f"(log duplicates {decisions.duplicates}); first publish -> last one {span:.2f} s, "
        f"{lag:,} ms after the last output"
    )
    return span


def part_latency(
    run: Run, results: dict[str, Any], port: int, which: str, key: str = "latency"
) -> None:
    args = run.args
    count = int(args.latency_rate * args.latency_seconds)
    log(f"latency: {count:,} AD1s paced at {args.latency_rate:,.0f}/s through {which}")
    sink, sink_out = run.sink(port, "latency", count)
    pub, times = run.publisher(port, "latency", count, rate=args.latency_rate)
    wait_outputs(sink, pub, count, idle_s=args.idle)
    out = collect(sink, sink_out, pub, times, prefix="latency", sent=count)
    show("latency (gateway)", out)
    results[key] = out.summary() | {"rate": args.latency_rate, "daemon": which}


def part_bridge(run: Run, results: dict[str, Any]) -> None:
    """``--bridge-runs`` runs (fresh brokers each); the median rate is the reference."""
    args = run.args
    log(
        f"bridge: {args.alerts:,} AD1s through mosquitto's bridge (broker A -> broker B), "
        f"{args.bridge_runs} run(s)"
    )
    runs: list[dict[str, Any]] = []
    for i in range(args.bridge_runs):
        a = run.broker(f"bridge{i}-a")
        b = run.broker(f"bridge{i}-b", bridge_to=a.port)
        probe_bridge(a.port, b.port)
        name = f"bridge{i}"
        sink, sink_out = run.sink(b.port, name, args.alerts)
        t0 = time.monotonic()
        bcpu0 = sum(cpu_seconds(x.proc.pid) for x in (a, b) if x.proc)
        pub, times = run.publisher(a.port, name, args.alerts)
        wait_outputs(sink, pub, args.alerts, idle_s=args.idle)
        wall = time.monotonic() - t0
        bcpu = sum(cpu_seconds(x.proc.pid) for x in (a, b) if x.proc) - bcpu0
        out = collect(sink, sink_out, pub, times, prefix=name, sent=args.alerts, judged=False)
        show(f"bridge run {i + 1} (mosquitto C bridge)", out)
        log(f"  brokers' CPU {bcpu:.1f} s over {wall:.1f} s ({100 * bcpu / wall:.0f}%)")
        runs.append(out.summary() | {"brokers_cpu_s": round(bcpu, 2)})
        a.kill()
        b.kill()
    ranked = sorted(runs, key=lambda r: float(r["rate_rx"]))
    median = ranked[len(ranked) // 2]
    results["bridge"] = median | {"runs_rate_rx": [r["rate_rx"] for r in runs]}


def probe_bridge(a_port: int, b_port: int) -> None:
    """Until a message published on A reaches a subscriber on B through the bridge."""
    sub = subprocess.Popen(
        ["mosquitto_sub", "-p", str(b_port), "-t", "bench/probe", "-q", "1", "-C", "1"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sub.poll() is None:
            subprocess.run(
                ["mosquitto_pub", "-p", str(a_port), "-t", "bench/probe", "-q", "1", "-m", "x"],
                check=False,
            )
            with contextlib.suppress(subprocess.TimeoutExpired):
                sub.wait(timeout=0.3)
        if sub.poll() is None:
            raise RuntimeError("the bridge did not carry the probe within 20 s")
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()


def part_backlog(run: Run, results: dict[str, Any]) -> None:
    args = run.args
    n = args.backlog
    log(f"backlog: {n:,} AD1s queued while the daemon is down, then drained")
    broker = run.broker("backlog-broker", queue_limit=max(2_000_000, n + 100_000))
    home = make_home(run, "backlog-gw", broker.port)
    daemon = start_daemon(run, home)
    open_windows(run, home, daemon, broker.port)
    daemon.timed_stop(60)  # SIGTERM: the broker keeps its session and queues for it
    log("  daemon stopped (persistent session kept); publishing the backlog")
    sink, sink_out = run.sink(broker.port, "backlog", n)
    pub, times = run.publisher(broker.port, "backlog", n)
    t0 = time.monotonic()
    while not pub.has("DONE"):
        if pub.has("EOF"):
            raise RuntimeError("the backlog publisher failed")
        time.sleep(0.5)
        if time.monotonic() - t0 > 5:
            log(f"  published {pub.progress:,} of {n:,}")
            t0 = time.monotonic()
    done = pub.wait_for("DONE", 1)
    publish_s = (int(done[2]) - int(done[0])) / 1e9
    bhwm = proc_status_kb(broker.proc.pid if broker.proc else 0, "VmRSS")
    log(
        f"  {n:,} queued in {publish_s:.1f} s ({n / publish_s:,.0f}/s); "
        f"broker RSS {bhwm / 1024:.0f} MB"
    )
    start_ns = time.time_ns()
    decisions = DecisionLog(home.log_path)
    daemon.profile = profile_path(args, "backlog")
    daemon.start(wait_ready=False)
    cpu0 = cpu_seconds(daemon.pid)

    broker_pid = broker.proc.pid if broker.proc else 0
    last_cpu = [time.monotonic(), cpu_seconds(daemon.pid), cpu_seconds(broker_pid)]

    def rss() -> str:
        now, d, b = time.monotonic(), cpu_seconds(daemon.pid), cpu_seconds(broker_pid)
        span = max(now - last_cpu[0], 1e-3)
        text = (
            f", daemon RSS {proc_status_kb(daemon.pid, 'VmRSS') / 1024:,.0f} MB, "
            f"CPU daemon {100 * (d - last_cpu[1]) / span:.0f}% "
            f"broker {100 * (b - last_cpu[2]) / span:.0f}%"
        )
        last_cpu[:] = [now, d, b]
        return text

    drain_started = time.monotonic()

    def too_long() -> str | None:
        spent = time.monotonic() - drain_started
        return f"not drained after {spent:.0f} s" if spent > args.backlog_max else None

    def too_big() -> str | None:
        mb = proc_status_kb(daemon.pid, "VmRSS") / 1024
        return f"daemon RSS {mb:,.0f} MB > {args.rss_abort} MB" if mb > args.rss_abort else None

    drained = wait_outputs(
        sink,
        pub,
        n,
        idle_s=args.backlog_idle,
        every_s=10,
        label="drain ",
        note=rss,
        abort=lambda: too_big() or too_long(),
    )
    end_ns = time.time_ns()
    if drained:
        decisions.wait(n, (n + 1) // 2, args.backlog_idle)
    else:
        decisions.poll()
    cpu = cpu_seconds(daemon.pid) - cpu0
    hwm = proc_status_kb(daemon.pid, "VmHWM")
    log(f"  drained={drained}; daemon peak RSS {hwm / 1024:.0f} MB; analysing the outputs")
    stop_s = daemon.timed_stop(120)
    log(f"  daemon stopped in {stop_s:.1f} s after SIGTERM")
    out = collect(sink, sink_out, pub, times, prefix="backlog", sent=n)
    if daemon.profile is not None:
        show_profile(daemon.profile)
    drain_s = (out.last_rx_ns - start_ns) / 1e9 if out.last_rx_ns else (end_ns - start_ns) / 1e9
    show("backlog", out)
    durable_ms = decisions.last_ms - start_ns // 1_000_000
    which = "decisions" if decisions.forwarded_logged else "suppressions (forwards log at debug)"
    log(
        f"  durable: {decisions.decided:,} {which} logged after their commit "
        f"(log duplicates {decisions.duplicates}); daemon start -> last one "
        f"{durable_ms / 1000:.1f} s"
    )
    log(f"  other daemon log events during the drain: {decisions.others()}")
    broker_log = (broker.root / "mosquitto.log").read_text(errors="replace")
    timeouts = broker_log.count("has exceeded timeout")
    log(f"  broker log: the gateway disconnected for keepalive timeout {timeouts} time(s)")
    log(
        f"  drain time {drain_s:.1f} s from daemon start to last output "
        f"({out.unique / drain_s:,.0f}/s); daemon CPU {cpu:.0f} s; peak RSS {hwm / 1024:.0f} MB"
    )
    results["backlog"] = out.summary() | {
        "count": n,
        "publish_s": round(publish_s, 2),
        "drain_s": round(drain_s, 2),
        "drain_rate": round(out.unique / drain_s, 1) if drain_s > 0 else 0.0,
        "daemon_cpu_s": round(cpu, 1),
        "daemon_peak_rss_mb": round(hwm / 1024, 1),
        "broker_rss_queued_mb": round(bhwm / 1024, 1),
        "decided_logged": decisions.decided,
        "durable_s": round(durable_ms / 1000, 2),
        "drained": drained,
        "daemon_stop_s": round(stop_s, 1),
        "log_events": dict(decisions.events),
        "keepalive_timeouts": timeouts,
    }
    broker.kill()


def profile_path(args: argparse.Namespace, part: str) -> Path | None:
    """Where ``part``'s daemon writes its cProfile data (None: not profiled)."""
    base: Path | None = args.profile_daemon
    return None if base is None else base.with_name(f"{base.stem}-{part}{base.suffix}")


def show_profile(path: Path) -> None:
    for _ in range(100):
        if path.exists():
            break
        time.sleep(0.1)
    if not path.exists():
        log(f"no profile written at {path}")
        return
    stats = pstats.Stats(str(path))
    print(f"\n== daemon profile ({path}), by own time ==")
    stats.sort_stats("tottime").print_stats(25)
    print("== by cumulative time ==")
    stats.sort_stats("cumulative").print_stats(30)


# -- summary ------------------------------------------------------------------------------


def summary(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    rows: list[tuple[str, str, str, str]] = []
    verdicts: dict[str, bool] = {}

    def row(goal: str, target: str, got: str, ok: bool | None) -> None:
        mark = "-" if ok is None else ("met" if ok else "MISSED")
        rows.append((goal, target, got, mark))
        if ok is not None:
            verdicts[goal] = ok

    storm, bridge = results.get("storm"), results.get("bridge")
    storms: dict[str, dict[str, Any]] = results.get("storms") or (
        {args.states[0]: storm} if storm else {}
    )

    def on(state: str) -> str:
        # The rows of a SQLite-only run keep their names.
        return f" ({state})" if len(storms) > 1 or state != "sqlite" else ""

    for state, one in storms.items():
        ok = one["rate_rx"] >= GOALS["storm_rate"] and one["lost"] == 0
        runs = "/".join(f"{r / 1000:.1f}k" for r in one["runs_rate_rx"])
        got = (
            f"{one['rate_rx']:,.0f}/s (median of {runs}), lost {one['lost']}, "
            f"dups {one['duplicates']}"
        )
        row(f"storm AD1/s at QoS 1 (sink){on(state)}", ">= 10,000/s, 0 lost", got, ok)
        got = f"{one['durable_rate']:,.0f}/s (first publish -> last suppression committed)"
        row(f"storm AD1/s to durability{on(state)}", "(info)", got, None)
        split = f"{one['suppressed']:,} / {one['forwarded']:,}"
        row(f"storm suppressed / forwarded{on(state)}", "~half / half, 0 wrong", split, None)
        rss = f"{one['daemon_peak_rss_mb']:.0f} MB"
        row(f"storm daemon peak RSS{on(state)}", "(info)", rss, None)
        cpu = f"{one['daemon_us_per_alert']:.0f} us"
        if state == "postgresql":
            cpu += f" (and the server's {1e6 * one['pg_server_cpu_s'] / one['sent']:.0f} us)"
        if state == args.states[0]:
            goal_us = GOALS["cpu_us_per_alert"]
            ok_cpu = one["daemon_us_per_alert"] <= goal_us
            row(f"storm daemon CPU per alert{on(state)}", f"<= {goal_us:.0f} us", cpu, ok_cpu)
        else:
            row(f"storm daemon CPU per alert{on(state)}", "(info)", cpu, None)
    pg = storms.get("postgresql", {})
    if "ratio_to_sqlite" in pg:
        ratio = pg["rate_rx"] / storms["sqlite"]["rate_rx"]  # as show_state_ratio printed it
        paired = sorted(pg["paired_ratios_to_sqlite"])
        got = (
            f"{ratio:.2f} (medians {pg['rate_rx']:,.0f} / {storms['sqlite']['rate_rx']:,.0f}; "
            f"paired runs {'/'.join(f'{r:.2f}' for r in paired)})"
        )
        goal = GOALS["pg_sqlite_ratio"]
        row("storm PostgreSQL / SQLite", f">= {goal}", got, ratio >= goal)
    if bridge:
        runs = "/".join(f"{r / 1000:.1f}k" for r in bridge["runs_rate_rx"])
        got = f"{bridge['rate_rx']:,.0f}/s (median of {runs}), lost {bridge['lost']}"
        row("C bridge AD1/s", "(reference)", got, None)
    if storm and bridge and bridge["rate_rx"]:
        ratio = storm["rate_rx"] / bridge["rate_rx"]
        name = f"gateway / C bridge{on(args.states[0])}"
        goal = GOALS["bridge_ratio"]
        row(name, f">= {goal}", f"{ratio:.2f}", ratio >= goal)
    for key, label in (("latency", "fresh daemon"), ("latency_after_storm", "after the storm")):
        latency = results.get(key)
        if latency and latency["exact_latency_ms"]:
            p = latency["latency_ms"]
            e = latency["exact_latency_ms"]
            got = (
                f"p50 {p['p50']:.2f} / p99 {p['p99']:.2f} ms (exact p99 {e['p99']:.2f} ms), "
                f"{latency['rate_rx']:,.0f}/s out"
            )
            goal = GOALS["latency_p99_ms" if key == "latency" else "latency_after_storm_p99_ms"]
            ok = p["p99"] <= goal and latency["lost"] == 0
            name = f"latency at {args.latency_rate:,.0f}/s, {label}{on(args.states[0])}"
            row(name, f"p99 <= {goal:g} ms", got, ok)
    backlog = results.get("backlog")
    if backlog:
        got = (
            f"{backlog['unique']:,} of {backlog['count']:,} in {backlog['drain_s']:.0f} s "
            f"({backlog['drain_rate']:,.0f}/s), lost {backlog['lost']}, "
            f"dups {backlog['duplicates']}, RSS {backlog['daemon_peak_rss_mb']:.0f} MB"
        )
        if not backlog["drained"]:
            got = "NOT drained: " + got
        ok = (
            backlog["drained"]
            and backlog["lost"] == 0
            and backlog["duplicates"] == 0
            and backlog["daemon_peak_rss_mb"] < GOALS["backlog_rss_mb"]
        )
        target = f"0 lost, 0 dups, RSS < {GOALS['backlog_rss_mb']:.0f} MB"
        row(f"backlog drained{on(args.states[0])}", target, got, ok)
    widths = [
        max(len(r[i]) for r in [*rows, ("goal", "target", "measured", "verdict")]) for i in range(4)
    ]
    print("\n== summary against the goals ==")
    for r in [("goal", "target", "measured", "verdict"), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)))
    return {"goals": GOALS, "met": verdicts}


class Interrupted(Exception):
    """SIGTERM: stop everything started, then print what was measured so far."""


def _interrupted(signum: int, _frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


def revision() -> str:
    """The repository's commit (and whether the tree has changes), for the record."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "gateway", "gbcs"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown revision"
    return head + (" (gateway/gbcs modified)" if dirty else "")


def parse_states(parser: argparse.ArgumentParser, text: str) -> list[str]:
    """``--state``'s backends, in order; a usage error naming any unknown one."""
    names = list(STATES) if text.strip() == "both" else [n.strip() for n in text.split(",")]
    unknown = [n for n in names if n not in STATES]
    if unknown or not names or len(set(names)) != len(names):
        parser.error(
            f"--state: expected sqlite, postgresql, both or a comma list of them once each, "
            f"got {text!r}"
        )
    return names


def start_cluster(run: Run, parser: argparse.ArgumentParser) -> None:
    """Start the throwaway PostgreSQL cluster for ``--state postgresql``."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        parser.error("--state postgresql: PostgreSQL is not installed (no initdb found)")
    run.pg = DurableCluster(bin_dir, statements=run.args.pg_statements)
    run.pg.start()
    log(f"state: a throwaway cluster in {run.pg.root}, {run.pg.settings()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=50_000, help="storm and bridge size")
    parser.add_argument("--windowed", type=int, default=200, help="CHFs with an open window")
    parser.add_argument("--bridge-runs", type=int, default=3, help="median of this many")
    parser.add_argument("--storm-runs", type=int, default=3, help="median of this many")
    parser.add_argument("--latency-rate", type=float, default=1000.0)
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument(
        "--backlog-idle", type=float, default=600.0, help="backlog: give up after s without output"
    )
    parser.add_argument(
        "--backlog-max", type=float, default=900.0, help="backlog: give up after s of draining"
    )
    parser.add_argument("--pub-window", type=int, default=1000, help="publisher's QoS 1 window")
    parser.add_argument(
        "--gateway-inflight", type=int, default=0, help="broker.inflight (0: the default)"
    )
    parser.add_argument("--parts", default="storm,bridge,latency,backlog")
    parser.add_argument("--idle", type=float, default=20.0, help="give up after s without output")
    parser.add_argument(
        "--rss-abort", type=float, default=12000.0, help="stop the backlog beyond this RSS (MB)"
    )
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--json", action="store_true", help="also print a JSON object")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--profile-daemon", type=Path, default=None, metavar="FILE")
    parser.add_argument(
        "--state",
        default="sqlite",
        help="the daemon's state backend: sqlite, postgresql, or both (= sqlite,postgresql: "
        "storms alternate, and the ratio is reported)",
    )
    parser.add_argument(
        "--pg-statements",
        action="store_true",
        help="PostgreSQL: print pg_stat_statements' top statements after each storm",
    )
    args = parser.parse_args()
    args.states = parse_states(parser, args.state)
    if args.quick:
        args.alerts, args.latency_seconds, args.backlog = 5_000, 3.0, 20_000
        args.storm_runs = args.bridge_runs = 1
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if args.profile_daemon is not None:
        args.profile_daemon = args.profile_daemon.resolve()
        args.profile_daemon.parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="poa-throughput-"))
    signal.signal(signal.SIGTERM, _interrupted)
    log(
        f"poa-gateway throughput bench: {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, gateway at {revision()}, "
        f"run dir {root}"
    )
    run = Run(root, args)
    results: dict[str, Any] = {}
    try:
        if "postgresql" in args.states and {"storm", "latency", "backlog"} & set(args.parts):
            start_cluster(run, parser)
        if "storm" in args.parts:
            part_storm(run, results)
        if "latency" in args.parts:
            broker = run.broker("latency-broker")
            home = make_home(run, "latency-gw", broker.port)
            daemon = start_daemon(run, home, profile=profile_path(args, "latency"))
            open_windows(run, home, daemon, broker.port)
            part_latency(run, results, broker.port, "a fresh daemon")
            daemon.timed_stop(60)
            if daemon.profile is not None:
                show_profile(daemon.profile)
        if "bridge" in args.parts:
            part_bridge(run, results)
        if "backlog" in args.parts:
            part_backlog(run, results)
    except (Interrupted, KeyboardInterrupt) as exc:
        log(f"interrupted ({exc!r}): stopping everything; the summary covers the parts done")
    finally:
        run.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    verdict = summary(results, args)
    if args.json:
        print(json.dumps({"revision": revision()} | results | verdict, indent=2))


if __name__ == "__main__":
    main()
