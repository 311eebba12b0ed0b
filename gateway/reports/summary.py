"""A report period's summary file: the evidence on the modification's assumptions
(issue 13, point 7), beside the period's report in the outbox.

Theory of operation
-------------------
Two things would say that the suppression windows do not match the devices:

- a **near miss**: an AD1 forwarded (no window) within ``reports.near_miss`` after a
  window of the same hub ran its course (a meter whose flash took longer than the
  window; gateway/core/engine.py notes the gap on the decision);
- a **restoration alert inside a window**: a hub sent a power restoration alert
  (8F35/8F36) while one of its windows was open, which assumption A5 says a firmware
  reboot does not cause (gateway/state/restorations.py).

Once a period is closed (its last report part written, gateway/service.py
``_rotate_reports``), its summary is written from the state store alone: the decisions
made in the period that carry a near miss and the restoration alerts received in it
inside a window. Nothing in it depends on when or by which instance it is written, so
a new leader that closes the period again after a failover writes the same bytes.

The file
--------
``<name_prefix>_<period start as YYYYMMDDTHHMMSSZ>_<period length>-summary.csv``, e.g.
``POA-SUPPRESSION_20300115T090000Z_PT1H-summary.csv``: the report's name without its
part number. The same CSV dialect as reports (gateway/reports/files.py: UTF-8, CRLF,
quoted only when needed, times ISO 8601 UTC with milliseconds, EUI-64s
``00-DB-12-34-56-78-90-A0``). Line 1, the SUMMARY record::

    SUMMARY,<name>,<period start>,<period end>,<near misses>,
        <restoration alerts inside a window>,<restoration alerts>,<generator>,<version>

(one line: nine fields; *name* is the file name without ``.csv``).

Line 2, the column names (:data:`SUMMARY_COLUMNS`), then one row per near miss (in
decision order) and one per restoration alert inside a window (in order of receipt):

- ``kind``: ``near-miss`` or ``restoration-in-window``;
- ``at``: the near miss's judged time (the time compared with the windows), or when the
  restoration alert was received;
- ``chf_id``: the hub; ``alert_id``: the AD1's DCC alert id (near misses);
- ``gap_ms``: how long after the hub's latest window ended the AD1 came (near misses);
- ``esme_id``, ``alert_code`` (hexadecimal, ``8F35``), ``originator_counter``: the
  restoration alert's device, code and frame counter; ``request_id``: the DUIS
  RequestID of the CS06 whose window it fell in.

With a signer the file gets its detached signature ``<file name>.sig`` beside it,
written first, as a report's.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import msgspec

from gateway.core.events import AlertDecision
from gateway.eui import format_eui64
from gateway.reports.files import _write_atomically, format_time
from gateway.reports.signing import Signer, signature_path
from gateway.state.restorations import RestorationRecord

__all__ = ["SUMMARY_COLUMNS", "SummaryFile", "summary_name", "write_summary"]

SUMMARY_COLUMNS: Final = (
    "kind",
    "at",
    "chf_id",
    "alert_id",
    "gap_ms",
    "esme_id",
    "alert_code",
    "originator_counter",
    "request_id",
)
"""The summary's column names (line 2), in order."""

_SUMMARY: Final = "SUMMARY"
_NEAR_MISS: Final = "near-miss"
_RESTORATION: Final = "restoration-in-window"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_OUTBOX_MODE: Final = 0o750


class SummaryFile(msgspec.Struct, frozen=True, kw_only=True):
    """A summary as written by :func:`write_summary`."""

    path: Path
    near_misses: int
    restorations_in_window: int
    restorations: int


def summary_name(name_prefix: str, period_start_ms: int, period_id: str) -> str:
    """The summary's file name: ``<prefix>_<YYYYMMDDTHHMMSSZ>_<period_id>-summary.csv``
    (``period_id`` the period's length as in report ids, e.g. ``PT1H``)."""
    for what, value in (("name_prefix", name_prefix), ("period_id", period_id)):
        if _SAFE_NAME.fullmatch(value) is None:
            raise ValueError(
                f"{what} {value[:40]!r}: use 1-100 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
    compact = re.sub(r"[-:]", "", format_time(period_start_ms)[:19]) + "Z"
    return f"{name_prefix}_{compact}_{period_id}-summary.csv"


def write_summary(
    outbox: Path,
    *,
    period_start_ms: int,
    period_end_ms: int,
    period_id: str,
    near_misses: Sequence[AlertDecision],
    restorations: Sequence[RestorationRecord],
    name_prefix: str = "POA-SUPPRESSION",
    generator: str = "poa-gateway",
    version: str,
    signer: Signer | None = None,
) -> SummaryFile:
    """Write the summary of one period atomically (module docstring); return it.

    ``near_misses``: the period's decisions with ``after_window_ms`` (others are
    ignored); ``restorations``: the restoration alerts received in it (those outside a
    window are counted, not listed). Both are written in the order given after a sort
    on their times and keys, so the same rows always give the same bytes.

    Raises:
        ValueError: a bad name part, a period that ends before it starts, or a row that
            cannot be written (a wrong-length EUI-64, a time out of range).
        OSError: the outbox cannot be written; nothing appears under the name.
    """
    if not 0 <= period_start_ms <= period_end_ms:
        raise ValueError(f"period {period_start_ms} .. {period_end_ms}: need 0 <= start <= end")
    name = summary_name(name_prefix, period_start_ms, period_id)
    misses = sorted(
        (d for d in near_misses if d.after_window_ms is not None),
        key=lambda d: (d.decided_at, d.alert_id),
    )
    inside = sorted(
        (r for r in restorations if r.in_window), key=lambda r: (r.received_at, r.esme, r.counter)
    )
    rows: list[list[str]] = [
        [
            _SUMMARY,
            name.removesuffix(".csv"),
            format_time(period_start_ms),
            format_time(period_end_ms),
            str(len(misses)),
            str(len(inside)),
            str(len(restorations)),
            generator,
            version,
        ],
        list(SUMMARY_COLUMNS),
    ]
    for d in misses:
        rows.append(
            [
                _NEAR_MISS,
                format_time(d.judged_at),
                format_eui64(d.chf),
                d.alert_id,
                str(d.after_window_ms),
                "",
                "",
                "",
                "",
            ]
        )
    for r in inside:
        rows.append(
            [
                _RESTORATION,
                format_time(r.received_at),
                format_eui64(r.chf) if r.chf is not None else "",
                "",
                "",
                format_eui64(r.esme),
                f"{r.alert_code:04X}",
                str(r.counter),
                r.request_id or "",
            ]
        )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerows(rows)
    content = buffer.getvalue().encode("utf-8")

    outbox.mkdir(mode=_OUTBOX_MODE, parents=True, exist_ok=True)
    path = outbox / name
    if signer is not None:
        signature = signer.sign(content)
        _write_atomically(signature_path(path), lambda out: out.write(signature))
    _write_atomically(path, lambda out: out.write(content))
    return SummaryFile(
        path=path,
        near_misses=len(misses),
        restorations_in_window=len(inside),
        restorations=len(restorations),
    )
