"""The state stores' one error, :class:`StoreError`, and its reason codes.

Shared by every backend (gateway/state/sqlite.py, gateway/state/postgresql.py) and by the
modules they share (rows, group_commit), which is why it lives apart from any of them;
``gateway.state.sqlite`` re-exports both names.
"""

from __future__ import annotations

import enum

from gateway.errors import GatewayError

__all__ = ["StoreError", "StoreReason", "first_line"]


class StoreReason(enum.StrEnum):
    """The stable reason codes of :class:`StoreError`."""

    CANNOT_OPEN = "cannot-open"
    NOT_A_STORE = "not-a-store"
    UNSUPPORTED_SCHEMA = "unsupported-schema"
    DATABASE_ERROR = "database-error"
    CORRUPT_RECORD = "corrupt-record"
    INVALID_VALUE = "invalid-value"
    COMMIT_FAILED = "commit-failed"
    CLOSED = "closed"
    FENCED = "fenced"
    STATE_EMPTY = "state-empty"
    STATE_LOST = "state-lost"
    STATE_MISMATCH = "state-mismatch"


class StoreError(GatewayError):
    """The state store cannot be opened, read or written.

    Attributes:
        reason: stable, machine-readable code (a log field and a metric label):

            - ``cannot-open``: the file cannot be opened or created, or is not SQLite;
            - ``not-a-store``: a SQLite file, but another application's (wrong
              ``application_id``, or tables and no schema version);
            - ``unsupported-schema``: written by a newer gateway (``user_version``
              above :data:`SCHEMA_VERSION`);
            - ``database-error``: a read failed;
            - ``corrupt-record``: a stored suppression record does not decode;
            - ``invalid-value``: a value that cannot be stored (raised by the write
              method; nothing is queued), or an unknown ``synchronous`` level;
            - ``commit-failed``: a group commit failed; the writes it covered are not
              known to be durable (the daemon must not acknowledge their messages);
            - ``closed``: the store is closed, or was closed while a flush waited;
            - ``fenced``: this process no longer holds the leader lease (another
              instance took it: gateway/state/lease.py); nothing of the refused commit
              was written, and no later commit of this store can succeed;
            - ``state-empty``: the state file is zero bytes long (the store never leaves
              one: its state was lost);
            - ``state-lost``: the marker says a store was created here, but the state
              file is missing or holds no poa-gateway state;
            - ``state-mismatch``: the state file is not the store its marker was written
              for (another store's, an older backup), or the marker is unreadable.
        detail: the human-readable explanation (also ``str(error)``).
        path: the file concerned, when there is one.
    """

    def __init__(self, reason: StoreReason, detail: str, *, path: str | None = None) -> None:
        self.reason: StoreReason = reason
        self.detail = detail
        self.path = path
        super().__init__(detail)


def first_line(exc: BaseException) -> str:
    """The first line of a database error, for a one-line message: libpq's says what
    failed (refused, no such database, authentication) and never holds the password."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
