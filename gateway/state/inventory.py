"""The Smart Metering Inventory: which device is what, and on which CHF's HAN it sits.

Theory of operation
-------------------
The suppression engine needs three facts about the target of an Activate Firmware
command (WIRE.md, "Device rules"): is it a SMETS2 ESME from a listed manufacturer, which
CHF shares its HAN (the window belongs to that CHF), and, when known, which Supplier is
registered for it (only that one may activate its firmware). All come from the DSP's
Smart Metering Inventory, which reaches the gateway two ways:

- one device at a time on ``dsp/inventory`` (:func:`from_envelope`, then
  :meth:`Inventory.upsert`);
- in bulk from a CSV extract (:meth:`Inventory.import_csv`), ~1.4 million devices for a
  whole estate.

Both land in one SQLite table keyed by the 8-byte EUI-64, with an index on ``chf_id`` for
the reverse lookup (which devices sit on this CHF's HAN). The file is in WAL mode with
``synchronous=NORMAL``: a reader (the daemon) never waits for a writer (a CSV import run
from the command line), and a power cut can lose at most the last few commits, never
corrupt the file; the inventory is re-sent by the DSP, so that is the right trade.

The file is marked as ours with ``PRAGMA application_id`` and versioned with ``PRAGMA
user_version`` (:data:`SCHEMA_VERSION`), so that pointing ``--db`` at the state store or
at a newer gateway's inventory is refused with a reason instead of being "migrated". An
older file is migrated when opened, keeping its rows: version 1 (before ``supplier_id``)
and version 2 (before ``mpan``) get the columns they lack, empty, in one transaction.

CSV imports are applied in batches of :data:`IMPORT_BATCH_ROWS` rows, one transaction
each. An import is therefore atomic per batch, not per file; since every row is an upsert,
re-running an import after fixing the file is always safe. Invalid rows never stop an
import: each is reported (line, column, value, reason) and skipped.

Times are passed in by the caller (milliseconds since the Unix epoch, UTC); this module
never reads a clock.

Where the inventory lives: :class:`Inventory` is the SQLite file above, the default.
With ``[state] backend = "postgresql"`` it is the table ``inventory`` of the state
database instead (gateway/state/pg_inventory.py), so that every gateway instance sees the
same devices. The two implement :class:`InventoryStore` and share this module's
validation (:func:`from_envelope`, the record checks) and CSV reading
(:func:`read_inventory_csv`), so that both accept and refuse the same things the same way.

Threads: an :class:`Inventory` owns one :mod:`sqlite3` connection and must be used from the
thread that opened it (sqlite3's ``check_same_thread`` enforces this). It is not
thread-safe and does not need to be: the daemon uses one connection from its event-loop
thread, and other processes (the CLI) open their own.
"""

from __future__ import annotations

import csv
import enum
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self, TypeAlias, TypeVar

import msgspec

from gateway.core.devices import DeviceRecord, DeviceStatus, DeviceType
from gateway.core.mpan import MPAN_CORE_LENGTH, MpanCore, MpanError, check_digit
from gateway.errors import GatewayError
from gateway.eui import EUI64_LENGTH, format_eui64, parse_eui64

from .sqlite_util import create_schema_once, immediate, schema_marks

__all__ = [
    "APPLICATION_ID",
    "CSV_COLUMNS",
    "IMPORT_BATCH_ROWS",
    "MPANS_PER_CALL",
    "REQUIRED_COLUMNS",
    "SCHEMA_VERSION",
    "ImportIssue",
    "InvalidRowReason",
    "Inventory",
    "InventoryError",
    "InventoryFields",
    "InventoryImportReport",
    "InventoryReason",
    "InventoryStore",
    "from_envelope",
    "read_inventory_csv",
    "write_inventory_csv",
]

SCHEMA_VERSION = 3
"""``PRAGMA user_version`` of an inventory file written by this module (2 added
``supplier_id``, 3 ``mpan``; older files are migrated when opened)."""

APPLICATION_ID = 0x504F4149  # "POAI": poa-gateway inventory
"""``PRAGMA application_id`` that marks a SQLite file as a poa-gateway inventory."""

IMPORT_BATCH_ROWS = 100_000
"""Valid CSV rows written per transaction by :meth:`Inventory.import_csv`.

Each commit of a bulk import rewrites most pages of the file (EUI-64s arrive in random
order), so fewer, larger batches are much faster; this size keeps each write transaction
to a second or two, well inside the busy timeout of a daemon writing at the same time.
"""

_CACHE_KIB = 32 * 1024  # page cache of a connection
_IMPORT_CACHE_KIB = 128 * 1024  # while importing: the whole estate's tables and index
_BUSY_TIMEOUT_S = 10.0

CSV_COLUMNS = (
    "device_id",
    "device_type",
    "smets",
    "manufacturer",
    "model",
    "chf_id",
    "status",
    "supplier_id",
    "mpan",
)
"""Columns of an inventory CSV, in the order :func:`write_inventory_csv` writes them."""

MPANS_PER_CALL = 500
"""Most device ids one :meth:`InventoryStore.mpans` call takes: the caller (the report
writer, on the event loop) asks in slices so that no single query holds the loop long,
and SQLite's limit of bound parameters is far away."""

REQUIRED_COLUMNS = ("device_id", "device_type", "smets", "manufacturer", "status")
"""Columns an inventory CSV must have; ``model``, ``chf_id``, ``supplier_id`` and
``mpan`` are optional (``supplier_id``: the EUI-64 of the meter's registered import
supplier; ``mpan``: the 13-digit MPAN core of the meter point)."""

_VALUE_SHOWN = 64  # longest CSV value quoted back in a report


class InventoryReason(enum.StrEnum):
    """The stable reason codes of :class:`InventoryError`."""

    CANNOT_OPEN = "cannot-open"
    NOT_AN_INVENTORY = "not-an-inventory"
    UNSUPPORTED_SCHEMA = "unsupported-schema"
    DATABASE_ERROR = "database-error"
    INVALID_RECORD = "invalid-record"
    UNREADABLE_FILE = "unreadable-file"
    MISSING_COLUMN = "missing-column"
    DUPLICATE_COLUMN = "duplicate-column"


class InventoryError(GatewayError):
    """The inventory file or an input to it cannot be used.

    ``str(error)`` is one line for an operator, naming the file (and column) concerned.

    Attributes:
        reason: stable, machine-readable code:

            - ``cannot-open``: the SQLite file cannot be opened or created (missing when
              ``create=False``, a directory, no permission, not a SQLite file);
            - ``not-an-inventory``: a SQLite file, but another application's
              (wrong ``application_id``, or unrelated tables and no schema version);
            - ``unsupported-schema``: written by a newer gateway (``user_version`` above
              :data:`SCHEMA_VERSION`);
            - ``database-error``: SQLite failed during an operation (disk full, locked
              beyond the busy timeout, I/O error);
            - ``invalid-record``: a :class:`~gateway.core.devices.DeviceRecord` or envelope
              whose values break the inventory's constraints;
            - ``unreadable-file``: a CSV file that cannot be opened or read;
            - ``missing-column`` / ``duplicate-column``: a CSV header without a required
              column, or with one column twice.
        path: the file concerned, when there is one.
        column: the CSV column or record field concerned, when there is one.
        detail: the human-readable explanation (also ``str(error)``).
    """

    def __init__(
        self,
        reason: InventoryReason,
        detail: str,
        *,
        path: str | None = None,
        column: str | None = None,
    ) -> None:
        self.reason: InventoryReason = reason
        self.detail = detail
        self.path = path
        self.column = column
        super().__init__(detail)


class InventoryUnavailable(InventoryError):
    """The inventory's database failed (``database-error``): a failure of the gateway's
    surroundings, not of the message being handled, which is therefore left with the
    broker and comes back rather than being quarantined (gateway/quarantine.py)."""

    def __init__(self, detail: str, *, path: str | None = None) -> None:
        super().__init__(InventoryReason.DATABASE_ERROR, detail, path=path)


class InvalidRowReason(enum.StrEnum):
    """The stable reason codes of an :class:`ImportIssue`."""

    BAD_CSV = "bad-csv"
    FIELD_COUNT = "field-count"
    MISSING_VALUE = "missing-value"
    BAD_EUI64 = "bad-eui64"
    UNKNOWN_DEVICE_TYPE = "unknown-device-type"
    BAD_SMETS = "bad-smets"
    UNKNOWN_STATUS = "unknown-status"
    NOT_UTF8 = "not-utf8"
    BAD_MPAN = "bad-mpan"  # not a valid MPAN core (digits, length or check digit)


class ImportIssue(msgspec.Struct, frozen=True, kw_only=True):
    """One fault in one CSV row; the row is skipped.

    A row with several bad fields gives one issue per field, all with the same ``line``.
    """

    line: int
    """1-based line of the file on which the row starts (the header is line 1)."""
    column: str | None
    """The column at fault, or None when the fault is the whole row (``bad-csv``,
    ``field-count``)."""
    value: str
    """The offending text, shortened to at most 64 characters."""
    reason: InvalidRowReason
    """Stable code for the fault."""
    detail: str
    """What is wrong, for a person."""


class InventoryImportReport(msgspec.Struct, frozen=True, kw_only=True):
    """What :meth:`Inventory.import_csv` did with a file."""

    path: str
    rows_read: int
    """Data rows in the file (blank lines and the header not counted)."""
    rows_imported: int
    """Rows written to the inventory (a device listed twice counts twice; the last wins)."""
    issues: tuple[ImportIssue, ...]
    """Every fault in every skipped row, in file order."""

    @property
    def rows_invalid(self) -> int:
        """Rows skipped because of at least one issue."""
        return len({issue.line for issue in self.issues})


class InventoryFields(Protocol):
    """The fields of an ``inventory`` envelope (WIRE.md), as :func:`from_envelope` reads them.

    :class:`gateway.wire.InventoryEnvelope` has them; so may any other object.
    """

    @property
    def device_id(self) -> bytes: ...
    @property
    def device_type(self) -> str: ...
    @property
    def smets(self) -> int: ...
    @property
    def manufacturer(self) -> str: ...
    @property
    def model(self) -> str | None: ...
    @property
    def chf_id(self) -> bytes | None: ...
    @property
    def status(self) -> str: ...
    @property
    def supplier_id(self) -> bytes | None: ...
    @property
    def mpan(self) -> str | None: ...


class InventoryStore(Protocol):
    """What the daemon and ``poa-gateway inventory`` need of an inventory, wherever it is.

    :class:`Inventory` (a SQLite file) and
    :class:`~gateway.state.pg_inventory.PostgresInventory` (a table of the PostgreSQL
    state database) implement it with the same records, validation, errors and import
    report; :func:`gateway.state.inventory_store.open_inventory` opens the one the
    configuration names. Every write is committed when the method returns. One thread
    only.
    """

    path: str
    """Where the inventory is, for messages: a file, or ``host:port/dbname`` (never a
    password)."""

    def get(self, device_id: bytes) -> DeviceRecord | None:
        """The device with this EUI-64, or None if the inventory does not list it."""
        ...

    def chf_of(self, device_id: bytes) -> bytes | None:
        """The CHF on whose HAN this device sits; None if unknown or not recorded."""
        ...

    def mpans(self, device_ids: Sequence[bytes]) -> dict[bytes, str]:
        """The MPAN core of each of these devices that has one recorded (at most
        :data:`MPANS_PER_CALL` ids a call); devices unknown or without an MPAN are left
        out of the result."""
        ...

    def devices_on_chf(self, chf_id: bytes) -> list[DeviceRecord]:
        """Every device whose ``chf_id`` is this CHF, ordered by EUI-64."""
        ...

    def count(self) -> int:
        """Number of devices in the inventory."""
        ...

    def upsert(self, record: DeviceRecord, updated_at_ms: int) -> None:
        """Insert the device, or replace everything known about it (``invalid-record``:
        nothing written)."""
        ...

    def upsert_many(self, records: Iterable[DeviceRecord], updated_at_ms: int) -> int:
        """Upsert every record in one transaction (all or nothing); how many were written."""
        ...

    def import_csv(self, path: str | os.PathLike[str], updated_at_ms: int) -> InventoryImportReport:
        """Upsert every valid row of an inventory CSV; report and skip the invalid ones."""
        ...

    def fence(self, holder: str, epoch: int) -> None:
        """Refuse every later write unless ``holder`` still holds the leader lease at
        ``epoch`` (PostgreSQL: gateway/state/lease.py; a SQLite inventory has one writer
        and nothing to fence)."""
        ...

    def close(self) -> None:
        """Release the connection (idempotent)."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def from_envelope(env: InventoryFields) -> DeviceRecord:
    """The :class:`DeviceRecord` carried by an ``inventory`` envelope.

    An envelope from :func:`gateway.wire.decode_inventory` has been validated already;
    the checks are repeated so that any object with the envelope's fields can be used.

    Raises:
        InventoryError: ``invalid-record``, naming the field at fault.
    """
    try:
        device_type = DeviceType(env.device_type)
    except ValueError:
        raise _invalid("device_type", f"unknown device type {env.device_type!r}") from None
    try:
        status = DeviceStatus(env.status)
    except ValueError:
        raise _invalid("status", f"unknown status {env.status!r}") from None
    record = DeviceRecord(
        device_id=bytes(env.device_id),
        device_type=device_type,
        smets=env.smets,
        manufacturer=env.manufacturer,
        status=status,
        chf_id=None if env.chf_id is None else bytes(env.chf_id),
        model=env.model if env.model else None,
        supplier_id=None if env.supplier_id is None else bytes(env.supplier_id),
        mpan=None if env.mpan is None else _mpan(env.mpan),
    )
    _row(record)  # the remaining checks
    return record


def write_inventory_csv(path: str | os.PathLike[str], records: Iterable[DeviceRecord]) -> None:
    """Write ``records`` as an inventory CSV that :meth:`Inventory.import_csv` reads back.

    Columns are :data:`CSV_COLUMNS`; EUI-64s in the DCC form ``00-DB-12-34-56-78-90-A0``;
    an absent ``model``, ``chf_id``, ``supplier_id`` or ``mpan`` is an empty field. For
    scripts and tests.
    """
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(
            (
                format_eui64(r.device_id),
                DeviceType(r.device_type).value,
                r.smets,
                r.manufacturer,
                r.model or "",
                "" if r.chf_id is None else format_eui64(r.chf_id),
                DeviceStatus(r.status).value,
                "" if r.supplier_id is None else format_eui64(r.supplier_id),
                r.mpan or "",
            )
            for r in records
        )


_Row: TypeAlias = tuple[
    bytes, str, int, str, str | None, bytes | None, str, bytes | None, str | None
]


def _one_of(column: str, values: Iterable[str]) -> str:
    return " OR ".join(f"{column} = '{value}'" for value in values)


# Last, as ALTER TABLE adds it to a version 1 file: new and migrated files then have the
# same columns in the same order.
_SUPPLIER_ID_COLUMN = (
    f"supplier_id BLOB CHECK (supplier_id IS NULL OR length(supplier_id) = {EUI64_LENGTH})"
)
# After it, as ALTER TABLE adds it to a version 2 file (and to a version 1 file after
# supplier_id). Only the length is checked here: the check digit is _row's.
_MPAN_COLUMN = f"mpan TEXT CHECK (mpan IS NULL OR length(mpan) = {MPAN_CORE_LENGTH})"

# The CHECKs say "a = x OR a = y" rather than "a IN (x, y)": for an IN list SQLite builds a
# temporary table each time the statement runs, which halved the speed of a bulk import.
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS devices (
    device_id BLOB PRIMARY KEY CHECK (length(device_id) = {EUI64_LENGTH}),
    device_type TEXT NOT NULL CHECK ({_one_of("device_type", DeviceType)}),
    smets INTEGER NOT NULL CHECK (smets = 1 OR smets = 2),
    manufacturer TEXT NOT NULL,
    model TEXT,
    chf_id BLOB CHECK (chf_id IS NULL OR length(chf_id) = {EUI64_LENGTH}),
    status TEXT NOT NULL CHECK ({_one_of("status", DeviceStatus)}),
    updated_at INTEGER NOT NULL,
    {_SUPPLIER_ID_COLUMN},
    {_MPAN_COLUMN}
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS devices_chf_id ON devices (chf_id);
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {SCHEMA_VERSION};
"""

_GET = """
SELECT device_id, device_type, smets, manufacturer, model, chf_id, status, supplier_id, mpan
FROM devices WHERE device_id = ?
"""

_ON_CHF = """
SELECT device_id, device_type, smets, manufacturer, model, chf_id, status, supplier_id, mpan
FROM devices WHERE chf_id = ? ORDER BY device_id
"""

_UPSERT = """
INSERT INTO devices (
    device_id, device_type, smets, manufacturer, model, chf_id, status, supplier_id, mpan,
    updated_at
)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (device_id) DO UPDATE SET
    device_type = excluded.device_type,
    smets = excluded.smets,
    manufacturer = excluded.manufacturer,
    model = excluded.model,
    chf_id = excluded.chf_id,
    status = excluded.status,
    supplier_id = excluded.supplier_id,
    mpan = excluded.mpan,
    updated_at = excluded.updated_at
"""


class Inventory:
    """The Smart Metering Inventory in one SQLite file.

    Open with ``Inventory(path)`` or :meth:`Inventory.open`; close with :meth:`close` or
    use as a context manager. Every write is committed when the method returns. One
    thread only: see the module docstring.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        """Open the inventory at ``path``, creating the file and schema if missing.

        With ``create=False`` a missing file is an error instead (for read-only tools
        that must not leave an empty inventory behind).

        Raises:
            InventoryError: ``cannot-open``, ``not-an-inventory`` or ``unsupported-schema``.
        """
        self.path = os.fspath(path)
        if not create and not os.path.exists(self.path):
            raise InventoryError(
                InventoryReason.CANNOT_OPEN, f"{self.path}: no such inventory file", path=self.path
            )
        if create:
            target, uri = self.path, False
        else:
            target, uri = Path(self.path).resolve().as_uri() + "?mode=rw", True
        try:
            conn = sqlite3.connect(target, uri=uri, isolation_level=None, timeout=_BUSY_TIMEOUT_S)
        except sqlite3.Error as exc:
            raise InventoryError(
                InventoryReason.CANNOT_OPEN,
                f"{self.path}: cannot open inventory: {exc}",
                path=self.path,
            ) from exc
        try:
            _prepare(conn, self.path, create=create)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = True) -> Self:
        """Same as ``Inventory(path, create=create)``."""
        return cls(path, create=create)

    def fence(self, holder: str, epoch: int) -> None:
        """Nothing to fence: a SQLite inventory belongs to the one gateway that runs on
        its file (leases exist only with the state in PostgreSQL, docs/ha.md)."""

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    from_envelope = staticmethod(from_envelope)

    def get(self, device_id: bytes) -> DeviceRecord | None:
        """The device with this EUI-64, or None if the inventory does not list it."""
        with self._errors():
            row = self._conn.execute(_GET, (bytes(device_id),)).fetchone()
        return None if row is None else _record(row)

    def mpans(self, device_ids: Sequence[bytes]) -> dict[bytes, str]:
        """As :meth:`InventoryStore.mpans`."""
        if len(device_ids) > MPANS_PER_CALL:
            raise ValueError(f"at most {MPANS_PER_CALL} device ids a call")
        marks = ",".join("?" * len(device_ids))
        # Only '?' marks are formatted in; the ids are bound.
        sql = "SELECT device_id, mpan FROM devices WHERE mpan IS NOT NULL AND device_id IN "
        sql += f"({marks})"
        with self._errors():
            rows = self._conn.execute(sql, [bytes(d) for d in device_ids]).fetchall()
        return {bytes(device): mpan for device, mpan in rows}

    def chf_of(self, device_id: bytes) -> bytes | None:
        """The CHF on whose HAN this device sits; None if unknown or not recorded."""
        with self._errors():
            row = self._conn.execute(
                "SELECT chf_id FROM devices WHERE device_id = ?", (bytes(device_id),)
            ).fetchone()
        chf_id: bytes | None = None if row is None else row[0]
        return chf_id

    def devices_on_chf(self, chf_id: bytes) -> list[DeviceRecord]:
        """Every device whose ``chf_id`` is this CHF, ordered by EUI-64."""
        with self._errors():
            rows = self._conn.execute(_ON_CHF, (bytes(chf_id),)).fetchall()
        return [_record(row) for row in rows]

    def count(self) -> int:
        """Number of devices in the inventory."""
        with self._errors():
            (n,) = self._conn.execute("SELECT count(*) FROM devices").fetchone()
        return int(n)

    def upsert(self, record: DeviceRecord, updated_at_ms: int) -> None:
        """Insert the device, or replace everything known about it; committed on return.

        Raises:
            InventoryError: ``invalid-record`` (nothing written) or ``database-error``.
        """
        row = _row(record)
        with self._errors():
            self._conn.execute(_UPSERT, (*row, updated_at_ms))

    def upsert_many(self, records: Iterable[DeviceRecord], updated_at_ms: int) -> int:
        """Upsert every record in one transaction; returns how many were written.

        All or nothing: one invalid record writes none of them.

        Raises:
            InventoryError: ``invalid-record`` or ``database-error``.
        """
        rows = [(*_row(r), updated_at_ms) for r in records]
        self._write_batch(rows)
        return len(rows)

    def import_csv(self, path: str | os.PathLike[str], updated_at_ms: int) -> InventoryImportReport:
        """Upsert every valid row of an inventory CSV; report and skip the invalid ones.

        The file is UTF-8 (a byte-order mark is allowed) with a header row. Header names
        are matched without regard to case or surrounding spaces; columns other than
        :data:`CSV_COLUMNS` are ignored. Values are trimmed; EUI-64s may be written
        ``00-DB-12-34-56-78-90-A0``, ``00:db:...`` or as 16 hex digits; ``device_type``
        and ``status`` are matched without regard to case; an ``mpan`` is a 13-digit
        MPAN core (spaces ignored) whose check digit must be right; an empty ``model``,
        ``chf_id``, ``supplier_id`` or ``mpan`` (or a file without that column) means
        absent.

        Rows are written in batches of :data:`IMPORT_BATCH_ROWS`, one transaction each.

        Raises:
            InventoryError: ``unreadable-file``, ``missing-column``, ``duplicate-column``
                (nothing written), or ``database-error``.
        """
        with self._errors():
            self._conn.execute(f"PRAGMA cache_size = -{_IMPORT_CACHE_KIB}")
        try:
            return read_inventory_csv(path, updated_at_ms, self._write_batch)
        finally:
            with self._errors():
                self._conn.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")

    def _write_batch(self, rows: Sequence[tuple[object, ...]]) -> None:
        if not rows:
            return
        with self._errors():
            self._conn.execute("BEGIN IMMEDIATE")  # take the write lock, or wait for it
            try:
                self._conn.executemany(_UPSERT, rows)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise InventoryUnavailable(f"{self.path}: inventory: {exc}", path=self.path) from exc


def _prepare(conn: sqlite3.Connection, path: str, *, create: bool) -> None:
    try:
        app_id, version = schema_marks(conn)
        if version > SCHEMA_VERSION:
            raise InventoryError(
                InventoryReason.UNSUPPORTED_SCHEMA,
                f"{path}: inventory schema version {version} is newer than this gateway's "
                f"({SCHEMA_VERSION})",
                path=path,
            )
        if app_id not in (0, APPLICATION_ID):
            raise _foreign(path, f"application_id {app_id:#x}")
        if version == 0 and not create:
            raise _foreign(path, "no inventory schema")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
        if app_id == APPLICATION_ID and version == SCHEMA_VERSION:
            return
        if app_id == APPLICATION_ID and version in (1, 2):
            _migrate(conn)
            return
        create_schema_once(
            conn,
            schema=_SCHEMA,
            application_id=APPLICATION_ID,
            foreign=lambda what: _foreign(path, what),
        )
    except sqlite3.Error as exc:
        raise InventoryError(
            InventoryReason.CANNOT_OPEN, f"{path}: cannot open inventory: {exc}", path=path
        ) from exc


def _migrate(conn: sqlite3.Connection) -> None:
    # One transaction, and the version read again inside it: another process may have
    # migrated the file since it was opened. The rows stay as they were; the new columns
    # are empty (no supplier, no MPAN known) until the DSP or a CSV import says otherwise.
    with immediate(conn):
        version = schema_marks(conn)[1]
        if version == 1:
            conn.execute(f"ALTER TABLE devices ADD COLUMN {_SUPPLIER_ID_COLUMN}")
        if version in (1, 2):
            conn.execute(f"ALTER TABLE devices ADD COLUMN {_MPAN_COLUMN}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _foreign(path: str, what: str) -> InventoryError:
    return InventoryError(
        InventoryReason.NOT_AN_INVENTORY, f"{path}: not a poa-gateway inventory ({what})", path=path
    )


def _invalid(field: str, detail: str) -> InventoryError:
    return InventoryError(InventoryReason.INVALID_RECORD, f"{field}: {detail}", column=field)


def _record(row: _Row) -> DeviceRecord:
    device_id, device_type, smets, manufacturer, model, chf_id, status, supplier_id, mpan = row
    return DeviceRecord(
        device_id=device_id,
        device_type=DeviceType(device_type),
        smets=smets,
        manufacturer=manufacturer,
        status=DeviceStatus(status),
        chf_id=chf_id,
        model=model,
        supplier_id=supplier_id,
        mpan=mpan,
    )


def _mpan(text: str) -> str:
    try:
        return MpanCore.parse(text).digits
    except MpanError as exc:
        raise _invalid("mpan", exc.detail) from None


def _row(record: DeviceRecord) -> _Row:
    # msgspec checks field constraints when decoding, not when a Struct is built: check
    # here, so that a bad record is refused by name rather than by a SQLite CHECK.
    device_id = bytes(record.device_id)
    if len(device_id) != EUI64_LENGTH:
        raise _invalid("device_id", f"expected {EUI64_LENGTH} bytes, got {len(device_id)}")
    chf_id = None if record.chf_id is None else bytes(record.chf_id)
    if chf_id is not None and len(chf_id) != EUI64_LENGTH:
        raise _invalid("chf_id", f"expected {EUI64_LENGTH} bytes, got {len(chf_id)}")
    supplier_id = None if record.supplier_id is None else bytes(record.supplier_id)
    if supplier_id is not None and len(supplier_id) != EUI64_LENGTH:
        raise _invalid("supplier_id", f"expected {EUI64_LENGTH} bytes, got {len(supplier_id)}")
    mpan = None if record.mpan is None else _mpan(record.mpan)
    if type(record.smets) is not int or record.smets not in (1, 2):
        raise _invalid("smets", f"expected 1 or 2, got {record.smets!r}")
    if not record.manufacturer.strip():
        raise _invalid("manufacturer", "must not be empty")
    try:
        device_type = DeviceType(record.device_type).value
    except ValueError:
        raise _invalid("device_type", f"unknown device type {record.device_type!r}") from None
    try:
        status = DeviceStatus(record.status).value
    except ValueError:
        raise _invalid("status", f"unknown status {record.status!r}") from None
    return (
        device_id,
        device_type,
        record.smets,
        record.manufacturer,
        record.model,
        chf_id,
        status,
        supplier_id,
        mpan,
    )


# CSV parsing -------------------------------------------------------------------------


def read_inventory_csv(
    path: str | os.PathLike[str],
    updated_at_ms: int,
    write_batch: Callable[[list[tuple[object, ...]]], None],
    *,
    refuse: Callable[[_Row], str | None] | None = None,
) -> InventoryImportReport:
    """Read an inventory CSV for :meth:`InventoryStore.import_csv`, whatever the backend.

    Every valid row, as ``(device_id, device_type, smets, manufacturer, model, chf_id,
    status, supplier_id, mpan, updated_at_ms)``, is handed to ``write_batch`` in batches of
    :data:`IMPORT_BATCH_ROWS`, in file order (a device listed twice: the later row
    wins); the list is reused, so ``write_batch`` must copy what it keeps. Invalid rows
    are reported and skipped, as :meth:`Inventory.import_csv` describes.

    ``refuse``: a backend's own limit on an otherwise valid row: it returns why the row
    cannot be stored (the row is then reported as ``bad-csv`` and skipped), or None.

    Raises:
        InventoryError: ``unreadable-file``, ``missing-column``, ``duplicate-column``
            (nothing written), or whatever ``write_batch`` raises.
    """
    name = os.fspath(path)
    issues: list[ImportIssue] = []
    rows_read = imported = 0
    try:
        # surrogateescape: a bad byte makes its row invalid, not the whole file.
        with open(name, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
            reader = csv.reader(f, strict=True)
            parser = _RowParser(*_header_index(_first_row(reader, name), name))
            batch: list[tuple[object, ...]] = []
            last_line = reader.line_num
            while True:
                line = last_line + 1
                try:
                    fields = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    rows_read += 1
                    issues.append(
                        _issue(line, None, "", InvalidRowReason.BAD_CSV, f"not valid CSV: {exc}")
                    )
                    last_line = reader.line_num
                    continue
                last_line = reader.line_num
                if not fields:
                    continue  # blank line
                rows_read += 1
                row = parser.parse(fields) or parser.check(fields, line, issues)
                if row is not None:
                    why = None if refuse is None else refuse(row)
                    if why is not None:
                        issues.append(
                            _issue(
                                line, None, "", InvalidRowReason.BAD_CSV, f"not valid CSV: {why}"
                            )
                        )
                        continue
                    batch.append((*row, updated_at_ms))
                    if len(batch) >= IMPORT_BATCH_ROWS:
                        write_batch(batch)
                        imported += len(batch)
                        batch.clear()
            write_batch(batch)
            imported += len(batch)
    except OSError as exc:
        raise InventoryError(
            InventoryReason.UNREADABLE_FILE,
            f"{name}: cannot read: {exc.strerror or exc}",
            path=name,
        ) from exc
    return InventoryImportReport(
        path=name, rows_read=rows_read, rows_imported=imported, issues=tuple(issues)
    )


# Keyed by the casefolded text; values are what the database stores. The fast path looks
# the raw field up directly, which finds the usual spellings ("ESME" and "esme" alike).
_DEVICE_TYPES = {t.value.casefold(): t.value for t in DeviceType}
_DEVICE_TYPES.update({t.value: t.value for t in DeviceType})
_STATUSES = {s.value.casefold(): s.value for s in DeviceStatus}
_SMETS = {"1": 1, "2": 2}


def _first_row(reader: Iterator[list[str]], name: str) -> list[str]:
    try:
        for fields in reader:
            if fields:
                return fields
    except csv.Error as exc:
        raise InventoryError(
            InventoryReason.UNREADABLE_FILE,
            f"{name}: header row is not valid CSV: {exc}",
            path=name,
        ) from exc
    return []


def _header_index(header: list[str], name: str) -> tuple[dict[str, int], int]:
    index: dict[str, int] = {}
    for position, raw in enumerate(header):
        column = raw.strip().casefold()
        if column not in CSV_COLUMNS:
            continue
        if column in index:
            raise InventoryError(
                InventoryReason.DUPLICATE_COLUMN,
                f"{name}: column {column!r} appears twice in the header",
                path=name,
                column=column,
            )
        index[column] = position
    missing = [c for c in REQUIRED_COLUMNS if c not in index]
    if missing:
        what = "no header row" if not header else f"header is {','.join(header)[:200]!r}"
        raise InventoryError(
            InventoryReason.MISSING_COLUMN,
            f"{name}: missing required column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(c) for c in missing)} ({what})",
            path=name,
            column=missing[0],
        )
    return index, len(header)


def _issue(
    line: int, column: str | None, value: str, reason: InvalidRowReason, detail: str
) -> ImportIssue:
    shown = value if len(value) <= _VALUE_SHOWN else value[: _VALUE_SHOWN - 3] + "..."
    return ImportIssue(line=line, column=column, value=shown, reason=reason, detail=detail)


class _RowParser:
    """Turns the fields of one CSV row into a database row, or into issues.

    :meth:`parse` is the fast path taken by nearly every row of a real extract; it gives
    up (returns None) on anything unusual, and :meth:`check` then does the full job,
    reporting every fault. The two agree on every row the fast path accepts
    (tests/test_inventory.py checks this with hypothesis).
    """

    __slots__ = (
        "chf_id",
        "device_id",
        "device_type",
        "manufacturer",
        "model",
        "mpan",
        "smets",
        "status",
        "supplier_id",
        "width",
    )

    def __init__(self, index: dict[str, int], width: int) -> None:
        self.width = width
        self.device_id = index["device_id"]
        self.device_type = index["device_type"]
        self.smets = index["smets"]
        self.manufacturer = index["manufacturer"]
        self.model = index.get("model", -1)
        self.chf_id = index.get("chf_id", -1)
        self.status = index["status"]
        self.supplier_id = index.get("supplier_id", -1)
        self.mpan = index.get("mpan", -1)

    def parse(self, fields: list[str]) -> _Row | None:
        if len(fields) != self.width:
            return None
        device_id = _fast_eui64(fields[self.device_id])
        device_type = _DEVICE_TYPES.get(fields[self.device_type])
        smets = _SMETS.get(fields[self.smets])
        status = _STATUSES.get(fields[self.status])
        manufacturer = fields[self.manufacturer].strip()
        model = fields[self.model].strip() if self.model >= 0 else ""
        chf_text = fields[self.chf_id] if self.chf_id >= 0 else ""
        chf_id = _fast_eui64(chf_text) if chf_text else None
        supplier_text = fields[self.supplier_id] if self.supplier_id >= 0 else ""
        supplier_id = _fast_eui64(supplier_text) if supplier_text else None
        mpan_text = fields[self.mpan] if self.mpan >= 0 else ""
        mpan = _fast_mpan(mpan_text) if mpan_text else None
        if (
            device_id is None
            or device_type is None
            or smets is None
            or status is None
            or not manufacturer
            or (chf_id is None and chf_text)
            or (supplier_id is None and supplier_text)
            or (mpan is None and mpan_text)
            or not (manufacturer.isascii() and model.isascii())
        ):
            return None
        return (
            device_id,
            device_type,
            smets,
            manufacturer,
            model or None,
            chf_id,
            status,
            supplier_id,
            mpan,
        )

    def check(self, fields: list[str], line: int, issues: list[ImportIssue]) -> _Row | None:
        """The row, or None after appending one issue per fault to ``issues``."""
        if len(fields) != self.width:
            detail = f"expected {self.width} fields (as in the header), got {len(fields)}"
            issues.append(
                _issue(line, None, ",".join(fields), InvalidRowReason.FIELD_COUNT, detail)
            )
            return None
        before = len(issues)

        def bad(column: str, value: str, reason: InvalidRowReason, detail: str) -> None:
            issues.append(_issue(line, column, value, reason, detail))

        def eui(column: str, position: int, required: bool) -> bytes | None:
            text = fields[position].strip() if position >= 0 else ""
            if not text:
                if required:
                    bad(column, text, InvalidRowReason.MISSING_VALUE, f"{column} is required")
                return None
            try:
                return parse_eui64(text)
            except ValueError as exc:
                bad(column, _visible(text), InvalidRowReason.BAD_EUI64, str(exc))
                return None

        def choice(column: str, position: int, table: dict[str, _T]) -> _T | None:
            text = fields[position].strip()
            value = table.get(text.casefold())
            if value is None:
                if text:
                    allowed = list(dict.fromkeys(map(str, table.values())))
                    expected = f"expected {', '.join(allowed[:-1])} or {allowed[-1]}"
                    bad(column, _visible(text), _UNKNOWN[column], expected)
                else:
                    bad(column, text, InvalidRowReason.MISSING_VALUE, f"{column} is required")
            return value

        device_id = eui("device_id", self.device_id, required=True)
        device_type = choice("device_type", self.device_type, _DEVICE_TYPES)
        smets = choice("smets", self.smets, _SMETS)
        manufacturer = fields[self.manufacturer].strip()
        if not manufacturer:
            bad(
                "manufacturer",
                manufacturer,
                InvalidRowReason.MISSING_VALUE,
                "manufacturer is required",
            )
        elif not _is_utf8(manufacturer):
            bad(
                "manufacturer", _visible(manufacturer), InvalidRowReason.NOT_UTF8, "not valid UTF-8"
            )
        model = fields[self.model].strip() if self.model >= 0 else ""
        if not _is_utf8(model):
            bad("model", _visible(model), InvalidRowReason.NOT_UTF8, "not valid UTF-8")
        chf_id = eui("chf_id", self.chf_id, required=False)
        status = choice("status", self.status, _STATUSES)
        supplier_id = eui("supplier_id", self.supplier_id, required=False)
        mpan_text = fields[self.mpan].strip() if self.mpan >= 0 else ""
        mpan: str | None = None
        if mpan_text:
            try:
                mpan = MpanCore.parse(mpan_text).digits
            except MpanError as exc:
                bad("mpan", _visible(mpan_text), InvalidRowReason.BAD_MPAN, exc.detail)
        if (
            len(issues) != before
            or device_id is None
            or device_type is None
            or smets is None
            or status is None
        ):
            return None
        return (
            device_id,
            device_type,
            smets,
            manufacturer,
            model or None,
            chf_id,
            status,
            supplier_id,
            mpan,
        )


_T = TypeVar("_T")

_UNKNOWN: dict[str, InvalidRowReason] = {
    "device_type": InvalidRowReason.UNKNOWN_DEVICE_TYPE,
    "smets": InvalidRowReason.BAD_SMETS,
    "status": InvalidRowReason.UNKNOWN_STATUS,
}

# The notations people and tools actually write, with nothing around them. Anything else
# (spaces, colons, mixed separators, mistakes) goes to parse_eui64, which explains faults.
_EUI64_FAST = re.compile(r"[0-9A-Fa-f]{2}(?:-[0-9A-Fa-f]{2}){7}|[0-9A-Fa-f]{16}")


def _fast_eui64(text: str) -> bytes | None:
    if _EUI64_FAST.fullmatch(text) is None:
        return None
    return bytes.fromhex(text.replace("-", ""))


def _fast_mpan(text: str) -> str | None:
    # 13 digits with nothing around them and the right check digit; anything else (spaces,
    # mistakes) goes to MpanCore.parse, which explains faults.
    if len(text) != MPAN_CORE_LENGTH or not (text.isascii() and text.isdigit()):
        return None
    return text if check_digit(text[:12]) == int(text[12]) else None


def _is_utf8(text: str) -> bool:
    # Undecodable bytes were read as lone surrogates (surrogateescape).
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _visible(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
