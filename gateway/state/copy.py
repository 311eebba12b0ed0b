"""Copy one state store into another: SQLite and PostgreSQL, either way (issue 12, point 6).

Theory of operation
-------------------
``poa-gateway state copy --from sqlite:PATH --to postgresql:DSN`` moves a deployment
from one backend to the other (or between two stores of one backend). Both stores write
the same rows (gateway/state/rows.py), so a copy moves rows as they are, table by table,
without decoding them: :data:`TABLES` names each table and its columns, and is the only
place that knows which tables there are. Adding a table to both stores is one more line
there; a test checks that every table of both schemas is either in :data:`TABLES` or in
:data:`NOT_COPIED` (the HA runtime state, which belongs to the instances running on a
store, not to the deployment's state). A table may be copied in part: of ``store_meta``
only the report cursor's row goes (where reporting stands, and a report marked but not
yet written); the target keeps its own store id and schema version.

**Both stores are opened with their normal open** (:meth:`Store.open`,
:meth:`PostgresStore.open`), so the schema checks apply as when the daemon starts: a
target is given the schema if it has none, a store of another schema version is refused.
A source must already be a store: a missing SQLite file, or a database without a store,
is refused (``no-source``) instead of being created empty and copied as nothing. Then
the rows go over connections of this module's own:

- the source is read in one snapshot (a SQLite read transaction in WAL mode; a
  REPEATABLE READ, READ ONLY transaction in PostgreSQL), so what is copied is one
  consistent state even if a daemon were still writing (it must not be: the writes it
  makes after the snapshot would be missing from the target);
- the target is written in **one transaction**: the copy is all or nothing. In
  PostgreSQL the copied tables are locked first (other writers wait, readers do not),
  then each table is loaded with ``COPY ... FROM STDIN`` (psycopg's ``cursor.copy``),
  faster than ``executemany`` even in pipeline mode; in SQLite with ``executemany`` inside
  ``BEGIN IMMEDIATE``;
- a target that already holds rows in a copied table is refused (``target-not-empty``,
  naming what each table holds) unless ``force``: then those rows are deleted first, in
  the same transaction;
- before the commit, each table's row count in the target (``count(*)``, read back in the
  transaction) is compared with the source's (``count(*)`` in the source snapshot); any
  difference rolls the whole copy back (``count-mismatch``).

**Identity.** ``suppressions.seq`` numbers the suppression log; which entries are
reported is each entry's ``report_id`` and the report cursor's row, copied as they are,
so the reports already written stay written and a pending one is written again by the
gateway on the target, from the same records. Sequence numbers are never reused, so the
copy keeps them (COPY writes a PostgreSQL identity column's values as given, like
``OVERRIDING SYSTEM VALUE``) and then sets the target's counter to the source's
high-water mark: the highest number the source ever gave (its ``sqlite_sequence`` entry,
or its identity sequence), not only the highest still stored. The next append to the
target continues the numbering from there.

**Secrets.** A DSN holding a password is refused (:func:`parse_spec`): the password comes
from the environment, handed in as ``password``. Errors name ``host:port/dbname``
(:func:`~gateway.state.postgresql.describe_dsn`), never the password.
"""

from __future__ import annotations

import abc
import contextlib
import enum
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

import msgspec
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from gateway.errors import GatewayError

from .audit import COMMAND_COLUMNS
from .errors import StoreError, StoreReason, first_line
from .postgresql import PostgresStore, connect, describe_dsn
from .restorations import RESTORATION_COLUMNS
from .rows import REPORT_CURSOR_KEY
from .sqlite import MARKER_SUFFIX, Store

__all__ = [
    "NOT_COPIED",
    "TABLES",
    "BadSpec",
    "CopyError",
    "CopyReason",
    "CopyReport",
    "CountMismatch",
    "NoSource",
    "SameStore",
    "StoreSpec",
    "Table",
    "TableCopied",
    "TargetNotEmpty",
    "copy_state",
    "parse_spec",
]


class Table(msgspec.Struct, frozen=True, kw_only=True):
    """A table copied as it is: its name, its columns (space-separated, in both stores'
    order), the column numbered by the store (SQLite AUTOINCREMENT, PostgreSQL
    identity), if any, whose counter the copy carries over, and ``where``, the rows
    copied when not all are (an SQL condition both dialects read alike)."""

    name: str
    columns: str
    numbered: str | None = None
    where: str | None = None

    @property
    def column_names(self) -> tuple[str, ...]:
        """The columns, as names."""
        return tuple(self.columns.split())


TABLES: Final = (
    Table(
        name="activations",
        columns="esme originator counter chf start_ms end_ms future_dated seen_at closed_early "
        "succeeded",
    ),
    Table(name="counters", columns="originator device counter"),
    Table(name="decisions", columns="alert_id decided_at effect_done decision"),
    Table(name="suppressions", columns="seq alert_id record received_at report_id", numbered="seq"),
    Table(name="commands", columns=COMMAND_COLUMNS),
    Table(name="restorations", columns=RESTORATION_COLUMNS),
    Table(
        name="quarantine",
        columns="id topic payload reason error attempts received_at quarantined_at forwarded "
        "replayed_at",
    ),
    # The report cursor; not the store's own id and schema version.
    Table(name="store_meta", columns="key value", where=f"key = '{REPORT_CURSOR_KEY}'"),
)
"""The tables a copy moves, in this order: one entry per table."""

NOT_COPIED: Final = frozenset({"lease", "instances", "inventory", "sqlite_sequence"})
"""Tables of a store that a copy leaves alone: the HA runtime state of the instances
running on a PostgreSQL store (``lease``, ``instances``), the Smart Metering Inventory a
PostgreSQL deployment keeps in the same database (a SQLite one keeps it in a file of its
own; it is imported from its CSV into the new backend: docs/operations.md), and SQLite's
own bookkeeping (``sqlite_sequence``, set from the source's high-water mark instead)."""

_BATCH: Final = 5_000  # rows per read and per executemany: bounded memory for any size
_LOCK_TIMEOUT: Final = "10s"  # a target a running daemon keeps busy fails, not hangs
_BUSY_TIMEOUT_S: Final = 10.0

Kind = Literal["sqlite", "postgresql"]


# -- errors --------------------------------------------------------------------------------


class CopyReason(enum.StrEnum):
    """The stable reason codes of :class:`CopyError`, one per leaf."""

    BAD_SPEC = "bad-spec"
    NO_SOURCE = "no-source"
    SAME_STORE = "same-store"
    TARGET_NOT_EMPTY = "target-not-empty"
    COUNT_MISMATCH = "count-mismatch"


class CopyError(GatewayError):
    """A copy that was refused or failed; nothing was written to the target.

    Each leaf has its own ``reason``. (A store that cannot be opened, connected to, read
    or written raises :class:`StoreError` instead, with the store's reasons.)
    """

    reason: ClassVar[CopyReason]
    bad_input: ClassVar[bool] = True
    """True when running it again unchanged gives the same answer (the input is wrong)."""


class BadSpec(CopyError):
    """A store named in a form that is not ``sqlite:PATH`` or ``postgresql:DSN``, or a
    DSN that holds a password or does not parse."""

    reason = CopyReason.BAD_SPEC


class NoSource(CopyError):
    """The source is not a state store (a missing file, a database without one)."""

    reason = CopyReason.NO_SOURCE


class SameStore(CopyError):
    """The source and the target are the same store."""

    reason = CopyReason.SAME_STORE


class TargetNotEmpty(CopyError):
    """The target holds rows in copied tables, and ``force`` was not given.

    Attributes:
        held: rows per table, for the tables that hold any.
    """

    reason = CopyReason.TARGET_NOT_EMPTY

    def __init__(self, detail: str, held: dict[str, int]) -> None:
        self.held = held
        super().__init__(detail)


class CountMismatch(CopyError):
    """A table of the target did not hold as many rows as the source's after the copy;
    the copy was rolled back.

    Attributes:
        source: rows per table in the source.
        target: rows per table in the target, read back before the commit.
    """

    reason = CopyReason.COUNT_MISMATCH
    bad_input = False

    def __init__(self, detail: str, source: dict[str, int], target: dict[str, int]) -> None:
        self.source = source
        self.target = target
        super().__init__(detail)


# -- where a store is ----------------------------------------------------------------------


class StoreSpec(msgspec.Struct, frozen=True):
    """A state store named on the command line: a SQLite file or a PostgreSQL DSN."""

    kind: Kind
    location: str
    """The file's path, or the DSN (which holds no password: :func:`parse_spec`)."""

    def describe(self) -> str:
        """``sqlite:PATH`` or ``postgresql:host:port/dbname``, for messages."""
        if self.kind == "postgresql":
            return f"postgresql:{describe_dsn(self.location)}"
        return f"sqlite:{self.location}"


_URI_SCHEMES: Final = ("postgresql://", "postgres://")


def parse_spec(text: str, *, option: str) -> StoreSpec:
    """``sqlite:PATH`` or ``postgresql:DSN`` (a key=value string or a URI; a bare
    ``postgresql://...`` URI is taken as it is). ``option`` names the option in errors.

    Raises:
        BadSpec: another form, an empty path or DSN, a DSN that does not parse or that
            holds a password (never echoed: it may hold the password).
    """
    if text.startswith(_URI_SCHEMES):
        kind, location = "postgresql", text
    else:
        kind, sep, location = text.partition(":")
        if not sep or kind not in ("sqlite", "postgresql"):
            shown = kind if sep else text
            raise BadSpec(
                f"{option}: {shown[:40]!r} is not a store: give sqlite:PATH or postgresql:DSN"
            )
    if not location.strip():
        what = "a path" if kind == "sqlite" else "a DSN"
        raise BadSpec(f"{option}: {kind}: needs {what}")
    if kind == "sqlite":
        return StoreSpec("sqlite", location)
    try:
        params = conninfo_to_dict(location)
    except psycopg.ProgrammingError:
        raise BadSpec(f"{option}: not a valid PostgreSQL connection string") from None
    if params.get("password"):
        raise BadSpec(
            f"{option}: the DSN must not contain a password: put it in the environment "
            "variable named by --password-env"
        )
    return StoreSpec("postgresql", location)


# -- the copy --------------------------------------------------------------------------------


class TableCopied(msgspec.Struct, frozen=True, kw_only=True):
    """One table of a copy."""

    table: str
    source: int
    """Rows in the source (``count(*)`` in its snapshot)."""
    target: int
    """Rows in the target after the copy (``count(*)`` read back before the commit)."""
    replaced: int
    """Rows the target held before, deleted (only with ``force``)."""


class CopyReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a copy did, verified: every table holds as many rows as the source's."""

    source: str
    target: str
    tables: list[TableCopied]
    next_numbers: dict[str, int]
    """``table.column`` -> the number the target gives its next row (the source's
    high-water mark plus one)."""


def copy_state(
    source: StoreSpec, target: StoreSpec, *, password: str | None = None, force: bool = False
) -> CopyReport:
    """Copy every table of :data:`TABLES` from ``source`` to ``target`` (see the module
    docstring), in one transaction, and verify the row counts.

    Args:
        source: the store to read; it must exist.
        target: the store to write; given the schema if it has none.
        password: the PostgreSQL password (from the environment) for either side that is
            PostgreSQL; None for none (trust, peer, a .pgpass file).
        force: replace the rows of a target that is not empty.

    Raises:
        CopyError: ``no-source``, ``same-store``, ``target-not-empty`` (nothing written),
            ``count-mismatch`` (rolled back).
        StoreError: a store that cannot be opened (``cannot-open``, ``unsupported-schema``
            ...) or whose reads or writes fail (``database-error``; rolled back).
    """
    source_id = _open_store(source, password, must_exist=True)
    target_id = _open_store(target, password, must_exist=False)
    if _same(source, target, source_id, target_id):
        raise SameStore(
            f"{source.describe()} and {target.describe()} are the same store (store id {source_id})"
        )
    with _reader(source, password) as reader, _writer(target, password) as writer:
        held = writer.counts()
        if any(held.values()) and not force:
            nonzero = {name: n for name, n in held.items() if n}
            what = ", ".join(f"{name} {n}" for name, n in nonzero.items())
            raise TargetNotEmpty(
                f"{target.describe()} already holds rows ({what}): give --force to replace "
                "them, or copy into an empty store",
                nonzero,
            )
        counts = reader.counts()
        if force:
            writer.clear()
        next_numbers: dict[str, int] = {}
        for table in TABLES:
            writer.write(table, reader.rows(table))
            if table.numbered is not None:
                high = reader.high_water(table)
                writer.set_high_water(table, high)
                next_numbers[f"{table.name}.{table.numbered}"] = high + 1
        written = writer.counts()
        if written != counts:
            differ = ", ".join(
                f"{name} {counts[name]} -> {written[name]}"
                for name in counts
                if counts[name] != written[name]
            )
            raise CountMismatch(
                f"{target.describe()}: row counts differ from the source's after the copy "
                f"({differ}); nothing was committed",
                counts,
                written,
            )
        writer.commit()
    return CopyReport(
        source=source.describe(),
        target=target.describe(),
        tables=[
            TableCopied(
                table=t.name,
                source=counts[t.name],
                target=written[t.name],
                replaced=held[t.name] if force else 0,
            )
            for t in TABLES
        ],
        next_numbers=next_numbers,
    )


def _open_store(spec: StoreSpec, password: str | None, *, must_exist: bool) -> str:
    """Open ``spec`` with its store's normal open (schema checks; a new target is given
    the schema) and close it again; return its store id."""
    if spec.kind == "sqlite":
        path = Path(spec.location)
        marker = path.with_name(path.name + MARKER_SUFFIX)
        # With its marker beside it, a missing file is a lost store: Store.open says so.
        if must_exist and not path.exists() and not marker.exists():
            raise NoSource(f"{spec.describe()}: no state database there")
        with Store.open(path) as store:
            return store.store_id
    if must_exist and not _pg_has_store(spec, password):
        raise NoSource(f"{spec.describe()}: no poa-gateway state store in this database")
    pg = PostgresStore.open(spec.location, password=password)
    try:
        return pg.store_id
    finally:
        pg.close()


def _pg_has_store(spec: StoreSpec, password: str | None) -> bool:
    # A store's store_meta holds its schema_version; PostgresStore.open would give a
    # database without one (empty, or holding only the inventory's store_meta) a new,
    # empty store, and the copy would move nothing.
    where = spec.describe()
    with contextlib.closing(connect(spec.location, password, autocommit=True)) as conn:
        try:
            if conn.execute("SELECT to_regclass('store_meta')").fetchone() == (None,):
                return False
            found = conn.execute("SELECT 1 FROM store_meta WHERE key = 'schema_version'")
            return found.fetchone() is not None
        except psycopg.Error as exc:
            raise _failed(where, "cannot read", exc) from None


def _same(a: StoreSpec, b: StoreSpec, a_id: str, b_id: str) -> bool:
    if a.kind != b.kind:
        return False
    if a.kind == "sqlite":
        return os.path.samefile(a.location, b.location)
    # Two databases never share a store id (it is random), unless one was restored
    # from the other's dump: refusing that pair too is the safe side.
    return a_id == b_id


# -- the two sides, per backend --------------------------------------------------------------
#
# A reader gives counts, rows and high-water marks from one snapshot; a writer counts,
# clears, writes and sets high-water marks inside one transaction, committed only by
# commit() (leaving the context without it rolls back). Each names its own store in the
# errors of its own database, whichever side of the copy the caller was in.


class _Side:
    _db_error: ClassVar[type[Exception]]

    def __init__(self, where: str, doing: str) -> None:
        self.where = where
        self._doing = doing

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except self._db_error as exc:
            raise _failed(self.where, self._doing, exc) from None


class _Reader(_Side, abc.ABC):
    @abc.abstractmethod
    def counts(self) -> dict[str, int]: ...

    @abc.abstractmethod
    def rows(self, table: Table) -> Iterator[Sequence[Any]]: ...

    @abc.abstractmethod
    def high_water(self, table: Table) -> int: ...


class _Writer(_Side, abc.ABC):
    @abc.abstractmethod
    def counts(self) -> dict[str, int]: ...

    @abc.abstractmethod
    def clear(self) -> None: ...

    @abc.abstractmethod
    def write(self, table: Table, rows: Iterator[Sequence[Any]]) -> None: ...

    @abc.abstractmethod
    def set_high_water(self, table: Table, high: int) -> None: ...

    @abc.abstractmethod
    def commit(self) -> None: ...


@contextlib.contextmanager
def _reader(spec: StoreSpec, password: str | None) -> Iterator[_Reader]:
    where = spec.describe()
    if spec.kind == "sqlite":
        conn = _sqlite_connect(spec.location, where)
        try:
            reader = _SqliteReader(conn, where, "cannot read")
            with reader._guard():
                conn.execute("PRAGMA query_only = ON")
                conn.execute("BEGIN")  # one snapshot for every read (WAL)
            yield reader
        finally:
            conn.close()
        return
    pg = connect(spec.location, password)
    try:
        pg.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        pg.read_only = True
        yield _PgReader(pg, where, "cannot read")
    finally:
        pg.close()  # ends the read-only transaction


@contextlib.contextmanager
def _writer(spec: StoreSpec, password: str | None) -> Iterator[_Writer]:
    where = spec.describe()
    if spec.kind == "sqlite":
        conn = _sqlite_connect(spec.location, where)
        try:
            writer = _SqliteWriter(conn, where, "cannot write")
            with writer._guard():
                conn.execute("PRAGMA synchronous = FULL")  # the commit survives a power cut
                conn.execute("BEGIN IMMEDIATE")
            yield writer
        finally:
            if conn.in_transaction:
                conn.rollback()
            conn.close()
        return
    pg = connect(spec.location, password)
    try:
        pg_writer = _PgWriter(pg, where, "cannot write")
        with pg_writer._guard():
            pg.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(_LOCK_TIMEOUT)))
            pg.execute(
                sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(
                    sql.SQL(", ").join(sql.Identifier(t.name) for t in TABLES)
                )
            )
        yield pg_writer
    finally:
        pg.close()  # rolls back unless committed


class _SqliteReader(_Reader):
    _db_error = sqlite3.Error

    def __init__(self, conn: sqlite3.Connection, where: str, doing: str) -> None:
        super().__init__(where, doing)
        self._conn = conn

    def counts(self) -> dict[str, int]:
        with self._guard():
            return _sqlite_counts(self._conn)

    def rows(self, table: Table) -> Iterator[Sequence[Any]]:
        with self._guard():
            cur = self._conn.execute(
                f"SELECT {', '.join(table.column_names)} FROM {table.name}"  # noqa: S608 - TABLES
                + _sqlite_where(table)
            )
            while batch := cur.fetchmany(_BATCH):
                yield from batch

    def high_water(self, table: Table) -> int:
        assert table.numbered is not None
        with self._guard():
            (most,) = self._conn.execute(
                f"SELECT coalesce(max({table.numbered}), 0) FROM {table.name}"  # noqa: S608
            ).fetchone()
            given = self._conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = ?", (table.name,)
            ).fetchone()
        return max(int(most), int(given[0]) if given else 0)


class _SqliteWriter(_Writer):
    _db_error = sqlite3.Error

    def __init__(self, conn: sqlite3.Connection, where: str, doing: str) -> None:
        super().__init__(where, doing)
        self._conn = conn

    def counts(self) -> dict[str, int]:
        with self._guard():
            return _sqlite_counts(self._conn)

    def clear(self) -> None:
        with self._guard():
            for table in TABLES:
                self._conn.execute(f"DELETE FROM {table.name}" + _sqlite_where(table))  # noqa: S608

    def write(self, table: Table, rows: Iterator[Sequence[Any]]) -> None:
        names = table.column_names
        insert = (
            f"INSERT INTO {table.name} ({', '.join(names)}) "  # noqa: S608 - TABLES
            f"VALUES ({', '.join('?' * len(names))})"
        )
        batch: list[Sequence[Any]] = []
        for row in rows:  # the source's errors are the source's
            batch.append(row)
            if len(batch) >= _BATCH:
                with self._guard():
                    self._conn.executemany(insert, batch)
                batch.clear()
        if batch:
            with self._guard():
                self._conn.executemany(insert, batch)

    def set_high_water(self, table: Table, high: int) -> None:
        # sqlite_sequence has no key: one row per table, replaced. AUTOINCREMENT then
        # numbers the next row max(this, the highest stored) + 1.
        with self._guard():
            self._conn.execute("DELETE FROM sqlite_sequence WHERE name = ?", (table.name,))
            self._conn.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table.name, high)
            )

    def commit(self) -> None:
        with self._guard():
            self._conn.execute("COMMIT")


def _sqlite_connect(path: str, where: str) -> sqlite3.Connection:
    try:
        return sqlite3.connect(path, isolation_level=None, timeout=_BUSY_TIMEOUT_S)
    except sqlite3.Error as exc:
        raise _failed(where, "cannot open", exc) from None


def _sqlite_counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {
        t.name: int(
            conn.execute(f"SELECT count(*) FROM {t.name}" + _sqlite_where(t)).fetchone()[0]  # noqa: S608
        )
        for t in TABLES
    }


def _sqlite_where(table: Table) -> str:
    return "" if table.where is None else f" WHERE {table.where}"


class _PgReader(_Reader):
    _db_error = psycopg.Error

    def __init__(self, conn: psycopg.Connection[Any], where: str, doing: str) -> None:
        super().__init__(where, doing)
        self._conn = conn

    def counts(self) -> dict[str, int]:
        with self._guard():
            return _pg_counts(self._conn)

    def rows(self, table: Table) -> Iterator[Sequence[Any]]:
        # A server-side cursor: a big table is read a batch at a time, not all at once.
        with self._guard(), self._conn.cursor(name=f"poa_copy_{table.name}") as cur:
            cur.itersize = _BATCH
            cur.execute(_pg_select(table))
            yield from cur

    def high_water(self, table: Table) -> int:
        assert table.numbered is not None
        # The identity sequence's last value (NULL before its first use) or the highest
        # number stored, whichever is higher.
        statement = sql.SQL(
            "SELECT greatest((SELECT max({column}) FROM {table}), "
            "pg_sequence_last_value(pg_get_serial_sequence({name}, {column_name})::regclass), "
            "0)"
        ).format(
            column=sql.Identifier(table.numbered),
            table=sql.Identifier(table.name),
            name=sql.Literal(table.name),
            column_name=sql.Literal(table.numbered),
        )
        with self._guard():
            row = self._conn.execute(statement).fetchone()
        return int(row[0]) if row else 0


class _PgWriter(_Writer):
    _db_error = psycopg.Error

    def __init__(self, conn: psycopg.Connection[Any], where: str, doing: str) -> None:
        super().__init__(where, doing)
        self._conn = conn

    def counts(self) -> dict[str, int]:
        with self._guard():
            return _pg_counts(self._conn)

    def clear(self) -> None:
        # In the transaction: a rollback brings the rows back.
        whole = [t for t in TABLES if t.where is None]
        with self._guard():
            self._conn.execute(
                sql.SQL("TRUNCATE {}").format(
                    sql.SQL(", ").join(sql.Identifier(t.name) for t in whole)
                )
            )
            for t in TABLES:
                if t.where is not None:
                    self._conn.execute(
                        sql.SQL("DELETE FROM {}").format(sql.Identifier(t.name)) + _pg_where(t)
                    )

    def write(self, table: Table, rows: Iterator[Sequence[Any]]) -> None:
        # Text COPY: PostgreSQL parses each value by its column's type, so SQLite's
        # 0/1 flags load into boolean columns, and an identity column takes the value
        # given (as OVERRIDING SYSTEM VALUE would).
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table.name),
            sql.SQL(", ").join(sql.Identifier(c) for c in table.column_names),
        )
        with self._guard(), self._conn.cursor() as cur, cur.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)

    def set_high_water(self, table: Table, high: int) -> None:
        assert table.numbered is not None
        # At 0 (an empty log from a source that never numbered a row): is_called false
        # at 1, so the next value is 1.
        with self._guard():
            self._conn.execute(
                "SELECT setval(pg_get_serial_sequence(%s, %s), %s, %s)",
                (table.name, table.numbered, max(high, 1), high > 0),
            )

    def commit(self) -> None:
        with self._guard():
            self._conn.commit()


def _pg_select(table: Table) -> sql.Composed:
    return sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in table.column_names),
        sql.Identifier(table.name),
    ) + _pg_where(table)


def _pg_where(table: Table) -> sql.Composable:
    # A condition of TABLES, this module's constant: SQL text, not a value.
    return sql.SQL("") if table.where is None else sql.SQL(" WHERE " + table.where)


def _pg_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in TABLES:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t.name)) + _pg_where(t)
        ).fetchone()
        counts[t.name] = int(row[0]) if row else 0
    return counts


# -- connections and errors --------------------------------------------------------------


def _failed(where: str, doing: str, exc: Exception) -> StoreError:
    return StoreError(
        StoreReason.DATABASE_ERROR, f"{where}: {doing}: {first_line(exc)}", path=where
    )
