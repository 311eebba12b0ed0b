"""The GUID list import: from the Landis+Gyr sheet (.xlsx) or a CSV file to the compiled file.

``poa-gateway guids import`` runs this once per list received; the daemon only maps the
compiled file (:mod:`gateway.guids`) and never imports this module, nor python-calamine.

Theory of operation
-------------------
Import reads the sheet with python-calamine (``.xlsx``/``.xlsm``) or the csv module
(``.csv``), finds the GUID column by its header (or an explicit ``column``), parses every
row below the header and reports each row it could not use, then sorts and de-duplicates
the GUIDs and writes the compiled file with :func:`gateway.guids.write_sorted_guid_list`.

Most of the time goes into calamine parsing the sheet XML, then into sorting
(``bench/guids_bench.py`` prints both). Rows are taken from ``CalamineSheet.iter_rows()``
in chunks rather than from ``to_python()``, which builds every row's list before the
first one can be used. The Python side is kept to a few C-level passes per
chunk of rows: the GUID column is pulled out with one list
comprehension, and a chunk in which every cell is in one canonical notation (23 characters
``00-DB-12-34-56-78-90-A0`` or ``00:db:...``, or 16 hex digits) is checked by lengths and
separator positions, joined and decoded with one ``bytes.fromhex``. Only a chunk that fails
that check is split and, in the end, parsed row by row with :func:`gateway.eui.parse_eui64`,
which is where blank rows, spaces around a GUID and invalid cells are dealt with.

Rows are numbered as a spreadsheet shows them (1-based, counting the rows above the data);
cell references are ``B17``. A blank row (every cell empty) is skipped and counted; a row
whose GUID cell is empty while other cells are filled is an invalid row.

The module never reads a clock: the import time is an argument (the CLI supplies it).
"""

from __future__ import annotations

import csv
import enum
import hashlib
import io
import itertools
import operator
import os
import re
import sys
from array import array
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Final, NamedTuple

import msgspec
from python_calamine import CalamineError, CalamineSheet, CalamineWorkbook

from .eui import format_eui64, parse_eui64
from .guids import GuidListError, GuidListReason, write_sorted_guid_list

__all__ = [
    "HEADER_NAMES",
    "HEADER_SCAN_ROWS",
    "PROGRESS_EVERY",
    "DuplicateGuid",
    "GuidRowReason",
    "ImportReport",
    "InvalidRow",
    "ProgressCallback",
    "import_guid_list",
    "read_guid_list",
]

HEADER_NAMES: Final = ("GUID", "ESME GUID", "EUI-64", "EUI64", "EUI", "Device ID", "DeviceID")
"""Headers that mark the GUID column, matched ignoring case, spaces, '-' and '_'.

If one header row has more than one of them, the earliest in this tuple wins."""

HEADER_SCAN_ROWS: Final = 1000
"""The header row must be within this many rows of the top of the sheet."""

PROGRESS_EVERY: Final = 100_000
_CHUNK = 10_000  # rows per fast-path attempt; a failing chunk is retried in sub-chunks
_SUB_CHUNK = 250
_SEPARATOR_OFFSETS = (2, 5, 8, 11, 14, 17, 20)  # in 00-DB-12-34-56-78-90-A0
_LETTERS = re.compile(r"[A-Za-z]{1,3}")
_XLSX_SUFFIXES = frozenset({".xlsx", ".xlsm"})
_CSV_SUFFIXES = frozenset({".csv"})

ProgressCallback = Callable[[int, int | None], None]
"""``progress(rows_done, rows_total_or_None)``, called about every 100,000 rows and at the end."""


class GuidRowReason(enum.StrEnum):
    """The stable reason codes of an :class:`InvalidRow`."""

    NOT_EUI64 = "not-eui64"
    NUMBER = "number"
    NOT_TEXT = "not-text"
    EMPTY_GUID = "empty-guid"


class InvalidRow(msgspec.Struct, frozen=True, kw_only=True):
    """A row whose GUID cell could not be used.

    ``reason`` is a :class:`GuidRowReason`: ``not-eui64`` (text not an EUI-64), ``number``
    (a numeric cell), ``not-text`` (a date, time or boolean cell) or ``empty-guid`` (the
    GUID cell is empty but other cells of the row are not). ``detail`` says it for people.
    """

    sheet: str
    row: int
    cell: str
    value: str
    reason: GuidRowReason
    detail: str


class DuplicateGuid(msgspec.Struct, frozen=True, kw_only=True):
    """A GUID that appears on more than one row (it is compiled once)."""

    value: str
    rows: tuple[int, ...]


class ImportReport(msgspec.Struct, frozen=True, kw_only=True):
    """What an import read, found wrong and wrote.

    ``rows_read`` counts the rows below the header (or every row when there is no header
    row), blank ones included; ``valid_count`` counts rows holding a GUID (duplicates
    included) and ``unique_count`` the GUIDs compiled. ``output`` and ``imported_at_ms``
    are None until the compiled file is written.
    """

    source: str
    sheet: str
    column: str
    header: str | None
    header_row: int | None
    rows_read: int
    blank_rows: int
    valid_count: int
    unique_count: int
    invalid: tuple[InvalidRow, ...]
    duplicates: tuple[DuplicateGuid, ...]
    sha256: str
    output: str | None = None
    imported_at_ms: int | None = None


# ---------------------------------------------------------------------------------------
# Reading the source


def _normalise_header(text: str) -> str:
    return "".join(ch for ch in text.casefold() if ch.isalnum())


_HEADER_RANK: Final = {_normalise_header(name): rank for rank, name in enumerate(HEADER_NAMES)}


def _column_letter(index: int) -> str:
    letters = ""
    n = index + 1
    while n:
        n, rem = divmod(n - 1, 26)
        letters = chr(ord("A") + rem) + letters
    return letters


def _letter_index(letters: str) -> int:
    n = 0
    for ch in letters.upper():
        n = n * 26 + ord(ch) - ord("A") + 1
    return n - 1


def _is_empty(cell: object) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def _shown_value(cell: object) -> str:
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    return cell if isinstance(cell, str) else str(cell)


class _ColumnSpec(NamedTuple):
    number: int | None  # 0-based column, from a letter or a number
    text: str | None  # header text to look for


def _column_spec(column: str | int | None, path: Path) -> _ColumnSpec:
    if column is None:
        return _ColumnSpec(None, None)
    if isinstance(column, int) or column.strip().isdigit():
        number = int(column)
        if number < 1:
            raise GuidListError(
                f"column {column!r}: numbers start at 1",
                reason=GuidListReason.COLUMN_NOT_FOUND,
                path=path,
            )
        return _ColumnSpec(number - 1, None)
    text = column.strip()
    if not text:
        raise GuidListError("empty column name", reason=GuidListReason.COLUMN_NOT_FOUND, path=path)
    letters = _letter_index(text) if _LETTERS.fullmatch(text) else None
    return _ColumnSpec(letters, text)


class _Located(NamedTuple):
    header_index: int | None  # row index (in iteration order) of the header row
    column: int  # absolute 0-based column
    header: str | None
    by_header: bool  # found by header text (a known GUID header or the one asked for)


def _known_header(row: Sequence[object]) -> tuple[int, str] | None:
    best: tuple[int, int, str] | None = None
    for j, cell in enumerate(row):
        if isinstance(cell, str):
            rank = _HEADER_RANK.get(_normalise_header(cell))
            if rank is not None and (best is None or rank < best[0]):
                best = (rank, j, cell.strip())
    return None if best is None else (best[1], best[2])


def _find_known_header(head: Sequence[Sequence[object]]) -> tuple[int, int, str] | None:
    for i, row in enumerate(head):
        found = _known_header(row)
        if found is not None:
            return i, found[0], found[1]
    return None


def _find_header_text(head: Sequence[Sequence[object]], text: str) -> tuple[int, int, str] | None:
    # Exact text (ignoring case) first; then ignoring spaces and punctuation as well.
    for key in (str.casefold, _normalise_header):
        wanted = key(text.strip())
        for i, row in enumerate(head):
            for j, cell in enumerate(row):
                if isinstance(cell, str) and cell.strip() and key(cell.strip()) == wanted:
                    return i, j, cell.strip()
    return None


def _locate(head: Sequence[Sequence[object]], spec: _ColumnSpec, offset: int) -> _Located | None:
    """Where the GUID column is; None when the header it needs is not in ``head``.

    ``offset`` is the absolute column of the first cell of each row in ``head``.
    """
    if spec.text is not None:
        found = _find_header_text(head, spec.text)
        if found is not None:
            i, j, header = found
            return _Located(i, j + offset, header, True)
        if spec.number is None:
            return None
    known = _find_known_header(head)
    if spec.number is None:
        if known is None:
            return None
        i, j, header = known
        return _Located(i, j + offset, header, True)
    # A column letter or number: the header row is the first with a known GUID header,
    # else the first non-blank row if its cell in that column is text but not a GUID.
    if known is not None:
        i = known[0]
        cell = _cell_at(head[i], spec.number - offset)
        text = cell.strip() if isinstance(cell, str) else ""
        return _Located(i, spec.number, text or None, True)
    for i, row in enumerate(head):
        if all(_is_empty(c) for c in row):
            continue
        cell = _cell_at(row, spec.number - offset)
        if isinstance(cell, str) and cell.strip():
            try:
                parse_eui64(cell)
            except ValueError:
                return _Located(i, spec.number, cell.strip(), False)
        break
    return _Located(None, spec.number, None, False)


def _cell_at(row: Sequence[object], index: int) -> object:
    return row[index] if 0 <= index < len(row) else None


def _fast_hex(column: list[object]) -> bytes | None:
    """The GUIDs of a chunk as big-endian bytes if every cell is in one canonical notation."""
    try:
        lengths = set(map(len, column))  # type: ignore[arg-type]
        joined = "".join(column)  # type: ignore[arg-type]
    except TypeError:  # a number, date or None among the cells
        return None
    m = len(column)
    if lengths == {23}:
        sep = joined[2]
        if sep not in "-:" or joined.count(sep) != 7 * m:
            return None
        run = sep * m
        if any(joined[k::23] != run for k in _SEPARATOR_OFFSETS):
            return None
        digits = joined.replace(sep, "")
    elif lengths == {16}:
        digits = joined
    else:
        return None
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        return None
    # fromhex skips ASCII whitespace between pairs: a full length proves there was none.
    return raw if len(raw) == 8 * m else None


class _Collector:
    """Parses chunks of rows; everything is indexed by row position in iteration order."""

    def __init__(self, column: int) -> None:
        self.column = column
        self.be = bytearray()  # the GUIDs, 8 bytes each, big-endian, in row order
        self.rows = array("Q")  # the row index of each GUID in ``be``
        self.invalid: list[tuple[int, object, GuidRowReason, str]] = []
        self.blank = 0
        self.rows_seen = 0

    def feed(self, chunk: Sequence[Sequence[object]], start: int) -> None:
        ci = self.column
        try:
            cells: list[object] = [row[ci] for row in chunk]
        except IndexError:  # ragged CSV rows
            cells = [row[ci] if len(row) > ci else "" for row in chunk]
        self.rows_seen += len(cells)
        self._parse(chunk, cells, start, _CHUNK)

    def _parse(
        self, chunk: Sequence[Sequence[object]], cells: list[object], start: int, size: int
    ) -> None:
        raw = _fast_hex(cells)
        if raw is not None:
            self.be += raw
            self.rows.extend(range(start, start + len(cells)))
            return
        if size > _SUB_CHUNK and len(cells) > _SUB_CHUNK:
            for k in range(0, len(cells), _SUB_CHUNK):
                self._parse(chunk[k : k + _SUB_CHUNK], cells[k : k + _SUB_CHUNK], start + k, 0)
            return
        for k, cell in enumerate(cells):
            self._parse_one(chunk[k], cell, start + k)

    def _parse_one(self, row: Sequence[object], cell: object, index: int) -> None:
        if isinstance(cell, str):
            text = cell.strip()
            if text:
                try:
                    eui = parse_eui64(text)
                except ValueError as exc:
                    detail = str(exc).removeprefix(f"EUI-64 {text!r}: ")
                    self.invalid.append(
                        (index, cell, GuidRowReason.NOT_EUI64, f"not an EUI-64: {detail}")
                    )
                else:
                    self.be += eui
                    self.rows.append(index)
                return
        elif cell is not None:
            if isinstance(cell, int | float) and not isinstance(cell, bool):
                self.invalid.append(
                    (
                        index,
                        cell,
                        GuidRowReason.NUMBER,
                        "not an EUI-64: a number cell (store GUIDs as text; "
                        "Excel keeps only 15 digits of a number)",
                    )
                )
            else:
                kind = type(cell).__name__
                self.invalid.append(
                    (index, cell, GuidRowReason.NOT_TEXT, f"not an EUI-64: a {kind} cell")
                )
            return
        if all(_is_empty(c) for c in row):
            self.blank += 1
        else:
            self.invalid.append(
                (index, cell, GuidRowReason.EMPTY_GUID, "empty GUID cell in a row with other data")
            )

    def values(self) -> array[int]:
        out = array("Q")
        out.frombytes(self.be)
        if sys.byteorder == "little":
            out.byteswap()
        return out


class _Extracted(NamedTuple):
    sheet: str
    located: _Located
    collector: _Collector
    row_offset: int  # add to an iteration index to get the 0-based sheet row


def _scan(
    rows: Iterator[Sequence[object]],
    head: Sequence[Sequence[object]],
    *,
    located: _Located,
    col_offset: int,
    progress: ProgressCallback | None,
    total: int | None,
) -> tuple[_Collector, int]:
    collector = _Collector(located.column - col_offset)
    start = 0 if located.header_index is None else located.header_index + 1
    collector.feed(head[start:], start)
    index = len(head)
    next_report = PROGRESS_EVERY
    last_report = -1
    while chunk := list(itertools.islice(rows, _CHUNK)):
        collector.feed(chunk, index)
        index += len(chunk)
        if progress is not None and index >= next_report:
            progress(index, total)
            last_report = index
            next_report = (index // PROGRESS_EVERY + 1) * PROGRESS_EVERY
    if progress is not None and index != last_report:
        progress(index, total)
    return collector, index


def _resolve_sheet(names: list[str], sheet: str | int, path: Path) -> str:
    if isinstance(sheet, str):
        if sheet in names:
            return sheet
        folded = [n for n in names if n.casefold() == sheet.strip().casefold()]
        if len(folded) == 1:
            return folded[0]
        if not sheet.strip().isdigit():
            raise GuidListError(
                f"no sheet {sheet!r}; the sheets are {', '.join(map(repr, names))}",
                reason=GuidListReason.SHEET_NOT_FOUND,
                path=path,
            )
        sheet = int(sheet)
    if not 1 <= sheet <= len(names):
        raise GuidListError(
            f"no sheet number {sheet}; the workbook has {len(names)} sheet(s): "
            f"{', '.join(map(repr, names))}",
            reason=GuidListReason.SHEET_NOT_FOUND,
            path=path,
        )
    return names[sheet - 1]


def _no_header(spec: _ColumnSpec, path: Path, sheets: list[str]) -> GuidListError:
    if spec.text is not None:
        what, reason = f"no column headed {spec.text!r}", GuidListReason.COLUMN_NOT_FOUND
    else:
        what, reason = (
            f"no GUID column header ({', '.join(HEADER_NAMES)})",
            GuidListReason.NO_HEADER,
        )
    where = "" if len(sheets) == 1 else f" of any sheet ({', '.join(map(repr, sheets))})"
    return GuidListError(
        f"{what} in the first {HEADER_SCAN_ROWS} rows{where}",
        reason=reason,
        path=path,
        sheet=sheets[0] if len(sheets) == 1 else None,
    )


def _read_xlsx(
    path: Path,
    spec: _ColumnSpec,
    sheet: str | int | None,
    progress: ProgressCallback | None,
) -> _Extracted:
    try:
        workbook = CalamineWorkbook.from_path(str(path))
    except OSError as exc:
        raise GuidListError(
            f"cannot read: {exc.strerror or exc}", reason=GuidListReason.UNREADABLE, path=path
        ) from exc
    except CalamineError as exc:
        raise GuidListError(
            f"not a readable Excel workbook ({exc})", reason=GuidListReason.CORRUPT, path=path
        ) from exc
    with workbook:
        names = list(workbook.sheet_names)
        if not names:
            raise GuidListError(
                "the workbook has no sheets", reason=GuidListReason.NO_HEADER, path=path
            )
        candidates = [_resolve_sheet(names, sheet, path)] if sheet is not None else names
        fallback: str | None = None
        unreadable: list[tuple[str, CalamineError]] = []
        for name in candidates:
            try:
                data = workbook.get_sheet_by_name(name)
            except CalamineError as exc:
                unreadable.append((name, exc))
                continue  # e.g. a chart sheet: the GUIDs may be on the next one
            rows = iter(data.iter_rows())
            head = list(itertools.islice(rows, HEADER_SCAN_ROWS))
            # python-calamine 0.9's iter_rows() yields rows from the top of the sheet but
            # cells from the first used column on; tell which from the width of a row.
            start, end = data.start, data.end
            col_offset = 0
            if start is not None and end is not None and head and len(head[0]) != end[1] + 1:
                col_offset = start[1]
            located = _locate(head, spec, col_offset)
            if located is None:
                continue
            if sheet is None and not located.by_header:
                # A column letter or number: prefer a sheet with a GUID header, else the
                # first sheet.
                fallback = fallback or name
                continue
            return _finish_xlsx(
                path,
                name,
                data,
                rows=rows,
                head=head,
                located=located,
                col_offset=col_offset,
                progress=progress,
            )
        if fallback is not None:
            return _read_xlsx(path, spec, fallback, progress)
        if unreadable:
            # No GUID column in the sheets that could be read: it may be in one that could not.
            name, cause = unreadable[0]
            raise GuidListError(
                f"cannot read the sheet ({cause})",
                reason=GuidListReason.CORRUPT,
                path=path,
                sheet=name,
            ) from cause
        raise _no_header(spec, path, candidates)


def _finish_xlsx(
    path: Path,
    name: str,
    data: CalamineSheet,
    *,
    rows: Iterator[Sequence[object]],
    head: Sequence[Sequence[object]],
    located: _Located,
    col_offset: int,
    progress: ProgressCallback | None,
) -> _Extracted:
    end = data.end
    total = None if end is None else end[0] + 1
    width = len(head[0]) if head else 0
    relative = located.column - col_offset
    if not 0 <= relative < width:
        first, last = _column_letter(col_offset), _column_letter(col_offset + max(width, 1) - 1)
        raise GuidListError(
            f"column {_column_letter(located.column)} has no data "
            f"(the sheet's data is in columns {first} to {last})",
            reason=GuidListReason.COLUMN_NOT_FOUND,
            path=path,
            sheet=name,
        )
    collector, count = _scan(
        rows, head, located=located, col_offset=col_offset, progress=progress, total=total
    )
    # Rows yielded from the top of the sheet make ``count`` equal ``total``; rows from
    # the first used one make up the difference.
    row_offset = max(0, total - count) if total is not None else 0
    return _Extracted(name, located, collector, row_offset)


def _read_csv(
    path: Path,
    raw: bytes,
    spec: _ColumnSpec,
    sheet: str | int | None,
    progress: ProgressCallback | None,
) -> _Extracted:
    if sheet is not None:
        raise GuidListError(
            "a CSV file has no sheets: leave out the sheet",
            reason=GuidListReason.SHEET_NOT_FOUND,
            path=path,
        )
    # GUIDs are ASCII; a stray byte elsewhere in a row must not stop the import.
    text = io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8-sig", errors="replace", newline="")
    sample = text.read(64 * 1024)
    text.seek(0)
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(text, dialect)
    name = path.name
    try:
        head: list[Sequence[object]] = list(itertools.islice(reader, HEADER_SCAN_ROWS))
        located = _locate(head, spec, 0)
        if located is None:
            raise _no_header(spec, path, [name])
        collector, _ = _scan(
            reader, head, located=located, col_offset=0, progress=progress, total=None
        )
    except csv.Error as exc:
        raise GuidListError(
            f"not a readable CSV file ({exc})",
            reason=GuidListReason.CORRUPT,
            path=path,
            row=reader.line_num,
        ) from exc
    return _Extracted(name, located, collector, 0)


def _sorted_unique(values: array[int]) -> tuple[array[int], set[int]]:
    """The values sorted without repeats, and the set of those that were repeated."""
    # Sorting a list of ints is the fastest stdlib sort here: 1.4 million in about 1 s.
    ordered = values.tolist()
    ordered.sort()
    following = itertools.islice(ordered, 1, None)
    if all(map(operator.lt, ordered, following)):
        return array("Q", ordered), set()
    repeated = set(
        itertools.compress(
            itertools.islice(ordered, 1, None),
            map(operator.eq, itertools.islice(ordered, 1, None), ordered),
        )
    )
    unique = array("Q", ordered[:1])
    unique.extend(
        itertools.compress(
            itertools.islice(ordered, 1, None),
            map(operator.ne, itertools.islice(ordered, 1, None), ordered),
        )
    )
    return unique, repeated


def _duplicates(
    values: array[int], rows: array[int], offset: int, repeated: set[int]
) -> tuple[DuplicateGuid, ...]:
    where: dict[int, list[int]] = {}
    for value, row in zip(values, rows, strict=True):
        if value in repeated:
            where.setdefault(value, []).append(row + offset + 1)
    return tuple(
        DuplicateGuid(value=format_eui64(value.to_bytes(8, "big")), rows=tuple(found))
        for value, found in sorted(where.items(), key=lambda item: item[1][0])
    )


def read_guid_list(
    source: str | os.PathLike[str],
    *,
    column: str | int | None = None,
    sheet: str | int | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[array[int], ImportReport]:
    """Read a GUID list sheet: the sorted unique GUIDs (as big-endian numbers) and a report.

    Args:
        source: an ``.xlsx``/``.xlsm`` workbook or a ``.csv`` file.
        column: the GUID column as header text, a column letter (``"C"``) or a 1-based
            number; by default the column headed by one of :data:`HEADER_NAMES`. Header
            text is tried before a letter, so ``"EUI"`` means the column headed EUI.
        sheet: a sheet name or 1-based number; by default the first sheet with the header.
        progress: called about every 100,000 rows with (rows done, rows in the sheet).

    Invalid rows and duplicates are reported, never raised.

    Raises:
        GuidListError: the file cannot be read or has no GUID column (``reason`` says
            which), or it holds no valid GUID at all (``no-guids``).
    """
    path = Path(source)
    spec = _column_spec(column, path)
    suffix = path.suffix.casefold()
    if suffix not in _XLSX_SUFFIXES | _CSV_SUFFIXES:
        raise GuidListError(
            f"unsupported file type {path.suffix or '(none)'!r}: expected .xlsx or .csv",
            reason=GuidListReason.UNSUPPORTED_FORMAT,
            path=path,
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise GuidListError(
            f"cannot read: {exc.strerror or exc}", reason=GuidListReason.UNREADABLE, path=path
        ) from exc
    digest = hashlib.sha256(raw).hexdigest()
    if suffix in _CSV_SUFFIXES:
        extracted = _read_csv(path, raw, spec, sheet, progress)
    else:
        del raw  # calamine reads the file itself; do not hold two copies
        extracted = _read_xlsx(path, spec, sheet, progress)

    collector, offset, located = extracted.collector, extracted.row_offset, extracted.located
    values = collector.values()
    unique, repeated = _sorted_unique(values)
    duplicates = _duplicates(values, collector.rows, offset, repeated) if repeated else ()
    letter = _column_letter(located.column)
    invalid = tuple(
        InvalidRow(
            sheet=extracted.sheet,
            row=index + offset + 1,
            cell=f"{letter}{index + offset + 1}",
            value=_shown_value(cell),
            reason=reason,
            detail=detail,
        )
        for index, cell, reason, detail in collector.invalid
    )
    report = ImportReport(
        source=os.fspath(path),
        sheet=extracted.sheet,
        column=letter,
        header=located.header,
        header_row=None if located.header_index is None else located.header_index + offset + 1,
        rows_read=collector.rows_seen,
        blank_rows=collector.blank,
        valid_count=len(values),
        unique_count=len(unique),
        invalid=invalid,
        duplicates=duplicates,
        sha256=digest,
    )
    if not unique:
        first = f"; the first invalid row is {invalid[0].cell}" if invalid else ""
        raise GuidListError(
            f"no valid GUID in column {letter} ({len(invalid)} invalid rows{first})",
            reason=GuidListReason.NO_GUIDS,
            path=path,
            sheet=extracted.sheet,
            report=report,
        )
    return unique, report


def import_guid_list(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    imported_at_ms: int,
    column: str | int | None = None,
    sheet: str | int | None = None,
    strict: bool = False,
    progress: ProgressCallback | None = None,
) -> ImportReport:
    """Read ``source`` (see :func:`read_guid_list`) and write the compiled list to ``output``.

    Invalid rows are reported and skipped, unless ``strict``: then nothing is written.

    Raises:
        GuidListError: as :func:`read_guid_list`; with ``strict``, reason
            ``invalid-rows`` and the report in ``report``.
        OSError: the output cannot be written.
    """
    guids, report = read_guid_list(source, column=column, sheet=sheet, progress=progress)
    if strict and report.invalid:
        first = report.invalid[0]
        raise GuidListError(
            f"{len(report.invalid)} invalid row(s), nothing written (strict); "
            f"the first: {first.value!r}: {first.detail}",
            reason=GuidListReason.INVALID_ROWS,
            path=report.source,
            sheet=first.sheet,
            row=first.row,
            cell=first.cell,
            report=report,
        )
    out = Path(output)
    write_sorted_guid_list(
        out, guids, sha256=bytes.fromhex(report.sha256), imported_at_ms=imported_at_ms
    )
    return msgspec.structs.replace(report, output=os.fspath(out), imported_at_ms=imported_at_ms)
