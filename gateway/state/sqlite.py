"""The daemon's durable state: one SQLite file, written by group commit.

Theory of operation
-------------------
The gateway acknowledges an inbound QoS 1 message only once its effect is durable: a
suppressed AD1 is in the suppression log, an accepted CS06 has its window and originator
counter recorded (WIRE.md). The state lives in one SQLite file with these tables:

- ``activations``: every tracked activation (all :class:`~gateway.core.events.Activation`
  fields), reloaded into the engine at start-up (``Engine.restore``);
- ``counters``: the last originator counter accepted per (originator, device), for
  replay protection; rows are only ever raised, and deleted only by retention once
  their device has left the inventory (docs/decisions.md D31);
- ``decisions``: recent alert decisions, so that a redelivery after a restart gets the
  same decision (``Engine.remember_decision``); ``effect_done`` says whether the forward
  was acknowledged by the broker or the suppression record committed; the decision is
  one BLOB in the store's own row format ("the decisions row", below), which owes
  nothing to the engine's in-memory form;
- ``suppressions``: the Power Outage Alert Suppression log, one CBOR
  :class:`~gateway.wire.SuppressionRecord` per suppressed alert, numbered by ``seq``;
  ``report_id`` stays NULL until a report file includes the record;
- ``commands``: every CS06 judged (tracked, replaced, cancelled or refused, and why),
  for ``poa-gateway explain`` (gateway/state/audit.py; schema version 4, added to older
  files when they are opened);
- ``quarantine``: messages that could not be handled (gateway/quarantine.py);
- ``restorations``: the restoration alerts received, in a window or not, the evidence
  for assumption A5 in a period's summary (gateway/state/restorations.py; schema
  version 5, added to older files when they are opened).

**Why group commit.** A durable commit costs an ``fsync``: half a millisecond on the
development VM, several on many disks, far more than the SQL. One commit per message
would cap the daemon at a few thousand messages a second at best (``bench/store_bench.py``:
about 1,400 suppressed alerts/s, one commit each, against about 26,000/s from 1,000
concurrent tasks sharing commits). So writes are not committed one by one: each write
method only
*queues* the write and returns; one background task takes everything queued, applies
it and commits it as one transaction, then resolves every :meth:`Store.flush` waiting on
that batch. Writes that arrive while a batch commits form the next batch. There is no
timer: an idle store commits a lone write at once, and under load each batch grows to
whatever arrived during the previous commit, so one fsync covers many messages.
The loop (queue, tickets, waiters, the counter overlay below, retries, the life cycle)
is gateway/state/group_commit.py's, shared with the PostgreSQL store; this module
supplies the SQLite side: how a batch is applied and committed.

**Why a worker thread.** sqlite3 calls block, and a commit blocks for its fsync; the
event loop must keep reading from the broker meanwhile. The write connection is owned
by a dedicated one-thread executor and used from nowhere else, so commits never block
the loop (sqlite3 releases the GIL while SQLite works) and writes reach SQLite in the
order they were queued. SQLite admits one writer at a time anyway, so one thread loses
nothing. Reads are synchronous, on the caller's (event loop) thread, through a second,
read-only connection: in WAL mode a reader never waits for the writer, and the reads the
daemon does (a counter, an alert id) are single index lookups.

Reads see what is *committed*. The one exception is :meth:`Store.last_counter`, which
also sees counters queued but not yet committed (an in-memory overlay), so that a second
copy of a CS06 arriving while the first one's counter is still being committed is
refused as a replay.

**The durability guarantee.** When ``flush()`` returns, every write queued before the
call is committed. With ``synchronous=FULL`` (the default) the WAL is fsynced at every
commit, so the writes survive a power cut; with ``NORMAL`` they survive the process
being killed but the last commits may be rolled back by a power cut (the file is never
corrupted either way). The daemon acknowledges a message only after the flush that
covers its writes, so FULL is needed for the promise "a suppressed alert's record is
never lost".

**What a crash means**, at each point in the life of a write:

1. *Queued, not yet committed* (``flush()`` pending): the write is lost. The message
   was not acknowledged, so the broker redelivers it and the daemon processes it again
   from the state on disk.
2. *During the commit*: SQLite commits atomically, so the whole batch is on disk or
   none of it; either way no message of the batch was acknowledged (case 1 or 3).
3. *Committed, not yet acknowledged*: the state is on disk and the message is
   redelivered; the daemon finds the alert's decision with ``effect_done`` and gives
   the same answer without a second effect (a redelivered CS06 finds its counter
   recorded and is refused as a replay, its window already stored).
4. *Acknowledged*: the state is on disk (with FULL, even across a power cut).

Redelivery means a write may be applied twice, so every write is idempotent:
``put_activation`` replaces the row, ``delete_activation`` of a missing row does
nothing, ``set_counter`` keeps the maximum, ``put_decision`` never turns a done effect
back into a pending one, ``append_suppression`` keeps the first record of an alert id,
``mark_reported_range`` only marks records not yet reported, ``prune_decisions`` deletes
by age, and so do the other retention prunes (``delete_counter`` only a counter still at
the value it names).

**Retention** (docs/decisions.md D31). Each prune statement deletes at most
:data:`~gateway.state.protocol.PRUNE_BATCH_ROWS` rows, so that one prune never makes a
long transaction (every acknowledgement queued behind it waits for its commit);
housekeeping repeats it every pass (gateway/service.py ``Gateway._prune``) until nothing
is past the cutoff. A suppression record is deleted only once it is in a report: an
unreported one is kept whatever its age.

**When a commit fails** (disk full, I/O error, the file locked by another process beyond
the busy timeout), the transaction is rolled back, and every ``flush()`` waiting at that
moment raises :class:`StoreError` with reason ``commit-failed``: the daemon does not
acknowledge those messages, and the broker will redeliver them. Whether a failed
commit reached the disk is in general unknown (an fsync error may come after the data
was written); idempotence makes either outcome safe. The failed batch is not dropped:
it goes back to the head of the queue, in order, and is retried together with the next
writes when the next write or ``flush()`` arrives; its counters stay in the overlay.
The retry is attempted once per wake-up, never in a loop. :attr:`Store.commit_failures`
and :attr:`Store.last_error` let the daemon decide when to give up (restart and reload
from disk): a persistent failure keeps every flush failing, and the retained writes
grow with each redelivered message.

``close()`` does not commit queued writes: for them it is a crash (case 1), which is
safe because nobody was told they were durable. ``aclose()`` flushes first.

Values are checked when queued (EUI-64s of 8 bytes, counters in 0 .. 2**64 - 1, times
in SQLite's signed 64-bit range) so that a bad value raises at the call site instead of
poisoning a batch. Originator counters are unsigned 64-bit (GBCS) and SQLite integers
are signed, so counters are stored as 8-byte big-endian BLOBs, which SQLite compares
byte by byte, i.e. numerically (``hex(counter)`` in the sqlite3 shell shows the value).

The file is marked with ``PRAGMA application_id`` (:data:`APPLICATION_ID`) and versioned
with ``PRAGMA user_version`` (:data:`SCHEMA_VERSION`). A version 1 file (decisions in
17 columns) is migrated in one transaction when opened; any other SQLite file (the
inventory, a newer gateway's state) is refused with a reason instead of being "migrated".

**A lost store is not a new one** (docs/decisions.md D22). A missing state file used to
be created afresh, so a state file deleted or truncated to zero bytes meant every window
silently forgotten and the daemon starting as if new. Now :meth:`Store.open` creates a
new file whole (under a temporary name, then linked into place: no crash leaves an empty
one) and then writes a marker beside it, ``<state file>.created`` (:data:`MARKER_SUFFIX`),
holding a random store id that the file records too (table ``store_meta``). On open, a
zero-length state file is refused (``state-empty``); with the marker present, a missing
state file or one without our schema is refused (``state-lost``), and one whose store id
differs from the marker's (``state-mismatch``). A valid store without a marker (written
by an older gateway) is given one.

Threads: a :class:`Store` is used from one thread, the event loop's (or a plain thread
without a loop, for reads, as ``poa-gateway status`` does), and one event loop.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import os
import secrets
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from operator import itemgetter
from pathlib import Path
from typing import ClassVar, Final, Literal, Self, TypeAlias

from gateway.core.events import Activation, ActivationFields, AlertDecision
from gateway.wire import SuppressionRecord, WireError, decode_suppression_record

from .audit import CommandRecord, command_from_row
from .common import SharedStore, Statements
from .errors import StoreError, StoreReason
from .group_commit import Op
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
    decision_row,
    quarantine_entry_from_row,
    quarantine_id,
)
from .sqlite_util import create_schema_once, immediate, schema_marks

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "QuarantineEntry",
    "Store",
    "StoreError",
    "StoreReason",
    "StoredSuppression",
    "Synchronous",
    "quarantine_id",
]

SCHEMA_VERSION: Final = 5
"""``PRAGMA user_version`` of a state file written by this module."""

APPLICATION_ID: Final = 0x504F4153  # "POAS": poa-gateway state
"""``PRAGMA application_id`` that marks a SQLite file as a poa-gateway state store."""

Synchronous: TypeAlias = Literal["FULL", "NORMAL"]
"""The SQLite ``synchronous`` levels a store may use (see the module docstring)."""

MARKER_SUFFIX: Final = ".created"
"""The marker of a state store is the state file's name with this suffix, beside it."""

_BUSY_TIMEOUT_S: Final = 10.0
_WAL_LIMIT_BYTES: Final = 64 * 1024 * 1024  # WAL size kept after a checkpoint


# -- schema and statements -------------------------------------------------------------

# Counters are 8-byte big-endian BLOBs (see the module docstring); EUI-64s are 8-byte
# BLOBs; times are integer milliseconds (UTC); flags are 0 or 1.
#
# The decisions table keeps a copy of the activation a decision names rather than a
# reference: the window may be closed early or expire (and its row be deleted) while the
# decision is still within the dedupe horizon, and a redelivered alert must get the
# decision as it was made. The decision is one packed BLOB (gateway/state/rows.py,
# "The decisions row") rather than 17 columns: a row is written for every alert, and the
# narrow row costs SQLite 3.5 us of CPU instead of 9 (schema version 2; version 1 files
# are migrated on open).
_SCHEMA = f"""
CREATE TABLE activations (
    esme BLOB NOT NULL CHECK (length(esme) = 8),
    originator BLOB NOT NULL CHECK (length(originator) = 8),
    counter BLOB NOT NULL CHECK (length(counter) = 8),
    chf BLOB NOT NULL CHECK (length(chf) = 8),
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    future_dated INTEGER NOT NULL CHECK (future_dated = 0 OR future_dated = 1),
    seen_at INTEGER NOT NULL,
    closed_early INTEGER NOT NULL CHECK (closed_early = 0 OR closed_early = 1),
    succeeded INTEGER NOT NULL CHECK (succeeded = 0 OR succeeded = 1),
    PRIMARY KEY (esme, originator, counter)
) WITHOUT ROWID;
CREATE TABLE counters (
    originator BLOB NOT NULL CHECK (length(originator) = 8),
    device BLOB NOT NULL CHECK (length(device) = 8),
    counter BLOB NOT NULL CHECK (length(counter) = 8),
    PRIMARY KEY (originator, device)
) WITHOUT ROWID;
CREATE TABLE decisions (
    alert_id TEXT PRIMARY KEY,
    decided_at INTEGER NOT NULL,
    effect_done INTEGER NOT NULL CHECK (effect_done = 0 OR effect_done = 1),
    decision BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX decisions_decided_at ON decisions (decided_at);
CREATE TABLE suppressions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL UNIQUE,
    record BLOB NOT NULL,
    received_at INTEGER NOT NULL,
    report_id TEXT
);
CREATE INDEX suppressions_unreported ON suppressions (seq) WHERE report_id IS NULL;
CREATE TABLE commands (
    esme BLOB NOT NULL CHECK (length(esme) = 8),
    originator BLOB NOT NULL CHECK (length(originator) = 8),
    counter BLOB NOT NULL CHECK (length(counter) = 8),
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL,
    chf BLOB CHECK (chf IS NULL OR length(chf) = 8),
    request_id TEXT,
    detail TEXT NOT NULL,
    seen_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    window_start INTEGER,
    window_end INTEGER,
    PRIMARY KEY (esme, originator, counter, outcome, reason)
) WITHOUT ROWID;
CREATE INDEX commands_chf ON commands (chf);
CREATE INDEX commands_last_seen_at ON commands (last_seen_at);
CREATE TABLE quarantine (
    id TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    reason TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    quarantined_at INTEGER NOT NULL,
    forwarded INTEGER NOT NULL CHECK (forwarded = 0 OR forwarded = 1),
    replayed_at INTEGER
);
CREATE TABLE restorations (
    esme BLOB NOT NULL CHECK (length(esme) = 8),
    counter BLOB NOT NULL CHECK (length(counter) = 8),
    alert_code INTEGER NOT NULL,
    chf BLOB CHECK (chf IS NULL OR length(chf) = 8),
    received_at INTEGER NOT NULL,
    in_window INTEGER NOT NULL CHECK (in_window = 0 OR in_window = 1),
    request_id TEXT,
    PRIMARY KEY (esme, counter)
) WITHOUT ROWID;
CREATE INDEX restorations_received_at ON restorations (received_at);
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {SCHEMA_VERSION};
"""


_LOAD_ACTIVATIONS = """
SELECT esme, originator, counter, chf, start_ms, end_ms, future_dated, seen_at,
    closed_early, succeeded
FROM activations ORDER BY esme, originator, counter
"""
_PUT_ACTIVATION = """
INSERT OR REPLACE INTO activations (esme, originator, counter, chf, start_ms, end_ms,
    future_dated, seen_at, closed_early, succeeded)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_DELETE_ACTIVATION = "DELETE FROM activations WHERE esme = ? AND originator = ? AND counter = ?"
_SET_COUNTER = """
INSERT INTO counters (originator, device, counter) VALUES (?, ?, ?)
ON CONFLICT (originator, device) DO UPDATE SET counter = excluded.counter
WHERE excluded.counter > counters.counter
"""
_SELECT_DECISIONS = "SELECT alert_id, decided_at, effect_done, decision FROM decisions "
_LOAD_DECISIONS = _SELECT_DECISIONS + "WHERE decided_at >= ? ORDER BY decided_at, alert_id"
_GET_DECISION = _SELECT_DECISIONS + "WHERE alert_id = ?"
# A later decision on the alert id (made again after the dedupe horizon) replaces the
# row; the same decision again (a duplicate, or its effect now done) only raises
# effect_done; an earlier one changes nothing. (In SET, unqualified names and
# "decisions." are the row before the update.)
_PUT_DECISION = """
INSERT INTO decisions (alert_id, decided_at, effect_done, decision) VALUES (?, ?, ?, ?)
ON CONFLICT (alert_id) DO UPDATE SET
    decided_at = excluded.decided_at,
    effect_done = CASE WHEN excluded.decided_at = decisions.decided_at
        THEN max(decisions.effect_done, excluded.effect_done)
        ELSE excluded.effect_done END,
    decision = excluded.decision
WHERE excluded.decided_at >= decisions.decided_at
"""
_APPEND_SUPPRESSION = """
INSERT INTO suppressions (alert_id, record, received_at) VALUES (?, ?, ?)
ON CONFLICT (alert_id) DO NOTHING
"""
_MARK_REPORTED_RANGE = """
UPDATE suppressions SET report_id = ? WHERE seq BETWEEN ? AND ? AND report_id IS NULL
"""
_MARK_REPORTED_BEFORE = """
UPDATE suppressions SET report_id = ?
WHERE seq BETWEEN ? AND ? AND report_id IS NULL AND received_at < ?
"""
_UNREPORTED = "SELECT seq, record FROM suppressions WHERE report_id IS NULL ORDER BY seq LIMIT ?"
# The unreported entries decided before an instant (a report period's end), by seq.
_UNREPORTED_BEFORE = (
    "SELECT seq, record FROM suppressions WHERE report_id IS NULL AND received_at < ? "
    "ORDER BY seq LIMIT ?"
)
# Retention (module docstring): at most PRUNE_BATCH_ROWS rows per statement. The log is
# scanned from its oldest reported records (seq grows with time), so a pass reads a
# bounded number of rows however long the log is; unreported records are never deleted.
_PRUNE_DECISIONS = """
DELETE FROM decisions WHERE alert_id IN (
    SELECT alert_id FROM decisions WHERE decided_at < ? ORDER BY decided_at
    LIMIT ?)
"""
_PRUNE_SUPPRESSIONS = """
DELETE FROM suppressions WHERE seq IN (
    SELECT seq FROM (
        SELECT seq, received_at FROM suppressions WHERE report_id IS NOT NULL
        ORDER BY seq LIMIT ?
    ) AS oldest
    WHERE received_at < ?)
"""
# A replayed entry is kept for the retention after its replay, any other after it was
# quarantined.
_PRUNE_QUARANTINE = """
DELETE FROM quarantine WHERE id IN (
    SELECT id FROM quarantine WHERE coalesce(replayed_at, quarantined_at) < ?
    LIMIT ?)
"""
# Only the value the sweep saw: a counter raised meanwhile (its device back in the
# inventory and a command accepted) stays.
_DELETE_COUNTER = "DELETE FROM counters WHERE originator = ? AND device = ? AND counter = ?"
_COUNTERS_AFTER = """
SELECT originator, device, counter FROM counters WHERE (originator, device) > (?, ?)
ORDER BY originator, device LIMIT ?
"""
# A redelivered copy of a quarantined message names the same entry: the first stays.
# One that fails again after an operator replayed it is quarantined afresh.
_PUT_QUARANTINE = """
INSERT INTO quarantine (id, topic, payload, reason, error, attempts, received_at,
    quarantined_at, forwarded)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    reason = excluded.reason,
    error = excluded.error,
    attempts = excluded.attempts,
    received_at = excluded.received_at,
    quarantined_at = excluded.quarantined_at,
    replayed_at = NULL
WHERE quarantine.replayed_at IS NOT NULL
"""
_MARK_REPLAYED = "UPDATE quarantine SET replayed_at = ? WHERE id = ?"
_SELECT_QUARANTINE = """
SELECT id, topic, payload, reason, error, attempts, received_at, quarantined_at, forwarded,
    replayed_at
FROM quarantine
"""
# The commands table (gateway/state/audit.py): a command judged again (a redelivered
# copy, a replay sent many times) is one row whose last sighting moves on.
_PUT_COMMAND = """
INSERT INTO commands (esme, originator, counter, outcome, reason, chf, request_id, detail,
    seen_at, last_seen_at, window_start, window_end)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (esme, originator, counter, outcome, reason) DO UPDATE SET
    seen_at = min(commands.seen_at, excluded.seen_at),
    last_seen_at = max(commands.last_seen_at, excluded.last_seen_at)
"""
# A tracked command's row is kept while its window may still be ahead (a future-dated
# activation scheduled beyond the retention).
_PRUNE_COMMANDS = """
DELETE FROM commands WHERE (esme, originator, counter, outcome, reason) IN (
    SELECT esme, originator, counter, outcome, reason FROM commands
    WHERE last_seen_at < ? AND coalesce(window_end, 0) < ?
    ORDER BY last_seen_at LIMIT ?)
"""
# The restorations table (gateway/state/restorations.py): a redelivered copy keeps the
# first sighting, so that a period's summary is the same file whenever it is written.
_PUT_RESTORATION = """
INSERT INTO restorations (esme, counter, alert_code, chf, received_at, in_window, request_id)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (esme, counter) DO NOTHING
"""
_PRUNE_RESTORATIONS = """
DELETE FROM restorations WHERE (esme, counter) IN (
    SELECT esme, counter FROM restorations WHERE received_at < ?
    ORDER BY received_at LIMIT ?)
"""
_RESTORATIONS_IN = """
SELECT esme, counter, alert_code, chf, received_at, in_window, request_id FROM restorations
WHERE received_at >= ? AND received_at < ? ORDER BY received_at, esme, counter
"""
# A period's near misses (the report summary): only a decisions row of a near-miss
# length can hold one (NEAR_MISS_LENGTHS), which keeps the decoding to those rows.
_NEAR_MISSES_IN = (
    _SELECT_DECISIONS
    + "WHERE decided_at >= ? AND decided_at < ? AND length(decision) IN ("
    + ", ".join(str(n) for n in NEAR_MISS_LENGTHS)
    + ") ORDER BY decided_at, alert_id"
)
_REPORT_POSITION = """
SELECT count(*) FROM suppressions
WHERE report_id = ? AND received_at >= ? AND received_at < ? AND seq <= ?
"""
# A device's commands: as the recipient, or as the recipient's hub (both indexed).
_COMMANDS_FOR = """
SELECT * FROM (
    SELECT esme, originator, counter, outcome, reason, chf, request_id, detail, seen_at,
        last_seen_at, window_start, window_end FROM commands WHERE esme = ?
    UNION
    SELECT esme, originator, counter, outcome, reason, chf, request_id, detail, seen_at,
        last_seen_at, window_start, window_end FROM commands WHERE chf = ?
) AS c ORDER BY last_seen_at DESC, seen_at DESC LIMIT ?
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

# Which table each write statement touches. Writes to different tables commute (no
# triggers, no foreign keys), so a batch is applied table by table, keeping the queue
# order within each table; runs of one statement then go to SQLite in one executemany.
_SET_META = """
INSERT INTO store_meta (key, value) VALUES (?, ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value
"""
_GET_META = "SELECT value FROM store_meta WHERE key = ?"
_REPORTED = (
    "SELECT seq, record FROM suppressions WHERE seq BETWEEN ? AND ? AND report_id = ? ORDER BY seq"
)

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


# -- the store ---------------------------------------------------------------------------


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


class Store(SharedStore):
    """The daemon's durable state in one SQLite file. See the module docstring.

    Open with :meth:`Store.open`; close with :meth:`aclose` (flushes first) or
    :meth:`close`, or use as a (sync or async) context manager.

    Attributes:
        path: the SQLite file.
        synchronous: the ``synchronous`` level of the write connection.
        commits: group commits that succeeded.
        commit_failures: group commits that failed.
        last_error: the error of the last failed commit, None once a commit succeeds.
        store_id: the store's random id, in the file and in its marker.
        marker: the marker file beside the state file (``path`` + :data:`MARKER_SUFFIX`).
    """

    store_id: str
    marker: str

    _sql: ClassVar[Statements] = _STATEMENTS

    def __init__(
        self,
        path: str,
        synchronous: Synchronous,
        reader: sqlite3.Connection,
        writer: sqlite3.Connection,
        executor: ThreadPoolExecutor,
        *,
        busy_timeout_s: float = _BUSY_TIMEOUT_S,
    ) -> None:
        """Internal: use :meth:`Store.open`."""
        super().__init__(path, executor, error_path=path)
        self._busy_timeout_s = busy_timeout_s
        self.synchronous: Synchronous = synchronous
        self._reader = reader
        self._writer = writer  # used only from the executor's thread

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "FULL",
        busy_timeout_s: float = _BUSY_TIMEOUT_S,
    ) -> Self:
        """Open the state store at ``path``, creating the file, its schema and its marker
        if missing (but never recreating a lost one: see the module docstring).

        Args:
            path: the SQLite file.
            synchronous: ``FULL`` (commits survive a power cut) or ``NORMAL`` (they
                survive a crash of the process only).
            busy_timeout_s: how long a statement waits for a lock held by another
                process (e.g. a maintenance tool) before failing.

        Raises:
            StoreError: ``cannot-open``, ``not-a-store``, ``unsupported-schema``,
                ``state-empty``, ``state-lost`` or ``state-mismatch``.
        """
        name = os.fspath(path)
        if synchronous not in ("FULL", "NORMAL"):
            raise StoreError(
                StoreReason.INVALID_VALUE, f"synchronous must be FULL or NORMAL: {synchronous}"
            )
        marker = name + MARKER_SUFFIX
        recorded = _check_state_file(name, marker, busy_timeout_s)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="poa-store")
        writer: sqlite3.Connection | None = None
        try:
            writer = executor.submit(_open_writer, name, synchronous, busy_timeout_s).result()
            store_id = executor.submit(_identify, writer, name, marker, recorded).result()
            reader = _connect(name, busy_timeout_s, check_same_thread=True)
            try:
                reader.execute("PRAGMA query_only = ON")
            except sqlite3.Error as exc:
                reader.close()
                raise _cannot_open(name, exc) from exc
        except BaseException:
            if writer is not None:
                executor.submit(writer.close).result()
            executor.shutdown(wait=True)
            raise
        store = cls(name, synchronous, reader, writer, executor, busy_timeout_s=busy_timeout_s)
        store.store_id = store_id
        store.marker = marker
        return store

    # -- writes (queued; see flush) ------------------------------------------------------

    # -- reads (synchronous, committed state) ----------------------------------------------

    def load_activations(self) -> list[Activation]:
        """Every recorded activation (for ``Engine.restore``)."""
        with self._reading():
            rows = self._reader.execute(_LOAD_ACTIVATIONS).fetchall()
        return [activation_from_row(row) for row in rows]

    def activation_fields(self) -> list[ActivationFields]:
        """Every recorded activation as plain fields (for ``Engine.restore_fields``)."""
        with self._reading():
            rows = self._reader.execute(_LOAD_ACTIVATIONS).fetchall()
        return [
            (
                row[0],  # esme
                row[3],  # chf
                row[1],  # originator
                int.from_bytes(row[2], "big"),  # counter
                row[4],  # start_ms
                row[5],  # end_ms
                bool(row[6]),  # future_dated
                row[7],  # seen_at
                bool(row[8]),  # closed_early
                bool(row[9]),  # succeeded
            )
            for row in rows
        ]

    def load_decisions(self, since_ms: int) -> list[tuple[AlertDecision, bool]]:
        """Decisions made at or after ``since_ms``, oldest first, with ``effect_done``."""
        with self._reading():
            rows = self._reader.execute(
                _LOAD_DECISIONS, (check_i64("since_ms", since_ms),)
            ).fetchall()
        return [decision_from_row(row) for row in rows]

    def decision(self, alert_id: str) -> tuple[AlertDecision, bool] | None:
        """The recorded decision on ``alert_id`` and its ``effect_done``, or None."""
        with self._reading():
            row = self._reader.execute(_GET_DECISION, (alert_id,)).fetchone()
        return None if row is None else decision_from_row(row)

    def last_counter(self, originator: bytes, device: bytes) -> int | None:
        """The highest originator counter accepted from ``originator`` for ``device``,
        including counters queued but not yet committed; None if there is none."""
        key = (bytes(originator), bytes(device))
        with self._reading():
            row = self._reader.execute(
                "SELECT counter FROM counters WHERE originator = ? AND device = ?", key
            ).fetchone()
        return self._with_overlay(key, None if row is None else int.from_bytes(row[0], "big"))

    def counters_after(
        self, after: tuple[bytes, bytes], limit: int
    ) -> list[tuple[bytes, bytes, int]]:
        """Up to ``limit`` committed counters as (originator, device, counter), in key
        order after the key ``after`` (``(b"", b"")`` for the first page)."""
        with self._reading():
            rows = self._reader.execute(_COUNTERS_AFTER, (*after, limit)).fetchall()
        return [(bytes(o), bytes(d), int.from_bytes(c, "big")) for o, d, c in rows]

    def unreported(self, limit: int) -> list[tuple[int, SuppressionRecord]]:
        """Up to ``limit`` log entries not yet in a report, as (seq, record), by seq."""
        with self._reading():
            rows = self._reader.execute(_UNREPORTED, (limit,)).fetchall()
        return [(int(seq), self._record(seq, blob)) for seq, blob in rows]

    def _read_unreported(
        self, limit: int, before_ms: int | None = None
    ) -> list[tuple[int, SuppressionRecord]]:
        sql: str = _UNREPORTED
        params: tuple[int, ...] = (limit,)
        if before_ms is not None:
            sql, params = _UNREPORTED_BEFORE, (check_i64("before_ms", before_ms), limit)
        conn = _connect(self.path, self._busy_timeout_s, check_same_thread=True)
        try:
            with self._reading():
                conn.execute("PRAGMA query_only = ON")
                # Decoded as the rows come: a report part's 50,000 blobs are never all
                # held beside their records (the backlog drain's peak memory).
                rows = conn.execute(sql, params)
                return [(int(seq), self._record(seq, blob)) for seq, blob in rows]
        finally:
            conn.close()

    def unreported_count(self) -> int:
        """How many log entries are not yet in a report."""
        with self._reading():
            (n,) = self._reader.execute(
                "SELECT count(*) FROM suppressions WHERE report_id IS NULL"
            ).fetchone()
        return int(n)

    def suppressions_for(self, alert_id: str) -> list[StoredSuppression]:
        """The log entry for ``alert_id``, as a list (empty, or one entry)."""
        with self._reading():
            rows = self._reader.execute(
                "SELECT seq, record, report_id FROM suppressions WHERE alert_id = ? ORDER BY seq",
                (alert_id,),
            ).fetchall()
        return [
            StoredSuppression(seq=int(seq), record=self._record(seq, blob), report_id=report_id)
            for seq, blob, report_id in rows
        ]

    def commands_for(self, device: bytes, limit: int = 1000) -> list[CommandRecord]:
        """The commands recorded for ``device`` (as the recipient, or as its hub), the
        most recently seen first, at most ``limit``."""
        eui = check_eui("device", device)
        with self._reading():
            rows = self._reader.execute(
                _COMMANDS_FOR,
                (eui, eui, limit),
            ).fetchall()
        return [command_from_row(row) for row in rows]

    def activations_of(self, device: bytes) -> list[Activation]:
        """The tracked activations whose ESME or hub is ``device``."""
        eui = check_eui("device", device)
        with self._reading():
            rows = self._reader.execute(
                _LOAD_ACTIVATIONS.replace("ORDER BY", "WHERE esme = ? OR chf = ? ORDER BY"),
                (eui, eui),
            ).fetchall()
        return [activation_from_row(row) for row in rows]

    def _read_evidence(
        self, start_ms: int, end_ms: int
    ) -> tuple[list[AlertDecision], list[RestorationRecord]]:
        span = (check_i64("start_ms", start_ms), check_i64("end_ms", end_ms))
        conn = _connect(self.path, self._busy_timeout_s, check_same_thread=True)
        try:
            with self._reading():
                conn.execute("PRAGMA query_only = ON")
                conn.execute("BEGIN")  # one snapshot for both lists (WAL)
                decisions = conn.execute(_NEAR_MISSES_IN, span).fetchall()
                restorations = conn.execute(_RESTORATIONS_IN, span).fetchall()
                conn.execute("COMMIT")
        finally:
            conn.close()
        misses = [d for d, _ in map(decision_from_row, decisions) if d.after_window_ms is not None]
        return misses, [restoration_from_row(row) for row in restorations]

    def report_position(self, seq: int, report_id: str, start_ms: int, end_ms: int) -> int:
        """The position (1, 2 ...) of log entry ``seq`` among the records of report
        ``report_id`` of the period [``start_ms``, ``end_ms``), in seq order: the order
        the report's data records are written in."""
        with self._reading():
            (n,) = self._reader.execute(
                _REPORT_POSITION, (report_id, start_ms, end_ms, seq)
            ).fetchone()
        return int(n)

    def quarantined(self, limit: int = 1000) -> list[QuarantineEntry]:
        """The most recent ``limit`` quarantined messages, newest first."""
        with self._reading():
            rows = self._reader.execute(
                _SELECT_QUARANTINE + "ORDER BY quarantined_at DESC, id LIMIT ?", (limit,)
            ).fetchall()
        return [quarantine_entry_from_row(row) for row in rows]

    def quarantine_entry(self, entry_id: str) -> QuarantineEntry | None:
        """The quarantined message ``entry_id``, or None."""
        with self._reading():
            row = self._reader.execute(_SELECT_QUARANTINE + "WHERE id = ?", (entry_id,)).fetchone()
        return None if row is None else quarantine_entry_from_row(row)

    def counts(self) -> dict[str, int]:
        """Row counts for ``poa-gateway status``: ``activations``, ``counters``,
        ``decisions``, ``suppressions``, ``unreported`` and ``quarantined`` (one
        statement, one snapshot)."""
        with self._reading():
            row = self._reader.execute(_COUNTS).fetchone()
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

    def _commit(self, batch: list[Op]) -> None:
        # Runs in the worker thread: the only place the write connection is used.
        conn = self._writer
        with immediate(conn):
            ordered = sorted(batch, key=lambda op: _TABLE_OF[op[0]])  # stable: see _TABLE_OF
            for sql, ops in itertools.groupby(ordered, key=itemgetter(0)):
                conn.executemany(sql, [params for _, params in ops])

    def _close_connections(self) -> None:
        # The reader first: the last connection to close checkpoints the WAL, and the
        # writer's synchronous setting is the one that should apply.
        self._reader.close()
        self._executor.submit(self._writer.close).result()

    def _meta_rows(self) -> list[tuple[object, ...]]:
        with self._reading():
            return self._reader.execute(_GET_META, (REPORT_CURSOR_KEY,)).fetchall()

    def _report_rows(self, pending: PendingReport) -> list[tuple[int, bytes]]:
        with self._reading():
            return self._reader.execute(
                _REPORTED, (pending.first_seq, pending.last_seq, pending.report_id)
            ).fetchall()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        self._check_open()
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(
                StoreReason.DATABASE_ERROR, f"{self.path}: state store: {exc}", path=self.path
            ) from exc

    def _record(self, seq: int, blob: bytes) -> SuppressionRecord:
        try:
            return decode_suppression_record(blob)
        except WireError as exc:
            raise StoreError(
                StoreReason.CORRUPT_RECORD, f"{self.path}: suppression {seq}: {exc}", path=self.path
            ) from exc


# -- helpers -------------------------------------------------------------------------------


def _connect(path: str, busy_timeout_s: float, *, check_same_thread: bool) -> sqlite3.Connection:
    try:
        return sqlite3.connect(
            path,
            isolation_level=None,  # explicit BEGIN/COMMIT
            timeout=busy_timeout_s,
            check_same_thread=check_same_thread,
        )
    except sqlite3.Error as exc:
        raise _cannot_open(path, exc) from exc


def _open_writer(path: str, synchronous: Synchronous, busy_timeout_s: float) -> sqlite3.Connection:
    # Runs in the worker thread, which owns the connection from here on.
    conn = _connect(path, busy_timeout_s, check_same_thread=False)
    try:
        _prepare(conn, path)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA fullfsync = ON")  # macOS: fsync alone does not reach the disk
        conn.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT_BYTES}")
    except sqlite3.Error as exc:
        conn.close()
        raise _cannot_open(path, exc) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _prepare(conn: sqlite3.Connection, path: str) -> None:
    app_id, version = schema_marks(conn)
    if app_id == APPLICATION_ID and version == SCHEMA_VERSION:
        return
    if app_id == APPLICATION_ID and version in (1, 2, 3, 4):
        _migrate(conn, version)
        return
    if app_id not in (0, APPLICATION_ID):
        raise _foreign(path, f"application_id {app_id:#x}")
    if version > SCHEMA_VERSION:
        raise StoreError(
            StoreReason.UNSUPPORTED_SCHEMA,
            f"{path}: state schema version {version} is newer than this gateway's "
            f"({SCHEMA_VERSION})",
            path=path,
        )
    create_schema_once(
        conn,
        schema=_SCHEMA,
        application_id=APPLICATION_ID,
        foreign=lambda what: _foreign(path, what),
    )


# Version 1 kept a decision in 17 columns (the activation's as a_*).
_V1_DECISIONS = """
SELECT alert_id, chf, suppressed, reason, judged_at, decided_at, effect_done,
    a_esme, a_originator, a_counter, a_chf, a_start_ms, a_end_ms, a_future_dated,
    a_seen_at, a_closed_early, a_succeeded
FROM decisions
"""
_V2_DECISIONS = _SCHEMA[
    _SCHEMA.index("CREATE TABLE decisions") : _SCHEMA.index("CREATE TABLE suppressions")
]


_V3_QUARANTINE = _SCHEMA[
    _SCHEMA.index("CREATE TABLE quarantine") : _SCHEMA.index("CREATE TABLE restorations")
]
_V4_COMMANDS = _SCHEMA[
    _SCHEMA.index("CREATE TABLE commands") : _SCHEMA.index("CREATE TABLE quarantine")
]
_V5_RESTORATIONS = _SCHEMA[_SCHEMA.index("CREATE TABLE restorations") : _SCHEMA.index("PRAGMA")]


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    # One transaction: a crash part-way leaves the old file as it was.
    with immediate(conn):
        if schema_marks(conn)[1] != version:
            return  # already migrated by another process
        if version == 1:
            _migrate_from_v1(conn)
        # Version 3 added the quarantine table.
        conn.execute(
            _V3_QUARANTINE.strip().rstrip(";").replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS")
        )
        # Version 4 added the commands table (gateway/state/audit.py), version 5 the
        # restorations table (gateway/state/restorations.py).
        for statement in (_V4_COMMANDS + _V5_RESTORATIONS).split(";"):
            if statement.strip():
                conn.execute(
                    statement.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS").replace(
                        "CREATE INDEX", "CREATE INDEX IF NOT EXISTS"
                    )
                )
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _migrate_from_v1(conn: sqlite3.Connection) -> None:
    # Version 1 kept a decision in 17 columns; inside _migrate's transaction.
    rows = conn.execute(_V1_DECISIONS).fetchall()
    conn.execute("DROP TABLE decisions")  # its index goes with it
    for statement in _V2_DECISIONS.split(";"):
        if statement.strip():
            conn.execute(statement)
    for row in rows:
        alert_id, chf, suppressed, reason, judged_at, decided_at, effect_done = row[:7]
        a = row[7:]
        decision = AlertDecision(
            alert_id=alert_id,
            chf=chf,
            suppressed=bool(suppressed),
            reason=reason,
            judged_at=judged_at,
            decided_at=decided_at,
            activation=None if a[0] is None else activation_from_row(a),
        )
        conn.execute(
            _PUT_DECISION,
            decision_row(decision, effect_done=bool(effect_done)),
        )


def _foreign(path: str, what: str) -> StoreError:
    return StoreError(
        StoreReason.NOT_A_STORE, f"{path}: not a poa-gateway state store ({what})", path=path
    )


def _cannot_open(path: str, exc: sqlite3.Error) -> StoreError:
    return StoreError(StoreReason.CANNOT_OPEN, f"{path}: cannot open state store: {exc}", path=path)


# -- the marker: a lost store is not a new one (module docstring, D22) -------------------

_STORE_META = """
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID
"""
_AFRESH = "every tracked window, originator counter and unreported suppression record is then lost"


def _check_state_file(name: str, marker: str, busy_timeout_s: float) -> str | None:
    """Refuse a state file that was lost; return the store id its marker records (None
    without a marker), having created the file if it is new."""
    try:
        size: int | None = os.stat(name).st_size
    except FileNotFoundError:
        size = None
    except OSError as exc:
        raise StoreError(
            StoreReason.CANNOT_OPEN, f"{name}: cannot open state store: {exc}", path=name
        ) from exc
    if size == 0:
        # SQLite would take it for a new database and the gateway would start empty.
        remedy = f"{name} and {marker}" if os.path.lexists(marker) else name
        raise StoreError(
            StoreReason.STATE_EMPTY,
            f"{name} is empty (0 bytes): the gateway never leaves an empty state file, so "
            f"the state it held was lost. Restore {name} and {marker} from a backup; or, to "
            f"start afresh deliberately, delete {remedy}: {_AFRESH}.",
            path=name,
        )
    recorded = _read_marker(name, marker)
    if recorded is None:
        if size is None:
            _create_whole(name, busy_timeout_s)
        return None
    if size is None:
        raise _state_lost(name, marker, "is missing")
    if not _has_content(name, busy_timeout_s):
        raise _state_lost(name, marker, "holds no poa-gateway state")
    return recorded


def _state_lost(name: str, marker: str, what: str) -> StoreError:
    return StoreError(
        StoreReason.STATE_LOST,
        f"{name} {what}, but {marker} says a state store was created there: its windows, "
        f"counters and suppression records are gone. Restore {name} from a backup (with "
        f"{marker}, which travels with it); or, to start afresh deliberately, delete "
        f"{marker}: {_AFRESH}.",
        path=name,
    )


def _read_marker(name: str, marker: str) -> str | None:
    try:
        text = Path(marker).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(
            StoreReason.CANNOT_OPEN, f"{marker}: cannot read the marker: {exc}", path=name
        ) from exc
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "store_id" and _is_store_id(value.strip()):
            return value.strip()
    raise StoreError(
        StoreReason.STATE_MISMATCH,
        f"{marker} records no store id, so {name} cannot be checked against it. Restore "
        f"both from one backup; or, if {name} is the state to keep, delete {marker} (it is "
        "written again from the state file at the next start).",
        path=name,
    )


def _is_store_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def _has_content(name: str, busy_timeout_s: float) -> bool:
    # Only a file SQLite would take for a new database (no marks, no tables) counts as
    # empty here; anything else is left to _prepare, which refuses it with its reason.
    try:
        with contextlib.closing(_connect(name, busy_timeout_s, check_same_thread=True)) as conn:
            if schema_marks(conn) != (0, 0):
                return True
            (tables,) = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return int(tables) > 0
    except (sqlite3.Error, StoreError):
        return True


def _create_whole(name: str, busy_timeout_s: float) -> None:
    # A new file is made under a temporary name and linked into place, so that a crash
    # while it is being made never leaves an empty (or half-made) state file behind.
    tmp = f"{name}.creating"
    _remove(tmp, tmp + "-journal")  # what a crash left
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(tmp, isolation_level=None, timeout=busy_timeout_s)
        _prepare(conn, tmp)
        with immediate(conn):
            conn.execute(_STORE_META)
            conn.execute(
                "INSERT INTO store_meta (key, value) VALUES ('store_id', ?)",
                (secrets.token_hex(16),),
            )
        conn.close()
        conn = None
        _fsync_file(tmp)
        # Never replaces: another process may have made one meanwhile.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, name)
        _fsync_dir(name)
    except sqlite3.Error as exc:
        raise _cannot_open(name, exc) from exc
    except OSError as exc:
        raise StoreError(
            StoreReason.CANNOT_OPEN, f"{name}: cannot create state store: {exc}", path=name
        ) from exc
    finally:
        if conn is not None:
            conn.close()
        _remove(tmp, tmp + "-journal")


def _remove(*paths: str) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _identify(conn: sqlite3.Connection, name: str, marker: str, recorded: str | None) -> str:
    """The store id, checked against the marker's, or recorded in both (worker thread)."""
    try:
        stored = _stored_id(conn)
        if recorded is not None:
            if stored != recorded:
                raise StoreError(
                    StoreReason.STATE_MISMATCH,
                    f"{name} is not the state store {marker} was written for (store "
                    f"{stored or 'with no id'}, marker {recorded}): another gateway's "
                    f"file, or a backup older than the marker? Restore both from one "
                    f"backup; or, if {name} is the state to keep, delete {marker} (it is "
                    "written again from the state file at the next start).",
                    path=name,
                )
            return recorded
        if stored is None:  # written by an older gateway
            with immediate(conn):
                conn.execute(_STORE_META)
                conn.execute(
                    "INSERT OR IGNORE INTO store_meta (key, value) VALUES ('store_id', ?)",
                    (secrets.token_hex(16),),
                )
            stored = _stored_id(conn)
            assert stored is not None
    except sqlite3.Error as exc:
        raise _cannot_open(name, exc) from exc
    _write_marker(name, marker, stored)
    return stored


def _stored_id(conn: sqlite3.Connection) -> str | None:
    if not conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'store_meta'"
    ).fetchone():
        return None
    row = conn.execute("SELECT value FROM store_meta WHERE key = 'store_id'").fetchone()
    return None if row is None else str(row[0])


def _write_marker(name: str, marker: str, store_id: str) -> None:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    state = os.path.basename(name)
    text = (
        f"# poa-gateway: {state} beside this file holds the gateway's state.\n"
        f"# If {state} is missing or empty while this file is here, the gateway refuses\n"
        "# to start. Restore both files from one backup; or, to start afresh\n"
        f"# deliberately, delete this file: {_AFRESH}.\n"
        f"store_id = {store_id}\n"
        f"written_at = {now}\n"
    )
    tmp = marker + ".tmp"
    try:
        with Path(tmp).open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, marker)
        _fsync_dir(marker)
    except OSError as exc:
        raise StoreError(
            StoreReason.CANNOT_OPEN, f"{marker}: cannot write the marker: {exc}", path=name
        ) from exc


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    # The new name must be on disk before anything that relies on it (the marker).
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
