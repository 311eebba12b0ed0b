"""Schema bootstrap shared by the gateway's SQLite files (inventory, state).

Each file is marked with ``PRAGMA application_id`` (whose file it is) and
``PRAGMA user_version`` (its schema version), both set by the schema script in the
transaction that creates the tables.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator


def schema_marks(conn: sqlite3.Connection) -> tuple[int, int]:
    """``(application_id, user_version)`` of the open file."""
    (app_id,) = conn.execute("PRAGMA application_id").fetchone()
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    return int(app_id), int(version)


def create_schema_once(
    conn: sqlite3.Connection,
    *,
    schema: str,
    application_id: int,
    foreign: Callable[[str], Exception],
) -> None:
    """Create the tables unless another process already has.

    Runs in an IMMEDIATE transaction so two processes opening the same new file do not
    both create it. Raises ``foreign(what)`` for a file that belongs to something else.
    """
    with immediate(conn):
        app_id, version = schema_marks(conn)
        if version == 0:
            # user_version is set in the transaction that creates the tables, so a file
            # with tables but no version was written by something else.
            tables = [
                name
                for (name,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            ]
            if tables:
                raise foreign(f"tables {', '.join(tables)[:200]}")
            for statement in schema.split(";"):
                if statement.strip():
                    conn.execute(statement)
        elif app_id != application_id:
            raise foreign(f"application_id {app_id:#x}")


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back if the block raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
