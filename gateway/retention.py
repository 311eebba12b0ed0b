"""Retention: what housekeeping deletes once it is past ``[retention]`` (docs/decisions.md
D31, docs/operations.md "Retention").

Theory of operation
-------------------
The state store's rows are pruned by queued, idempotent writes (gateway/state/protocol.py),
each deleting at most ``PRUNE_BATCH_ROWS`` rows, issued by ``Gateway._prune`` at most every
:data:`PRUNE_EVERY_MS`: a backlog (after a long downtime, or a retention shortened) goes a
batch per pass, never in one long transaction that every acknowledgement would wait for.

Two kinds need more than a cutoff, and live here:

- **Counters of devices gone from the inventory.** The counters table has no time, and
  a counter protects against a replayed CS06 for as long as its device may come back
  (an immediate CS06 carries no time of its own: a replay opens a window *now*). So
  "gone" is defined by the inventory: a counter whose device the inventory no longer
  lists is deleted once the device has been seen absent for ``retention.counters``.
  :class:`CounterSweep` walks the counters a page per pass and remembers when it first
  saw each absent; that memory is the process's own (no schema change for it), so a
  restart starts the count again: counters are then kept longer, never shorter. While
  the device is absent every CS06 for it is refused (``unknown-device``) whatever its
  counter; the delete names the value read, so a counter raised meanwhile stays.
- **Report files.** :func:`sweep_outbox` deletes, in a thread, the regular files of the
  outbox, and of its ``sent/`` folder (where the delivery unit moves what it handed
  over, systemd/poa-gateway-reports.service), whose names start with the reports' prefix
  and which were last written before the cutoff; links, other folders, temporary files
  and anything else stay.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

from gateway.state.protocol import StateStore

__all__ = ["COUNTER_PAGE", "PRUNE_EVERY_MS", "CounterSweep", "sweep_outbox"]

PRUNE_EVERY_MS: Final = 5 * 60_000
"""Housekeeping prunes at most this often: one batch of each kind per pass."""

COUNTER_PAGE: Final = 1_000
"""Counters looked at per pass; each costs an inventory lookup on the event loop."""

_LOOKUPS_PER_YIELD: Final = 100  # inventory lookups between two yields to the event loop
_ABSENT_MAX: Final = 100_000  # absent counters remembered at once (about 20 MB at most)


class CounterSweep:
    """Walks the counters a page per pass and deletes those of devices absent from the
    inventory for the retention (module docstring)."""

    def __init__(self) -> None:
        self._after: tuple[bytes, bytes] = (b"", b"")
        self._absent: dict[tuple[bytes, bytes], int] = {}  # key -> first seen absent (ms)

    async def step(
        self,
        store: StateStore,
        listed: Callable[[bytes], bool],
        now: int,
        retention_ms: int,
    ) -> int:
        """Look at the next page of counters; queue the deletes of those whose device
        ``listed`` says is absent and was first seen absent ``retention_ms`` ago or more.
        Returns how many deletes were queued."""
        page = store.counters_after(self._after, COUNTER_PAGE)
        # A short page is the end of the table: the next pass starts again from the top.
        self._after = (page[-1][0], page[-1][1]) if len(page) == COUNTER_PAGE else (b"", b"")
        deleted = 0
        for i, (originator, device, counter) in enumerate(page):
            if i and i % _LOOKUPS_PER_YIELD == 0:
                await asyncio.sleep(0)
            key = (originator, device)
            if listed(device):
                self._absent.pop(key, None)
                continue
            since = self._absent.get(key)
            if since is None:
                if len(self._absent) < _ABSENT_MAX:
                    self._absent[key] = now
                continue
            if now - since >= retention_ms:
                store.delete_counter(originator, device, counter)
                del self._absent[key]
                deleted += 1
        return deleted


SENT: Final = "sent"
"""The outbox's folder of delivered reports (systemd/poa-gateway-reports.service)."""


def sweep_outbox(outbox: Path, prefix: str, before_ms: int) -> list[str]:
    """Delete the report files of ``outbox`` and of ``outbox/sent`` last written before
    ``before_ms``: regular files (never a link, which is not followed either) named
    ``<prefix>_...``, i.e. a report and its siblings (``.csv.sig``, ``.xlsx``); returns
    their names (``sent/NAME`` for the delivered ones). ``sent`` is swept only when it
    is a real folder, not a link. Blocking: run it in a thread."""
    removed = _sweep(outbox, prefix, before_ms)
    sent = outbox / SENT
    if sent.is_dir() and not sent.is_symlink():
        removed += [f"{SENT}/{name}" for name in _sweep(sent, prefix, before_ms)]
    return sorted(removed)


def _sweep(outbox: Path, prefix: str, before_ms: int) -> list[str]:
    removed: list[str] = []
    try:
        entries = os.scandir(outbox)
    except FileNotFoundError:
        return removed
    with entries:
        for entry in entries:
            if not entry.name.startswith(prefix + "_"):
                continue  # temporary files start with "."; other files are not ours
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                if entry.stat(follow_symlinks=False).st_mtime_ns // 1_000_000 >= before_ms:
                    continue
                os.unlink(entry.path)
            except FileNotFoundError:
                continue  # removed meanwhile
            removed.append(entry.name)
    return removed
