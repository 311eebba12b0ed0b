"""Leader and standby: the lease keeper of one gateway process (issue 12, docs/ha.md).

Theory of operation
-------------------
With the state in PostgreSQL, any number of gateway processes run against one database;
the holder of the lease (gateway/state/lease.py) is the leader, the only one connected
to the broker. :class:`LeaseKeeper` is one process's side of it:

* **Standby.** :meth:`LeaseKeeper.acquire` tries to take the lease every ``ha.renew``
  until it gets it, recording the process as a standby each time.
* **Leader.** Once taken, the state store is fenced with the epoch (every commit checks
  it in the database) and :meth:`LeaseKeeper.run` renews the lease every ``ha.renew``.
  Each renewal that succeeds moves the *local deadline* to the moment it was sent plus
  ``ha.lease`` less one ``ha.renew``, on the monotonic clock: before the lease can
  expire in the database, whatever the clocks of the hosts say.
* **Losing it.** :meth:`LeaseKeeper.valid` is true only before the local deadline and
  until the lease is known lost; the shell asks it, synchronously, before every
  acknowledgement and publish and before (re)connecting to the broker (gateway/service.py,
  gateway/transport/mqtt.py). So a process frozen past its deadline (SIGSTOP, a VM
  pause) finds, on waking, that it may do nothing, before any timer or socket event is
  handled. The lease is lost when a renewal finds it taken or expired, when the deadline
  passes without a renewal (the database unreachable), or when a commit is refused as
  fenced; :attr:`LeaseKeeper.lost` is then set, the leader steps down (the gateway is
  closed without acknowledging anything more) and the process becomes a standby again.

The order of a promotion matters: the lease first, then the state is loaded (so every
commit of the old leader is either in it or refused), then the broker connection under
the deployment's client id, which takes over the broker session with every message the
old leader had not acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

from .errors import GatewayError, StartupError, StartupReason
from .logs import JsonLog
from .state.errors import StoreError
from .state.lease import LeaseTable, LeaseView

__all__ = ["LeaseKeeper", "LeaseLost", "LossReason"]

_T = TypeVar("_T")

# A take or renewal may wait this long for the lease row (behind a commit in progress)
# before it counts as failed, as a share of ha.renew.
_LOCK_TIMEOUT_SHARE: Final = 0.8


class LossReason(enum.StrEnum):
    """Why a leader stepped down (a log field)."""

    TAKEN = "taken"  # a renewal found another holder, or the lease expired
    DEADLINE = "deadline"  # no renewal succeeded before the local deadline
    FENCED = "fenced"  # the database refused a commit: another epoch holds the lease
    STOPPING = "stopping"  # a clean stop: the lease is released


class LeaseLost(GatewayError):
    """This process no longer holds the leader lease: nothing more may be acknowledged,
    published or committed. Not the fault of any message: never quarantines one.

    Attributes:
        reason: a :class:`LossReason`.
        epoch: the epoch that was lost.
    """

    def __init__(self, reason: LossReason, epoch: int | None) -> None:
        super().__init__(f"leader lease lost ({reason}) at epoch {epoch}")
        self.reason = reason
        self.epoch = epoch


class LeaseKeeper:
    """One process's part in the leader lease. See the module docstring.

    Args:
        table: the lease table (its own database connection).
        lease_ms, renew_ms: ``ha.lease`` and ``ha.renew``.
        log: where role changes are said.
        version: this gateway's version, shown by status.
        monotonic: seconds on a monotonic clock (injected by tests).
    """

    def __init__(
        self,
        table: LeaseTable,
        *,
        lease_ms: int,
        renew_ms: int,
        log: JsonLog,
        version: str,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = table
        self.lease_s = lease_ms / 1000
        self.renew_s = renew_ms / 1000
        self.log = log
        self.version = version
        self._monotonic = monotonic
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="poa-lease")
        self.epoch: int | None = None
        self._deadline = 0.0  # monotonic seconds; valid() is false from here on
        self._lost_reason: LossReason | None = None
        self.lost = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._on_lost: list[Callable[[LeaseLost], None]] = []

    @property
    def run_id(self) -> str:
        """This process's identity as a holder."""
        return self.table.run_id

    @property
    def lost_reason(self) -> LossReason | None:
        """Why the lease held last was lost, None while it is held (or never was)."""
        return self._lost_reason

    @property
    def role(self) -> str:
        """``leader`` while the lease is held and valid, else ``standby``."""
        return "leader" if self.valid() else "standby"

    def valid(self) -> bool:
        """True while this process holds the lease and its local deadline has not passed.

        Synchronous and cheap: asked before every acknowledgement and publish."""
        return (
            self.epoch is not None
            and self._lost_reason is None
            and self._monotonic() < self._deadline
        )

    def on_lost(self, callback: Callable[[LeaseLost], None]) -> None:
        """Call ``callback`` (synchronously) when the lease is lost."""
        self._on_lost.append(callback)

    # -- standby --------------------------------------------------------------------

    async def acquire(self) -> int:
        """Wait as a standby until the lease is ours; return the new epoch.

        Raises:
            StartupError: ``client-id-conflict``: the lease was last held with another
                broker client id, so this instance would not take over the leader's
                broker session (its unacknowledged messages would stay there).
        """
        announced = False
        failures = 0
        while True:
            try:
                epoch = await self._call(self._try_take)
            except StoreError as exc:
                # Said at the first failure and then once a minute, not every renew.
                if failures % max(1, round(60 / self.renew_s)) == 0:
                    self.log.error(
                        "ha.lease_unreachable",
                        reason=exc.reason,
                        detail=exc.detail,
                        attempts=failures + 1,
                    )
                failures += 1
                epoch = None
            else:
                if failures:
                    self.log.warning("ha.lease_reachable", after_attempts=failures)
                failures = 0
            if epoch is not None:
                self._took(epoch)
                return epoch
            if not announced:
                announced = True
                self.log.info("ha.standby", instance=self.table.name, run_id=self.run_id)
            await asyncio.sleep(self.renew_s)

    def _try_take(self) -> int | None:
        # In the executor's thread.
        self.table.heartbeat(role="standby", epoch=None, version=self.version)
        current = self.table.read()
        if current is not None and current.client_id != self.table.client_id:
            raise StartupError(
                StartupReason.CLIENT_ID_CONFLICT,
                f"this instance's broker.client_id {self.table.client_id!r} differs from "
                f"the deployment's {current.client_id!r} (last leader: "
                f"{current.holder_name}): every instance sharing a state database must "
                "use the same client id, or a new leader would not get the old one's "
                "unacknowledged messages",
            )
        sent = self._monotonic()
        epoch = self.table.take()
        if epoch is not None:
            self._deadline = sent + self.lease_s - self.renew_s
            self.table.heartbeat(role="leader", epoch=epoch, version=self.version)
        return epoch

    def _took(self, epoch: int) -> None:
        self.epoch = epoch
        self._lost_reason = None
        self.lost = asyncio.Event()
        self._arm()
        self.log.info("ha.leader", instance=self.table.name, run_id=self.run_id, epoch=epoch)

    # -- leader ---------------------------------------------------------------------

    async def run(self) -> None:
        """Renew the lease every ``ha.renew`` until it is lost (then return)."""
        while not self.lost.is_set():
            await asyncio.sleep(self.renew_s)
            if self.lost.is_set():
                return
            epoch = self.epoch
            assert epoch is not None
            sent = self._monotonic()
            try:
                ours = await self._call(self.table.renew, epoch)
            except StoreError as exc:
                # Tried again at the next tick; the local deadline decides.
                self.log.warning("ha.renew_failed", reason=exc.reason, detail=exc.detail)
                continue
            if not ours:
                self.lose(LossReason.TAKEN)
                return
            if self.valid():
                self._deadline = sent + self.lease_s - self.renew_s
                self._arm()
            with contextlib.suppress(StoreError):
                await self._call(
                    self.table.heartbeat, role="leader", epoch=epoch, version=self.version
                )

    def lose(self, reason: LossReason) -> None:
        """The lease is lost (or given up): from now on :meth:`valid` is false."""
        if self._lost_reason is not None:
            return
        self._lost_reason = reason
        if self._timer is not None:
            self._timer.cancel()
        self.lost.set()
        error = LeaseLost(reason, self.epoch)
        if reason is not LossReason.STOPPING:
            self.log.warning(
                "ha.stepped_down", reason=reason.value, epoch=self.epoch, run_id=self.run_id
            )
        for callback in self._on_lost:
            callback(error)

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, self._deadline - self._monotonic())
        self._timer = loop.call_later(delay, self._deadline_passed)

    def _deadline_passed(self) -> None:
        if self._lost_reason is None and not self.valid():
            self.lose(LossReason.DEADLINE)
        elif self._lost_reason is None:
            self._arm()  # renewed meanwhile

    async def release(self) -> None:
        """Give the lease up (a clean stop), so a standby takes over at once."""
        epoch = self.epoch
        self.lose(LossReason.STOPPING)
        if epoch is not None:
            with contextlib.suppress(StoreError):
                await self._call(self.table.release, epoch)
                self.log.info("ha.released", epoch=epoch, run_id=self.run_id)
        self.epoch = None

    # -- status and life cycle ------------------------------------------------------

    async def view(self) -> LeaseView | None:
        """The lease and every instance, as the database has them."""
        return await self._call(self.table.view)

    async def close(self) -> None:
        """Release the lease if held, forget this instance and close the connection."""
        if self.epoch is not None and self._lost_reason is None:
            await self.release()
        with contextlib.suppress(StoreError):
            await self._call(self.table.forget_self)
        with contextlib.suppress(StoreError):
            await self._call(self.table.forget_stale)
        await self._call(self.table.close)
        self._executor.shutdown(wait=True)

    async def _call(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))
