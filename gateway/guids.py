"""The GUID list's compiled file and the membership test the daemon makes.

The gateway suppresses firmware-caused alerts only for Landis+Gyr meters whose ESME GUID
(EUI-64) is on a list that arrives as an Excel sheet of about 1.4 million rows.
:mod:`gateway.guids_import` turns that sheet into a compiled file once (``poa-gateway
guids import``); this module writes and reads that file and answers "is this GUID on the
list?" for the daemon. It imports no spreadsheet library, so the daemon loads none.

Compiled file, format version 1 (all integers little-endian)::

    offset  size  field
    0       8     magic b"POAGUID1"
    8       2     format version, 1 (u16)
    10      2     header size in bytes, 64 (u16): the array starts here, 8-byte aligned
    12      4     reserved, zero
    16      8     count of GUIDs (u64)
    24      8     import time, milliseconds since 1970-01-01 UTC (i64), given by the caller
    32      32    SHA-256 of the source file's bytes (the .xlsx or .csv as received)
    64      8*n   the GUIDs, strictly increasing: each EUI-64 read as a big-endian number
                  (00-DB-12-34-56-78-90-A0 is 0x00DB1234567890A0), stored as u64

So the file is 64 + 8 * count bytes: 8.00005 bytes per GUID for 1.4 million GUIDs. It is
written atomically (temporary file in the same folder, fsync, ``os.replace``), so the
daemon never sees a half-written list. :class:`GuidList` memory-maps it read-only and
binary-searches the array in place: opening reads the header and a few sampled entries
only, and a lookup touches about 21 entries.

The module never reads a clock: the import time is an argument (the CLI supplies it).
"""

from __future__ import annotations

import enum
import mmap
import operator
import os
import struct
import sys
import tempfile
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final, Protocol

from .errors import GatewayError
from .fileio import fsync_dir

if TYPE_CHECKING:
    from .guids_import import ImportReport

__all__ = [
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "MAGIC",
    "GuidList",
    "GuidListError",
    "GuidListReason",
    "write_guid_list",
    "write_sorted_guid_list",
]

MAGIC: Final = b"POAGUID1"
FORMAT_VERSION: Final = 1
HEADER_SIZE: Final = 64
_HEADER = struct.Struct("<8sHHIQq32s")
assert _HEADER.size == HEADER_SIZE

_U64_LE = struct.Struct("<Q")
_SORT_SAMPLES = 64


class GuidListReason(enum.StrEnum):
    """The stable reason codes of :class:`GuidListError` (a log field); the first eight
    are the source sheet's (:mod:`gateway.guids_import`), the last four the compiled
    file's (``unreadable`` is both)."""

    UNREADABLE = "unreadable"
    UNSUPPORTED_FORMAT = "unsupported-format"
    CORRUPT = "corrupt"
    SHEET_NOT_FOUND = "sheet-not-found"
    NO_HEADER = "no-header"
    COLUMN_NOT_FOUND = "column-not-found"
    NO_GUIDS = "no-guids"
    INVALID_ROWS = "invalid-rows"
    NOT_A_GUID_LIST = "not-a-guid-list"
    UNSUPPORTED_VERSION = "unsupported-version"
    TRUNCATED = "truncated"
    UNSORTED = "unsorted"


class GuidListError(GatewayError):
    """The GUID list (source sheet or compiled file) cannot be used.

    ``reason`` is a :class:`GuidListReason`, a stable code for logs and tests:

    - source (:mod:`gateway.guids_import`): ``unreadable``, ``unsupported-format``, ``corrupt``,
      ``sheet-not-found``, ``no-header``, ``column-not-found``, ``no-guids``,
      ``invalid-rows`` (strict import only; ``report`` holds what was found);
    - compiled file: ``unreadable``, ``not-a-guid-list``, ``unsupported-version``,
      ``truncated``, ``unsorted``.

    ``path`` names the file and ``sheet``, ``row`` (1-based) and ``cell`` (``B17``) say
    where, when that applies; ``str()`` includes all of them.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: GuidListReason,
        path: str | os.PathLike[str],
        sheet: str | None = None,
        row: int | None = None,
        cell: str | None = None,
        report: ImportReport | None = None,
    ) -> None:
        where = [os.fspath(path)]
        if sheet is not None:
            where.append(f"sheet {sheet!r}")
        if row is not None:
            where.append(f"row {row}")
        if cell is not None:
            where.append(f"cell {cell}")
        super().__init__(f"{' '.join(where)}: {message}")
        self.reason: GuidListReason = reason
        self.path = os.fspath(path)
        self.sheet = sheet
        self.row = row
        self.cell = cell
        self.report = report


# ---------------------------------------------------------------------------------------
# Writing the compiled file


def write_sorted_guid_list(
    path: str | os.PathLike[str],
    guids: array[int],
    *,
    sha256: bytes,
    imported_at_ms: int,
) -> int:
    """Write ``guids``, already strictly increasing, as a compiled list; return its size.

    The order is the caller's promise and is not checked (:meth:`GuidList.verify` checks
    it); :func:`write_guid_list` takes GUIDs in any order.

    Raises:
        ValueError: ``sha256`` is not 32 bytes.
        OSError: the file cannot be written.
    """
    path = Path(path)
    if len(sha256) != 32:
        raise ValueError(f"sha256 must be 32 bytes, got {len(sha256)}")
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, HEADER_SIZE, 0, len(guids), imported_at_ms, sha256)
    payload = guids
    if sys.byteorder != "little":
        payload = array("Q", guids)
        payload.byteswap()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(header)
            out.write(memoryview(payload).cast("B"))
            out.flush()
            os.fchmod(out.fileno(), 0o644)  # the daemon may run as another user
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return HEADER_SIZE + 8 * len(guids)


def write_guid_list(
    path: str | os.PathLike[str],
    guids: Iterable[int],
    *,
    sha256: bytes,
    imported_at_ms: int,
) -> int:
    """Write a compiled GUID list atomically; return its size in bytes.

    ``guids`` are EUI-64s as big-endian numbers, in any order, repeats allowed; ``sha256``
    is the digest of the source file and ``imported_at_ms`` the import time (ms, UTC).

    Raises:
        ValueError: a GUID is outside ``0 .. 2**64 - 1`` or ``sha256`` is not 32 bytes.
        OSError: the file cannot be written.
    """
    try:
        ordered = array("Q", sorted(set(guids)))
    except OverflowError as exc:
        raise ValueError(f"GUID out of range 0 .. 2**64 - 1: {exc}") from exc
    return write_sorted_guid_list(path, ordered, sha256=sha256, imported_at_ms=imported_at_ms)


# ---------------------------------------------------------------------------------------
# Reading the compiled file


class _U64LittleEndian:
    """Index a little-endian u64 array on a big-endian host (slower, but correct)."""

    __slots__ = ("_buffer", "_count")

    def __init__(self, buffer: mmap.mmap, count: int) -> None:
        self._buffer = buffer
        self._count = count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> int:
        if not 0 <= index < self._count:
            raise IndexError(index)
        value: int = _U64_LE.unpack_from(self._buffer, HEADER_SIZE + 8 * index)[0]
        return value


class _U64Sequence(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, index: int, /) -> int: ...


class GuidList:
    """A compiled GUID list, memory-mapped read-only; ``eui in guid_list`` is a binary search.

    Use :meth:`open`; close it (or use ``with``) to unmap the file.
    """

    def __init__(
        self,
        path: Path,
        buffer: mmap.mmap,
        count: int,
        sha256: bytes,
        imported_at_ms: int,
        *,
        native: bool,
    ) -> None:
        self._path = path
        self._mmap: mmap.mmap | None = buffer
        self._count = count
        self._sha256 = sha256
        self._imported_at_ms = imported_at_ms
        self._memoryview: memoryview | None = None
        self._view: _U64Sequence | None
        if native:
            self._memoryview = memoryview(buffer)[HEADER_SIZE:].cast("Q")
            self._view = self._memoryview
        else:
            self._view = _U64LittleEndian(buffer, count)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, native: bool | None = None) -> GuidList:
        """Map the compiled list at ``path`` and check its header and size.

        Reads the header and a few sampled entries (to catch an unsorted array); call
        :meth:`verify` for a full check. ``native`` (default: on little-endian hosts) reads
        the array through a native memoryview; tests pass False to use the portable path.

        Raises:
            GuidListError: the file is missing, not a GUID list, of another format version,
                truncated or padded, or visibly unsorted.
        """
        p = Path(path)
        try:
            with p.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < HEADER_SIZE:
                    start = f.read(len(MAGIC))
                    raise GuidListError(
                        f"{size} bytes: shorter than the {HEADER_SIZE}-byte header",
                        reason=GuidListReason.TRUNCATED
                        if MAGIC.startswith(start)
                        else GuidListReason.NOT_A_GUID_LIST,
                        path=p,
                    )
                buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise GuidListError(
                f"cannot read: {exc.strerror or exc}", reason=GuidListReason.UNREADABLE, path=p
            ) from exc
        try:
            magic, version, header_size, _, count, imported_at_ms, sha256 = _HEADER.unpack_from(
                buffer
            )
            if magic != MAGIC:
                raise GuidListError(
                    "not a compiled GUID list (bad magic)",
                    reason=GuidListReason.NOT_A_GUID_LIST,
                    path=p,
                )
            if version != FORMAT_VERSION or header_size != HEADER_SIZE:
                raise GuidListError(
                    f"format version {version} (header {header_size} bytes) is not supported; "
                    f"this gateway reads version {FORMAT_VERSION}: run 'guids import' again",
                    reason=GuidListReason.UNSUPPORTED_VERSION,
                    path=p,
                )
            if size != HEADER_SIZE + 8 * count:
                raise GuidListError(
                    f"{size} bytes, but the header says {count} GUIDs "
                    f"({HEADER_SIZE + 8 * count} bytes): truncated or damaged",
                    reason=GuidListReason.TRUNCATED,
                    path=p,
                )
            guid_list = cls(
                p,
                buffer,
                count,
                sha256,
                imported_at_ms,
                native=sys.byteorder == "little" if native is None else native,
            )
        except BaseException:
            buffer.close()
            raise
        try:
            guid_list._check_sampled_order()
        except BaseException:
            guid_list.close()
            raise
        return guid_list

    def _view_or_raise(self) -> _U64Sequence:
        if self._view is None:
            raise ValueError(f"GUID list {self._path} is closed")
        return self._view

    def _check_sampled_order(self) -> None:
        view = self._view_or_raise()
        n = self._count
        if n < 2:
            return
        step = max(1, (n - 1) // _SORT_SAMPLES)
        indices = [*range(0, n - 1, step), n - 1]
        samples = [view[i] for i in indices]
        for k in range(1, len(samples)):
            if samples[k - 1] >= samples[k]:
                raise GuidListError(
                    f"entries {indices[k - 1]} and {indices[k]} are out of order",
                    reason=GuidListReason.UNSORTED,
                    path=self._path,
                )

    def verify(self) -> None:
        """Check that every entry is greater than the one before (reads the whole file).

        Raises:
            GuidListError: reason ``unsorted``, naming the first entry out of order.
        """
        view = self._view_or_raise()
        native = self._memoryview
        if native is not None and all(map(operator.lt, native[:-1], native[1:])):
            return
        previous = -1
        for index in range(len(view)):
            current = view[index]
            if current <= previous:
                raise GuidListError(
                    f"entry {index} is not greater than the one before",
                    reason=GuidListReason.UNSORTED,
                    path=self._path,
                )
            previous = current

    def __contains__(self, eui: object) -> bool:
        """``eui`` (8 bytes, or the EUI-64 as a big-endian number) is on the list.

        Raises:
            TypeError: ``eui`` is neither bytes nor an int.
            ValueError: ``eui`` is bytes of a length other than 8, or the list is closed.
        """
        if isinstance(eui, bytes | bytearray):
            if len(eui) != 8:
                raise ValueError(f"an EUI-64 is 8 bytes, got {len(eui)}")
            key = int.from_bytes(eui, "big")
        elif isinstance(eui, int) and not isinstance(eui, bool):
            if not 0 <= eui < 1 << 64:
                return False
            key = eui
        else:
            raise TypeError(f"an EUI-64 is bytes or int, not {type(eui).__name__}")
        view = self._view_or_raise()
        index = bisect_left(view, key)
        return index < self._count and view[index] == key

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> int:
        """The ``index``-th smallest GUID as a big-endian number (negative counts from the end)."""
        view = self._view_or_raise()
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError(f"GUID list index out of range: {index}")
        return view[index]

    def __iter__(self) -> Iterator[int]:
        """The GUIDs as big-endian numbers, in increasing order."""
        view = self._view_or_raise()
        return (view[i] for i in range(self._count))

    @property
    def path(self) -> Path:
        """Where the compiled file is."""
        return self._path

    @property
    def sha256(self) -> str:
        """SHA-256 of the source sheet the list was compiled from, as hex."""
        return self._sha256.hex()

    @property
    def imported_at_ms(self) -> int:
        """When the list was imported: milliseconds since 1970-01-01 UTC."""
        return self._imported_at_ms

    @property
    def closed(self) -> bool:
        """The file has been unmapped."""
        return self._mmap is None

    def close(self) -> None:
        """Unmap the file (idempotent)."""
        self._view = None
        if self._memoryview is not None:
            self._memoryview.release()
            self._memoryview = None
        if self._mmap is not None:
            self._mmap.close()
            self._mmap = None

    def __enter__(self) -> GuidList:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self._count} GUIDs"
        return f"<GuidList {os.fspath(self._path)!r} {state}>"
