"""Failover on real components (issue 12, point 3), at test scale; bench/failover.py runs
the same at full scale and imports the helpers defined here.

Theory of operation
-------------------
Two ``poa-gateway run`` processes, instances ``a`` and ``b`` of one deployment (one broker
client id, one PostgreSQL state database, its inventory, one Supplier's trust), run
against a real mosquitto. Signed CS06 commands open a window on every listed meter's CHF,
then a stream of AD1s comes, half from those CHFs, half from CHFs with no window. The
leader is killed with SIGKILL at three moments, and frozen once with SIGSTOP and resumed
with SIGCONT after the standby took over. A killed process is started again once the
other instance leads, and rejoins as a standby.

What is judged, from outside the processes:

* **Nothing lost.** Every alert id comes out, forwarded or suppressed; every alert from a
  CHF with a window is suppressed (a window lost in a failover would forward them) and
  the state database holds every window at the end.
* **Duplicates only for what was unacknowledged.** Mosquitto logs every packet to its
  stderr, unbuffered, into a file (:func:`log_every_packet`), whose size is noted at each
  signal. For the leader's receiving connection, PUBLISHes sent minus PUBACKs back up to
  the signal, and over the whole connection, bound the outputs the fault can repeat
  (:func:`unacknowledged`): a repeat is of a message sent before the fault, not
  acknowledged then, and handed to the next leader because never acknowledged.
* **The resumed leader does nothing.** Its log says ``ha.stepped_down``, and no line
  since the SIGCONT says it decided, connected or led (a decision committed before the
  freeze is logged on waking: its ``judged_at`` tells, and it is counted apart); from
  the SIGCONT to the next fault the broker saw no connection under the deployment's
  client ids (:func:`connections`), so it published and acknowledged nothing; and
  PostgreSQL's statement log shows no write to a state table by it (:func:`writes`).
  Each log line there carries its connection's ``application_name``, set per process
  through ``PGAPPNAME`` (:class:`Instance`); a connection that names itself (the
  inventory's) is known by its server process, matched through the gateway process's
  sockets (:func:`backends_of`). The lease tables (``lease``, ``instances``) are a
  standby's own business: it keeps trying to take the lease.

The test keeps the timing out of the verdict: each fault waits for the previous takeover
to finish, and the outputs are judged by arrival order, never by how long anything took.

The last test reproduces a finding against the HA code, now fixed: a leader frozen with
an inventory update on its way, resumed after the takeover, wrote that update to the
shared inventory over a newer one the new leader applied. Inventory writes are now
fenced like the state store's commits (PostgresInventory.fence) and refused by the
shell once the lease is lost.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NamedTuple

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from gateway import wire
from gateway.config import load_config
from gateway.core.devices import DeviceRecord, DeviceStatus, DeviceType
from gateway.guids import write_guid_list
from gateway.state.inventory_store import open_inventory
from gateway.state.postgresql import PostgresStore

from .e2e_support import Broker, Client, Home, cs06
from .pg_support import Cluster, find_pg_bin

ROOT: Final = Path(__file__).resolve().parent.parent
CLIENT_ID: Final = "poa-gateway-ha"
OUT_CLIENT_ID: Final = CLIENT_ID + "-out"  # the adapter's publishing connection
FORWARDED: Final = "dno/dcc/alert"
SUPPRESSED: Final = "gateway/suppressed"
LEASE_TABLES: Final = frozenset({"lease", "instances"})
# Each statement log line says who: '%a' is the connection's application_name.
PG_LOG_PREFIX: Final = "%m [%p] %a: "


# -- a deployment of two instances -----------------------------------------------------


def listed_meter(i: int) -> tuple[bytes, bytes]:
    """The ESME and CHF of test meter ``i`` (listed, Landis+Gyr SMETS2)."""
    esme, chf = 0x00DB_7000_0000_0000 | i, 0x00DB_7100_0000_0000 | i
    return esme.to_bytes(8, "big"), chf.to_bytes(8, "big")


def unlisted_chf(i: int) -> bytes:
    """A CHF in no inventory: its AD1s are forwarded."""
    return (0x00DB_7200_0000_0000 | i).to_bytes(8, "big")


def ha_homes(
    root: Path,
    broker_port: int,
    dsn: str,
    meters: Sequence[tuple[bytes, bytes]],
    ha: Mapping[str, str],
) -> tuple[Home, Home]:
    """Homes ``a`` and ``b`` of one deployment: the same broker client id, the same state
    database (``[ha]`` as given, plus each instance's name), the same Supplier trusted and
    the same GUID list of ``meters`` (ESME, CHF), whose devices go into the shared
    PostgreSQL inventory."""
    homes: list[Home] = []
    for name in ("a", "b"):
        home = Home(root / name, broker_port)
        text = home.config.read_text()
        own = f'client_id = "poa-gateway-{name}"'
        if own not in text:
            raise RuntimeError(f"{home.config}: no {own} line to replace")
        text = text.replace(own, f'client_id = "{CLIENT_ID}"')
        text += f'[state]\nbackend = "postgresql"\ndsn = "{dsn}"\n[ha]\nname = "{name}"\n'
        text += "".join(f'{key} = "{value}"\n' for key, value in ha.items())
        home.config.write_text(text)
        write_guid_list(
            home.root / "guid-list.bin",
            sorted(int.from_bytes(esme, "big") for esme, _ in meters),
            sha256=bytes(32),
            imported_at_ms=0,
        )
        homes.append(home)
    a, b = homes
    # One deployment, one Supplier: both trust the key the commands are signed with.
    shutil.copyfile(a.root / "trust" / "supplier.pem", b.root / "trust" / "supplier.pem")
    b.supplier = a.supplier
    with open_inventory(load_config(a.config, env={})) as inventory:
        inventory.upsert_many(
            (
                DeviceRecord(
                    device_id=esme,
                    device_type=DeviceType.ESME,
                    smets=2,
                    manufacturer="Landis+Gyr",
                    status=DeviceStatus.COMMISSIONED,
                    chf_id=chf,
                )
                for esme, chf in meters
            ),
            0,
        )
    return a, b


def label_statement_log(cluster: Cluster, dsn: str) -> None:
    """Have the cluster log every statement that changes data in ``dsn``'s database
    (without its parameters), each line labelled with its connection's application_name.

    The prefix is a server-wide setting (``ALTER SYSTEM`` and a reload): use a cluster
    of one's own. The statement logging is the database's alone, and applies to the
    connections opened from now on."""
    dbname = str(conninfo_to_dict(dsn)["dbname"])
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER SYSTEM SET log_line_prefix = {}").format(sql.Literal(PG_LOG_PREFIX))
        )
        conn.execute("SELECT pg_reload_conf()")
        for name, value in (("log_statement", "mod"), ("log_parameter_max_length", "0")):
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    sql.Identifier(dbname), sql.Identifier(name), sql.Literal(value)
                )
            )


def windows_in_state(dsn: str) -> set[bytes]:
    """The ESMEs with an activation in the state database."""
    with PostgresStore.open(dsn) as store:
        return {a.esme for a in store.load_activations()}


# -- processes and their logs ----------------------------------------------------------


def ts_ms(event: Mapping[str, Any]) -> int:
    """A gateway log line's ``ts`` (``2024-05-01T12:00:00.123Z``) in Unix milliseconds."""
    return round(dt.datetime.fromisoformat(str(event["ts"])).timestamp() * 1000)


class GatewayLog:
    """A gateway's JSON log (every process of one instance appends to it), read as it
    grows. Each event is kept with the offset where its line starts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.events: list[dict[str, Any]] = []
        self.offsets: list[int] = []  # where each event's line starts, ascending
        self._read = 0
        self._partial = b""

    def size(self) -> int:
        """The file's size now: an offset from which later lines are read."""
        return self.path.stat().st_size if self.path.exists() else 0

    def poll(self) -> None:
        """Read what was written since the last call."""
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            f.seek(self._read)
            data = f.read()
        start = self._read - len(self._partial)
        self._read += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if isinstance(event, dict):
                self.events.append(event)
                self.offsets.append(start)
            start += len(line) + 1

    def since(self, offset: int, name: str | None = None) -> list[dict[str, Any]]:
        """The events whose lines start at ``offset`` or later (named ``name``)."""
        self.poll()
        first = bisect.bisect_left(self.offsets, offset)
        return [e for e in self.events[first:] if name in (None, e.get("event"))]

    def between_ms(self, start_ms: int, end_ms: int | None) -> list[dict[str, Any]]:
        """The events stamped (``ts``) from ``start_ms`` to before ``end_ms`` (None: on)."""
        self.poll()
        return [
            e
            for e in self.events
            if start_ms <= (at := ts_ms(e)) and (end_ms is None or at < end_ms)
        ]

    async def wait_for(
        self,
        name: str,
        since: int,
        *,
        limit_s: float,
        alive: Callable[[], bool] = lambda: True,
    ) -> dict[str, Any]:
        """The first ``name`` event from offset ``since`` on; fails with the log's tail
        after ``limit_s`` seconds, or once ``alive()`` says the process has ended."""
        deadline = time.monotonic() + limit_s
        while True:
            found = self.since(since, name)
            if found:
                return found[0]
            if time.monotonic() > deadline or not alive():
                tail = "\n".join(json.dumps(e) for e in self.since(since)[-20:])
                why = "ended" if not alive() else f"{limit_s:.0f} s passed"
                raise AssertionError(f"{self.path}: no {name} ({why}); last lines:\n{tail}")
            await asyncio.sleep(0.05)


def unwrapped(argv: list[str]) -> list[str]:
    return argv


class Instance:
    """One instance of the deployment: its home, and the processes run from it one after
    another (a killed one is replaced by a new one). The ``n``-th process is labelled
    ``<name>-<n>``: it is the ``application_name`` of its PostgreSQL connections
    (``PGAPPNAME``), so the statement log says which process wrote what.

    ``wrap`` rewrites the command line (the bench runs it under ``setpriv --pdeathsig``).
    """

    def __init__(
        self, home: Home, name: str, wrap: Callable[[list[str]], list[str]] = unwrapped
    ) -> None:
        self.home = home
        self.name = name
        self.runs = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = GatewayLog(home.log_path)
        self.started_at = 0  # log offset of the current process's first line
        self._wrap = wrap

    @property
    def label(self) -> str:
        """The current process's label (its PostgreSQL application_name)."""
        return f"{self.name}-{self.runs}"

    def start(self) -> None:
        """Start a new process of this instance (``poa-gateway run``)."""
        self.runs += 1
        self.started_at = self.log.size()
        exe = Path(sys.executable).parent / "poa-gateway"
        argv = self._wrap([str(exe), "run", "--config", str(self.home.config)])
        env = {**os.environ, "PGAPPNAME": self.label}
        with self.home.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT
            )

    def alive(self) -> bool:
        """True while the current process runs (frozen included)."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, and wait for the end."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=60)

    def stop(self, timeout: float = 30) -> int | None:
        """SIGCONT (should it be frozen) and SIGTERM; SIGKILL after ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# -- the broker's and the database's logs ----------------------------------------------


def log_every_packet(broker: Broker) -> Path:
    """Start ``broker`` (not running) with every packet it sends and receives logged to
    its stderr, which C leaves unbuffered, kept in a file (returned). An offset of that
    file taken at a signal then covers everything the broker did before the signal: its
    own log file is written through a stdio buffer, kilobytes behind."""
    conf = [line for line in broker.conf.read_text().splitlines() if not line.startswith("log_")]
    broker.conf.write_text("\n".join([*conf, "log_dest stderr", "log_type all"]) + "\n")
    path = broker.root / "packets.log"
    with path.open("ab") as err:
        broker.proc = subprocess.Popen(broker.command(), stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", broker.port), timeout=0.2),
        ):
            return path
        time.sleep(0.05)
    raise RuntimeError(f"mosquitto did not start on port {broker.port}")


def _connected(client_id: str) -> bytes:
    return f" as {client_id} (".encode()  # "New client connected from ... as ID (p5, ..."


class Unacknowledged(NamedTuple):
    """What a client id had not acknowledged on one connection, from the broker's log."""

    at_signal: int  # PUBLISHes sent to it minus PUBACKs back, up to the offset given
    on_connection: int  # the same, up to the next connection of that client id
    resent: int  # PUBLISHes sent again (DUP set) on that next connection

    @property
    def bound(self) -> int:
        """The most outputs a fault at the offset can repeat: a repeat is of a message
        sent before the fault and not acknowledged then (``at_signal``), and handed to
        the next connection, so never acknowledged on this one (``on_connection``)."""
        return min(self.at_signal, self.on_connection)


def unacknowledged(broker_log: bytes, at: int, client_id: str = CLIENT_ID) -> Unacknowledged:
    """Of the broker's packet log (:func:`log_every_packet`), the connection of
    ``client_id`` open at offset ``at``: what it had not acknowledged at that offset (the
    bound on what a fault there can repeat: a message repeated was sent before the fault
    and never acknowledged), what it never acknowledged at all (the broker hands exactly
    those to the next connection; for a frozen process the broker goes on sending until
    the receive maximum), and the re-sends on the next connection."""
    marker = _connected(client_id)
    start = broker_log.rfind(marker, 0, at)
    if start < 0:
        raise ValueError(f"no connection of {client_id} before offset {at} in the broker log")
    end = broker_log.find(marker, at)
    end = len(broker_log) if end < 0 else end
    sent = f"Sending PUBLISH to {client_id} (".encode()
    acked = f"Received PUBACK from {client_id} (".encode()
    upto, whole = broker_log[start:at], broker_log[start:end]
    following = broker_log.find(marker, end + 1)
    after = broker_log[end : len(broker_log) if following < 0 else following]
    return Unacknowledged(
        at_signal=upto.count(sent) - upto.count(acked),
        on_connection=whole.count(sent) - whole.count(acked),
        resent=after.count(f"Sending PUBLISH to {client_id} (d1,".encode()),
    )


def connections(broker_log: bytes, start: int, end: int | None) -> int:
    """Connections the broker accepted under the deployment's client ids (receiving and
    publishing) between two offsets of its log."""
    part = broker_log[start:end]
    return part.count(_connected(CLIENT_ID)) + part.count(_connected(OUT_CLIENT_ID))


_PG_LINE: Final = re.compile(
    rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \S+ \[(?P<pid>\d+)\] (?P<app>[^\n]*?): "
    rb"(?P<level>[A-Z]+):  (?P<text>.*)$"
)
_WRITE: Final = re.compile(r"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(\w+)", re.IGNORECASE)


class Statement(NamedTuple):
    """One statement in PostgreSQL's log."""

    backend: int  # the server process of the connection
    app: str  # the connection's application_name
    text: str


def pg_statements(pg_log: bytes) -> Iterator[Statement]:
    """Each statement logged in a slice of the server's log (a statement continues on
    the lines that start with a tab)."""
    head: tuple[int, str] | None = None
    text: list[str] = []
    for raw in pg_log.split(b"\n"):
        if raw.startswith(b"\t") and head is not None:
            text.append(raw.decode(errors="replace").strip())
            continue
        if head is not None:
            yield Statement(*head, " ".join(text))
            head = None
        found = _PG_LINE.match(raw)
        if found is None or found["level"] != b"LOG":
            continue
        body = found["text"].decode(errors="replace")
        if body.startswith(("statement: ", "execute ")):
            head = int(found["pid"]), found["app"].decode(errors="replace")
            text = [body.split(": ", 1)[1] if ": " in body else ""]
    if head is not None:
        yield Statement(*head, " ".join(text))


def writes(pg_log: bytes, app: str, backends: Collection[int] = ()) -> Counter[str]:
    """The data-changing statements of one gateway process in a slice of the server's
    log, by table: those of connections named ``app`` (``PGAPPNAME``), and those of the
    server processes ``backends`` (its connections that name themselves, such as the
    inventory's: :func:`backends_of`)."""
    out: Counter[str] = Counter()
    for statement in pg_statements(pg_log):
        found = _WRITE.search(statement.text)
        if found is not None and (statement.app == app or statement.backend in backends):
            out[found[1].lower()] += 1
    return out


def local_ports(pid: int) -> set[int]:
    """The local ports of a process's TCP sockets (Linux: /proc)."""
    inodes: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def backends_of(admin_dsn: str, pid: int) -> set[int]:
    """The PostgreSQL server processes serving gateway process ``pid`` now (matched by
    its sockets' local ports against pg_stat_activity's client ports)."""
    ports = local_ports(pid)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s)", (sorted(ports),)
        ).fetchall()
    return {int(row[0]) for row in rows}


def state_writes(tables: Counter[str]) -> int:
    """Of :func:`writes`, those to the deployment's data (not the lease tables)."""
    return sum(n for table, n in tables.items() if table not in LEASE_TABLES)


# -- faults ------------------------------------------------------------------------------


@dataclass
class Fault:
    """One fault of the leader, and what the logs said of it (offsets and wall times)."""

    kind: str  # "SIGKILL" or "SIGSTOP"
    moment: str  # when in the stream, in words
    victim: Instance
    survivor: Instance
    at_ns: int  # wall clock when the signal was sent
    published: int  # alerts published before it
    arrivals: int  # outputs received before it
    broker_at: int  # broker log offset at the signal
    pg_at: int  # PostgreSQL log offset at the signal
    survivor_from: int  # survivor's log offset at the signal
    victim_from: int  # victim's log offset at the signal
    victim_label: str  # the faulted process (PostgreSQL application_name)
    survivor_label: str  # the process that takes over
    victim_run_id: str = ""
    took_lease: dict[str, Any] = field(default_factory=dict)  # the survivor's ha.leader
    ready: dict[str, Any] = field(default_factory=dict)  # its gateway.ready
    # SIGSTOP only: the resume.
    resumed_ns: int = 0
    resumed_broker_at: int = 0
    resumed_pg_at: int = 0
    victim_backends: set[int] = field(default_factory=set)  # its PostgreSQL connections
    stepped_down: dict[str, Any] = field(default_factory=dict)


class Deployment:
    """Instances ``a`` and ``b``, which of them leads, and the faults so far."""

    def __init__(
        self, a: Instance, b: Instance, *, broker_log: Path, pg_log: Path, pg_admin: str
    ) -> None:
        self.a, self.b = a, b
        self.pg_admin = pg_admin
        self.leader = a
        self.broker_log = broker_log
        self.pg_log = pg_log
        self.faults: list[Fault] = []

    def other(self, instance: Instance) -> Instance:
        return self.b if instance is self.a else self.a

    async def start(self, limit_s: float) -> None:
        """``a`` as the leader (ready), then ``b`` as a standby."""
        self.a.start()
        await self.a.log.wait_for("gateway.ready", 0, limit_s=limit_s, alive=self.a.alive)
        self.b.start()
        await self.b.log.wait_for("ha.standby", 0, limit_s=limit_s, alive=self.b.alive)

    def strike(self, kind: signal.Signals, moment: str, published: int, arrivals: int) -> Fault:
        """Send ``kind`` (SIGKILL or SIGSTOP) to the leader and note where every log was."""
        victim = self.leader
        survivor = self.other(victim)
        held = victim.log.since(victim.started_at, "ha.leader")
        fault = Fault(
            kind=kind.name,
            moment=moment,
            victim=victim,
            survivor=survivor,
            at_ns=0,
            published=published,
            arrivals=arrivals,
            broker_at=0,
            pg_at=0,
            survivor_from=survivor.log.size(),
            victim_from=victim.log.size(),
            victim_label=victim.label,
            survivor_label=survivor.label,
            victim_run_id=str(held[-1].get("run_id", "")) if held else "",
        )
        victim.signal(kind)
        fault.at_ns = time.time_ns()
        fault.broker_at = _size(self.broker_log)
        fault.pg_at = _size(self.pg_log)
        if kind is signal.SIGKILL:
            victim.kill()  # reaped
        self.faults.append(fault)
        return fault

    async def takeover(self, fault: Fault, limit_s: float) -> None:
        """Until the survivor leads (``ha.leader``, then ``gateway.ready``)."""
        survivor = fault.survivor
        fault.took_lease = await survivor.log.wait_for(
            "ha.leader", fault.survivor_from, limit_s=limit_s, alive=survivor.alive
        )
        fault.ready = await survivor.log.wait_for(
            "gateway.ready", fault.survivor_from, limit_s=limit_s, alive=survivor.alive
        )
        self.leader = survivor

    async def restart(self, fault: Fault, limit_s: float) -> None:
        """Start the killed instance again; until it is a standby."""
        victim = fault.victim
        victim.start()
        await victim.log.wait_for(
            "ha.standby", victim.started_at, limit_s=limit_s, alive=victim.alive
        )

    async def resume(self, fault: Fault, limit_s: float) -> None:
        """SIGCONT the frozen leader; until it has stepped down and waits as a standby."""
        frozen = fault.victim
        since = frozen.log.size()
        fault.victim_backends = backends_of(self.pg_admin, frozen.pid)
        fault.resumed_broker_at = _size(self.broker_log)
        fault.resumed_pg_at = _size(self.pg_log)
        fault.resumed_ns = time.time_ns()
        frozen.signal(signal.SIGCONT)
        fault.stepped_down = await frozen.log.wait_for(
            "ha.stepped_down", fault.victim_from, limit_s=limit_s, alive=frozen.alive
        )
        await frozen.log.wait_for("ha.standby", since, limit_s=limit_s, alive=frozen.alive)

    def stop(self) -> None:
        for instance in (self.a, self.b):
            instance.stop()


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


@dataclass
class Resumed:
    """What the frozen leader did from its SIGCONT to the next fault (or the end)."""

    label: str
    stepped_down: str  # the reason it gave, "" if it said nothing
    events: Counter[str]  # its log events in that span, by name
    acted: Counter[str]  # of those, the ones that mean it decided or connected since
    late: int  # decision lines for alerts judged before the freeze (see after_resume)
    broker_connections: int  # under the deployment's client ids, anyone's
    writes: Counter[str]  # its data-changing statements, by table

    @property
    def did_nothing(self) -> bool:
        """Stepped down; no decision, connection or write to the state since the resume."""
        return (
            bool(self.stepped_down)
            and not self.acted
            and self.broker_connections == 0
            and state_writes(self.writes) == 0
        )


# Log events that a process only writes when it acts as the leader.
ACTING_EVENTS: Final = frozenset(
    {
        "alert.suppressed",
        "alert.forwarded",
        "activation.tracked",
        "message.quarantined",
        "mqtt.connected",
        "gateway.ready",
        "ha.leader",
    }
)
DECISIONS: Final = frozenset({"alert.suppressed", "alert.forwarded"})


def after_resume(deployment: Deployment, fault: Fault, broker_log: bytes, pg_log: bytes) -> Resumed:
    """Judge the frozen leader from its resume to the next fault (or the end of the run).

    A decision is logged after its commit. A commit that was done when the process was
    frozen (fenced, so before the standby took the lease) is logged on waking, after
    the resume: such a line, whose ``judged_at`` is before the SIGSTOP, is counted as
    ``late``, not as an act since the resume (which the statement log confirms)."""
    later = [f for f in deployment.faults if f.at_ns > fault.resumed_ns]
    end = later[0] if later else None
    start_ms = fault.resumed_ns // 1_000_000
    end_ms = end.at_ns // 1_000_000 if end is not None else None
    frozen_ms = fault.at_ns // 1_000_000
    # Until the next fault no other process of the frozen one's instance runs: these
    # lines are all the resumed process's.
    lines = fault.victim.log.between_ms(start_ms, end_ms)
    events = Counter(str(e.get("event")) for e in lines)
    late = [
        e
        for e in lines
        if e.get("event") in DECISIONS and int(e.get("judged_at", frozen_ms)) < frozen_ms
    ]
    acted = Counter(str(e.get("event")) for e in lines if e.get("event") in ACTING_EVENTS)
    acted.subtract(Counter(str(e.get("event")) for e in late))
    return Resumed(
        label=fault.victim_label,
        stepped_down=str(fault.stepped_down.get("reason", "")),
        events=events,
        acted=+acted,
        late=len(late),
        broker_connections=connections(
            broker_log, fault.resumed_broker_at, end.broker_at if end else None
        ),
        writes=writes(
            pg_log[fault.resumed_pg_at : end.pg_at if end else None],
            fault.victim_label,
            fault.victim_backends,
        ),
    )


# -- the outputs ----------------------------------------------------------------------------


def alert_id_of(topic: str, payload: bytes) -> str:
    """The alert id of an output: a forwarded alert or a suppression record."""
    if topic == FORWARDED:
        return wire.decode_dcc_alert(payload).alert_id
    return wire.decode_suppression_record(payload).alert_id


def duplicates_by_fault(
    arrivals: Sequence[tuple[str, str]], faults: Sequence[Fault], key: Callable[[Fault], int]
) -> tuple[list[int], int]:
    """Repeated outputs, each counted against the last fault before its repeat arrived
    (``key``: a fault's place in the arrivals' order); and those before any fault."""
    seen: set[str] = set()
    counts = [0] * len(faults)
    before_any = 0
    marks = [key(f) for f in faults]
    for index, (_, alert_id) in enumerate(arrivals):
        if alert_id not in seen:
            seen.add(alert_id)
            continue
        which = sum(1 for m in marks if m <= index) - 1
        if which < 0:
            before_any += 1
        else:
            counts[which] += 1
    return counts, before_any


# -- the test ---------------------------------------------------------------------------------

WINDOWS: Final = 500
ALERTS: Final = 5_000
UNLISTED: Final = 50  # CHFs with no window
RATE: Final = 500.0  # AD1s per second, paced
LIMIT_S: Final = 120.0  # generous: a loaded 2-core CI machine
TICK_S: Final = 0.01


class Outputs(Client):
    """The test's client, keeping every output's (topic, alert id) in arrival order."""

    def __init__(self, port: int, name: str) -> None:
        super().__init__(port, name)
        self.arrivals: list[tuple[str, str]] = []
        self.out: set[str] = set()

    async def _on_message(self, topic: str, payload: bytes) -> None:
        if topic in (FORWARDED, SUPPRESSED):
            alert_id = alert_id_of(topic, payload)
            self.arrivals.append((topic, alert_id))
            self.out.add(alert_id)
        await super()._on_message(topic, payload)

    async def until_out(self, ids: Sequence[str], limit_s: float = LIMIT_S) -> None:
        deadline = time.monotonic() + limit_s
        while not all(i in self.out for i in ids):
            if time.monotonic() > deadline:
                missing = [i for i in ids if i not in self.out]
                raise AssertionError(f"{len(missing)} alerts never came out, e.g. {missing[:5]}")
            await asyncio.sleep(0.05)


async def publish(
    client: Client, alerts: Sequence[tuple[str, bytes]], rate: float, raised_at: int
) -> None:
    """Publish at ``rate`` per second (0: all at once), each tick's share concurrently;
    return once the broker has acknowledged every one."""
    started = time.monotonic()
    sent = 0
    batches: list[asyncio.Future[list[bytes]]] = []
    while sent < len(alerts):
        due = len(alerts) if rate <= 0 else int((time.monotonic() - started) * rate) + 1
        due = min(due, len(alerts))
        if due > sent:
            batch = [client.alert(alert_id, chf, raised_at) for alert_id, chf in alerts[sent:due]]
            batches.append(asyncio.gather(*batch))
            sent = due
        await asyncio.sleep(TICK_S)
    await asyncio.gather(*batches)


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A PostgreSQL cluster of this test's own: its log prefix is changed
    (:func:`label_statement_log`), which the session's cluster must not be."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (./dev test installs Debian's postgresql)")
    cluster = Cluster(bin_dir)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.mark.e2e
@pytest.mark.asyncio
@pytest.mark.timeout(280)
async def test_three_kills_and_a_freeze_lose_nothing_and_the_resumed_leader_does_nothing(
    tmp_path: Path, own_cluster: Cluster
) -> None:
    broker = Broker(tmp_path / "broker")
    packets = log_every_packet(broker)  # every PUBLISH and PUBACK: what was unacknowledged
    dsn = own_cluster.new_database()
    label_statement_log(own_cluster, dsn)
    meters = [listed_meter(i) for i in range(WINDOWS)]
    home_a, home_b = ha_homes(tmp_path, broker.port, dsn, meters, {"lease": "2s", "renew": "500ms"})
    deployment = Deployment(
        Instance(home_a, "a"),
        Instance(home_b, "b"),
        broker_log=packets,
        pg_log=own_cluster.root / "log",
        pg_admin=own_cluster.dsn(),
    )
    alerts = [
        (
            f"f-{i}",
            meters[(i // 2) % WINDOWS][1] if i % 2 == 0 else unlisted_chf((i // 2) % UNLISTED),
        )
        for i in range(ALERTS)
    ]
    ids = [alert_id for alert_id, _ in alerts]
    client = Outputs(broker.port, "failover")
    await client.start()
    try:
        await deployment.start(LIMIT_S)
        await asyncio.gather(
            *(client.command(cs06(home_a, 1000, target=esme)) for esme, _ in meters)
        )
        a = deployment.a
        deadline = time.monotonic() + LIMIT_S
        while len(a.log.since(0, "activation.tracked")) < WINDOWS:
            assert time.monotonic() < deadline, "the windows were not all tracked"
            await asyncio.sleep(0.1)
        raised_at = int(time.time() * 1000)
        sent = 0

        async def stream(upto: int, rate: float = RATE) -> None:
            nonlocal sent
            await publish(client, alerts[sent:upto], rate, raised_at)
            sent = upto

        async def kill(moment: str, then_upto: int) -> None:
            # The stream goes on while the standby takes over; then the killed instance
            # comes back as a standby and the outputs catch up before the next fault.
            fault = deployment.strike(signal.SIGKILL, moment, sent, len(client.arrivals))
            await stream(then_upto)
            await deployment.takeover(fault, LIMIT_S)
            await deployment.restart(fault, LIMIT_S)
            await client.until_out(ids[:sent])

        await stream(400)
        await kill("early, in a steady stream", 1_000)
        await stream(2_000)
        await kill("mid-stream", 2_600)
        await stream(3_200)
        frozen = deployment.strike(signal.SIGSTOP, "mid-stream", sent, len(client.arrivals))
        await stream(3_500)
        await deployment.takeover(frozen, LIMIT_S)
        # The new leader is at work while the old one is still frozen: then resume it.
        working = len(client.arrivals)
        await stream(3_700)
        await client.until_out(ids[:3_700])
        assert len(client.arrivals) > working
        await deployment.resume(frozen, LIMIT_S)
        await stream(3_900)
        await stream(4_500, rate=0)  # a burst, as fast as the broker takes it
        await kill("right after a burst", ALERTS)
        await client.until_out(ids)
        await asyncio.sleep(1)  # late repeats, if any, are counted too
    finally:
        await client.close()
        deployment.stop()
        broker.stop()

    # Nothing lost; every alert from a CHF with a window suppressed, the others forwarded.
    by_topic: dict[str, set[str]] = {FORWARDED: set(), SUPPRESSED: set()}
    for topic, alert_id in client.arrivals:
        by_topic[topic].add(alert_id)
    assert set(ids) == by_topic[FORWARDED] | by_topic[SUPPRESSED]
    assert by_topic[SUPPRESSED] == set(ids[0::2])
    assert by_topic[FORWARDED] == set(ids[1::2])
    assert windows_in_state(dsn) >= {esme for esme, _ in meters}

    # Every fault was a real takeover.
    faults = deployment.faults
    assert [f.kind for f in faults] == ["SIGKILL", "SIGKILL", "SIGSTOP", "SIGKILL"]
    epochs = [int(f.took_lease["epoch"]) for f in faults]
    assert epochs == sorted(set(epochs))

    # Repeats only of what the broker had not had acknowledged when the fault came.
    broker_log = packets.read_bytes()
    bounds = [unacknowledged(broker_log, f.broker_at).bound for f in faults]
    repeats, before_any = duplicates_by_fault(client.arrivals, faults, lambda f: f.arrivals)
    assert before_any == 0
    for fault, repeated, bound in zip(faults, repeats, bounds, strict=True):
        assert repeated <= bound, f"{fault.kind} {fault.moment}: {repeated} repeats, bound {bound}"

    # The frozen leader, resumed, stepped down and did nothing.
    resumed = after_resume(deployment, frozen, broker_log, (own_cluster.root / "log").read_bytes())
    assert resumed.stepped_down
    assert resumed.acted == Counter(), resumed.events
    assert resumed.broker_connections == 0
    assert state_writes(resumed.writes) == 0, resumed.writes
    # The statement log works: the leaders' writes are in it, labelled.
    assert state_writes(writes(own_cluster.root.joinpath("log").read_bytes(), "a-1")) > 0


def _inventory_update(device: bytes, chf: bytes) -> bytes:
    return wire.encode(
        wire.InventoryEnvelope(
            v=1,
            kind="inventory",
            device_id=device,
            device_type=DeviceType.ESME,
            smets=2,
            manufacturer="Landis+Gyr",
            chf_id=chf,
            status=DeviceStatus.COMMISSIONED,
        )
    )


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_a_resumed_leader_writes_no_inventory_update_it_read_while_frozen(
    tmp_path: Path, own_cluster: Cluster
) -> None:
    broker = Broker(tmp_path / "broker")
    packets = log_every_packet(broker)
    dsn = own_cluster.new_database()
    label_statement_log(own_cluster, dsn)
    home_a, home_b = ha_homes(
        tmp_path, broker.port, dsn, [listed_meter(0)], {"lease": "2s", "renew": "500ms"}
    )
    config = load_config(home_a.config, env={})
    deployment = Deployment(
        Instance(home_a, "a"),
        Instance(home_b, "b"),
        broker_log=packets,
        pg_log=own_cluster.root / "log",
        pg_admin=own_cluster.dsn(),
    )
    device = (0x00DB_7300_0000_0000).to_bytes(8, "big")
    older, newer = unlisted_chf(1), unlisted_chf(2)

    async def until_on(chf: bytes) -> None:
        deadline = time.monotonic() + LIMIT_S
        while True:
            with open_inventory(config) as inventory:
                if inventory.chf_of(device) == chf:
                    return
            assert time.monotonic() < deadline, f"the device never went to {chf.hex()}"
            await asyncio.sleep(0.1)

    client = Client(broker.port, "inventory")
    await client.start()
    try:
        await deployment.start(LIMIT_S)
        frozen = deployment.strike(signal.SIGSTOP, "an update on its way", 0, 0)
        # The broker sends it to the frozen leader (its socket takes it); the standby
        # gets it again with the session once it takes over, and applies it.
        await client.adapter.publish("dsp/inventory", _inventory_update(device, older))
        await deployment.takeover(frozen, LIMIT_S)
        await until_on(older)
        await client.adapter.publish("dsp/inventory", _inventory_update(device, newer))
        await until_on(newer)
        await deployment.resume(frozen, LIMIT_S)
        # Either the resumed process writes the old update, which the statement log
        # then shows, or it never does: a few seconds tell, then the last word is read.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pg_log = (own_cluster.root / "log").read_bytes()[frozen.resumed_pg_at :]
            if writes(pg_log, frozen.victim_label, frozen.victim_backends)["inventory"]:
                break
            await asyncio.sleep(0.1)
        with open_inventory(config) as inventory:
            assert inventory.chf_of(device) == newer
        assert writes(pg_log, frozen.victim_label, frozen.victim_backends)["inventory"] == 0
    finally:
        await client.close()
        deployment.stop()
        broker.stop()
