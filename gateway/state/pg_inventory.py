"""The Smart Metering Inventory in the PostgreSQL state database (issue 12).

Theory of operation
-------------------
With ``[state] backend = "postgresql"`` several gateway instances share one database and
one of them leads. An inventory kept in a file per instance would split: an update taken
from ``dsp/inventory`` by the old leader would never reach the new leader's file, so
after a failover a CS06 for a newly installed meter would be refused as unknown and its
window lost. So the inventory lives in the same database, in the table ``inventory``,
and every instance (and ``poa-gateway inventory``) reads and writes that one table.

:class:`PostgresInventory` is :class:`~gateway.state.inventory.Inventory` on that table:
the same :class:`~gateway.state.inventory.InventoryStore` methods, the same validation
(the record checks and the CSV reader are gateway/state/inventory.py's own), the same
records, import report, errors and reasons. One limit is PostgreSQL's: a ``text`` value
cannot hold a NUL character, which SQLite stores. A record with one in ``manufacturer``
or ``model`` is refused with ``invalid-record`` naming the field, and an imported row
with one is reported (``bad-csv``, as Python's CSV reader itself said of a NUL before
3.11) and skipped, rather than failing the whole batch on the server.

**Schema.** The table is created if missing with ``CREATE TABLE IF NOT EXISTS``, in one
transaction holding an advisory lock of its own (:data:`_LOCK_KEY`: not the state
store's, which guards the store's tables), so that two instances starting at once
create it once. Its version is the row ``('inventory_schema_version', '2')`` of
``store_meta``, the state store's table of marks (gateway/state/postgresql.py). Either
may be opened first on an empty database, so this module creates ``store_meta`` too,
with the same definition, under the state store's lock (taken after ours: the store
never takes ours, so the two cannot deadlock) since ``CREATE TABLE IF NOT EXISTS`` is
not safe against a concurrent creation. Version 1 (before ``mpan``) is migrated in that
same locked transaction: ``ADD COLUMN IF NOT EXISTS``, then the mark, so two instances
starting at once migrate it once and a crash half-way leaves version 1 to be migrated
again. A newer version is refused with ``unsupported-schema`` and nothing is changed;
a table ``inventory`` without the mark is someone else's (``not-an-inventory``).

**Connection.** One connection in autocommit mode: each read sees what is committed
(another instance's update included), a single upsert commits as it returns, and the
writes of several rows run in an explicit transaction. Every operation here is
idempotent (a read, or an upsert of the same values), so when the server has ended the
connection (a restart, a failover, an administrator) it is reconnected once and the
operation tried again, as the state store's reads are.

**Bulk import.** A batch of :data:`~gateway.state.inventory.IMPORT_BATCH_ROWS` rows is
copied (``COPY ... FORMAT BINARY``) into a temporary table and merged with one ``INSERT
... ON CONFLICT DO UPDATE``: one round trip and one statement per batch instead of one
per row. One such statement may update a row only once, so a device listed twice in a
batch is sent once, as its later row: what upserting the rows in file order leaves.

**Secrets.** The DSN carries no password (gateway/config.py refuses one); the password
comes from the environment. Errors name host, port and database, never the password.

Threads: as :class:`~gateway.state.inventory.Inventory`, one thread only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import psycopg

from gateway.core.devices import DeviceRecord, DeviceStatus, DeviceType
from gateway.core.mpan import MPAN_CORE_LENGTH
from gateway.eui import EUI64_LENGTH

from .errors import first_line
from .inventory import (
    MPANS_PER_CALL,
    InventoryError,
    InventoryImportReport,
    InventoryReason,
    InventoryUnavailable,
    _invalid,
    _record,
    _Row,
    _row,
    from_envelope,
    read_inventory_csv,
)
from .lease import check_fence
from .postgresql import _LOCK_KEY as _STORE_LOCK_KEY
from .postgresql import describe_dsn, open_connection

__all__ = ["INVENTORY_SCHEMA_VERSION", "PostgresInventory"]

INVENTORY_SCHEMA_VERSION: Final = 2
"""The value of ``store_meta.inventory_schema_version`` written by this module (2 added
``mpan``; version 1 is migrated when opened)."""

_VERSION_KEY: Final = "inventory_schema_version"
_LOCK_KEY: Final = 0x504F4149  # "POAI", as the SQLite inventory's application_id
_APPLICATION_NAME: Final = "poa-gateway inventory"  # what pg_stat_activity shows
_NO_NUL: Final = "PostgreSQL text cannot hold one"

_STORE_META: Final = (
    "CREATE TABLE IF NOT EXISTS store_meta (key text PRIMARY KEY, value text NOT NULL)"
)


def _one_of(values: Iterable[str]) -> str:
    return ", ".join(f"'{value}'" for value in values)


_SCHEMA: Final = (
    f"""
CREATE TABLE IF NOT EXISTS inventory (
    device_id bytea PRIMARY KEY CHECK (length(device_id) = {EUI64_LENGTH}),
    device_type text NOT NULL CHECK (device_type IN ({_one_of(DeviceType)})),
    smets smallint NOT NULL CHECK (smets IN (1, 2)),
    manufacturer text NOT NULL,
    model text,
    chf_id bytea CHECK (chf_id IS NULL OR length(chf_id) = {EUI64_LENGTH}),
    status text NOT NULL CHECK (status IN ({_one_of(DeviceStatus)})),
    supplier_id bytea CHECK (supplier_id IS NULL OR length(supplier_id) = {EUI64_LENGTH}),
    updated_at bigint NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS inventory_chf_id ON inventory (chf_id)",
)
# Added by version 2, to new tables and old alike (so both have the same columns in the
# same order); IF NOT EXISTS makes a migration interrupted before its mark safe to redo.
_ADD_MPAN: Final = (
    "ALTER TABLE inventory ADD COLUMN IF NOT EXISTS mpan text "
    f"CHECK (mpan IS NULL OR length(mpan) = {MPAN_CORE_LENGTH})"
)

_GET: Final = """
SELECT device_id, device_type, smets, manufacturer, model, chf_id, status, supplier_id, mpan
FROM inventory WHERE device_id = %s
"""
_ON_CHF: Final = """
SELECT device_id, device_type, smets, manufacturer, model, chf_id, status, supplier_id, mpan
FROM inventory WHERE chf_id = %s ORDER BY device_id
"""

# The columns in the order of a row of gateway/state/inventory.py, then updated_at, and
# the conflict rule of its upsert: the later write replaces every field.
_UPSERT: Final = """
INSERT INTO inventory (
    device_id, device_type, smets, manufacturer, model, chf_id, status, supplier_id, mpan,
    updated_at
)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
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

# ON COMMIT DROP: the staging table lives for one batch's transaction, so a batch retried
# on a new connection finds none left over.
_STAGE: Final = """
CREATE TEMPORARY TABLE inventory_import (
    device_id bytea, device_type text, smets smallint, manufacturer text, model text,
    chf_id bytea, status text, supplier_id bytea, mpan text, updated_at bigint
) ON COMMIT DROP
"""
_COPY: Final = """
COPY inventory_import (
    device_id, device_type, smets, manufacturer, model, chf_id, status, supplier_id, mpan,
    updated_at
) FROM STDIN (FORMAT BINARY)
"""
_COPY_TYPES: Final = (
    "bytea",
    "text",
    "int2",
    "text",
    "text",
    "bytea",
    "text",
    "bytea",
    "text",
    "int8",
)
_MERGE: Final = """
INSERT INTO inventory (
    device_id, device_type, smets, manufacturer, model, chf_id, status, supplier_id, mpan,
    updated_at
)
SELECT device_id, device_type, smets, manufacturer, model, chf_id, status, supplier_id, mpan,
    updated_at
FROM inventory_import
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

_T = TypeVar("_T")
_Conn = psycopg.Connection[Any]


class PostgresInventory:
    """The Smart Metering Inventory in a PostgreSQL database. See the module docstring.

    Open with :meth:`PostgresInventory.open`; close with :meth:`close` or use as a
    context manager. Every write is committed when the method returns.

    Attributes:
        path: where the inventory is, for messages (``host:port/dbname``, no password).
    """

    def __init__(self, dsn: str, password: str | None, conn: _Conn) -> None:
        """Internal: use :meth:`PostgresInventory.open`."""
        self.path = describe_dsn(dsn)
        self._dsn = dsn
        self._password = password
        self._conn = conn
        self._fence: tuple[str, int] | None = None  # (holder, epoch): see fence()

    @classmethod
    def open(cls, dsn: str, *, password: str | None = None, create: bool = True) -> Self:
        """Connect to the database of ``dsn`` and check (or create) the inventory table.

        Args:
            dsn: a libpq connection string or URI, without a password.
            password: the password, from the environment; None for none (peer, trust,
                a .pgpass file).
            create: with False, a database without an inventory is an error instead,
                and nothing is created (for read-only tools).

        Raises:
            InventoryError: ``cannot-open`` (no connection: the message names host, port
                and database; or no inventory and ``create=False``), ``unsupported-schema``
                (another version: nothing is changed) or ``not-an-inventory``.
        """
        conn = _connect(dsn, password)
        try:
            _prepare(conn, describe_dsn(dsn), create=create)
        except BaseException:
            conn.close()
            raise
        return cls(dsn, password, conn)

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
        rows = self._run(lambda conn: conn.execute(_GET, (bytes(device_id),)).fetchall())
        return _record(rows[0]) if rows else None

    def mpans(self, device_ids: Sequence[bytes]) -> dict[bytes, str]:
        """As :meth:`~gateway.state.inventory.InventoryStore.mpans`."""
        if len(device_ids) > MPANS_PER_CALL:
            raise ValueError(f"at most {MPANS_PER_CALL} device ids a call")
        ids = [bytes(d) for d in device_ids]
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT device_id, mpan FROM inventory"
                " WHERE mpan IS NOT NULL AND device_id = ANY(%s)",
                (ids,),
            ).fetchall()
        )
        return {bytes(device): mpan for device, mpan in rows}

    def chf_of(self, device_id: bytes) -> bytes | None:
        """The CHF on whose HAN this device sits; None if unknown or not recorded."""
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT chf_id FROM inventory WHERE device_id = %s", (bytes(device_id),)
            ).fetchall()
        )
        return None if not rows or rows[0][0] is None else bytes(rows[0][0])

    def devices_on_chf(self, chf_id: bytes) -> list[DeviceRecord]:
        """Every device whose ``chf_id`` is this CHF, ordered by EUI-64."""
        rows = self._run(lambda conn: conn.execute(_ON_CHF, (bytes(chf_id),)).fetchall())
        return [_record(row) for row in rows]

    def count(self) -> int:
        """Number of devices in the inventory."""
        rows = self._run(lambda conn: conn.execute("SELECT count(*) FROM inventory").fetchall())
        return int(rows[0][0])

    def upsert(self, record: DeviceRecord, updated_at_ms: int) -> None:
        """Insert the device, or replace everything known about it; committed on return.

        Raises:
            InventoryError: ``invalid-record`` (nothing written) or ``database-error``.
        """
        row = (*_pg_row(record), updated_at_ms)

        def write(conn: _Conn) -> None:
            with conn.transaction():
                self._check_fence(conn)
                conn.execute(_UPSERT, row)

        self._run(write)

    def upsert_many(self, records: Iterable[DeviceRecord], updated_at_ms: int) -> int:
        """Upsert every record in one transaction; returns how many were written.

        All or nothing: one invalid record writes none of them.

        Raises:
            InventoryError: ``invalid-record`` or ``database-error``.
        """
        rows: list[tuple[object, ...]] = [(*_pg_row(r), updated_at_ms) for r in records]
        self._write_batch(rows)
        return len(rows)

    def import_csv(self, path: str | os.PathLike[str], updated_at_ms: int) -> InventoryImportReport:
        """Upsert every valid row of an inventory CSV; report and skip the invalid ones.

        The file, the rows accepted and the report are exactly those of
        :meth:`gateway.state.inventory.Inventory.import_csv` (one reader serves both),
        except a row with a NUL character in ``manufacturer`` or ``model`` (see the
        module docstring). Batches of
        :data:`~gateway.state.inventory.IMPORT_BATCH_ROWS` rows, one transaction each.

        Raises:
            InventoryError: ``unreadable-file``, ``missing-column``, ``duplicate-column``
                (nothing written), or ``database-error``.
        """
        return read_inventory_csv(path, updated_at_ms, self._write_batch, refuse=_nul_in)

    # -- internals ----------------------------------------------------------------------

    def _write_batch(self, rows: list[tuple[object, ...]]) -> None:
        if not rows:
            return
        # The later row of a device wins, as when the rows are upserted one by one; a
        # dict keeps the last value given for each key. (A copy: the caller reuses rows.)
        latest = list({row[0]: row for row in rows}.values())

        def write(conn: _Conn) -> None:
            with conn.transaction(), conn.cursor() as cur:
                self._check_fence(conn)
                cur.execute(_STAGE)
                with cur.copy(_COPY) as copy:
                    copy.set_types(_COPY_TYPES)
                    for row in latest:
                        copy.write_row(row)
                cur.execute(_MERGE)

        self._run(write)

    def fence(self, holder: str, epoch: int) -> None:
        """Fence every later write with the leader lease, as the state store's commits
        (gateway/state/lease.py): a write of a process that no longer holds the lease at
        ``epoch`` is refused with ``StoreError`` ``fenced`` and changes nothing, so an
        inventory message a frozen leader read before the takeover cannot undo a newer
        one the new leader applied."""
        self._fence = (holder, epoch)

    def _check_fence(self, conn: _Conn) -> None:
        check_fence(conn, self._fence, f"{self.path}: inventory write refused")

    def _run(self, op: Callable[[_Conn], _T]) -> _T:
        try:
            try:
                return op(self._conn)
            except psycopg.OperationalError:
                if not self._conn.broken:
                    raise  # a closed inventory, a timeout: not a lost connection
            # The server ended the connection: everything here is idempotent, so one
            # new connection and one more try.
            self._conn.close()
            try:
                self._conn = _connect(self._dsn, self._password)
            except InventoryError as exc:
                raise InventoryUnavailable(exc.detail, path=self.path) from exc
            return op(self._conn)
        except psycopg.Error as exc:
            raise InventoryUnavailable(f"{self.path}: inventory: {exc}", path=self.path) from exc


# -- helpers -------------------------------------------------------------------------------


def _connect(dsn: str, password: str | None) -> _Conn:
    where = describe_dsn(dsn)
    try:
        return open_connection(dsn, password, autocommit=True, application_name=_APPLICATION_NAME)
    except psycopg.Error as exc:
        raise InventoryError(
            InventoryReason.CANNOT_OPEN,
            f"cannot connect to the PostgreSQL inventory at {where}: {first_line(exc)}",
            path=where,
        ) from None


def _prepare(conn: _Conn, where: str, *, create: bool) -> None:
    """Check the inventory's schema mark, creating table and mark if missing."""
    try:
        encoding = conn.info.parameter_status("server_encoding")
        if encoding != "UTF8":
            # Manufacturer and model names are any Unicode text.
            raise InventoryError(
                InventoryReason.CANNOT_OPEN,
                f"{where}: the database's encoding is {encoding or 'unknown'}; the inventory "
                "needs UTF8 (CREATE DATABASE ... ENCODING 'UTF8')",
                path=where,
            )
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            tables = {
                name
                for (name,) in conn.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = current_schema() AND table_name = ANY(%s)",
                    (["store_meta", "inventory"],),
                ).fetchall()
            }
            version: str | None = None
            if "store_meta" in tables:
                found = conn.execute(
                    "SELECT value FROM store_meta WHERE key = %s", (_VERSION_KEY,)
                ).fetchall()
                version = found[0][0] if found else None
            if version is None:
                if "inventory" in tables:
                    raise _foreign(where, f"a table inventory but no {_VERSION_KEY} in store_meta")
                if not create:
                    raise InventoryError(
                        InventoryReason.CANNOT_OPEN,
                        f"{where}: no inventory in this database (nothing imported yet)",
                        path=where,
                    )
                if "store_meta" not in tables:
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_STORE_LOCK_KEY,))
                    conn.execute(_STORE_META)
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(_ADD_MPAN)
                conn.execute(
                    "INSERT INTO store_meta (key, value) VALUES (%s, %s)",
                    (_VERSION_KEY, str(INVENTORY_SCHEMA_VERSION)),
                )
                return
            if version == "1" and "inventory" in tables:
                # The rows stay; their MPAN is unknown until the DSP or an import says.
                conn.execute(_ADD_MPAN)
                conn.execute(
                    "UPDATE store_meta SET value = %s WHERE key = %s",
                    (str(INVENTORY_SCHEMA_VERSION), _VERSION_KEY),
                )
                return
    except psycopg.Error as exc:
        raise InventoryError(
            InventoryReason.CANNOT_OPEN, f"{where}: cannot prepare the inventory: {exc}", path=where
        ) from exc
    if version != str(INVENTORY_SCHEMA_VERSION):
        older = version.isdigit() and int(version) < INVENTORY_SCHEMA_VERSION
        raise InventoryError(
            InventoryReason.UNSUPPORTED_SCHEMA,
            f"{where}: inventory schema version {version} is {'older' if older else 'newer'} "
            f"than this gateway's ({INVENTORY_SCHEMA_VERSION}); nothing was changed",
            path=where,
        )
    if "inventory" not in tables:
        raise _foreign(where, f"store_meta has {_VERSION_KEY} {version} but no table inventory")


def _foreign(where: str, what: str) -> InventoryError:
    return InventoryError(
        InventoryReason.NOT_AN_INVENTORY,
        f"{where}: not a poa-gateway inventory ({what})",
        path=where,
    )


def _nul_column(row: _Row) -> str | None:
    for column, value in (("manufacturer", row[3]), ("model", row[4])):
        if value is not None and "\x00" in value:
            return column
    return None


def _nul_in(row: _Row) -> str | None:
    column = _nul_column(row)
    return None if column is None else f"a NUL character in {column} ({_NO_NUL})"


def _pg_row(record: DeviceRecord) -> _Row:
    row = _row(record)  # every check of the SQLite inventory, with the same errors
    column = _nul_column(row)
    if column is not None:
        raise _invalid(column, f"contains a NUL character ({_NO_NUL})")
    return row
