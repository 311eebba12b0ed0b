"""The leader lease of gateway instances sharing one PostgreSQL state store (issue 12).

Theory of operation
-------------------
One row in the table ``lease`` says who leads: ``holder`` (the run id of one gateway
process), ``epoch`` (a number that grows by one with every new holder), ``expires_at``
(the database's clock) and ``client_id`` (the broker client id of the deployment).

* A standby *takes* the lease only when it has expired, and the take raises the epoch:
  one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE expires_at <= clock_timestamp()``,
  so two standbys racing get one winner (the row lock serialises them).
* The leader *renews* it (``expires_at`` moves on) only while it is still the holder
  with the same epoch and the lease has not expired: a leader that was paused past its
  lease cannot renew its way back in, even when nobody took over meanwhile.
* **Fencing**: every group commit of the leader's state store starts with
  :data:`FENCE_SQL`, which reads the lease row ``FOR SHARE`` and fails unless this
  process still holds it at its epoch, unexpired (gateway/state/postgresql.py). The
  share lock is held to the commit, and a take needs the row's update lock, so a commit
  and a take are serialised: either the commit is wholly before the new epoch (and the
  new leader loads it), or it is refused. An advisory lock alone would not fence a
  paused process: it would wake up still believing in its lock.
* Times are the database's (``clock_timestamp()``), so the hosts' clocks never matter.
  The leader keeps its own conservative deadline on the monotonic clock (renewal sent
  + lease, less a margin: gateway/ha.py) to stop publishing and acknowledging at once,
  without asking the database, when it cannot renew.

The table ``instances`` holds one row per running process (leader and standbys), each
refreshed at every renewal or attempt, for ``poa-gateway status``. A process that ends
cleanly deletes its row; one that died stays, shown with its age, until an instance
sweeps rows older than :data:`INSTANCE_FORGET_MS`.

The tables are created when missing (``CREATE TABLE IF NOT EXISTS``, under an advisory
lock) and are not part of the copied state (``poa-gateway state copy``): they describe
running processes, not the deployment's data.
"""

from __future__ import annotations

import os
import secrets
import socket
from typing import Any, Final

import msgspec
import psycopg

from .errors import StoreError, StoreReason, first_line

__all__ = [
    "FENCE_SQL",
    "INSTANCE_FORGET_MS",
    "InstanceRow",
    "LeaseRow",
    "LeaseTable",
    "LeaseView",
    "check_fence",
    "new_run_id",
]

_LOCK_KEY: Final = 0x504F414C  # "POAL": creating the lease tables
INSTANCE_FORGET_MS: Final = 24 * 3600 * 1000
"""Rows of instances not seen for this long are deleted (a process that died)."""

_SCHEMA: Final = (
    """
    CREATE TABLE IF NOT EXISTS lease (
        id smallint PRIMARY KEY CHECK (id = 1),
        holder text NOT NULL,
        holder_name text NOT NULL,
        epoch bigint NOT NULL,
        client_id text NOT NULL,
        acquired_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS instances (
        run_id text PRIMARY KEY,
        name text NOT NULL,
        host text NOT NULL,
        pid bigint NOT NULL,
        version text NOT NULL,
        client_id text NOT NULL,
        role text NOT NULL,
        epoch bigint,
        started_at timestamptz NOT NULL,
        seen_at timestamptz NOT NULL
    )
    """,
)

FENCE_SQL: Final = """
SELECT epoch FROM lease
WHERE id = 1 AND holder = %s AND epoch = %s AND expires_at > clock_timestamp()
FOR SHARE
"""
"""The first statement of every fenced commit: one row while the caller (holder, epoch)
still holds an unexpired lease, none otherwise. The row stays share-locked until the
commit ends, which keeps a take (an update of the row) out until then."""

_TAKE = """
INSERT INTO lease AS l (id, holder, holder_name, epoch, client_id, acquired_at, expires_at)
VALUES (1, %(holder)s, %(name)s, 1, %(client_id)s, clock_timestamp(),
    clock_timestamp() + %(lease_ms)s * interval '1 millisecond')
ON CONFLICT (id) DO UPDATE SET
    holder = excluded.holder, holder_name = excluded.holder_name, epoch = l.epoch + 1,
    acquired_at = excluded.acquired_at, expires_at = excluded.expires_at
WHERE l.expires_at <= clock_timestamp() AND l.client_id = excluded.client_id
RETURNING epoch
"""
_RENEW = """
UPDATE lease SET expires_at = clock_timestamp() + %(lease_ms)s * interval '1 millisecond'
WHERE id = 1 AND holder = %(holder)s AND epoch = %(epoch)s
    AND expires_at > clock_timestamp()
RETURNING epoch
"""
_RELEASE = """
UPDATE lease SET expires_at = clock_timestamp()
WHERE id = 1 AND holder = %(holder)s AND epoch = %(epoch)s
"""
# Times leave the database as Unix milliseconds of its own clock.
_READ_LEASE = """
SELECT holder, holder_name, epoch, client_id,
    (extract(epoch FROM acquired_at) * 1000)::bigint,
    (extract(epoch FROM expires_at) * 1000)::bigint
FROM lease WHERE id = 1
"""
_NOW = "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint"
_HEARTBEAT = """
INSERT INTO instances AS i (run_id, name, host, pid, version, client_id, role, epoch,
    started_at, seen_at)
VALUES (%(run_id)s, %(name)s, %(host)s, %(pid)s, %(version)s, %(client_id)s, %(role)s,
    %(epoch)s, clock_timestamp(), clock_timestamp())
ON CONFLICT (run_id) DO UPDATE SET role = excluded.role, epoch = excluded.epoch,
    seen_at = excluded.seen_at
"""
_READ_INSTANCES = """
SELECT run_id, name, host, pid, version, client_id, role, epoch,
    (extract(epoch FROM started_at) * 1000)::bigint, (extract(epoch FROM seen_at) * 1000)::bigint
FROM instances ORDER BY name, started_at
"""
_FORGET = "DELETE FROM instances WHERE seen_at < clock_timestamp() - %s * interval '1 millisecond'"
_SETTINGS = """
SELECT set_config('lock_timeout', %(lock)s, false),
    set_config('statement_timeout', %(statement)s, false)
"""


def check_fence(conn: Any, fence: tuple[str, int] | None, refused: str) -> None:
    """Run :data:`FENCE_SQL` for ``fence`` (holder, epoch) on ``conn`` (a connection or
    cursor, inside the write's transaction, which keeps the lease row share-locked to its
    end); ``StoreError`` ``fenced`` (``refused``: what was refused, for the message) when
    the lease is no longer theirs. Nothing to check when ``fence`` is None."""
    if fence is None or conn.execute(FENCE_SQL, fence).fetchone() is not None:
        return
    holder, epoch = fence
    raise StoreError(
        StoreReason.FENCED,
        f"{refused}: this instance ({holder}) no longer holds the leader lease at epoch {epoch}",
    )


def new_run_id(name: str) -> str:
    """A process's identity as a lease holder: its name, pid and a random part, so that
    a restarted process (same name, perhaps the same pid) is a new holder."""
    return f"{name}/{os.getpid()}/{secrets.token_hex(4)}"


def default_name() -> str:
    """The instance name when ``ha.name`` is empty: the host name."""
    return socket.gethostname() or "localhost"


class LeaseRow(msgspec.Struct, frozen=True, kw_only=True):
    """The lease as stored. Times are the database's, in Unix milliseconds."""

    holder: str
    holder_name: str
    epoch: int
    client_id: str
    acquired_at_ms: int
    expires_at_ms: int


class InstanceRow(msgspec.Struct, frozen=True, kw_only=True):
    """One gateway process as it last reported itself."""

    run_id: str
    name: str
    host: str
    pid: int
    version: str
    client_id: str
    role: str
    epoch: int | None
    started_at_ms: int
    seen_at_ms: int


class LeaseView(msgspec.Struct, frozen=True, kw_only=True):
    """What ``poa-gateway status`` shows: the lease, the instances, the database's now."""

    lease: LeaseRow | None
    instances: list[InstanceRow]
    now_ms: int


class LeaseTable:
    """The lease and instance tables, through one autocommit connection of their own.

    Synchronous: gateway/ha.py calls it from a one-thread executor. Each method is one
    statement, so a connection lost between calls costs only that call (the next one
    reconnects).

    Args:
        dsn, password: as :class:`gateway.state.postgresql.PostgresStore`.
        run_id: this process's holder identity (:func:`new_run_id`).
        name: this instance's name, for status.
        client_id: the deployment's broker client id.
        lease_ms: how long a take or a renewal lasts.
        lock_timeout_ms: how long one statement may wait for the lease row (a take
            waits behind the leader's commit in progress), and the statement timeout.
        create: create the tables when missing (False for a reader such as
            ``poa-gateway status``, which must change nothing).
    """

    def __init__(
        self,
        dsn: str,
        password: str | None,
        *,
        run_id: str,
        name: str,
        client_id: str,
        lease_ms: int,
        lock_timeout_ms: int,
        create: bool = True,
    ) -> None:
        self._dsn = dsn
        self._create = create
        self._password = password
        self.run_id = run_id
        self.name = name
        self.client_id = client_id
        self.lease_ms = lease_ms
        self._lock_timeout_ms = lock_timeout_ms
        self._conn: psycopg.Connection[Any] | None = None

    # -- the lease ----------------------------------------------------------------------

    def take(self) -> int | None:
        """Take the lease if it has expired (or was never taken); the new epoch, or None
        while another holder's lease runs."""
        try:
            rows = self._run(_TAKE, self._params())
        except StoreError as exc:
            if isinstance(exc.__cause__, psycopg.errors.LockNotAvailable):
                # The lease row is locked by a commit of the leader in progress (or of
                # a frozen one, which the server ends: see PostgresStore.fence): it
                # holds the lease, so not ours this time; not a failure to report.
                return None
            raise
        return int(rows[0][0]) if rows else None

    def renew(self, epoch: int) -> bool:
        """Extend the lease held at ``epoch``; False when it is no longer ours (taken, or
        expired before this renewal reached the database)."""
        return bool(self._run(_RENEW, self._params(epoch=epoch)))

    def release(self, epoch: int) -> None:
        """End the lease held at ``epoch`` now, so a standby takes over at once (a clean
        stop). Nothing if it is no longer ours."""
        self._run(_RELEASE, self._params(epoch=epoch))

    def read(self) -> LeaseRow | None:
        """The lease row, or None when no instance ever took it."""
        rows = self._run(_READ_LEASE, {})
        if not rows:
            return None
        holder, name, epoch, client_id, acquired, expires = rows[0]
        return LeaseRow(
            holder=holder,
            holder_name=name,
            epoch=int(epoch),
            client_id=client_id,
            acquired_at_ms=int(acquired),
            expires_at_ms=int(expires),
        )

    # -- instances ----------------------------------------------------------------------

    def heartbeat(self, *, role: str, epoch: int | None, version: str) -> None:
        """Record this process as alive now in ``role`` (``leader`` or ``standby``)."""
        self._run(
            _HEARTBEAT,
            {
                "run_id": self.run_id,
                "name": self.name,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "version": version,
                "client_id": self.client_id,
                "role": role,
                "epoch": epoch,
            },
        )

    def forget_self(self) -> None:
        """Delete this process's row (a clean stop)."""
        self._run("DELETE FROM instances WHERE run_id = %s", (self.run_id,))

    def forget_stale(self) -> None:
        """Delete the rows of processes not seen for :data:`INSTANCE_FORGET_MS`."""
        self._run(_FORGET, (INSTANCE_FORGET_MS,))

    def instances(self) -> list[InstanceRow]:
        """Every instance row, by name."""
        return [
            InstanceRow(
                run_id=r[0],
                name=r[1],
                host=r[2],
                pid=int(r[3]),
                version=r[4],
                client_id=r[5],
                role=r[6],
                epoch=None if r[7] is None else int(r[7]),
                started_at_ms=int(r[8]),
                seen_at_ms=int(r[9]),
            )
            for r in self._run(_READ_INSTANCES, {})
        ]

    def view(self) -> LeaseView | None:
        """The lease, the instances and the database's clock, for status; None when no
        instance has ever run on this database (no lease tables)."""
        found = self._run("SELECT to_regclass('lease'), to_regclass('instances')", {})
        if None in found[0]:
            return None
        now = self._run(_NOW, {})
        return LeaseView(lease=self.read(), instances=self.instances(), now_ms=int(now[0][0]))

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- internals ----------------------------------------------------------------------

    def _params(self, **extra: Any) -> dict[str, Any]:
        return {
            "holder": self.run_id,
            "name": self.name,
            "client_id": self.client_id,
            "lease_ms": self.lease_ms,
            **extra,
        }

    def _run(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        conn = self._connection()
        try:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description is not None else []
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                self.close()  # the next call reconnects
            raise StoreError(
                StoreReason.DATABASE_ERROR, f"lease: {first_line(exc)}", path=None
            ) from exc

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            # Imported here: postgresql.py imports this module for check_fence.
            from .postgresql import connect  # noqa: PLC0415

            conn = connect(self._dsn, self._password, autocommit=True)
            try:
                timeout = int(self._lock_timeout_ms)
                conn.execute(_SETTINGS, {"lock": str(timeout), "statement": str(timeout * 2)})
                if self._create:
                    _prepare(conn)
            except psycopg.Error as exc:
                conn.close()
                raise StoreError(
                    StoreReason.DATABASE_ERROR, f"lease: {first_line(exc)}", path=None
                ) from exc
            self._conn = conn
        return self._conn


def _prepare(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        for statement in _SCHEMA:
            conn.execute(statement)
