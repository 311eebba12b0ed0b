"""The daemon's durable state in PostgreSQL, written by group commit (issue 12).

Theory of operation
-------------------
The same store as gateway/state/sqlite.py, on a PostgreSQL database instead of a file:
the same tables (activations, counters, decisions, suppressions, commands, quarantine,
restorations), the
same row formats (gateway/state/rows.py: counters and EUI-64s as 8-byte ``bytea``, the
decision as one ``bytea`` in the stores' own row format), the same idempotent writes
(the same ``ON CONFLICT`` rules) and the same contract towards the shell
(gateway/state/protocol.py).

**Group commit** maps one to one (docs/decisions.md D27): each write method only queues
the write; one background task hands everything queued to a dedicated one-thread
executor, which applies it on the *write connection* in one transaction and commits it,
then every :meth:`PostgresStore.flush` waiting on that batch returns. A commit costs a
round trip and the server's WAL flush, so one commit per message would cap the daemon
the same way an fsync per message does with SQLite. A failed commit (the connection
lost, the server restarting, a constraint) rolls back, fails every waiting flush with
``commit-failed`` and puts the batch back at the head of the queue; the next wake-up
reconnects if the connection is gone and retries it. The queue, the flushes waiting on
it and the life cycle are gateway/state/group_commit.py's, shared with sqlite.py; this
module supplies the commit of one batch.

Reads are synchronous, on the caller's (event loop) thread, through a second connection
in autocommit mode, so each read sees what is committed. :meth:`last_counter` also sees
counters queued but not yet committed (the overlay), as in sqlite.py.

**Schema version.** The table ``store_meta`` holds ``schema_version`` and a random
``store_id``. A database with no table of ours is given the schema in one transaction
(under an advisory lock, so two gateways starting at once create it once); a schema of
another version is refused with ``unsupported-schema`` and nothing is changed: there is
no migration yet, and none is run silently. Tables of ours without ``store_meta`` are
refused with ``not-a-store``.

**Secrets.** The DSN carries no password (gateway/config.py refuses one); the password
is passed separately, from the environment. Errors name the host, port and database,
never the password.

**Retention** is sqlite.py's (docs/decisions.md D31): the same batched, idempotent
prune statements, each deleting at most
:data:`~gateway.state.protocol.PRUNE_BATCH_ROWS` rows; no column or table was added for
it, so the schema stays at version 1.

The sequence numbers of the suppression log come from an identity column. With one
writer connection they grow in commit order, which is what ``mark_reported_range``
relies on (sqlite.py, :meth:`~gateway.state.sqlite.Store.mark_reported_range`).
"""

from __future__ import annotations

import contextlib
import itertools
import secrets
import struct
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from operator import itemgetter
from typing import Any, ClassVar, Final, Self, cast

import psycopg
from psycopg.conninfo import conninfo_to_dict

from gateway.core.events import Activation, ActivationFields, AlertDecision
from gateway.wire import SuppressionRecord, WireError, decode_suppression_record

from .audit import CommandRecord, command_from_row
from .common import SharedStore, Statements
from .errors import StoreError, StoreReason, first_line
from .group_commit import Op
from .lease import check_fence
from .restorations import (
    NEAR_MISS_LENGTHS,
    RestorationRecord,
    restoration_from_row,
)
from .rows import (
    REPORT_CURSOR_KEY,
    PendingReport,
    QuarantineEntry,
    StoredSuppression,
    activation_from_row,
    check_eui,
    check_i64,
    decision_from_row,
    quarantine_entry_from_row,
)

__all__ = ["PG_SCHEMA_VERSION", "PostgresStore", "connect", "open_connection"]

PG_SCHEMA_VERSION: Final = 1
"""``store_meta.schema_version`` of a database written by this module."""

_CONNECT_TIMEOUT_S: Final = 10
_LOCK_KEY: Final = 0x504F4153  # "POAS", as the SQLite application_id

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS store_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE activations (
    esme bytea NOT NULL CHECK (length(esme) = 8),
    originator bytea NOT NULL CHECK (length(originator) = 8),
    counter bytea NOT NULL CHECK (length(counter) = 8),
    chf bytea NOT NULL CHECK (length(chf) = 8),
    start_ms bigint NOT NULL,
    end_ms bigint NOT NULL,
    future_dated boolean NOT NULL,
    seen_at bigint NOT NULL,
    closed_early boolean NOT NULL,
    succeeded boolean NOT NULL,
    PRIMARY KEY (esme, originator, counter)
);
CREATE TABLE counters (
    originator bytea NOT NULL CHECK (length(originator) = 8),
    device bytea NOT NULL CHECK (length(device) = 8),
    counter bytea NOT NULL CHECK (length(counter) = 8),
    PRIMARY KEY (originator, device)
);
CREATE TABLE decisions (
    alert_id text PRIMARY KEY,
    decided_at bigint NOT NULL,
    effect_done boolean NOT NULL,
    decision bytea NOT NULL
);
CREATE INDEX decisions_decided_at ON decisions (decided_at);
CREATE TABLE suppressions (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id text NOT NULL UNIQUE,
    record bytea NOT NULL,
    received_at bigint NOT NULL,
    report_id text
);
CREATE INDEX suppressions_unreported ON suppressions (seq) WHERE report_id IS NULL;
CREATE TABLE quarantine (
    id text PRIMARY KEY,
    topic text NOT NULL,
    payload bytea NOT NULL,
    reason text NOT NULL,
    error text NOT NULL,
    attempts bigint NOT NULL,
    received_at bigint NOT NULL,
    quarantined_at bigint NOT NULL,
    forwarded boolean NOT NULL,
    replayed_at bigint
)
"""
# Added after version 1 without a version of its own (version 1 is unreleased): created
# if missing whenever a store is opened, so that databases made before it keep working.
_COMMANDS_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS commands (
    esme bytea NOT NULL CHECK (length(esme) = 8),
    originator bytea NOT NULL CHECK (length(originator) = 8),
    counter bytea NOT NULL CHECK (length(counter) = 8),
    outcome text NOT NULL,
    reason text NOT NULL,
    chf bytea CHECK (chf IS NULL OR length(chf) = 8),
    request_id text,
    detail text NOT NULL,
    seen_at bigint NOT NULL,
    last_seen_at bigint NOT NULL,
    window_start bigint,
    window_end bigint,
    PRIMARY KEY (esme, originator, counter, outcome, reason)
);
CREATE INDEX IF NOT EXISTS commands_chf ON commands (chf);
CREATE INDEX IF NOT EXISTS commands_last_seen_at ON commands (last_seen_at)
"""
# Added as the commands table was (sqlite.py's schema version 5).
_RESTORATIONS_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS restorations (
    esme bytea NOT NULL CHECK (length(esme) = 8),
    counter bytea NOT NULL CHECK (length(counter) = 8),
    alert_code bigint NOT NULL,
    chf bytea CHECK (chf IS NULL OR length(chf) = 8),
    received_at bigint NOT NULL,
    in_window boolean NOT NULL,
    request_id text,
    PRIMARY KEY (esme, counter)
);
CREATE INDEX IF NOT EXISTS restorations_received_at ON restorations (received_at)
"""
_ADDED_SCHEMA: Final = _COMMANDS_SCHEMA + ";" + _RESTORATIONS_SCHEMA
_OUR_TABLES: Final = (
    "store_meta",
    "activations",
    "counters",
    "decisions",
    "suppressions",
    "quarantine",
)

# The statements of sqlite.py in PostgreSQL's dialect; the same conflict rules.
_PUT_ACTIVATION = """
INSERT INTO activations (esme, originator, counter, chf, start_ms, end_ms,
    future_dated, seen_at, closed_early, succeeded)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (esme, originator, counter) DO UPDATE SET
    chf = excluded.chf, start_ms = excluded.start_ms, end_ms = excluded.end_ms,
    future_dated = excluded.future_dated, seen_at = excluded.seen_at,
    closed_early = excluded.closed_early, succeeded = excluded.succeeded
"""
_DELETE_ACTIVATION = "DELETE FROM activations WHERE esme = %s AND originator = %s AND counter = %s"
_SET_COUNTER = """
INSERT INTO counters (originator, device, counter) VALUES (%s, %s, %s)
ON CONFLICT (originator, device) DO UPDATE SET counter = excluded.counter
WHERE excluded.counter > counters.counter
"""
_SELECT_DECISIONS = "SELECT alert_id, decided_at, effect_done, decision FROM decisions "
_LOAD_DECISIONS = _SELECT_DECISIONS + "WHERE decided_at >= %s ORDER BY decided_at, alert_id"
_GET_DECISION = _SELECT_DECISIONS + "WHERE alert_id = %s"
_PUT_DECISION = """
INSERT INTO decisions (alert_id, decided_at, effect_done, decision) VALUES (%s, %s, %s, %s)
ON CONFLICT (alert_id) DO UPDATE SET
    decided_at = excluded.decided_at,
    effect_done = CASE WHEN excluded.decided_at = decisions.decided_at
        THEN decisions.effect_done OR excluded.effect_done
        ELSE excluded.effect_done END,
    decision = excluded.decision
WHERE excluded.decided_at >= decisions.decided_at
"""
_APPEND_SUPPRESSION = """
INSERT INTO suppressions (alert_id, record, received_at) VALUES (%s, %s, %s)
ON CONFLICT (alert_id) DO NOTHING
"""
_MARK_REPORTED_RANGE = """
UPDATE suppressions SET report_id = %s WHERE seq BETWEEN %s AND %s AND report_id IS NULL
"""
_MARK_REPORTED_BEFORE = """
UPDATE suppressions SET report_id = %s
WHERE seq BETWEEN %s AND %s AND report_id IS NULL AND received_at < %s
"""
_UNREPORTED = "SELECT seq, record FROM suppressions WHERE report_id IS NULL ORDER BY seq LIMIT %s"
# The unreported entries decided before an instant (a report period's end), by seq.
_UNREPORTED_BEFORE = (
    "SELECT seq, record FROM suppressions WHERE report_id IS NULL AND received_at < %s "
    "ORDER BY seq LIMIT %s"
)
# Retention, as sqlite.py's: at most PRUNE_BATCH_ROWS rows per statement.
_PRUNE_DECISIONS = """
DELETE FROM decisions WHERE alert_id IN (
    SELECT alert_id FROM decisions WHERE decided_at < %s ORDER BY decided_at
    LIMIT %s)
"""
_PRUNE_SUPPRESSIONS = """
DELETE FROM suppressions WHERE seq IN (
    SELECT seq FROM (
        SELECT seq, received_at FROM suppressions WHERE report_id IS NOT NULL
        ORDER BY seq LIMIT %s
    ) AS oldest
    WHERE received_at < %s)
"""
_PRUNE_QUARANTINE = """
DELETE FROM quarantine WHERE id IN (
    SELECT id FROM quarantine WHERE coalesce(replayed_at, quarantined_at) < %s
    LIMIT %s)
"""
_DELETE_COUNTER = "DELETE FROM counters WHERE originator = %s AND device = %s AND counter = %s"
_COUNTERS_AFTER = """
SELECT originator, device, counter FROM counters WHERE (originator, device) > (%s, %s)
ORDER BY originator, device LIMIT %s
"""
_PUT_QUARANTINE = """
INSERT INTO quarantine (id, topic, payload, reason, error, attempts, received_at,
    quarantined_at, forwarded)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET
    reason = excluded.reason,
    error = excluded.error,
    attempts = excluded.attempts,
    received_at = excluded.received_at,
    quarantined_at = excluded.quarantined_at,
    replayed_at = NULL
WHERE quarantine.replayed_at IS NOT NULL
"""
_MARK_REPLAYED = "UPDATE quarantine SET replayed_at = %s WHERE id = %s"
_SELECT_QUARANTINE = """
SELECT id, topic, payload, reason, error, attempts, received_at, quarantined_at, forwarded,
    replayed_at
FROM quarantine
"""
# The commands table, as sqlite.py's.
_PUT_COMMAND = """
INSERT INTO commands (esme, originator, counter, outcome, reason, chf, request_id, detail,
    seen_at, last_seen_at, window_start, window_end)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (esme, originator, counter, outcome, reason) DO UPDATE SET
    seen_at = LEAST(commands.seen_at, excluded.seen_at),
    last_seen_at = GREATEST(commands.last_seen_at, excluded.last_seen_at)
"""
_PRUNE_COMMANDS = """
DELETE FROM commands WHERE (esme, originator, counter, outcome, reason) IN (
    SELECT esme, originator, counter, outcome, reason FROM commands
    WHERE last_seen_at < %s AND coalesce(window_end, 0) < %s
    ORDER BY last_seen_at LIMIT %s)
"""
# A device's commands: as the recipient, or as the recipient's hub (both indexed).
_COMMANDS_FOR = """
SELECT * FROM (
    SELECT esme, originator, counter, outcome, reason, chf, request_id, detail, seen_at,
        last_seen_at, window_start, window_end FROM commands WHERE esme = %s
    UNION
    SELECT esme, originator, counter, outcome, reason, chf, request_id, detail, seen_at,
        last_seen_at, window_start, window_end FROM commands WHERE chf = %s
) AS c ORDER BY last_seen_at DESC, seen_at DESC LIMIT %s
"""
# The restorations table, as sqlite.py's.
_PUT_RESTORATION = """
INSERT INTO restorations (esme, counter, alert_code, chf, received_at, in_window, request_id)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (esme, counter) DO NOTHING
"""
_PRUNE_RESTORATIONS = """
DELETE FROM restorations WHERE (esme, counter) IN (
    SELECT esme, counter FROM restorations WHERE received_at < %s
    ORDER BY received_at LIMIT %s)
"""
_RESTORATIONS_IN = """
SELECT esme, counter, alert_code, chf, received_at, in_window, request_id FROM restorations
WHERE received_at >= %s AND received_at < %s ORDER BY received_at, esme, counter
"""
_NEAR_MISSES_IN = (
    _SELECT_DECISIONS
    + "WHERE decided_at >= %s AND decided_at < %s AND length(decision) IN ("
    + ", ".join(str(n) for n in NEAR_MISS_LENGTHS)
    + ") ORDER BY decided_at, alert_id"
)
_REPORT_POSITION = """
SELECT count(*) FROM suppressions
WHERE report_id = %s AND received_at >= %s AND received_at < %s AND seq <= %s
"""
_COUNTS = """
SELECT
    (SELECT count(*) FROM activations),
    (SELECT count(*) FROM counters),
    (SELECT count(*) FROM decisions),
    (SELECT count(*) FROM suppressions),
    (SELECT count(*) FROM suppressions WHERE report_id IS NULL),
    (SELECT count(*) FROM quarantine)
"""

_SET_META = """
INSERT INTO store_meta (key, value) VALUES (%s, %s)
ON CONFLICT (key) DO UPDATE SET value = excluded.value
"""
_GET_META = "SELECT value FROM store_meta WHERE key = %s"
_REPORTED = (
    "SELECT seq, record FROM suppressions "
    "WHERE seq BETWEEN %s AND %s AND report_id = %s ORDER BY seq"
)

# Writes to different tables commute, so a batch is applied table by table, in queue
# order within each (as sqlite.py's _TABLE_OF).
_TABLE_OF: Final = {
    _PUT_ACTIVATION: 0,
    _DELETE_ACTIVATION: 0,
    _SET_COUNTER: 1,
    _DELETE_COUNTER: 1,
    _PUT_DECISION: 2,
    _PRUNE_DECISIONS: 2,
    _APPEND_SUPPRESSION: 3,
    _PRUNE_SUPPRESSIONS: 3,
    _MARK_REPORTED_RANGE: 3,
    _MARK_REPORTED_BEFORE: 3,
    _PUT_QUARANTINE: 4,
    _MARK_REPLAYED: 4,
    _PRUNE_QUARANTINE: 4,
    _SET_META: 5,
    _PUT_COMMAND: 6,
    _PRUNE_COMMANDS: 6,
    _PUT_RESTORATION: 7,
    _PRUNE_RESTORATIONS: 7,
}


def describe_dsn(dsn: str) -> str:
    """``host:port/dbname`` of a DSN, for messages: never the password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(unparsable DSN)"
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    return f"{host}:{port}/{params.get('dbname') or params.get('user') or ''}"


_STATEMENTS: Final = Statements(
    append_suppression=_APPEND_SUPPRESSION,
    delete_activation=_DELETE_ACTIVATION,
    delete_counter=_DELETE_COUNTER,
    mark_replayed=_MARK_REPLAYED,
    mark_reported_before=_MARK_REPORTED_BEFORE,
    mark_reported_range=_MARK_REPORTED_RANGE,
    prune_commands=_PRUNE_COMMANDS,
    prune_decisions=_PRUNE_DECISIONS,
    prune_quarantine=_PRUNE_QUARANTINE,
    prune_restorations=_PRUNE_RESTORATIONS,
    prune_suppressions=_PRUNE_SUPPRESSIONS,
    put_activation=_PUT_ACTIVATION,
    put_command=_PUT_COMMAND,
    put_decision=_PUT_DECISION,
    put_quarantine=_PUT_QUARANTINE,
    put_restoration=_PUT_RESTORATION,
    set_counter=_SET_COUNTER,
    set_meta=_SET_META,
)
"""The shared writes' statements in this dialect (gateway/state/common.py)."""


class PostgresStore(SharedStore):
    """The daemon's durable state in a PostgreSQL database. See the module docstring.

    Open with :meth:`PostgresStore.open`; close with :meth:`aclose` (flushes first) or
    :meth:`close`.

    Attributes:
        path: where the store is, for messages (``host:port/dbname``, no password).
        commits: group commits that succeeded.
        commit_failures: group commits that failed.
        last_error: the error of the last failed commit, None once a commit succeeds.
        store_id: the store's random id, in ``store_meta``.
    """

    _TASK_NAME: ClassVar[str] = "poa-pg-store-commit"

    _sql: ClassVar[Statements] = _STATEMENTS

    def __init__(
        self,
        dsn: str,
        password: str | None,
        *,
        reader: psycopg.Connection[Any],
        writer: psycopg.Connection[Any],
        executor: ThreadPoolExecutor,
        store_id: str,
    ) -> None:
        """Internal: use :meth:`PostgresStore.open`."""
        # Errors of the commit loop name the database in their detail, not as ``path``.
        super().__init__(describe_dsn(dsn), executor, error_path=None)
        self._dsn = dsn
        self._password = password
        self.store_id = store_id
        self._reader = reader
        self._writer = writer  # used only from the executor's thread
        self._fence: tuple[str, int] | None = None  # (holder, epoch): see fence()
        self._idle_timeout_ms: int | None = None  # set on every new write connection

    @classmethod
    def open(cls, dsn: str, *, password: str | None = None, create: bool = True) -> Self:
        """Connect to the database of ``dsn`` and check (or create) its schema.

        Args:
            dsn: a libpq connection string or URI, without a password.
            password: the password, from the environment; None for none (peer, trust,
                a .pgpass file).
            create: give a database with no store the schema (the daemon); False for
                the read-only commands (status, explain), which then refuse it with
                ``state-empty`` and change nothing.

        Raises:
            StoreError: ``cannot-open`` (no connection: the message names host, port and
                database), ``unsupported-schema`` (another schema version: nothing is
                changed) or ``not-a-store``.
        """
        where = describe_dsn(dsn)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="poa-pg-store")
        reader: psycopg.Connection[Any] | None = None
        writer: psycopg.Connection[Any] | None = None
        try:
            writer = executor.submit(_connect, dsn, password).result()
            store_id = executor.submit(_prepare, writer, where, create).result()
            reader = _connect(dsn, password, autocommit=True)
        except BaseException:
            for conn in (reader, writer):
                if conn is not None:
                    conn.close()
            executor.shutdown(wait=True)
            raise
        return cls(
            dsn, password, reader=reader, writer=writer, executor=executor, store_id=store_id
        )

    def fence(self, holder: str, epoch: int, *, idle_timeout_ms: int) -> None:
        """Fence every later commit with the leader lease (gateway/state/lease.py).

        From now on each group commit first checks, in its own transaction and with the
        lease row share-locked, that ``holder`` still holds the lease at ``epoch``; if
        not, nothing is written and the commit fails with ``StoreError`` ``fenced``, for
        good. ``idle_timeout_ms`` becomes the write connection's
        ``idle_in_transaction_session_timeout``: a process frozen inside a commit (SIGSTOP,
        a VM pause) would otherwise hold the lease row's lock, and so keep every standby
        from taking over, until it woke; the server ends its transaction instead.
        """
        self._fence = (holder, epoch)
        self._idle_timeout_ms = int(idle_timeout_ms)
        self._executor.submit(self._setup_writer).result()

    def _setup_writer(self) -> None:
        if self._idle_timeout_ms is not None:
            self._writer.execute(
                "SELECT set_config('idle_in_transaction_session_timeout', %s, false)",
                (str(self._idle_timeout_ms),),
            )
            self._writer.commit()

    # -- writes (queued; see flush) ------------------------------------------------------

    # -- reads (synchronous, committed state) ----------------------------------------------

    def load_activations(self) -> list[Activation]:
        """Every recorded activation (for ``Engine.restore``), in key order (esme,
        originator, counter) as the SQLite store returns them.

        Read as a few thousand values of packed records, in binary, rather than a row
        per activation (see "Activations, packed" at the end of the module): a
        promotion loads every window before it serves anything.
        """
        with self._reading():
            try:
                rows = self._reader.execute(_LOAD_ACTIVATIONS_PACKED, binary=True).fetchall()
            except psycopg.OperationalError:
                if not self._reader.broken:
                    raise
                rows = None
        if rows is None:  # the server ended the connection: _fetch reconnects, once
            rows = self._fetch(_LOAD_ACTIVATIONS_PACKED)
        return _unpack_activations(rows, self.path)

    def activation_fields(self) -> Iterator[ActivationFields]:
        """Every recorded activation as plain fields, streamed (for
        ``Engine.restore_fields`` at a promotion), in no particular order.

        In :data:`_STREAM_PARTS` parts (by the ESME's last byte), each one value of
        packed records (see "Activations, packed" at the end of the module): while the
        engine restores one part, a helper thread already waits for the server to pack
        the next, on the other core. The parts are read in one REPEATABLE READ
        transaction, so they are one snapshot, on a connection of their own, so that
        other reads (``load_decisions``) can run meanwhile from another thread.
        """
        with (
            self._reading(),
            _connect(self._dsn, self._password) as conn,
            ThreadPoolExecutor(1, thread_name_prefix="poa-pg-restore") as pool,
        ):
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ

            def part(k: int) -> bytes:
                row = conn.execute(_STREAM_PART, (_STREAM_PARTS, k), binary=True).fetchone()
                return b"" if row is None or row[0] is None else bytes(row[0])

            coming = pool.submit(part, 0)
            for k in range(_STREAM_PARTS):
                packed = coming.result()
                if k + 1 < _STREAM_PARTS:
                    coming = pool.submit(part, k + 1)
                try:
                    records = _ACTIVATION_RECORD.iter_unpack(packed)
                except struct.error as exc:
                    # The columns' CHECKs make every record the same size: damage.
                    raise StoreError(
                        StoreReason.CORRUPT_RECORD,
                        f"{self.path}: activations: {exc}",
                        path=self.path,
                    ) from exc
                yield from cast("Iterator[ActivationFields]", records)

    def load_decisions(self, since_ms: int) -> list[tuple[AlertDecision, bool]]:
        """Decisions made at or after ``since_ms``, oldest first, with ``effect_done``."""
        rows = self._fetch(_LOAD_DECISIONS, (check_i64("since_ms", since_ms),))
        return [decision_from_row(row) for row in rows]

    def decision(self, alert_id: str) -> tuple[AlertDecision, bool] | None:
        """The recorded decision on ``alert_id`` and its ``effect_done``, or None."""
        rows = self._fetch(_GET_DECISION, (alert_id,))
        return decision_from_row(rows[0]) if rows else None

    def last_counter(self, originator: bytes, device: bytes) -> int | None:
        """The highest counter accepted, including counters queued but not committed."""
        key = (bytes(originator), bytes(device))
        rows = self._fetch(
            "SELECT counter FROM counters WHERE originator = %s AND device = %s", key
        )
        return self._with_overlay(key, int.from_bytes(rows[0][0], "big") if rows else None)

    def counters_after(
        self, after: tuple[bytes, bytes], limit: int
    ) -> list[tuple[bytes, bytes, int]]:
        """Up to ``limit`` committed counters as (originator, device, counter), in key
        order after the key ``after`` (``(b"", b"")`` for the first page)."""
        rows = self._fetch(_COUNTERS_AFTER, (*after, limit))
        return [(bytes(o), bytes(d), int.from_bytes(c, "big")) for o, d, c in rows]

    def unreported(self, limit: int) -> list[tuple[int, SuppressionRecord]]:
        """Up to ``limit`` log entries not yet in a report, as (seq, record), by seq."""
        rows = self._fetch(_UNREPORTED, (limit,))
        return [(int(seq), self._record(seq, blob)) for seq, blob in rows]

    def _read_unreported(
        self, limit: int, before_ms: int | None = None
    ) -> list[tuple[int, SuppressionRecord]]:
        sql: str = _UNREPORTED
        params: tuple[int, ...] = (limit,)
        if before_ms is not None:
            sql, params = _UNREPORTED_BEFORE, (check_i64("before_ms", before_ms), limit)
        with self._reading(), _connect(self._dsn, self._password, autocommit=True) as conn:
            rows = conn.execute(sql, params).fetchall()
        return [(int(seq), self._record(seq, blob)) for seq, blob in rows]

    def unreported_count(self) -> int:
        """How many log entries are not yet in a report."""
        rows = self._fetch("SELECT count(*) FROM suppressions WHERE report_id IS NULL")
        return int(rows[0][0])

    def suppressions_for(self, alert_id: str) -> list[StoredSuppression]:
        """The log entry for ``alert_id``, as a list (empty, or one entry)."""
        rows = self._fetch(
            "SELECT seq, record, report_id FROM suppressions WHERE alert_id = %s ORDER BY seq",
            (alert_id,),
        )
        return [
            StoredSuppression(seq=int(seq), record=self._record(seq, blob), report_id=report_id)
            for seq, blob, report_id in rows
        ]

    def commands_for(self, device: bytes, limit: int = 1000) -> list[CommandRecord]:
        """The commands recorded for ``device`` (as the recipient, or as its hub), the
        most recently seen first, at most ``limit``."""
        eui = check_eui("device", device)
        rows = self._fetch(
            _COMMANDS_FOR,
            (eui, eui, limit),
        )
        return [command_from_row(row) for row in rows]

    def activations_of(self, device: bytes) -> list[Activation]:
        """The tracked activations whose ESME or hub is ``device``."""
        eui = check_eui("device", device)
        rows = self._fetch(
            "SELECT esme, originator, counter, chf, start_ms, end_ms, future_dated, seen_at, "
            "closed_early, succeeded FROM activations WHERE esme = %s OR chf = %s "
            "ORDER BY esme, originator, counter",
            (eui, eui),
        )
        return [activation_from_row(row) for row in rows]

    def _read_evidence(
        self, start_ms: int, end_ms: int
    ) -> tuple[list[AlertDecision], list[RestorationRecord]]:
        span = (check_i64("start_ms", start_ms), check_i64("end_ms", end_ms))
        with self._reading(), _connect(self._dsn, self._password, autocommit=False) as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            decisions = conn.execute(_NEAR_MISSES_IN, span).fetchall()
            restorations = conn.execute(_RESTORATIONS_IN, span).fetchall()
            conn.rollback()
        misses = [d for d, _ in map(decision_from_row, decisions) if d.after_window_ms is not None]
        return misses, [restoration_from_row(row) for row in restorations]

    def report_position(self, seq: int, report_id: str, start_ms: int, end_ms: int) -> int:
        """As :meth:`gateway.state.sqlite.Store.report_position`."""
        rows = self._fetch(_REPORT_POSITION, (report_id, start_ms, end_ms, seq))
        return int(rows[0][0])

    def quarantined(self, limit: int = 1000) -> list[QuarantineEntry]:
        """The most recent ``limit`` quarantined messages, newest first."""
        rows = self._fetch(
            _SELECT_QUARANTINE + "ORDER BY quarantined_at DESC, id LIMIT %s", (limit,)
        )
        return [quarantine_entry_from_row(row) for row in rows]

    def quarantine_entry(self, entry_id: str) -> QuarantineEntry | None:
        """The quarantined message ``entry_id``, or None."""
        rows = self._fetch(_SELECT_QUARANTINE + "WHERE id = %s", (entry_id,))
        return quarantine_entry_from_row(rows[0]) if rows else None

    def counts(self) -> dict[str, int]:
        """Row counts, as :meth:`gateway.state.sqlite.Store.counts`."""
        (row,) = self._fetch(_COUNTS)
        names = (
            "activations",
            "counters",
            "decisions",
            "suppressions",
            "unreported",
            "quarantined",
        )
        return {name: int(n) for name, n in zip(names, row, strict=True)}

    # -- internals ------------------------------------------------------------------------

    def _meta_rows(self) -> list[tuple[Any, ...]]:
        return self._fetch(_GET_META, (REPORT_CURSOR_KEY,))

    def _report_rows(self, pending: PendingReport) -> list[tuple[Any, ...]]:
        return self._fetch(_REPORTED, (pending.first_seq, pending.last_seq, pending.report_id))

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._reading():
            try:
                return self._reader.execute(sql, params).fetchall()
            except psycopg.OperationalError:
                if not self._reader.broken:
                    raise
            # The server ended the connection (a restart): reads are idempotent, so one
            # new connection and one more try.
            self._reader.close()
            try:
                self._reader = _connect(self._dsn, self._password, autocommit=True)
            except StoreError as exc:
                raise StoreError(StoreReason.DATABASE_ERROR, exc.detail, path=self.path) from exc
            return self._reader.execute(sql, params).fetchall()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        self._check_open()
        try:
            yield
        except psycopg.Error as exc:
            raise StoreError(
                StoreReason.DATABASE_ERROR, f"{self.path}: state store: {exc}"
            ) from exc

    def _record(self, seq: int, blob: bytes) -> SuppressionRecord:
        try:
            return decode_suppression_record(bytes(blob))
        except WireError as exc:
            raise StoreError(
                StoreReason.CORRUPT_RECORD, f"{self.path}: suppression {seq}: {exc}"
            ) from exc

    def _commit(self, batch: list[Op]) -> None:
        # Runs in the worker thread: the only place the write connection is used.
        if self._writer.closed or self._writer.broken:
            # Lost (server restart, connection terminated): reconnect for the retry.
            self._writer.close()
            self._writer = _connect(self._dsn, self._password)
            self._setup_writer()
        conn = self._writer
        try:
            with conn.transaction(), conn.cursor() as cur:
                check_fence(cur, self._fence, f"{self.path}: commit refused")
                ordered = sorted(batch, key=lambda op: _TABLE_OF[op[0]])
                for sql, ops in itertools.groupby(ordered, key=itemgetter(0)):
                    _write_rows(cur, sql, [params for _, params in ops])
        finally:
            if not conn.closed and not conn.broken:
                conn.rollback()  # nothing pending: a no-op after the commit

    def _close_connections(self) -> None:
        self._reader.close()
        self._executor.submit(self._close_writer).result()

    def _close_writer(self) -> None:
        # The attribute is read in the worker thread: _commit may have replaced it.
        self._writer.close()


# -- helpers -------------------------------------------------------------------------------


def connect(dsn: str, password: str | None, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """A connection to the database of ``dsn`` (``StoreError`` ``cannot-open`` naming
    host, port and database, never the password, when it cannot be made)."""
    return _connect(dsn, password, autocommit=autocommit)


def open_connection(
    dsn: str,
    password: str | None,
    *,
    autocommit: bool = False,
    application_name: str | None = None,
) -> psycopg.Connection[Any]:
    """psycopg's connection to ``dsn`` as every module of ours makes it (the password
    passed apart from the DSN, a connect timeout); psycopg's error when it fails, for
    the caller to say in its own terms (with :func:`first_line`)."""
    extra: dict[str, Any] = {"connect_timeout": _CONNECT_TIMEOUT_S}
    if application_name:
        extra["application_name"] = application_name
    if password:
        extra["password"] = password
    return psycopg.connect(dsn, autocommit=autocommit, **extra)


def _connect(
    dsn: str, password: str | None, *, autocommit: bool = False
) -> psycopg.Connection[Any]:
    where = describe_dsn(dsn)
    try:
        return open_connection(dsn, password, autocommit=autocommit)
    except psycopg.Error as exc:
        raise StoreError(
            StoreReason.CANNOT_OPEN,
            f"cannot connect to the PostgreSQL state store at {where}: {first_line(exc)}",
            path=where,
        ) from None


def _prepare(conn: psycopg.Connection[Any], where: str, create: bool = True) -> str:
    """Check the schema (creating it in an empty database); return the store id."""
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            found = {
                name
                for (name,) in conn.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = current_schema() AND table_name = ANY(%s)",
                    (list(_OUR_TABLES),),
                ).fetchall()
            }
            # store_meta without a schema_version is no store yet: it holds only the
            # inventory's mark (gateway/state/pg_inventory.py may be opened first).
            if found <= {"store_meta"} and (
                not found
                or conn.execute("SELECT 1 FROM store_meta WHERE key = 'schema_version'").fetchone()
                is None
            ):
                if not create:
                    raise StoreError(
                        StoreReason.STATE_EMPTY,
                        f"{where}: no poa-gateway state store in this database yet (no "
                        "gateway has run on it)",
                        path=where,
                    )
                for statement in _SCHEMA.split(";") + _ADDED_SCHEMA.split(";"):
                    conn.execute(statement)
                store_id = secrets.token_hex(16)
                conn.execute(
                    "INSERT INTO store_meta (key, value) VALUES ('schema_version', %s), "
                    "('store_id', %s)",
                    (str(PG_SCHEMA_VERSION), store_id),
                )
                return store_id
            if "store_meta" not in found:
                raise StoreError(
                    StoreReason.NOT_A_STORE,
                    f"{where}: not a poa-gateway state store (tables {', '.join(sorted(found))} "
                    "but no store_meta)",
                    path=where,
                )
            meta = dict(conn.execute("SELECT key, value FROM store_meta").fetchall())
            if meta.get("schema_version") == str(PG_SCHEMA_VERSION):
                for statement in _ADDED_SCHEMA.split(";"):
                    conn.execute(statement)
    except psycopg.Error as exc:
        raise StoreError(
            StoreReason.CANNOT_OPEN, f"{where}: cannot prepare the state store: {exc}", path=where
        ) from exc
    version = meta.get("schema_version")
    if version != str(PG_SCHEMA_VERSION):
        older = version is not None and version.isdigit() and int(version) < PG_SCHEMA_VERSION
        age = "older" if older else "newer"
        raise StoreError(
            StoreReason.UNSUPPORTED_SCHEMA,
            f"{where}: state schema version {version} is {age} than this gateway's "
            f"({PG_SCHEMA_VERSION}); nothing was changed. Run the gateway version that "
            "wrote it, or migrate the database first.",
            path=where,
        )
    return str(meta.get("store_id", ""))


# -- a run of rows in one statement ------------------------------------------------------
#
# executemany sends a Bind/Execute per row (pipelined, so not a round trip each) but
# adapts every row in Python, about 20 us of the commit thread's CPU per row: at storm
# rates (a decision per alert, a log entry per suppressed one) that CPU is taken from
# the event loop through the GIL, and the commit takes twice as long as it needs to
# (bench/throughput.py --state both measures it against SQLite). The two inserts of the
# storm's hot path are sent instead as ONE statement whose parameters are the run's
# columns as arrays, unnested by the server, in binary.
#
# The result is executemany's exactly when the run's keys are distinct: every row then
# meets only rows committed before the statement, as it would row by row, and the
# ON CONFLICT rule (the same text, by the same column names) decides the same. A run that
# repeats a key (a redelivery queuing a decision twice, effect_done then set) keeps
# executemany, where the later row sees the earlier: one statement could not (DO UPDATE
# refuses to touch a row twice). The suppressions are inserted in queue order (WITH
# ORDINALITY ... ORDER BY), so their identity seq still grows in commit order.

_PUT_DECISIONS_UNNEST: Final = """
INSERT INTO decisions (alert_id, decided_at, effect_done, decision)
SELECT alert_id, decided_at, effect_done, decision
FROM unnest(%b::text[], %b::bigint[], %b::boolean[], %b::bytea[])
    AS r(alert_id, decided_at, effect_done, decision)
ON CONFLICT (alert_id) DO UPDATE SET
    decided_at = excluded.decided_at,
    effect_done = CASE WHEN excluded.decided_at = decisions.decided_at
        THEN decisions.effect_done OR excluded.effect_done
        ELSE excluded.effect_done END,
    decision = excluded.decision
WHERE excluded.decided_at >= decisions.decided_at
"""
_APPEND_SUPPRESSIONS_UNNEST: Final = """
INSERT INTO suppressions (alert_id, record, received_at)
SELECT alert_id, record, received_at
FROM unnest(%b::text[], %b::bytea[], %b::bigint[]) WITH ORDINALITY
    AS r(alert_id, record, received_at, n)
ORDER BY n
ON CONFLICT (alert_id) DO NOTHING
"""
# statement -> (its one-statement form, the position of its conflict key in a row)
_UNNEST_FORMS: Final = {
    _PUT_DECISION: (_PUT_DECISIONS_UNNEST, 0),
    _APPEND_SUPPRESSION: (_APPEND_SUPPRESSIONS_UNNEST, 0),
}


def _write_rows(cur: psycopg.Cursor[Any], sql: str, rows: list[tuple[Any, ...]]) -> None:
    """Apply ``rows`` of ``sql`` in order, as ``executemany`` would (see above)."""
    form = _UNNEST_FORMS.get(sql)
    if form is not None and len(rows) > 1:
        unnest, key = form
        if len({row[key] for row in rows}) == len(rows):
            cur.execute(unnest, [list(column) for column in zip(*rows, strict=True)])
            return
    cur.executemany(sql, rows)


# -- activations, packed -----------------------------------------------------------------
#
# A standby promoted to leader loads every activation before it connects (gateway/ha.py),
# 1.4 million at GB scale, and forwards nothing meanwhile. Fetched as rows, each of the
# ten columns of each row is a value for libpq and psycopg to convert and a Python
# object, and decoding them into Activations cost more than the query. Instead the
# server packs each row into one fixed-size record (_ACTIVATION_RECORD, big-endian: the
# three EUI-64s, the counter's 8 bytes, int8send of each time, a byte per flag) and
# concatenates the records in key order, so that the client makes every Activation
# straight from struct.iter_unpack, without a Python loop per row.
#
# The records are concatenated per 7-byte prefix of the ESME, at most 256 ESMEs a value:
# the groups come in key order (the prefix is the key's start), no value approaches
# PostgreSQL's 1 GB limit however many windows there are, and the sort before the
# grouping may use parallel workers. The order is the SQLite store's (its WITHOUT ROWID
# table is read in key order), so both stores restore an engine identically.

_ACTIVATION_RECORD: Final = struct.Struct(">8s8s8sQqq?q??")
# The fields of _ACTIVATION_RECORD, which is unpacked into Activation by position.
_ACTIVATION_FIELDS: Final = (
    "esme",
    "chf",
    "originator",
    "counter",
    "start_ms",
    "end_ms",
    "future_dated",
    "seen_at",
    "closed_early",
    "succeeded",
)
if Activation.__struct_fields__ != _ACTIVATION_FIELDS:  # pragma: no cover - a bug, loudly
    raise ImportError("gateway.state.postgresql: _ACTIVATION_RECORD no longer fits Activation")

_LOAD_ACTIVATIONS_PACKED: Final = r"""
SELECT string_agg(
    esme || chf || originator || counter || int8send(start_ms) || int8send(end_ms)
        || set_byte('\x00'::bytea, 0, future_dated::int) || int8send(seen_at)
        || set_byte('\x00'::bytea, 0, closed_early::int)
        || set_byte('\x00'::bytea, 0, succeeded::int),
    ''::bytea ORDER BY esme, originator, counter)
FROM activations
GROUP BY substr(esme, 1, 7)
ORDER BY substr(esme, 1, 7)
"""


# The activations for a promotion's restore (activation_fields), in parts: each the
# records of the ESMEs whose last byte is k modulo the number of parts, concatenated in
# no order (no sort: the engine needs none), so that the server packs one part in a
# fraction of the time the engine takes to restore the one before.
_STREAM_PART: Final = r"""
SELECT string_agg(
    esme || chf || originator || counter || int8send(start_ms) || int8send(end_ms)
        || set_byte('\x00'::bytea, 0, future_dated::int) || int8send(seen_at)
        || set_byte('\x00'::bytea, 0, closed_early::int)
        || set_byte('\x00'::bytea, 0, succeeded::int),
    ''::bytea)
FROM activations
WHERE get_byte(esme, 7) %% %s = %s
"""
_STREAM_PARTS: Final = 8


def _unpack_activations(rows: list[tuple[Any, ...]], where: str) -> list[Activation]:
    """The Activations of _LOAD_ACTIVATIONS_PACKED's rows, in order."""
    out: list[Activation] = []
    for (packed,) in rows:
        try:
            out.extend(itertools.starmap(Activation, _ACTIVATION_RECORD.iter_unpack(packed)))
        except struct.error as exc:
            # The columns' CHECKs make every record 67 bytes: another length is damage.
            raise StoreError(
                StoreReason.CORRUPT_RECORD, f"{where}: activations: {exc}", path=where
            ) from exc
    return out
