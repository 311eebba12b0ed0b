"""Group commit, shared by every state store backend.

Theory of operation
-------------------
(The reasons are in gateway/state/sqlite.py's docstring and docs/decisions.md D27.)
Each write method of a store only *queues* the write, as (statement, parameters), and
takes the next ticket: write n has ticket n. One background task on the event loop waits
to be woken, takes everything queued as one batch and hands it to the store's
:meth:`GroupCommitStore._commit`, run in the store's one-thread executor (the only
thread that touches the write connection), which applies it in one transaction and
commits. Then every :meth:`~GroupCommitStore.flush` whose ticket the batch covers
returns. Writes queued meanwhile form the next batch: no timer, one commit covers
whatever arrived during the previous one.

Originator counters are also kept in an overlay, (originator, device) -> (highest
counter queued, ticket of its last write), until the batch holding that ticket commits,
so that a read sees a counter before its commit (:meth:`GroupCommitStore._with_overlay`).

A failed commit puts the batch back at the head of the queue, in order, counts the
failure in ``commit_failures`` and ``last_error``, and fails every waiting flush with
``StoreError`` ``commit-failed``; the batch is retried with the next wake-up (a write or
a flush), once, never in a loop. ``close()`` commits nothing still queued (as in a
crash) and fails waiting flushes with ``closed``; ``aclose()`` flushes first.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, ClassVar, Self, TypeAlias

from .errors import StoreError, StoreReason
from .rows import check_eui, check_u64

__all__ = ["GroupCommitStore", "Op"]

Op: TypeAlias = tuple[str, tuple[Any, ...]]
"""A queued write: a statement and its parameters."""


class GroupCommitStore(abc.ABC):
    """The queue, tickets, waiters, counter overlay and life cycle of a state store.

    A base class rather than a component the store holds: the life cycle (``start``,
    ``flush``, ``aclose``, ``close``, ``pending``, the context managers) and the
    ``commits``/``commit_failures``/``last_error`` attributes are the store's own public
    API, which composition would have each backend forward one by one. A backend
    supplies :meth:`_commit` (apply one batch in one transaction, in the worker thread)
    and :meth:`_close_connections`, and queues its writes with :meth:`_enqueue`.

    Attributes:
        path: where the store is, for messages.
        commits: group commits that succeeded.
        commit_failures: group commits that failed.
        last_error: the error of the last failed commit, None once a commit succeeds.
    """

    _TASK_NAME: ClassVar[str] = "poa-store-commit"

    def __init__(self, path: str, executor: ThreadPoolExecutor, *, error_path: str | None) -> None:
        # error_path: the ``path`` of the errors the loop raises (None: none given).
        self.path = path
        self._error_path = error_path
        self.commits = 0
        self.commit_failures = 0
        self.last_error: StoreError | None = None
        self._executor = executor
        self._closed = False
        self._queue: list[Op] = []
        self._queued = 0  # writes ever queued; write n has ticket n
        self._committed = 0  # every ticket up to this one is committed
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        # (originator, device) -> (highest counter queued, ticket of its last write)
        self._overlay: dict[tuple[bytes, bytes], tuple[int, int]] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._fenced: StoreError | None = None  # set for good by a fenced commit

    # -- what a backend supplies ----------------------------------------------------------

    @abc.abstractmethod
    def _commit(self, batch: list[Op]) -> None:
        """Apply ``batch`` in one transaction and commit it; raise if it failed. Runs in
        the executor's thread."""

    @abc.abstractmethod
    def _close_connections(self) -> None:
        """Close the read and write connections (the writer in the executor's thread)."""

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the background commit task on the running event loop.

        Optional: the first write or :meth:`flush` made on an event loop starts it.
        Idempotent. Raises RuntimeError when called with no running loop.
        """
        self._check_open()
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run(), name=self._TASK_NAME)
            if self._queue:
                self._wake.set()

    async def flush(self) -> None:
        """Return when every write queued before this call is committed (durable).

        Raises:
            StoreError: ``commit-failed`` when the commit covering those writes failed
                (they are retried with the next batch), or ``closed`` when the store was
                closed meanwhile.
        """
        self._check_open()
        target = self._queued
        if target <= self._committed:
            return
        if self._fenced is not None:
            raise self._copy(self._fenced)
        self.start()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        assert self._wake is not None
        self._wake.set()
        await future

    async def aclose(self) -> None:
        """Flush queued writes, then close. The store is closed even if the flush fails.

        Raises:
            StoreError: ``commit-failed`` when the final flush failed (those writes are
                lost, as in a crash).
        """
        if self._closed:
            return
        try:
            await self.flush()
        finally:
            self.close()

    def close(self) -> None:
        """Close the connections and the worker thread (idempotent).

        Writes still queued are *not* committed (as in a crash); flushes still waiting
        raise ``StoreError(StoreReason.CLOSED)``. A commit already running in the worker
        thread is waited for, so its outcome is whatever the database made of it.
        """
        if self._closed:
            return
        self._closed = True
        # The loop may already be closed (a store closed after asyncio.run returned).
        with contextlib.suppress(RuntimeError):
            self._fail_waiters(self._closed_error())
        if self._task is not None and not self._task.done():
            with contextlib.suppress(RuntimeError):
                self._task.cancel()
        self._queue.clear()
        self._overlay.clear()
        self._close_connections()
        self._executor.shutdown(wait=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.aclose()
        else:
            self.close()

    @property
    def pending(self) -> int:
        """Writes queued and not yet committed (including those of a failed commit)."""
        return self._queued - self._committed

    # -- for the backend ------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise self._closed_error()

    def _enqueue(self, sql: str, params: tuple[Any, ...]) -> None:
        self._check_open()
        if self._fenced is not None:
            raise self._copy(self._fenced)
        self._queue.append((sql, params))
        self._queued += 1
        if self._task is None:
            try:
                self.start()
            except RuntimeError:
                return  # no event loop yet: the first flush() starts the task
        assert self._wake is not None
        self._wake.set()

    def _enqueue_counter(self, sql: str, originator: bytes, device: bytes, counter: int) -> None:
        """Queue ``sql`` with (originator, device, counter) and raise the overlay."""
        key = (check_eui("originator", originator), check_eui("device", device))
        self._enqueue(sql, (*key, check_u64("counter", counter)))
        previous = self._overlay.get(key)
        best = counter if previous is None else max(counter, previous[0])
        self._overlay[key] = (best, self._queued)

    def _with_overlay(self, key: tuple[bytes, bytes], stored: int | None) -> int | None:
        """The counter of ``key``: the ``stored`` one or a higher one still queued."""
        pending = self._overlay.get(key)
        if pending is None:
            return stored
        return pending[0] if stored is None else max(stored, pending[0])

    # -- the commit loop ------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        wake = self._wake
        try:
            while True:
                await wake.wait()
                wake.clear()
                if not self._queue:
                    continue
                batch, self._queue = self._queue, []
                last = self._queued
                try:
                    await loop.run_in_executor(self._executor, self._commit, batch)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - any failure fails the waiters
                    self._queue[:0] = batch  # retried, in order, with the next batch
                    self._failed(exc, len(batch))
                else:
                    self._committed_through(last)
        except asyncio.CancelledError:
            self._fail_waiters(self._closed_error())
            raise

    def _committed_through(self, last: int) -> None:
        self._committed = last
        self.commits += 1
        self.last_error = None
        done = [key for key, (_, ticket) in self._overlay.items() if ticket <= last]
        for key in done:
            del self._overlay[key]
        still: list[tuple[int, asyncio.Future[None]]] = []
        for target, future in self._waiters:
            if target > last:
                still.append((target, future))
            elif not future.done():
                future.set_result(None)
        self._waiters = still

    def _failed(self, exc: Exception, size: int) -> None:
        self.commit_failures += 1
        if isinstance(exc, StoreError) and exc.reason is StoreReason.FENCED:
            # Another instance leads now: no retry can ever succeed, and the writes
            # belong to messages that are not acknowledged (the broker keeps them for
            # the new leader). Dropped, and every flush from now on says why.
            self._fenced = exc
            self._queue.clear()
            self._overlay.clear()
            self.last_error = exc
            self._fail_waiters(exc)
            return
        error = StoreError(
            StoreReason.COMMIT_FAILED,
            f"{self.path}: commit of {size} write(s) failed: {exc}",
            path=self._error_path,
        )
        error.__cause__ = exc
        self.last_error = error
        # Every waiter fails, also those waiting on later writes: those cannot be
        # committed before the failed ones, and a retry waits for the next wake-up.
        self._fail_waiters(error)

    def _fail_waiters(self, error: StoreError) -> None:
        waiters, self._waiters = self._waiters, []
        for _, future in waiters:
            if not future.done():
                future.set_exception(self._copy(error))

    @staticmethod
    def _copy(error: StoreError) -> StoreError:
        # One exception object per raise: each raise adds to its traceback.
        mine = StoreError(error.reason, error.detail, path=error.path)
        mine.__cause__ = error.__cause__
        return mine

    @property
    def fenced(self) -> bool:
        """True once a commit was refused because this process lost the leader lease."""
        return self._fenced is not None

    def _closed_error(self) -> StoreError:
        return StoreError(StoreReason.CLOSED, f"{self.path}: store closed", path=self._error_path)
