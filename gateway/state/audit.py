"""The commands table: every CS06 the gateway judged, and what became of it (docs/decisions.md
D33, ``poa-gateway explain``).

Theory of operation
-------------------
A refused CS06 opens no window and used to leave nothing durable behind but a journal
line; a month later nobody could say why an AD1 was forwarded while a meter of its hub
was being upgraded. So each CS06 the engine judged (tracked, replaced, cancelled or
refused) is one row here, written through the store's queue with the command's other
writes and committed before the command is acknowledged, and kept for
``retention.refusals``.

A row is keyed by the command (esme, originator, counter) and what became of it
(outcome, reason): a redelivered copy, or the same replay sent a thousand times, is one
row whose ``last_seen_at`` moves on (``seen_at`` stays the first sighting), so the table
grows with distinct commands, not with traffic. A replay of an accepted command is a
second row (outcome ``refused``, reason ``replay``) beside the accepted one: both are
true. ``window_start``/``window_end`` are the window a tracked command opened, as it was
when tracked: the activation row itself is deleted once the window has run its course,
so this is what says, weeks later, when a hub's windows were.

Rows use the stores' common value format (gateway/state/rows.py): EUI-64s as 8 bytes,
counters as 8-byte big-endian strings, times as integer milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import msgspec

from gateway.core.events import CommandOutcome

from .rows import check_eui, check_i64, check_u64

__all__ = ["COMMAND_COLUMNS", "CommandRecord", "CommandRow", "command_from_row", "command_row"]

COMMAND_COLUMNS = (
    "esme originator counter outcome reason chf request_id detail seen_at last_seen_at "
    "window_start window_end"
)
"""The ``commands`` table's columns, in both stores' order (space-separated)."""

CommandRow: TypeAlias = tuple[
    bytes, bytes, bytes, str, str, bytes | None, str | None, str, int, int, int | None, int | None
]


class CommandRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One CS06 the gateway judged (module docstring).

    Attributes:
        esme: the recipient (an ESME when the command was acceptable).
        originator: the remote party that sent it.
        counter: its originator counter.
        outcome: tracked, replaced, cancelled or refused.
        reason: a refusal's :class:`~gateway.core.events.RefusalReason`; the activation
            kind (``on-demand``, ``future-dated``) of a tracked one; ``cancellation``.
        chf: the hub of the recipient, when the inventory knows it.
        request_id: the DUIS RequestID of its envelope, if any.
        detail: the refusal's text (empty otherwise).
        seen_at: when it was first judged (ms); ``last_seen_at``: the last time.
        window_start, window_end: the window it opened, when tracked.
    """

    esme: bytes
    originator: bytes
    counter: int
    outcome: CommandOutcome
    reason: str
    chf: bytes | None
    request_id: str | None
    detail: str
    seen_at: int
    last_seen_at: int
    window_start: int | None = None
    window_end: int | None = None


def command_row(c: CommandRecord) -> CommandRow:
    """The ``commands`` row of ``c``, every value checked."""
    return (
        check_eui("esme", c.esme),
        check_eui("originator", c.originator),
        check_u64("counter", c.counter),
        str(c.outcome),
        c.reason,
        None if c.chf is None else check_eui("chf", c.chf),
        c.request_id,
        c.detail,
        check_i64("seen_at", c.seen_at),
        check_i64("last_seen_at", c.last_seen_at),
        None if c.window_start is None else check_i64("window_start", c.window_start),
        None if c.window_end is None else check_i64("window_end", c.window_end),
    )


def command_from_row(row: Sequence[Any]) -> CommandRecord:
    """The record of a ``commands`` row as a driver returns it (``memoryview`` or
    ``bytes``)."""
    esme, originator, counter, outcome, reason, chf, request_id, detail = row[:8]
    seen_at, last_seen_at, window_start, window_end = row[8:12]
    return CommandRecord(
        esme=bytes(esme),
        originator=bytes(originator),
        counter=int.from_bytes(bytes(counter), "big"),
        outcome=CommandOutcome(outcome),
        reason=str(reason),
        chf=None if chf is None else bytes(chf),
        request_id=request_id,
        detail=str(detail),
        seen_at=int(seen_at),
        last_seen_at=int(last_seen_at),
        window_start=None if window_start is None else int(window_start),
        window_end=None if window_end is None else int(window_end),
    )
