"""The stores' row format (schema 3), shared by every backend.

What a row of each table holds, whatever the database: EUI-64s as 8-byte strings,
originator counters as 8-byte big-endian strings (unsigned 64-bit, GBCS; SQL integers
are signed, and bytes compare numerically), times as integer milliseconds (UTC), and a
decision as one packed string in the stores' own format ("The decisions row", below).
gateway/state/sqlite.py (BLOBs, SQLite schema version 3) and gateway/state/postgresql.py
(``bytea``) write and read exactly these rows, so a value means the same in both.

The checks raise :class:`~gateway.state.errors.StoreError` ``invalid-value`` when a value
is *queued*, so that a bad value fails at the call site instead of poisoning a batch.
The readers take a row as the driver returns it (``bytes`` or ``memoryview``, ``int``
or ``bool``) and build the value.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import Any, Final, TypeAlias

import msgspec

from gateway.core.events import Activation, AlertDecision, AlertReason
from gateway.eui import EUI64_LENGTH
from gateway.wire import SuppressionRecord

from .errors import StoreError, StoreReason

__all__ = [
    "REPORT_CURSOR_KEY",
    "ActivationRow",
    "PendingReport",
    "QuarantineEntry",
    "ReportCursor",
    "StoredSuppression",
    "activation_from_row",
    "activation_key",
    "activation_row",
    "check_eui",
    "check_i64",
    "check_u64",
    "cursor_from_value",
    "cursor_value",
    "decision_from_row",
    "decision_row",
    "decode_decision",
    "encode_decision",
    "quarantine_entry_from_row",
    "quarantine_id",
    "quarantine_row",
]

_U64_MAX: Final = (1 << 64) - 1
_I64_MIN: Final = -(1 << 63)
_I64_MAX: Final = (1 << 63) - 1

# Flags are bools: PostgreSQL's boolean columns need them, and sqlite3 binds a bool as
# the integer 0 or 1, which is what SQLite's columns hold.
ActivationRow: TypeAlias = tuple[bytes, bytes, bytes, bytes, int, int, bool, int, bool, bool]
"""An ``activations`` row: esme, originator, counter, chf, start_ms, end_ms,
future_dated, seen_at, closed_early, succeeded."""


class QuarantineEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A message the daemon could not handle, kept with its exact bytes.

    ``id`` is derived from the topic and the bytes (:func:`quarantine_id`), so a
    redelivered copy names the same entry and is kept once.
    """

    id: str
    topic: str
    payload: bytes
    reason: str
    """The exception's class name: a bounded vocabulary, a metric label."""
    error: str
    attempts: int
    received_at: int
    quarantined_at: int
    forwarded: bool
    """True for a DCC alert, which is forwarded to the DNOs all the same."""
    replayed_at: int | None = None


def quarantine_id(topic: str, payload: bytes) -> str:
    """The entry id of a message: ``q-`` and 20 hex digits of SHA-256 over topic and bytes."""
    digest = hashlib.sha256(topic.encode("utf-8", "surrogatepass") + b"\x00" + payload)
    return "q-" + digest.hexdigest()[:20]


class StoredSuppression(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of the suppression log as stored."""

    seq: int
    """Position in the log: increasing in commit order, never reused."""
    record: SuppressionRecord
    report_id: str | None
    """The report file that includes it; None while unreported."""


# -- value checks ------------------------------------------------------------------------


def _invalid(name: str, detail: str) -> StoreError:
    return StoreError(StoreReason.INVALID_VALUE, f"{name}: {detail}")


def check_eui(name: str, value: bytes) -> bytes:
    """``value`` as the 8 bytes of an EUI-64 column; ``invalid-value`` otherwise."""
    if len(value) != EUI64_LENGTH:
        raise _invalid(name, f"expected {EUI64_LENGTH} bytes, got {len(value)}")
    return bytes(value)


def check_u64(name: str, value: int) -> bytes:
    """An unsigned 64-bit counter as its 8-byte big-endian column; ``invalid-value``
    outside 0 .. 2**64 - 1."""
    if not 0 <= value <= _U64_MAX:
        raise _invalid(name, f"{value} is not an unsigned 64-bit integer")
    return value.to_bytes(8, "big")


def check_i64(name: str, value: int) -> int:
    """``value`` for a signed 64-bit integer column; ``invalid-value`` outside it."""
    if not _I64_MIN <= value <= _I64_MAX:
        raise _invalid(name, f"{value} is outside SQLite's 64-bit integer range")
    return int(value)


# -- rows ----------------------------------------------------------------------------------


def activation_row(a: Activation) -> ActivationRow:
    """The ``activations`` row of ``a``, every value checked."""
    return (
        check_eui("esme", a.esme),
        check_eui("originator", a.originator),
        check_u64("counter", a.counter),
        check_eui("chf", a.chf),
        check_i64("start_ms", a.start_ms),
        check_i64("end_ms", a.end_ms),
        bool(a.future_dated),
        check_i64("seen_at", a.seen_at),
        bool(a.closed_early),
        bool(a.succeeded),
    )


def activation_key(a: Activation) -> tuple[bytes, bytes, bytes]:
    """The key of ``a``'s ``activations`` row: esme, originator, counter."""
    return (
        check_eui("esme", a.esme),
        check_eui("originator", a.originator),
        check_u64("counter", a.counter),
    )


def decision_row(decision: AlertDecision, *, effect_done: bool) -> tuple[str, int, bool, bytes]:
    """The ``decisions`` row of ``decision``: alert_id, decided_at, effect_done, decision."""
    return (
        decision.alert_id,
        check_i64("decided_at", decision.decided_at),
        bool(effect_done),
        encode_decision(decision),
    )


def quarantine_row(entry: QuarantineEntry) -> tuple[Any, ...]:
    """The ``quarantine`` row of a new entry, every column but ``replayed_at``."""
    return (
        entry.id,
        entry.topic,
        bytes(entry.payload),
        entry.reason,
        entry.error,
        check_i64("attempts", entry.attempts),
        check_i64("received_at", entry.received_at),
        check_i64("quarantined_at", entry.quarantined_at),
        bool(entry.forwarded),
    )


def activation_from_row(row: Sequence[Any]) -> Activation:
    """The activation of an ``activations`` row (columns in :data:`ActivationRow` order)."""
    esme, originator, counter, chf, start, end, future, seen_at, closed, succeeded = row
    return Activation(
        esme=bytes(esme),
        chf=bytes(chf),
        originator=bytes(originator),
        counter=int.from_bytes(counter, "big"),
        start_ms=int(start),
        end_ms=int(end),
        future_dated=bool(future),
        seen_at=int(seen_at),
        closed_early=bool(closed),
        succeeded=bool(succeeded),
    )


def decision_from_row(row: Sequence[Any]) -> tuple[AlertDecision, bool]:
    """(decision, effect_done) of a ``decisions`` row: alert_id, decided_at,
    effect_done, decision."""
    alert_id, _decided_at, effect_done, blob = row  # decided_at is in the blob too
    return decode_decision(alert_id, bytes(blob)), bool(effect_done)


def quarantine_entry_from_row(row: Sequence[Any]) -> QuarantineEntry:
    """The entry of a ``quarantine`` row (columns in :class:`QuarantineEntry` order)."""
    entry_id, topic, payload, reason, error, attempts, received, quarantined, fwd, replayed = row
    return QuarantineEntry(
        id=entry_id,
        topic=topic,
        payload=bytes(payload),
        reason=reason,
        error=error,
        attempts=int(attempts),
        received_at=int(received),
        quarantined_at=int(quarantined),
        forwarded=bool(fwd),
        replayed_at=None if replayed is None else int(replayed),
    )


# -- the decisions row -------------------------------------------------------------------
#
# The store's own format for the ``decision`` BLOB of a ``decisions`` row (schema versions
# 2 and 3; docs/decisions.md D21). It is a format on disk: changing it needs a new schema
# version and a migration, whatever the engine does with its in-memory memo (the same
# bytes today, by descent, and free to change apart). All little-endian:
#
#   head        8s  chf
#               ?   suppressed (0 or 1)
#               q   judged_at (ms)
#               q   decided_at (ms; also the row's own column)
#               B   length of the reason
#   reason      the AlertReason's value in ASCII (that many bytes)
#   activation  only when the decision names one (57 bytes):
#               8s esme, 8s chf, 8s originator, Q counter, q start_ms, q end_ms,
#               q seen_at, B flags (1 future-dated, 2 closed early, 4 succeeded)
#   near miss   only when ``after_window_ms`` is set (9 bytes, issue 13):
#               B 0x4E ("N"), q after_window_ms
#
# The optional sections are told apart by the length after the reason: 0, 57 (rows
# written before near misses were noted read exactly as before), 9 or 66. A gateway
# older than the near-miss section cannot read a row that has one (a forwarded near
# miss): a downgrade must wait until such rows are past the dedupe horizon.
#
# ``alert_id`` is the row's key and ``duplicate`` is not stored.

_ROW_HEAD: Final = struct.Struct("<8s?qqB")
_ROW_ACTIVATION: Final = struct.Struct("<8s8s8sQqqqB")
_ROW_GAP: Final = struct.Struct("<Bq")
_ROW_GAP_TAG: Final = 0x4E
_ROW_FUTURE: Final = 0x01
_ROW_CLOSED: Final = 0x02
_ROW_SUCCEEDED: Final = 0x04
_ROW_REASONS: Final = {reason: reason.value.encode("ascii") for reason in AlertReason}
_ROW_REASON_OF: Final = {text: reason for reason, text in _ROW_REASONS.items()}


def encode_decision(d: AlertDecision) -> bytes:
    """``d`` as the BLOB of its decisions row. Raises StoreError ``invalid-value`` for a
    value the row cannot hold: an EUI-64 not of 8 bytes, a reason that is not an
    :class:`AlertReason`, a time outside 64 bits, a counter outside 0 .. 2**64 - 1."""
    reason = _ROW_REASONS.get(d.reason)
    if reason is None:
        raise _invalid("decision", f"not an alert reason: {str(d.reason)[:40]!r}")
    a = d.activation
    euis = (d.chf,) if a is None else (d.chf, a.esme, a.chf, a.originator)
    if any(len(e) != EUI64_LENGTH for e in euis):
        raise _invalid("decision", f"EUI-64s must be 8 bytes: {euis!r}")
    try:
        out = _ROW_HEAD.pack(d.chf, d.suppressed, d.judged_at, d.decided_at, len(reason)) + reason
        if a is not None:
            flags = (_ROW_FUTURE if a.future_dated else 0) | (_ROW_CLOSED if a.closed_early else 0)
            flags |= _ROW_SUCCEEDED if a.succeeded else 0
            out += _ROW_ACTIVATION.pack(
                a.esme, a.chf, a.originator, a.counter, a.start_ms, a.end_ms, a.seen_at, flags
            )
        if d.after_window_ms is not None:
            out += _ROW_GAP.pack(_ROW_GAP_TAG, d.after_window_ms)
        return out
    except struct.error as exc:
        raise _invalid("decision", f"a value is out of range: {exc}") from exc


def decode_decision(alert_id: str, blob: bytes) -> AlertDecision:
    """The decision :func:`encode_decision` wrote. Raises ValueError when its reason is
    not an :class:`AlertReason` or the length after it fits no section (a damaged row),
    like struct.error for a short one."""
    chf, suppressed, judged_at, decided_at, length = _ROW_HEAD.unpack_from(blob)
    at = _ROW_HEAD.size
    text = blob[at : at + length]
    reason = _ROW_REASON_OF.get(text)
    if reason is None:
        raise ValueError(f"not an alert reason: {text[:40]!r}")
    at += length
    activation = None
    if len(blob) - at in (_ROW_ACTIVATION.size, _ROW_ACTIVATION.size + _ROW_GAP.size):
        fields = _ROW_ACTIVATION.unpack_from(blob, at)
        at += _ROW_ACTIVATION.size
        esme, a_chf, originator, counter, start, end, seen_at, flags = fields
        activation = Activation(
            esme=esme,
            chf=a_chf,
            originator=originator,
            counter=counter,
            start_ms=start,
            end_ms=end,
            future_dated=bool(flags & _ROW_FUTURE),
            seen_at=seen_at,
            closed_early=bool(flags & _ROW_CLOSED),
            succeeded=bool(flags & _ROW_SUCCEEDED),
        )
    gap = None
    if len(blob) - at == _ROW_GAP.size:
        tag, gap = _ROW_GAP.unpack_from(blob, at)
        if tag != _ROW_GAP_TAG:
            raise ValueError(f"not a near-miss section: tag 0x{tag:02X}")
    elif len(blob) > at:
        raise ValueError(f"{len(blob) - at} bytes after the reason: not a decision row")
    return AlertDecision(
        alert_id,
        chf,
        suppressed,
        reason,
        judged_at,
        decided_at,
        activation=activation,
        after_window_ms=gap,
    )


# -- the report cursor (a row of store_meta) ----------------------------------------------

REPORT_CURSOR_KEY: Final = "report_cursor"
"""The ``store_meta`` key of the :class:`ReportCursor`."""


class PendingReport(msgspec.Struct, frozen=True, kw_only=True):
    """A report whose records are marked with its id in the suppression log, and whose
    file may not be written yet (gateway/service.py, report rotation)."""

    report_id: str
    first_seq: int | None  # None: an empty period
    last_seq: int | None
    period_start_ms: int
    period_end_ms: int
    records: int
    part: int = 1  # of its period (a period past max_records has several)


class ReportCursor(msgspec.Struct, frozen=True, kw_only=True):
    """Where reporting stands, kept in the state store so that whichever instance leads
    next continues it: the next report's period begins at ``opened_at_ms`` (no gap), and
    a report marked but not known to be written is written again, from the same records
    under the same name (no record in two reports)."""

    opened_at_ms: int
    """The start of the oldest period not yet closed."""
    parts_written: int = 0
    """How many parts of that period's report are written (a closing interrupted)."""
    pending: PendingReport | None = None


def cursor_value(cursor: ReportCursor) -> str:
    """The cursor as stored (JSON text)."""
    return msgspec.json.encode(cursor).decode()


def cursor_from_value(value: str, where: str) -> ReportCursor:
    """The cursor stored as ``value``; ``StoreError`` ``corrupt-record`` if unreadable."""
    try:
        return msgspec.json.decode(value, type=ReportCursor)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StoreError(
            StoreReason.CORRUPT_RECORD, f"{where}: report cursor: {exc}", path=None
        ) from exc
