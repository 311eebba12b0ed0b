"""The restorations table: the ECS80 power restoration alerts (8F35/8F36) the gateway saw,
kept as evidence for the modification's assumption A5 (issue 13, point 7).

Theory of operation
-------------------
The FIA assumes a hub does not send a restoration alert for a firmware reboot (A5). A
restoration alert from a hub while one of its windows is open says otherwise, so each
one is kept here, in a window or not, and the period's summary file beside the report
(gateway/reports/summary.py) lists those inside a window. A row is written through the
store's queue with the alert's other effects and committed before the alert is
acknowledged, and kept for ``retention.decisions``, as the near misses it is read with.

A row is keyed by the alert frame's identity, its originator (the ESME) and originator
counter: a redelivered copy is the same row, and the first sighting is kept (so a
summary written again after a failover is the same file).

Rows use the stores' common value format (gateway/state/rows.py): EUI-64s as 8 bytes,
counters as 8-byte big-endian strings, times as integer milliseconds, flags 0 or 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, TypeAlias

import msgspec

from gateway.core.events import AlertReason

from .rows import check_eui, check_i64, check_u64

__all__ = [
    "NEAR_MISS_LENGTHS",
    "RESTORATION_COLUMNS",
    "RestorationRecord",
    "RestorationRow",
    "restoration_from_row",
    "restoration_row",
]

RESTORATION_COLUMNS = "esme counter alert_code chf received_at in_window request_id"
"""The ``restorations`` table's columns, in both stores' order (space-separated)."""

# The decisions row (gateway/state/rows.py, "The decisions row"): a 26-byte head, the
# reason, then an optional 57-byte activation and an optional 9-byte near-miss section.
# Only a row with the near-miss section has one of these lengths (no other length of any
# reason equals one: tests/test_report_summary.py checks it), so a store can pick a
# period's near misses out of its decisions without decoding every row.
NEAR_MISS_LENGTHS: Final = tuple(
    sorted({26 + len(reason.value) + extra for reason in AlertReason for extra in (9, 66)})
)
"""The lengths of a ``decisions`` row's BLOB that holds a near miss."""

RestorationRow: TypeAlias = tuple[bytes, bytes, int, bytes | None, int, bool, str | None]


class RestorationRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One restoration alert the gateway received (module docstring).

    Attributes:
        esme: the device that raised it (the frame's originator).
        counter: the frame's originator counter (with ``esme``, the alert's identity).
        alert_code: the DLMS alert code (0x8F35, 0x8F36).
        chf: the device's hub as the inventory had it, None when unknown.
        received_at: when the gateway received it (ms).
        in_window: whether a window of the hub was open (or about to open) then.
        request_id: the DUIS RequestID of that window's CS06, when in one.
    """

    esme: bytes
    counter: int
    alert_code: int
    chf: bytes | None
    received_at: int
    in_window: bool
    request_id: str | None = None


def restoration_row(r: RestorationRecord) -> RestorationRow:
    """The ``restorations`` row of ``r``, every value checked."""
    return (
        check_eui("esme", r.esme),
        check_u64("counter", r.counter),
        check_i64("alert_code", r.alert_code),
        None if r.chf is None else check_eui("chf", r.chf),
        check_i64("received_at", r.received_at),
        bool(r.in_window),
        r.request_id,
    )


def restoration_from_row(row: Sequence[Any]) -> RestorationRecord:
    """The record of a ``restorations`` row as a driver returns it (``memoryview`` or
    ``bytes``)."""
    esme, counter, alert_code, chf, received_at, in_window, request_id = row[:7]
    return RestorationRecord(
        esme=bytes(esme),
        counter=int.from_bytes(bytes(counter), "big"),
        alert_code=int(alert_code),
        chf=None if chf is None else bytes(chf),
        received_at=int(received_at),
        in_window=bool(in_window),
        request_id=request_id,
    )
