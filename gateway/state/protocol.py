"""What the daemon's shell writes to and reads from: the durable state store.

The service (gateway/service.py) is written against this protocol, not against SQLite:
the SQLite store (gateway/state/sqlite.py) implements it, the service is handed it
(``Gateway(open_store=...)``), and a new state backend is one more implementation. Its
counterpart for the broker is gateway/transport/protocol.py. Tests drive the shell with an
in-memory fake, and inject faults by wrapping a real store.

Contract the shell relies on: writes are queued and idempotent (a redelivered message may
write twice); ``flush()`` returns once every write queued before it is durable, or raises
a ``StoreError`` (reason ``commit-failed``: the writes are kept and retried by the next
flush).

Retention (docs/decisions.md D31): the ``prune_*`` writes and ``delete_counter`` are
queued and idempotent like the others, and each deletes at most :data:`PRUNE_BATCH_ROWS`
rows, so housekeeping repeats them pass after pass rather than holding one long
transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final, Protocol

from gateway.core.events import Activation, ActivationFields, AlertDecision
from gateway.wire import SuppressionRecord

from .audit import CommandRecord
from .rows import PendingReport, QuarantineEntry, ReportCursor

__all__ = ["PRUNE_BATCH_ROWS", "OpenStore", "StateStore"]

PRUNE_BATCH_ROWS: Final = 10_000
"""The most rows one prune write deletes: a SQLite commit of this many deletes takes tens
of milliseconds in the store's worker thread, which every acknowledgement queued behind
it waits for."""


class StateStore(Protocol):
    """The durable state: activations, counters, decisions, the suppression log, the
    report cursor (which records are reported), the commands judged
    (gateway/state/audit.py), and the quarantine."""

    # -- writes, queued; durable once flush() returns ---------------------------------
    def put_activation(self, a: Activation) -> None: ...
    def delete_activation(self, a: Activation) -> None: ...
    def set_counter(self, originator: bytes, device: bytes, counter: int) -> None: ...
    def put_decision(self, decision: AlertDecision, *, effect_done: bool) -> None: ...
    def append_suppression(
        self, record: SuppressionRecord, encoded: bytes | None = None
    ) -> None: ...
    def mark_reported_range(
        self, first: int, last: int, report_id: str, *, before_ms: int | None = None
    ) -> None: ...
    def prune_decisions(self, before_ms: int) -> None: ...
    def prune_suppressions(self, before_ms: int) -> None: ...  # reported records only
    def prune_quarantine(self, before_ms: int) -> None: ...
    def delete_counter(self, originator: bytes, device: bytes, counter: int) -> None: ...
    def set_report_cursor(self, cursor: ReportCursor) -> None: ...
    def put_quarantine(self, entry: QuarantineEntry) -> None: ...
    def put_command(self, command: CommandRecord) -> None: ...
    def prune_commands(self, before_ms: int) -> None: ...
    async def flush(self) -> None: ...
    async def aclose(self) -> None: ...
    def close(self) -> None: ...  # without flushing: what is queued is not written

    # -- reads of committed state (last_counter also sees queued counters) -----------
    def load_activations(self) -> list[Activation]: ...
    def activation_fields(self) -> Iterable[ActivationFields]: ...
    def load_decisions(self, since_ms: int) -> list[tuple[AlertDecision, bool]]: ...
    def decision(self, alert_id: str) -> tuple[AlertDecision, bool] | None: ...
    def last_counter(self, originator: bytes, device: bytes) -> int | None: ...
    def counters_after(
        self, after: tuple[bytes, bytes], limit: int
    ) -> list[tuple[bytes, bytes, int]]: ...
    def unreported(self, limit: int) -> list[tuple[int, SuppressionRecord]]: ...
    async def read_unreported(
        self, limit: int, *, before_ms: int | None = None
    ) -> list[tuple[int, SuppressionRecord]]: ...
    def unreported_count(self) -> int: ...
    def report_cursor(self) -> ReportCursor | None: ...
    def reported(self, pending: PendingReport) -> list[SuppressionRecord]: ...


OpenStore = Callable[[Path], StateStore]
"""Opens the state store at a path (``Store.open`` by default)."""
