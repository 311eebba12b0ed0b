"""Power Outage Alert Suppression reports: the files the Network Operators receive.

Every AD1 the gateway suppresses is written to the suppression log; the log is rotated
into one report file per period (and earlier when a report reaches its size limit). A
report is a CSV file that a DNO can open in a spreadsheet, read with any CSV library and
check for completeness and integrity without our software.

The CSV layout
--------------
UTF-8 without a byte order mark; every record ends with CRLF; fields are quoted only when
they must be (RFC 4180 / Python's ``csv`` with ``QUOTE_MINIMAL``): a field holding a
comma, a double quote, CR or LF is wrapped in double quotes and its double quotes doubled,
so every value reads back exactly, line breaks included.

Line 1, the HEADER record, seven fields::

    HEADER,<report name>,<report id>,<period start>,<period end>,<generator>,<version>

- *report name*: the file name without ``.csv`` (the ``.xlsx`` copy has the same name);
- *report id*: chosen by the writer so that the same log range always gives the same
  report (see idempotence below);
- *period start*, *period end*: the period the report covers, start included, end
  excluded;
- *generator*, *version*: the software that wrote the file.

Line 2, the column names of the data records (:data:`COLUMNS`)::

    alert_id,chf_id,esme_id,raised_at,received_at,window_start,window_end,request_id,originator,originator_counter,activation

Then one data record per suppressed AD1, in log order:

- ``alert_id``: the DCC alert identifier;
- ``chf_id``: the Communications Hub Function that raised the AD1; ``esme_id``: the
  electricity meter whose firmware activation opened the window; ``originator``: the
  remote party that sent the CS06 (EUI-64s written ``00-DB-12-34-56-78-90-A0``);
- ``raised_at``: when the CHF raised the alert; ``received_at``: when the gateway
  received it; ``window_start``/``window_end``: the suppression window it fell into;
- ``request_id``: the DUIS RequestID of the CS06 (empty when it had none);
- ``originator_counter``: the CS06's originator counter (decimal);
- ``activation``: ``on-demand`` or ``future-dated``.

Last, the TRAILER record, three fields::

    TRAILER,<number of data records>,<SHA-256 of the data records, 64 lowercase hex digits>

The digest is over the exact bytes of the data records as written: from the first byte
of line 3 to the CRLF before ``TRAILER``, inclusive (no bytes at all for a report of no
records). The HEADER and TRAILER are always one line each (a data value may span lines,
inside quotes), so a DNO can check it with ``sed -n '3,$p' FILE | sed '$d' | sha256sum``,
or with ``poa-gateway report verify FILE``.

All times are ISO 8601 in UTC with milliseconds and ``Z``: ``2030-01-15T09:00:00.000Z``.
A time after the year 9999 (only a device clock gone wrong can produce one) is written in
the expanded form with a sign and at least six year digits, as JavaScript does:
``+010000-01-01T00:00:00.000Z``.

A period in which nothing was suppressed still produces a report, with no data records
and ``TRAILER,0,e3b0c442...b855`` (the digest of no bytes): the DNO can then tell "nothing
was suppressed" from "a report is missing".

Writing
-------
:func:`write_report` never leaves a partial file under a report's name: each file is
written to a dot-named temporary file in the same folder (``.<name>.<random>.tmp``),
flushed, fsynced, renamed over the final name with :func:`os.replace` (atomic on POSIX),
and the folder is fsynced so the rename survives a power cut. With ``xlsx=True`` the
spreadsheet copy is put in place first and the CSV last, so a CSV that exists is a
complete report with its copy beside it.

The optional ``.xlsx`` copy (sheet "Suppressed AD1") is for reading: one row per HEADER
field (label, value), the column names, the data records and the TRAILER, every value a
text cell (a value starting ``=`` is never a formula; counters keep all their digits).
The CSV is the record: the spreadsheet format shows a CR as a line feed, cannot hold
other control characters (shown as U+FFFD) and has no digest of its own.

It is idempotent: the name, the content and the digest depend only on its arguments, so
after a crash the daemon can write the same log range again and get the same CSV,
byte for byte, under the same name (the ``.xlsx`` copy holds the same cells; its zip
timestamps differ). This is why the caller supplies the report id, typically from the
first and last log sequence numbers of the range, rather than the time of writing.

:func:`verify_report` re-reads a CSV report and lists every problem with its line number;
:class:`Rotation` is the pure policy that says when the open report is due to be closed.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final, NamedTuple

import msgspec

from gateway.core.mpan import GB_AREAS, MpanCore, MpanError, distributor_of
from gateway.errors import GatewayError
from gateway.eui import EUI64_LENGTH, format_eui64, parse_eui64
from gateway.fileio import fsync_dir
from gateway.reports.profile import (
    BUILTIN_PROFILES,
    DEFAULT_PROFILE_NAME,
    ReportProfile,
    builtin_profile,
)
from gateway.reports.signing import Signer, signature_path
from gateway.wire import ActivationKind, ReportNotice, SuppressionRecord

if TYPE_CHECKING:
    from openpyxl.cell.cell import Cell

__all__ = [
    "ALERT_CODE",
    "COLUMNS",
    "DEFAULT_PROFILE",
    "EMPTY_SHA256",
    "MAX_FIELD_CHARS",
    "ReportCheck",
    "ReportContents",
    "ReportError",
    "ReportFile",
    "ReportRow",
    "Rotation",
    "by_distributor",
    "format_time",
    "parse_time",
    "read_report",
    "verify_report",
    "write_report",
]

DEFAULT_PROFILE: Final = builtin_profile(DEFAULT_PROFILE_NAME)
"""The layout reports have unless ``reports.profile`` names another (``dno``)."""

_BUILTINS: Final = tuple(builtin_profile(name) for name in BUILTIN_PROFILES)

COLUMNS: Final = DEFAULT_PROFILE.columns
"""The column names of the default profile's data records (line 2 of its reports)."""

ALERT_CODE: Final = "AD1"
"""The alert code of every suppressed alert: the gateway suppresses AD1s only."""

EMPTY_SHA256: Final = hashlib.sha256(b"").hexdigest()
"""The TRAILER digest of a report with no data records."""

MAX_FIELD_CHARS: Final = 32_767
"""Longest value a report holds: a spreadsheet cell's limit (Excel truncates beyond it).

Only ``request_id`` is unbounded on the wire; a real DUIS RequestID is ~60 characters.
"""

SHEET_TITLE: Final = "Suppressed AD1"
"""The first worksheet of the ``.xlsx`` copy: the column names in its first row, then one
row per record, typed, under an autofilter."""

REPORT_SHEET_TITLE: Final = "Report"
"""The second worksheet of the ``.xlsx`` copy: the HEADER's fields and the TRAILER's."""

XLSX_TIME_FORMAT: Final = "yyyy-mm-dd hh:mm:ss.000"
"""How the ``.xlsx`` copy shows its times (UTC; Excel has no time zones)."""

_EXCEL_EXACT: Final = 1 << 53  # integers above this are not exact in a spreadsheet cell

_ACTIVATIONS: Final[tuple[ActivationKind, ...]] = ("on-demand", "future-dated")
_UINT64_MAX: Final = (1 << 64) - 1
_MAX_PROBLEMS: Final = 50  # per file: a wrong file must not print a million lines
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_FILE_MODE: Final = 0o640  # read by the DNO transfer account's group
_OUTBOX_MODE: Final = 0o750


class _Csv(csv.Dialect):
    delimiter = ","
    quotechar = '"'
    doublequote = True
    skipinitialspace = False
    lineterminator = "\r\n"
    quoting = csv.QUOTE_MINIMAL
    strict = True


# ---------------------------------------------------------------------------------------
# Times: epoch milliseconds <-> ISO 8601 UTC with milliseconds.
#
# datetime stops at 9999-12-31, but a record's times are uint64 milliseconds from the
# wire (a CHF with a broken clock can raise an AD1 "in" the year 50000, and it is still
# judged, at the time of receipt, and reported). Howard Hinnant's days <-> civil date
# algorithms work for any year with Python integers.

_MS_PER_DAY: Final = 86_400_000
_TIME = re.compile(
    r"(?:(?P<year>[0-9]{4})|\+(?P<expanded>[0-9]{6,}))-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"T(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})\.(?P<ms>[0-9]{3})Z"
)


def _civil_from_days(days: int) -> tuple[int, int, int]:
    days += 719_468  # 0000-03-01 .. 1970-01-01
    era = days // 146_097
    doe = days - era * 146_097
    yoe = (doe - doe // 1_460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def _days_from_civil(year: int, month: int, day: int) -> int:
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def format_time(ms: int) -> str:
    """``2030-01-15T09:00:00.000Z`` for milliseconds since the Unix epoch (0 .. 2**64-1).

    Raises:
        ValueError: ``ms`` is negative or above 2**64 - 1.
    """
    if not 0 <= ms <= _UINT64_MAX:
        raise ValueError(f"time out of range 0 .. 2**64 - 1: {ms}")
    days, rest = divmod(ms, _MS_PER_DAY)
    year, month, day = _civil_from_days(days)
    seconds, millis = divmod(rest, 1000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    shown = f"{year:04d}" if year <= 9999 else f"+{year:06d}"
    return f"{shown}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{millis:03d}Z"


def parse_time(text: str) -> int:
    """Milliseconds since the Unix epoch for a time as :func:`format_time` writes it.

    Only that exact spelling is accepted (UTC, ``Z``, three decimals), so a time has one
    written form and a report's digest cannot be kept by re-spelling one.

    Raises:
        ValueError: the text is not such a time, or not a valid date.
    """
    match = _TIME.fullmatch(text)
    if match is None:
        raise ValueError(f"{_shown(text)} is not a time like 2030-01-15T09:00:00.000Z")
    year = int(match["year"] or match["expanded"])
    month, day = int(match["month"]), int(match["day"])
    hour, minute, second = int(match["hour"]), int(match["minute"]), int(match["second"])
    valid = 1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 60
    if valid:
        days = _days_from_civil(year, month, day)
        valid = _civil_from_days(days) == (year, month, day)  # 31 April, 29 Feb 2031...
    if not valid:
        raise ValueError(f"{_shown(text)} is not a valid date and time")
    ms = ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + int(match["ms"])
    if not 0 <= ms <= _UINT64_MAX or format_time(ms) != text:
        raise ValueError(f"{_shown(text)} is out of range or not in canonical form")
    return ms


def _compact_time(ms: int) -> str:
    # 20300115T090000Z, for file names.
    return re.sub(r"[-:]", "", format_time(ms)[:19]) + "Z"


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


# ---------------------------------------------------------------------------------------
# Writing


class ReportFile(msgspec.Struct, frozen=True, kw_only=True):
    """A report file as written by :func:`write_report`."""

    name: str
    """The CSV file's name, e.g. ``POA-SUPPRESSION_20300115T090000Z_PT1H-001.csv``."""
    path: Path
    """Where the CSV is."""
    records: int
    """Number of data records."""
    sha256: str
    """The TRAILER digest: SHA-256 of the data records' bytes, lowercase hex."""
    period_start_ms: int
    period_end_ms: int
    report_id: str
    xlsx_path: Path | None = None
    """The spreadsheet copy, when one was asked for."""
    distributor: str | None = None
    """The distributor id of a distributor's file; None for the consolidated report."""
    records_without_mpan: int = 0
    """Data records whose meter had no MPAN in the inventory."""

    def notice(self) -> ReportNotice:
        """The ``gateway/reports`` notice announcing this file."""
        return ReportNotice(
            v=1,
            kind="report",
            name=self.name,
            report_id=self.report_id,
            period_start=self.period_start_ms,
            period_end=self.period_end_ms,
            records=self.records,
            sha256=self.sha256,
            distributor=self.distributor,
        )


def write_report(
    outbox: Path,
    records: Sequence[SuppressionRecord],
    *,
    report_id: str,
    period_start_ms: int,
    period_end_ms: int,
    name_prefix: str = "POA-SUPPRESSION",
    generator: str = "poa-gateway",
    version: str,
    xlsx: bool = False,
    signer: Signer | None = None,
    profile: ReportProfile | None = None,
    mpans: Mapping[bytes, str] | None = None,
    distributor: str | None = None,
    guid_list_sha256: str = "",
    window_ms: int | None = None,
    lead_ms: int | None = None,
) -> ReportFile:
    """Write the report of one period atomically; return what was written.

    The file is ``<name_prefix>_<period start as YYYYMMDDTHHMMSSZ>_<report_id>.csv`` in
    ``outbox`` (created with mode 0o750 if missing); with ``xlsx`` a spreadsheet copy
    ``<same name>.xlsx`` is written beside it. The same arguments always give the same
    CSV, so a re-run after a crash replaces the file with an identical one.

    The layout is ``profile``'s (the built-in ``dno`` one by default,
    :mod:`gateway.reports.profile`). ``mpans`` gives the MPAN core of each meter (ESME
    EUI-64 to 13 digits, as the inventory holds it), from which the MPAN and distributor
    columns are filled; a meter without one gets empty cells and is counted in the
    TRAILER's ``records_without_mpan``, never left out. ``distributor`` (a two-digit id)
    makes this a distributor's file: the HEADER's scope names it (the caller picks the
    records, :func:`by_distributor`). ``guid_list_sha256``, ``window_ms`` and
    ``lead_ms`` are written in the HEADER when the profile has those fields.

    With a ``signer`` each file also gets its detached signature beside it,
    ``<file name>.sig`` over the file's exact bytes (:mod:`gateway.reports.signing`),
    written atomically before the CSV is put in place: a CSV in the outbox always has
    its signature (and its ``.xlsx`` copy) already beside it.

    Raises:
        ValueError: a bad argument (``report_id`` or ``name_prefix`` that is not a plain
            file-name part, a period that ends before it starts or starts after the year
            9999, a generator or version that is empty or not printable, an MPAN that is
            not a valid core, a distributor that is not two digits) or a record that
            cannot be written (a wrong-length EUI-64, a value over
            :data:`MAX_FIELD_CHARS`, a time beyond 2**64 - 1 ms ...); the message names
            the record by position and alert id. Nothing is written (the outbox folder
            may have been created: the CSV is streamed to a temporary file there).
        OSError: the outbox cannot be written. No temporary file is left behind and no
            CSV appears under the report's name (an ``.xlsx`` copy already put in place
            stays; the re-run replaces it).
    """
    profile = profile or DEFAULT_PROFILE
    for what, value in (("report_id", report_id), ("name_prefix", name_prefix)):
        if _SAFE_NAME.fullmatch(value) is None:
            raise ValueError(
                f"{what} {_shown(value)}: use 1-100 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
    if not 0 <= period_start_ms <= period_end_ms <= _UINT64_MAX:
        raise ValueError(
            f"period {period_start_ms} .. {period_end_ms}: need 0 <= start <= end < 2**64"
        )
    if period_start_ms >= _days_from_civil(10_000, 1, 1) * _MS_PER_DAY:
        raise ValueError(f"period start {format_time(period_start_ms)} is after the year 9999")
    for what, value in (("generator", generator), ("version", version)):
        # One physical line for the HEADER keeps "data records start on line 3" true.
        if not value or not value.isprintable() or len(value) > 200:
            raise ValueError(f"{what} {_shown(value)}: use 1-200 printable characters")
    if distributor is not None and _DISTRIBUTOR_ID.fullmatch(distributor) is None:
        raise ValueError(f"distributor {_shown(distributor)}: use the two-digit id")
    if guid_list_sha256 and _SHA256_HEX.fullmatch(guid_list_sha256) is None:
        raise ValueError(f"guid_list_sha256 {_shown(guid_list_sha256)}: not 64 hex digits")

    stem = f"{name_prefix}_{_compact_time(period_start_ms)}_{report_id}"
    scope = _ALL if distributor is None else distributor
    header_values = {
        "report_name": stem,
        "report_id": report_id,
        "period_start": format_time(period_start_ms),
        "period_end": format_time(period_end_ms),
        "generator": generator,
        "version": version,
        "profile": profile.name,
        "scope": scope,
        "scope_name": _scope_name(scope),
        "guid_list_sha256": guid_list_sha256,
        "window": "" if window_ms is None else _iso_duration(window_ms),
        "lead": "" if lead_ms is None else _iso_duration(lead_ms),
    }
    header = [profile.header_tag, *(header_values[f] for f in profile.header)]
    for field in header:
        _check_length(field, "header")
    body = _Body(profile, header, _cores(mpans or {}), keep_rows=xlsx)
    outbox.mkdir(mode=_OUTBOX_MODE, parents=True, exist_ok=True)
    path = outbox / f"{stem}.csv"
    # The CSV is streamed to its temporary file a slice of records at a time (a part of
    # 50,000 records never sits in memory as text), hashed on the way: the TRAILER's
    # digest over the data records, the signature's over the whole file. A record that
    # cannot be written raises here, and the temporary file goes with it.
    tmp = _temp_file(path, lambda out: body.write(out, records))
    try:
        xlsx_path = None
        if xlsx:
            xlsx_path = outbox / f"{stem}.xlsx"
            sheet = _Sheet(profile, header, body.rows, body.trailer)
            _write_atomically(xlsx_path, sheet.write)
            if signer is not None:
                xlsx_signature = signer.sign(xlsx_path.read_bytes())
                _write_atomically(signature_path(xlsx_path), lambda out: out.write(xlsx_signature))
        if signer is not None:
            signature = signer.sign_digest(body.whole.digest())
            _write_atomically(signature_path(path), lambda out: out.write(signature))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _put_in_place(tmp, path)
    return ReportFile(
        name=path.name,
        path=path,
        records=body.count,
        sha256=body.digest,
        period_start_ms=period_start_ms,
        period_end_ms=period_end_ms,
        report_id=report_id,
        xlsx_path=xlsx_path,
        distributor=distributor,
        records_without_mpan=body.without_mpan,
    )


_SLICE: Final = 1_000  # records formatted, hashed and written at a time


class _Body:
    """The CSV's lines after the HEADER, written to a file as they are formatted: the
    column names, the data records a slice at a time, and the TRAILER, which needs their
    count and digest."""

    def __init__(
        self,
        profile: ReportProfile,
        header: list[str],
        cores: dict[bytes, MpanCore],
        *,
        keep_rows: bool,
    ) -> None:
        self.profile, self.header, self.cores = profile, header, cores
        self.keep_rows = keep_rows
        self.rows: list[list[str]] = []  # only for the .xlsx copy
        self.trailer: list[str] = []
        self.whole = hashlib.sha256()  # the file's bytes: the signature's digest
        self.count = 0
        self.without_mpan = 0
        self.digest = EMPTY_SHA256

    def write(self, out: BinaryIO, records: Sequence[SuppressionRecord]) -> None:
        """Write the whole CSV to ``out``."""
        columns, cores, whole = self.profile.columns, self.cores, self.whole
        data = hashlib.sha256()  # the data records' bytes: the TRAILER's digest

        def put(chunk: bytes) -> None:
            out.write(chunk)
            whole.update(chunk)

        put(_csv_bytes([self.header, list(columns)]))
        batch: list[list[str]] = []
        for index, record in enumerate(records):
            core = cores.get(record.esme_id)
            self.without_mpan += core is None
            batch.append(_row(record, index, core, columns))
            if len(batch) == _SLICE:
                self._flush(batch, put, data)
        self._flush(batch, put, data)
        self.digest = data.hexdigest()
        values = {
            "records": str(self.count),
            "sha256": self.digest,
            "records_without_mpan": str(self.without_mpan),
        }
        self.trailer = [self.profile.trailer_tag, *(values[f] for f in self.profile.trailer)]
        put(_csv_bytes([self.trailer]))

    def _flush(self, batch: list[list[str]], put: Callable[[bytes], None], data: Any) -> None:
        if not batch:
            return
        chunk = _csv_bytes(batch)
        data.update(chunk)
        put(chunk)
        self.count += len(batch)
        if self.keep_rows:
            self.rows.extend(batch)
        batch.clear()


def by_distributor(
    records: Sequence[SuppressionRecord], mpans: Mapping[bytes, str]
) -> dict[str, list[SuppressionRecord]]:
    """The records of each distributor's file (``reports.split = "distributor"``), in
    log order, keyed by two-digit distributor id: every GB distribution area, with no
    records too (its Network Operator can then tell "nothing suppressed" from "a file is
    missing"), and any other id an MPAN names (an IDNO's). A record whose meter has no
    MPAN is in no distributor's file, only in the consolidated report (and counted in
    its TRAILER)."""
    split: dict[str, list[SuppressionRecord]] = {area: [] for area in GB_AREAS}
    for record in records:
        mpan = mpans.get(record.esme_id)
        if mpan is not None:
            split.setdefault(mpan[:2], []).append(record)
    return dict(sorted(split.items()))


_ALL: Final = "all"
_DISTRIBUTOR_ID = re.compile(r"[0-9]{2}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_ISO_DURATION = re.compile(r"PT[0-9]+(?:H|M|S|\.[0-9]{3}S)")


def _scope_name(scope: str) -> str:
    return "all distributors" if scope == _ALL else distributor_of(scope).name


def _cores(mpans: Mapping[bytes, str]) -> dict[bytes, MpanCore]:
    cores = {}
    for esme, text in mpans.items():
        try:
            cores[esme] = MpanCore.parse(text)
        except MpanError as exc:
            raise ValueError(f"MPAN of {format_eui64(esme)}: {exc}") from None
    return cores


# How each column is written from a record and its meter's MPAN core (None: none known).
_CELL: Final[dict[str, Callable[[SuppressionRecord, MpanCore | None], str]]] = {
    "alert_id": lambda r, _: r.alert_id,
    "alert_code": lambda _r, _m: ALERT_CODE,
    "mpan": lambda _, m: "" if m is None else m.digits,
    "distributor_id": lambda _, m: "" if m is None else m.distributor_id,
    "distributor": lambda _, m: "" if m is None else distributor_of(m.distributor_id).name,
    "chf_id": lambda r, _: format_eui64(r.chf_id),
    "esme_id": lambda r, _: format_eui64(r.esme_id),
    "raised_at": lambda r, _: format_time(r.raised_at),
    "received_at": lambda r, _: format_time(r.received_at),
    "window_start": lambda r, _: format_time(r.window_start),
    "window_end": lambda r, _: format_time(r.window_end),
    "activation": lambda r, _: r.activation,
    "request_id": lambda r, _: r.request_id or "",
    "originator": lambda r, _: format_eui64(r.originator),
    "originator_counter": lambda r, _: str(r.originator_counter),
}


def _row(
    record: SuppressionRecord, index: int, core: MpanCore | None, columns: Sequence[str]
) -> list[str]:
    # Records are Structs built by our own code, which msgspec does not validate on
    # construction: check here what verify_report will check, so that every report
    # written also verifies (whichever columns the profile shows).
    where = f"record {index} (alert_id {_shown(record.alert_id)})"
    for name in ("chf_id", "esme_id", "originator"):
        eui = getattr(record, name)
        if len(eui) != EUI64_LENGTH:
            raise ValueError(f"{where}: {name} is {len(eui)} bytes, not {EUI64_LENGTH}")
    if not 1 <= len(record.alert_id) <= 128:
        raise ValueError(f"{where}: alert_id must be 1 to 128 characters")
    if not 0 <= record.originator_counter <= _UINT64_MAX:
        raise ValueError(f"{where}: originator_counter out of range")
    if record.activation not in _ACTIVATIONS:
        raise ValueError(f"{where}: activation {record.activation!r} is not one of {_ACTIVATIONS}")
    try:
        row = [_CELL[column](record, core) for column in columns]
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    for field in row:
        _check_length(field, where)
    return row


def _check_length(field: str, where: str) -> None:
    if len(field) > MAX_FIELD_CHARS:
        raise ValueError(f"{where}: a value of {len(field):,} characters, over {MAX_FIELD_CHARS:,}")


def _csv_bytes(rows: Sequence[Sequence[str]]) -> bytes:
    text = io.StringIO(newline="")
    csv.writer(text, dialect=_Csv).writerows(rows)
    return text.getvalue().encode("utf-8")


_TIME_COLUMNS: Final = frozenset({"raised_at", "received_at", "window_start", "window_end"})
_EUI_COLUMNS: Final = frozenset({"chf_id", "esme_id", "originator"})
_WIDTHS: Final = {
    "alert_id": 34,
    "alert_code": 11,
    "mpan": 16,
    "distributor_id": 15,
    "distributor": 32,
    "request_id": 40,
    "originator_counter": 22,
    "activation": 13,
}


def _column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


class _Sheet:
    """The ``.xlsx`` copy: a sheet of typed records for the DNO's analyst (the column
    names in row 1, an autofilter, times as dates, the counter as a number), and the
    HEADER and TRAILER on a sheet of their own, so that no spreadsheet has to skip rows to
    find the column names. The CSV, not this copy, is the signed record."""

    def __init__(
        self, profile: ReportProfile, header: list[str], rows: list[list[str]], trailer: list[str]
    ) -> None:
        self.profile, self.header, self.rows, self.trailer = profile, header, rows, trailer

    def write(self, out: BinaryIO) -> None:
        """Write the workbook to ``out``."""
        # openpyxl is loaded only when a copy is written: most daemons never write one
        # (reports.xlsx is off by default) and need not import it.
        from openpyxl import Workbook  # noqa: PLC0415
        from openpyxl.cell import WriteOnlyCell  # noqa: PLC0415
        from openpyxl.worksheet.worksheet import Worksheet  # noqa: PLC0415

        columns = self.profile.columns
        workbook = Workbook(write_only=True)
        sheet = workbook.create_sheet(SHEET_TITLE)
        # A write-only workbook makes write-only sheets; said through the public class,
        # not the write-only class's private module.
        assert not isinstance(sheet, Worksheet)
        # Widths must be set before the first row is written.
        dimensions = sheet.column_dimensions
        for index, name in enumerate(columns):
            width = 25 if name in _EUI_COLUMNS else 24 if name in _TIME_COLUMNS else 20
            dimensions[_column_letter(index)].width = _WIDTHS.get(name, width)
        sheet.freeze_panes = "A2"  # keep the column names in view
        sheet.auto_filter.ref = f"A1:{_column_letter(len(columns) - 1)}{len(self.rows) + 1}"

        def cell(value: str | int | dt.datetime) -> Cell:
            if isinstance(value, str):
                return _text_cell(sheet, value)
            made = WriteOnlyCell(sheet, value=value)
            if isinstance(value, dt.datetime):
                made.number_format = XLSX_TIME_FORMAT
            return made

        times = [i for i, name in enumerate(columns) if name in _TIME_COLUMNS]
        counter = columns.index("originator_counter") if "originator_counter" in columns else -1
        sheet.append([cell(name) for name in columns])
        for row in self.rows:
            typed: list[str | int | dt.datetime] = list(row)
            for position in times:
                typed[position] = _excel_time(parse_time(row[position]), row[position])
            if counter >= 0:
                number = int(row[counter])
                # A counter beyond 2**53 would be rounded by any spreadsheet: kept as text.
                typed[counter] = number if number <= _EXCEL_EXACT else row[counter]
            sheet.append([cell(value) for value in typed])

        about = workbook.create_sheet(REPORT_SHEET_TITLE)
        assert not isinstance(about, Worksheet)
        about.column_dimensions["A"].width = 30
        about.column_dimensions["B"].width = 70
        about.append([_text_cell(about, "record"), _text_cell(about, self.header[0])])
        for label, value in zip(self.profile.header, self.header[1:], strict=True):
            about.append([_text_cell(about, label), _text_cell(about, value)])
        about.append([_text_cell(about, "record"), _text_cell(about, self.trailer[0])])
        for label, value in zip(self.profile.trailer, self.trailer[1:], strict=True):
            numeric = label != "sha256"
            shown: str | int = int(value) if numeric else value
            about.append(
                [
                    _text_cell(about, label),
                    WriteOnlyCell(about, value=shown) if numeric else _text_cell(about, value),
                ]
            )
        workbook.save(out)


def _text_cell(sheet: Any, value: str) -> Cell:
    # Text stays text, whatever it looks like: "=..." from the wire must never become a
    # formula, nor a long number a rounded one.
    from openpyxl.cell import WriteOnlyCell  # noqa: PLC0415
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE  # noqa: PLC0415

    made = WriteOnlyCell(sheet, value=ILLEGAL_CHARACTERS_RE.sub("\ufffd", value))
    made.data_type = "s"
    return made


def _excel_time(ms: int, text: str) -> dt.datetime | str:
    """A record's time as a spreadsheet date (UTC, to the millisecond), or its CSV text
    when a spreadsheet cannot hold it (before 1900)."""
    if ms < _EXCEL_EPOCH_MS:
        return text
    # Naive, in UTC: a spreadsheet cell has no time zone (openpyxl refuses an aware one).
    return (_UNIX_EPOCH + dt.timedelta(milliseconds=ms)).replace(tzinfo=None)


_UNIX_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EXCEL_EPOCH_MS: Final = -2_208_988_800_000  # 1900-01-01T00:00:00Z


def _write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    _put_in_place(_temp_file(path, write), path)


def _temp_file(path: Path, write: Callable[[BinaryIO], object]) -> str:
    # The file's bytes in a dot-named temporary beside it, flushed, mode set and fsynced;
    # nothing is left behind if writing fails.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            out.flush()
            os.fchmod(out.fileno(), _FILE_MODE)
            os.fsync(out.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def _put_in_place(tmp: str, path: Path) -> None:
    # Renamed over the final name (atomic on POSIX), then the folder fsynced so that the
    # rename survives a power cut.
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


# ---------------------------------------------------------------------------------------
# Reading and verifying


class ReportCheck(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`verify_report` found."""

    ok: bool
    """True when there is no problem."""
    records: int
    """Data records found in the file (between line 2 and the TRAILER)."""
    sha256: str
    """SHA-256 of those records' bytes as they are in the file."""
    problems: list[str]
    """One human-readable line per problem, each starting ``line N:``."""


class ReportRow(msgspec.Struct, frozen=True, kw_only=True):
    """One data record read back from a report: the columns its profile has, typed;
    the others None (an empty ``request_id``, ``mpan``, ``distributor_id`` or
    ``distributor`` cell reads back as None too)."""

    alert_id: str
    alert_code: str | None = None
    mpan: str | None = None
    distributor_id: str | None = None
    distributor: str | None = None
    chf_id: bytes | None = None
    esme_id: bytes | None = None
    raised_at: int | None = None
    received_at: int | None = None
    window_start: int | None = None
    window_end: int | None = None
    activation: ActivationKind | None = None
    request_id: str | None = None
    originator: bytes | None = None
    originator_counter: int | None = None


class ReportContents(msgspec.Struct, frozen=True, kw_only=True):
    """A verified report, read back (:func:`read_report`)."""

    name: str
    report_id: str
    period_start_ms: int
    period_end_ms: int
    header: dict[str, str]
    """Every HEADER field by its profile name (``version``, ``scope``, ``window`` ...)."""
    trailer: dict[str, str]
    """Every TRAILER field by its profile name (``records``, ``sha256`` ...)."""
    columns: tuple[str, ...]
    sha256: str
    records: list[ReportRow]
    """The data records, in file order."""


class ReportError(GatewayError):
    """A report file that fails verification; ``problems`` lists why, line by line."""

    def __init__(self, path: Path, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = list(problems)
        first = problems[0] if problems else "no problem"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{path}: {first}{more}")


def verify_report(path: Path, profile: ReportProfile | None = None) -> ReportCheck:
    """Check a CSV report against its profile: structure, every record, the count and
    the digest.

    Without ``profile``, the built-in profile the HEADER names in its ``profile`` field
    (``dno`` or ``dsp``) is used, and ``dno`` when it names none of them; a report
    written with a profile file of one's own is verified with that profile given.

    Checks that line 1 is a well-formed HEADER, line 2 the profile's column names, the
    last record a TRAILER whose count and SHA-256 match the data records between them
    (and whose count of records without an MPAN matches, when the file has the MPAN
    column), and that every data record has the profile's columns with valid values:
    EUI-64s, times, MPAN cores (check digit), a distributor that agrees with the MPAN
    (and, in a distributor's file, with the HEADER's scope), counter and activation.
    Problems name the line (physical lines, counted from 1; a record whose quoted value
    holds a line break is named by its first line). At most 50 are listed per file.

    Raises:
        OSError: the file cannot be read (that is not a problem *of the report*).
    """
    check, _ = _check(path, profile)
    return check


def read_report(path: Path, profile: ReportProfile | None = None) -> ReportContents:
    """Read a report back, verifying it first (:func:`verify_report`).

    Raises:
        ReportError: the file fails :func:`verify_report`.
        OSError: the file cannot be read.
    """
    check, parsed = _check(path, profile)
    if not check.ok or parsed is None:
        raise ReportError(path, check.problems)
    return parsed


class _Record(NamedTuple):
    first_line: int
    last_line: int
    fields: list[str] | None  # None: the csv module could not parse it
    raw: bytes


class _Problems:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.dropped = 0

    def add(self, line: int, text: str) -> None:
        if len(self.lines) < _MAX_PROBLEMS:
            self.lines.append(f"line {line}: {text}")
        else:
            self.dropped += 1

    def result(self) -> list[str]:
        if self.dropped:
            return [*self.lines, f"... and {self.dropped} more problems"]
        return list(self.lines)


def _scan(lines: Iterator[bytes], problems: _Problems) -> Iterator[_Record]:
    # Feeds the csv reader one physical line at a time and remembers the raw bytes each
    # record was read from (the reader pulls lines only as a record needs them), so the
    # digest is checked over the file's bytes, not over a re-encoding.
    consumed: list[bytes] = []
    line_no = 0

    def feed() -> Iterator[str]:
        nonlocal line_no
        for raw in lines:
            line_no += 1
            consumed.append(raw)
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.add(line_no, f"not UTF-8 (byte {exc.start + 1} of the line)")
                yield raw.decode("utf-8", errors="replace")

    reader = csv.reader(feed(), dialect=_Csv)
    first = 1
    while True:
        fields: list[str] | None
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if not consumed:
                return
            problems.add(first, f"not valid CSV: {exc}")
            fields = None
        yield _Record(first, line_no, fields, b"".join(consumed))
        consumed.clear()
        first = line_no + 1


def _check(path: Path, given: ReportProfile | None) -> tuple[ReportCheck, ReportContents | None]:
    problems = _Problems()
    with path.open("rb") as file:
        start = file.read(4)
        file.seek(0)
        if start == b"PK\x03\x04":
            problems.add(1, "this is a zip file (an .xlsx copy?); verify the .csv report")
            return ReportCheck(
                ok=False, records=0, sha256=EMPTY_SHA256, problems=problems.result()
            ), None
        if start.startswith(b"\xef\xbb\xbf"):
            problems.add(1, "starts with a byte order mark: a report is UTF-8 without one")
        records = list(_scan(iter(file), problems))

    profile = given or _named_profile(records[0].fields if records else None)
    if not records:
        problems.add(1, f"the file is empty: expected a {profile.header_tag} record")
        return ReportCheck(
            ok=False, records=0, sha256=EMPTY_SHA256, problems=problems.result()
        ), None

    header = _check_header(records[0], profile, problems)
    tag = profile.trailer_tag
    if len(records) < 2:
        problems.add(records[0].last_line + 1, f"missing the column names and the {tag} record")
        body: list[_Record] = []
        trailer = None
    else:
        if records[1].fields != list(profile.columns):
            problems.add(
                records[1].first_line,
                f"expected the column names {','.join(profile.columns)} (profile {profile.name!r})",
            )
        last = records[-1]
        if len(records) > 2 and _is_trailer(last, tag):
            body, trailer = records[2:-1], last
        else:
            body, trailer = records[2:], None
            problems.add(
                last.last_line,
                f"the last record is not a {tag} record: the file is incomplete "
                f"(it ends at line {last.last_line})",
            )

    lf_only = [r for r in records if r.raw.endswith(b"\n") and not r.raw.endswith(b"\r\n")]
    if lf_only:
        more = f" (and {len(lf_only) - 1} more)" if len(lf_only) > 1 else ""
        problems.add(
            lf_only[0].first_line,
            f"record ends with LF, not CRLF{more}: were the line endings converted?",
        )
    if trailer is not None and not trailer.raw.endswith(b"\n"):
        problems.add(trailer.first_line, f"the {tag} record does not end with CRLF")

    scope = None if header is None else header.get("scope")
    parsed: list[ReportRow] = []
    for record in body:
        if record.fields is None:
            continue  # already reported by _scan
        fields = record.fields
        if fields and fields[0] == tag and len(fields) != len(profile.columns):
            problems.add(record.first_line, f"a {tag} record that is not the last record")
            continue
        try:
            parsed.append(_parse_row(fields, profile.columns, scope))
        except ValueError as exc:
            problems.add(record.first_line, str(exc))

    data = b"".join(record.raw for record in body)
    digest = hashlib.sha256(data).hexdigest()
    trailer_fields = None
    if trailer is not None:
        without = None
        if "mpan" in profile.columns and len(parsed) == len(body):
            without = sum(row.mpan is None for row in parsed)
        trailer_fields = _check_trailer(trailer, profile, _Found(body, digest, without), problems)

    result = problems.result()
    check = ReportCheck(ok=not result, records=len(body), sha256=digest, problems=result)
    if result or header is None or trailer_fields is None:
        return check, None
    contents = ReportContents(
        name=header.get("report_name", path.stem),
        report_id=header["report_id"],
        period_start_ms=parse_time(header["period_start"]),
        period_end_ms=parse_time(header["period_end"]),
        header=header,
        trailer=trailer_fields,
        columns=profile.columns,
        sha256=digest,
        records=parsed,
    )
    return check, contents


def _named_profile(header: list[str] | None) -> ReportProfile:
    # The built-in profile whose HEADER this is and which it names; else the default.
    for profile in _BUILTINS:
        if (
            header
            and header[0] == profile.header_tag
            and len(header) == len(profile.header) + 1
            and "profile" in profile.header
            and header[1 + profile.header.index("profile")] == profile.name
        ):
            return profile
    return DEFAULT_PROFILE


def _is_trailer(record: _Record, tag: str) -> bool:
    return bool(record.fields) and record.fields is not None and record.fields[0] == tag


def _named(
    fields: list[str],
    names: tuple[str, ...],
    problems: _Problems,
    *,
    tag: str,
    line: int,
    profile: str,
) -> dict[str, str] | None:
    # A HEADER or TRAILER record's fields by the profile's names, or None (said why).
    if len(fields) != len(names) + 1:
        problems.add(
            line,
            f"{tag} has {len(fields)} fields, expected {len(names) + 1}: "
            f"{', '.join((tag, *names))} (profile {profile!r})",
        )
        return None
    return dict(zip(names, fields[1:], strict=True))


def _check_header(
    record: _Record, profile: ReportProfile, problems: _Problems
) -> dict[str, str] | None:
    fields, line, tag = record.fields, record.first_line, profile.header_tag
    if fields is None:
        return None
    if not fields or fields[0] != tag:
        found = _shown(fields[0]) if fields else "an empty line"
        problems.add(line, f"expected a {tag} record, found {found}")
        return None
    values = _named(fields, profile.header, problems, tag=tag, line=line, profile=profile.name)
    if values is None:
        return None
    ok = True

    def bad(name: str, detail: str) -> None:
        nonlocal ok
        problems.add(line, f"{tag}: {name}: {detail}")
        ok = False

    for name in ("report_name", "report_id", "generator", "version", "profile", "scope"):
        if name in values and not values[name]:
            bad(name, "is empty")
    times = []
    for name in ("period_start", "period_end"):
        try:
            times.append(parse_time(values[name]))
        except ValueError as exc:
            bad(name, str(exc))
    if len(times) == 2 and times[0] > times[1]:
        bad("period_end", "the period ends before it starts")
    if values.get("profile", profile.name) != profile.name:
        bad("profile", f"{_shown(values['profile'])}, verified as profile {profile.name!r}")
    scope = values.get("scope", _ALL)
    if scope != _ALL and _DISTRIBUTOR_ID.fullmatch(scope) is None:
        bad("scope", f"{_shown(scope)} is neither 'all' nor a two-digit distributor id")
    elif "scope_name" in values and scope and values["scope_name"] != _scope_name(scope):
        bad("scope_name", f"{_shown(values['scope_name'])} does not name scope {scope}")
    digest = values.get("guid_list_sha256", "")
    if digest and _SHA256_HEX.fullmatch(digest) is None:
        bad("guid_list_sha256", f"{_shown(digest)} is not a SHA-256 in lowercase hex")
    for name in ("window", "lead"):
        value = values.get(name, "")
        if value and _ISO_DURATION.fullmatch(value) is None:
            bad(name, f"{_shown(value)} is not a duration like PT30M")
    return values if ok else None


class _Found(NamedTuple):
    body: list[_Record]
    digest: str
    without_mpan: int | None  # None: the file has no MPAN column to count


def _check_trailer(
    trailer: _Record, profile: ReportProfile, found_: _Found, problems: _Problems
) -> dict[str, str] | None:
    body, digest, without_mpan = found_
    found = len(body)
    fields, line, tag = trailer.fields, trailer.first_line, profile.trailer_tag
    assert fields is not None
    values = _named(fields, profile.trailer, problems, tag=tag, line=line, profile=profile.name)
    if values is None:
        return None
    count_text, claimed = values["records"], values["sha256"]
    if not (count_text.isascii() and count_text.isdigit()):
        problems.add(line, f"{tag}: record count {_shown(count_text)} is not a number")
    elif int(count_text) != found:
        problems.add(line, f"{tag} says {int(count_text)} records, the file has {found}")
    if not re.fullmatch(r"[0-9a-f]{64}", claimed):
        problems.add(line, f"{tag}: {_shown(claimed)} is not a SHA-256 in lowercase hex")
    elif claimed != digest:
        lines = f"lines {body[0].first_line}-{body[-1].last_line}" if body else "no lines"
        problems.add(
            line,
            f"SHA-256 of the data records ({lines}) is {digest}, the {tag} says {claimed}: "
            "the records were changed",
        )
    if "records_without_mpan" in values:
        text = values["records_without_mpan"]
        if not (text.isascii() and text.isdigit()):
            problems.add(line, f"{tag}: records without an MPAN {_shown(text)} is not a number")
        elif without_mpan is not None and int(text) != without_mpan:
            problems.add(
                line,
                f"{tag} says {int(text)} records without an MPAN, the file has {without_mpan}",
            )
    return values


def _parse_row(fields: list[str], columns: tuple[str, ...], scope: str | None) -> ReportRow:
    if len(fields) != len(columns):
        found = "an empty line" if not fields else f"{len(fields)} fields"
        raise ValueError(f"a data record has {len(columns)} fields, found {found}")
    values = dict(zip(columns, fields, strict=True))
    out: dict[str, Any] = {}
    for name, text in values.items():
        try:
            out[name] = _PARSE[name](text)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    mpan, distributor_id = out.get("mpan"), out.get("distributor_id")
    if "mpan" in out and "distributor_id" in out and distributor_id != (mpan and mpan[:2]):
        raise ValueError(
            f"distributor_id: {_shown(fields[columns.index('distributor_id')])} "
            f"does not agree with the MPAN {_shown(values['mpan'])}"
        )
    if "distributor" in out:
        expected = None if distributor_id is None else distributor_of(distributor_id).name
        if "distributor_id" in out and out["distributor"] != expected:
            raise ValueError(
                f"distributor: {_shown(values['distributor'])} does not name distributor id "
                f"{_shown(values['distributor_id'])}"
            )
    if scope not in (None, _ALL) and "distributor_id" in out and distributor_id != scope:
        raise ValueError(
            f"distributor_id: {_shown(values['distributor_id'])} in the file of distributor {scope}"
        )
    return ReportRow(**out)


def _parse_alert_id(text: str) -> str:
    if not 1 <= len(text) <= 128:
        raise ValueError("must be 1 to 128 characters")
    return text


def _parse_code(text: str) -> str:
    if not text:
        raise ValueError("is empty")
    return text


def _parse_mpan(text: str) -> str | None:
    if not text:
        return None
    if not (text.isascii() and text.isdigit()):
        # Written as 13 bare digits; a spaced spelling would change the digest's bytes.
        raise ValueError(f"{_shown(text)} is not 13 digits")
    try:
        return MpanCore.parse(text).digits
    except MpanError as exc:
        raise ValueError(exc.detail) from None


def _parse_distributor_id(text: str) -> str | None:
    if not text:
        return None
    if _DISTRIBUTOR_ID.fullmatch(text) is None:
        raise ValueError(f"{_shown(text)} is not a two-digit distributor id")
    return text


def _parse_counter(text: str) -> int:
    if not (text.isascii() and text.isdigit() and int(text) <= _UINT64_MAX):
        raise ValueError(f"{_shown(text)} is not a 64-bit unsigned number")
    return int(text)


def _parse_activation(text: str) -> ActivationKind:
    if text not in _ACTIVATIONS:
        raise ValueError(f"{_shown(text)} is not on-demand or future-dated")
    return "on-demand" if text == "on-demand" else "future-dated"


# How each column is read back (raising ValueError with what is wrong).
_PARSE: Final[dict[str, Callable[[str], Any]]] = {
    "alert_id": _parse_alert_id,
    "alert_code": _parse_code,
    "mpan": _parse_mpan,
    "distributor_id": _parse_distributor_id,
    "distributor": lambda text: text or None,
    "chf_id": parse_eui64,
    "esme_id": parse_eui64,
    "raised_at": parse_time,
    "received_at": parse_time,
    "window_start": parse_time,
    "window_end": parse_time,
    "activation": _parse_activation,
    "request_id": lambda text: text or None,
    "originator": parse_eui64,
    "originator_counter": _parse_counter,
}


# ---------------------------------------------------------------------------------------
# Rotation


class Rotation(msgspec.Struct, frozen=True):
    """Report periods and the names of their reports (issue 13, docs/decisions.md D15).

    Periods are aligned to the Unix epoch, so they fall on round UTC times: an hourly
    report covers 09:00:00.000 (inclusive) up to 10:00:00.000 (exclusive), a daily one a
    UTC calendar day. Each suppression record belongs to the period of its decision
    time (when the gateway received and judged the alert). A period is closed once it
    has ended and :data:`settle_ms` has passed (time for the decisions made just before
    its end to be committed); every period gets a report, empty ones too, and a period
    holding more than ``max_records`` is split into numbered parts. The report of part
    ``n`` of the period starting at ``s`` is always named the same
    (:meth:`report_id`), so anyone can tell the next file's name. Pure: every method
    takes the time as an argument and nothing here reads a clock.
    """

    period_ms: int
    """Length of a reporting period (3_600_000 for hourly reports)."""
    max_records: int
    """At most this many records per report file: a fuller period is split into parts."""
    settle_ms: int = 2_000
    """How long after a period's end it is closed."""

    def __post_init__(self) -> None:
        if self.period_ms <= 0:
            raise ValueError(f"period_ms must be positive, got {self.period_ms}")
        if self.max_records <= 0:
            raise ValueError(f"max_records must be positive, got {self.max_records}")
        if self.settle_ms < 0:
            raise ValueError(f"settle_ms must not be negative, got {self.settle_ms}")

    def period_start(self, now_ms: int) -> int:
        """Start of the period holding ``now_ms``: the last boundary at or before it."""
        return now_ms - now_ms % self.period_ms

    def next_boundary(self, now_ms: int) -> int:
        """The first boundary strictly after ``now_ms`` (when its period ends)."""
        return self.period_start(now_ms) + self.period_ms

    def closes_at(self, period_start_ms: int) -> int:
        """When the period starting at ``period_start_ms`` is closed: its end + settle."""
        return self.period_start(period_start_ms) + self.period_ms + self.settle_ms

    def due(self, now_ms: int, period_start_ms: int) -> bool:
        """Whether the period starting at ``period_start_ms`` (the oldest still open) is
        to be closed at ``now_ms``: once it has ended and settled, even with no records
        (an empty period still gets its report)."""
        return now_ms >= self.closes_at(period_start_ms)

    def report_id(self, period_start_ms: int, part: int, distributor: str | None = None) -> str:
        """The id of part ``part`` (1, 2 ...) of that period's report, which with the
        period's start makes the file name: ``PT1H-001`` for the first part of an hourly
        report (the period's length, ISO 8601, then the part), ``PT1H-001-D10`` for
        distributor 10's file of that part (``reports.split = "distributor"``)."""
        if part < 1:
            raise ValueError(f"part must be at least 1, got {part}")
        suffix = "" if distributor is None else f"-D{distributor}"
        return f"{_iso_duration(self.period_ms)}-{part:03d}{suffix}"


def _iso_duration(ms: int) -> str:
    if ms % 3_600_000 == 0:
        return f"PT{ms // 3_600_000}H"
    if ms % 60_000 == 0:
        return f"PT{ms // 60_000}M"
    if ms % 1000 == 0:
        return f"PT{ms // 1000}S"
    return f"PT{ms // 1000}.{ms % 1000:03d}S"
