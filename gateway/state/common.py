"""The writes (and the few reads) every state store does alike, whatever its database.

Both stores (gateway/state/sqlite.py, gateway/state/postgresql.py) write the same rows
(gateway/state/rows.py) with statements that differ only in their dialect. A backend
names its statements once, in a :class:`Statements` (its ``_sql``), and supplies the
reads that differ (:meth:`SharedStore._record`, ``_meta_rows``, ``_report_rows``,
``_read_unreported``, ``_read_evidence``); everything here is written once for both.
"""

from __future__ import annotations

import abc
import asyncio
from typing import Any, ClassVar

import msgspec

from gateway.core.events import Activation, AlertDecision
from gateway.wire import SuppressionRecord, encode

from .audit import CommandRecord, command_row
from .group_commit import GroupCommitStore
from .protocol import PRUNE_BATCH_ROWS
from .restorations import RestorationRecord, restoration_row
from .rows import (
    REPORT_CURSOR_KEY,
    PendingReport,
    QuarantineEntry,
    ReportCursor,
    activation_key,
    activation_row,
    check_eui,
    check_i64,
    check_u64,
    cursor_from_value,
    cursor_value,
    decision_row,
    quarantine_row,
)

__all__ = ["SharedStore", "Statements"]


class Statements(msgspec.Struct, frozen=True, kw_only=True):
    """A backend's statements for the writes every store queues alike (one field per
    statement; the SQL in the backend's dialect)."""

    append_suppression: str
    delete_activation: str
    delete_counter: str
    mark_replayed: str
    mark_reported_before: str
    mark_reported_range: str
    prune_commands: str
    prune_decisions: str
    prune_quarantine: str
    prune_restorations: str
    prune_suppressions: str
    put_activation: str
    put_command: str
    put_decision: str
    put_quarantine: str
    put_restoration: str
    set_counter: str
    set_meta: str


class SharedStore(GroupCommitStore):
    """The writes and reads both stores share; see the module docstring."""

    _sql: ClassVar[Statements]

    @abc.abstractmethod
    def _record(self, seq: Any, blob: Any) -> SuppressionRecord:
        """A suppression log entry decoded (``corrupt-record`` if it does not decode)."""

    @abc.abstractmethod
    def _meta_rows(self) -> list[Any]:
        """The ``store_meta`` row of the report cursor, as a list of one row or none."""

    @abc.abstractmethod
    def _report_rows(self, pending: PendingReport) -> list[Any]:
        """The (seq, record) rows marked with ``pending``'s report id, by seq."""

    @abc.abstractmethod
    def _read_unreported(
        self, limit: int, before_ms: int | None = None
    ) -> list[tuple[int, SuppressionRecord]]:
        """:meth:`read_unreported`'s work, in a thread with a connection of its own."""

    @abc.abstractmethod
    def _read_evidence(
        self, start_ms: int, end_ms: int
    ) -> tuple[list[AlertDecision], list[RestorationRecord]]:
        """:meth:`read_evidence`'s work, in a thread with a connection of its own."""

    def put_activation(self, a: Activation) -> None:
        """Record an activation, replacing the one with the same (esme, originator, counter)."""
        self._enqueue(self._sql.put_activation, activation_row(a))

    def delete_activation(self, a: Activation) -> None:
        """Forget an activation (by esme, originator, counter); nothing if not recorded."""
        self._enqueue(self._sql.delete_activation, activation_key(a))

    def set_counter(self, originator: bytes, device: bytes, counter: int) -> None:
        """Record an accepted originator counter; the stored value only ever goes up.

        Visible to :meth:`last_counter` at once, before it is committed.
        """
        self._enqueue_counter(self._sql.set_counter, originator, device, counter)

    def put_decision(self, decision: AlertDecision, *, effect_done: bool) -> None:
        """Record an alert decision and whether its effect is done.

        The same decision recorded again (a duplicate, or once its effect is done) only
        raises ``effect_done``, never lowers it; a later decision on the same alert id
        replaces it; an earlier one is ignored. ``duplicate`` is not stored.
        """
        self._enqueue(self._sql.put_decision, decision_row(decision, effect_done=effect_done))

    def append_suppression(self, record: SuppressionRecord, encoded: bytes | None = None) -> None:
        """Append a record to the suppression log (CBOR, as :func:`gateway.wire.encode`;
        pass ``encoded`` when the caller already has those bytes).

        A second record for an alert id already in the log is ignored: the first stays.
        """
        blob = encode(record) if encoded is None else encoded
        row = (record.alert_id, blob, check_i64("received_at", record.received_at))
        self._enqueue(self._sql.append_suppression, row)

    def mark_reported_range(
        self, first: int, last: int, report_id: str, *, before_ms: int | None = None
    ) -> None:
        """Record that a report includes every unreported entry from ``first`` to ``last``.

        For a batch read by :meth:`read_unreported`: sequence numbers only grow, so an
        entry committed after that read lies beyond ``last`` and stays unreported. One
        statement instead of one per entry (a report holds up to 50,000).
        """
        if before_ms is not None:
            # Only the entries decided before the period's end: a later period's entry
            # may have been committed before some of this period's.
            self._enqueue(
                self._sql.mark_reported_before,
                (
                    report_id,
                    check_i64("first", first),
                    check_i64("last", last),
                    check_i64("before_ms", before_ms),
                ),
            )
            return
        self._enqueue(
            self._sql.mark_reported_range,
            (report_id, check_i64("first", first), check_i64("last", last)),
        )

    def set_report_cursor(self, cursor: ReportCursor) -> None:
        """Record where reporting stands (:class:`~gateway.state.rows.ReportCursor`)."""
        self._enqueue(self._sql.set_meta, (REPORT_CURSOR_KEY, cursor_value(cursor)))

    def prune_decisions(self, before_ms: int) -> None:
        """Forget up to :data:`PRUNE_BATCH_ROWS` decisions made before ``before_ms``
        (past ``retention.decisions``), the oldest first."""
        self._enqueue(
            self._sql.prune_decisions, (check_i64("before_ms", before_ms), PRUNE_BATCH_ROWS)
        )

    def prune_suppressions(self, before_ms: int) -> None:
        """Delete up to :data:`PRUNE_BATCH_ROWS` of the oldest suppression records that are
        in a report and were received before ``before_ms``; never an unreported one."""
        self._enqueue(
            self._sql.prune_suppressions, (PRUNE_BATCH_ROWS, check_i64("before_ms", before_ms))
        )

    def prune_quarantine(self, before_ms: int) -> None:
        """Delete up to :data:`PRUNE_BATCH_ROWS` quarantine entries replayed before
        ``before_ms``, or quarantined before it and not replayed since."""
        self._enqueue(
            self._sql.prune_quarantine, (check_i64("before_ms", before_ms), PRUNE_BATCH_ROWS)
        )

    def delete_counter(self, originator: bytes, device: bytes, counter: int) -> None:
        """Delete the originator counter of (``originator``, ``device``) if it is still
        ``counter`` (a counter raised since it was read stays)."""
        row = (
            check_eui("originator", originator),
            check_eui("device", device),
            check_u64("counter", counter),
        )
        self._enqueue(self._sql.delete_counter, row)

    def put_command(self, command: CommandRecord) -> None:
        """Record a CS06 judged and what became of it (gateway/state/audit.py); the same
        command with the same outcome again only moves its ``last_seen_at``."""
        self._enqueue(self._sql.put_command, command_row(command))

    def prune_commands(self, before_ms: int) -> None:
        """Delete up to :data:`PRUNE_BATCH_ROWS` commands last seen before ``before_ms``
        whose window (if any) ended before it too, the oldest first."""
        cutoff = check_i64("before_ms", before_ms)
        self._enqueue(self._sql.prune_commands, (cutoff, cutoff, PRUNE_BATCH_ROWS))

    def put_restoration(self, restoration: RestorationRecord) -> None:
        """Record a restoration alert (gateway/state/restorations.py); a redelivered copy
        (same ESME and originator counter) keeps the first."""
        self._enqueue(self._sql.put_restoration, restoration_row(restoration))

    def prune_restorations(self, before_ms: int) -> None:
        """Delete up to :data:`PRUNE_BATCH_ROWS` restoration alerts received before
        ``before_ms``, the oldest first."""
        cutoff = check_i64("before_ms", before_ms)
        self._enqueue(self._sql.prune_restorations, (cutoff, PRUNE_BATCH_ROWS))

    def put_quarantine(self, entry: QuarantineEntry) -> None:
        """Keep a message that could not be handled. A second entry with its id (a
        redelivered copy) is ignored, unless the first was replayed: then it replaces it."""
        self._enqueue(self._sql.put_quarantine, quarantine_row(entry))

    def mark_replayed(self, entry_id: str, at_ms: int) -> None:
        """Record that a quarantined message was published again at ``at_ms``."""
        self._enqueue(self._sql.mark_replayed, (check_i64("at_ms", at_ms), entry_id))

    async def read_unreported(
        self, limit: int, *, before_ms: int | None = None
    ) -> list[tuple[int, SuppressionRecord]]:
        """:meth:`unreported`, read and decoded in a thread of its own with a connection
        of its own: a report's 50,000 entries would otherwise hold the event loop for
        half a second (WAL: the read does not block the writer)."""
        self._check_open()
        return await asyncio.to_thread(self._read_unreported, limit, before_ms)

    def report_cursor(self) -> ReportCursor | None:
        """Where reporting stands, None before the first report."""
        rows = self._meta_rows()
        return cursor_from_value(str(rows[0][0]), self.path) if rows else None

    def reported(self, pending: PendingReport) -> list[SuppressionRecord]:
        """The records marked with ``pending``'s id, by seq (to write its file again)."""
        if pending.first_seq is None or pending.last_seq is None:
            return []
        rows = self._report_rows(pending)
        return [self._record(seq, blob) for seq, blob in rows]

    async def read_evidence(
        self, start_ms: int, end_ms: int
    ) -> tuple[list[AlertDecision], list[RestorationRecord]]:
        """The near misses decided in [``start_ms``, ``end_ms``) (forwarded AD1s with
        ``after_window_ms``) and the restoration alerts received in it, each in time
        order: a report period's summary (gateway/reports/summary.py). Read in a thread
        with a connection of its own, as :meth:`read_unreported`."""
        self._check_open()
        return await asyncio.to_thread(self._read_evidence, start_ms, end_ms)
