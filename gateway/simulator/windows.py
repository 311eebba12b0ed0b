"""MP102B's suppression windows, re-stated for the ground truth.

Theory of operation
-------------------
The scorecard is only worth something if its "should have been suppressed" does not
come from the code it judges. So this module states the window rules again, from
WIRE.md and docs/engine.md, independently of :mod:`gateway.core.engine`, and in simulated
time. ``tests/test_simulator.py`` then checks that the two agree on every AD1 of a
generated timeline: a disagreement is a bug in one of them.

The rules, for commands that pass every check (a trusted signature by a Supplier, the
meter's registered one where the inventory names it, payload and header counters equal,
not a replay, a SMETS2 Landis+Gyr ESME on the GUID list); anything else opens nothing:

- a window belongs to the CHF on the ESME's HAN, starts at the execution time (the
  arrival time for on-demand, ExecutionDateTime for future-dated) and lasts the window
  duration; the lead tolerance before the start also counts: ``start - lead <= t < end``;
- an ESME holds at most one *pending* activation (start still in the future): any new
  CS06 replaces it, a cancellation removes it; a window already running is never cut
  short by a command;
- outcome 1 or 2 (no image held, hash mismatch), matched by ESME and counter, closes
  the window at the outcome's arrival, or drops it when that is not after its start;
- an ended window is kept for ``retain_ms`` after its end (the gateway's
  ``suppression.retain``), so an AD1 raised inside it still counts when it *arrives*
  late; after that it is forgotten. After an early close the window ends at the
  outcome's arrival and is kept the same way.

Decisions are made *as of an alert's arrival*: an AD1 is judged against the windows
the gateway knows at that moment (commands and outcomes that arrived before it), at the
instant the CHF says it was raised. :class:`WindowBook` is fed the events in arrival
order and answers :meth:`WindowBook.covering` at any point.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

__all__ = ["CLOSING_OUTCOMES", "SUPPLIER_SIGNERS", "Signer", "Window", "WindowBook", "refusal_for"]

CLOSING_OUTCOMES: Final = frozenset({1, 2})
"""CS06 ExecutionOutcome codes that mean the meter never rebooted (GBCS ASN.1
``ActivateFirmwareExecutionOutcome``: 1 no image held, 2 hash mismatch)."""


class Window(msgspec.Struct, kw_only=True):
    """One activation's window, in simulated ms; mutable while the book is played."""

    chf: bytes
    esme: bytes
    counter: int
    command_id: int
    start_ms: int
    end_ms: int
    """The end as of now: ``planned_end_ms``, or earlier once an outcome closed it."""
    planned_end_ms: int
    future_dated: bool
    tracked_at: int
    """Arrival of the command that opened it."""
    removed_at: int | None = None
    """Arrival of the command (replacement, cancellation) or outcome that removed it
    before it started; None while it stands."""
    closed_at: int | None = None
    """Arrival of the outcome that closed it early, if any."""

    def covers(self, instant: int, now: int, lead_ms: int, retain_ms: int) -> bool:
        """``start - lead <= instant < end``, the window still held at ``now``
        (not removed, and not ended more than ``retain_ms`` ago)."""
        return (
            self.removed_at is None
            and now < self.end_ms + retain_ms
            and self.start_ms - lead_ms <= instant < self.end_ms
        )

    def covered_as_of(self, instant: int, arrival: int, lead_ms: int, retain_ms: int) -> bool:
        """Whether the gateway, judging at ``arrival``, finds ``instant`` in this window:
        what had arrived by then counts, what came later does not."""
        if self.tracked_at >= arrival:
            return False
        if self.removed_at is not None and self.removed_at < arrival:
            return False
        end = self.planned_end_ms
        if self.closed_at is not None and self.closed_at < arrival:
            end = min(end, self.closed_at)
        return arrival < end + retain_ms and self.start_ms - lead_ms <= instant < end

    def arrivals(self) -> list[int]:
        """The arrival times at which this window changed."""
        return [t for t in (self.tracked_at, self.removed_at, self.closed_at) if t is not None]

    def edges(self, lead_ms: int) -> list[int]:
        """The instants where coverage starts or stops."""
        return [self.start_ms - lead_ms, self.planned_end_ms]


class WindowBook:
    """The windows the gateway should hold, played forward in arrival order.

    Feed :meth:`command` and :meth:`outcome` in the order the gateway receives them,
    with non-decreasing ``at``; ask :meth:`covering` in between.
    """

    def __init__(self, *, window_ms: int, lead_ms: int, retain_ms: int) -> None:
        if window_ms <= 0 or lead_ms < 0 or retain_ms < 0:
            raise ValueError("window_ms must be positive, lead_ms and retain_ms not negative")
        self.window_ms = window_ms
        self.lead_ms = lead_ms
        self.retain_ms = retain_ms
        self._by_chf: dict[bytes, list[Window]] = {}
        self.history: list[Window] = []
        """Every window ever opened, in order, including removed ones."""

    def command(
        self,
        at: int,
        *,
        chf: bytes,
        esme: bytes,
        counter: int,
        command_id: int,
        execution_ms: int | None,
        cancel: bool = False,
    ) -> Window | None:
        """An *accepted* CS06 arrived (the caller applies the checks); returns the
        window it opened (None for a cancellation)."""
        for w in self._by_chf.get(chf, ()):
            if w.esme == esme and w.removed_at is None and w.start_ms > at:
                w.removed_at = at  # the pending activation is replaced or cancelled
        if cancel:
            return None
        start = at if execution_ms is None else execution_ms
        window = Window(
            chf=chf,
            esme=esme,
            counter=counter,
            command_id=command_id,
            start_ms=start,
            end_ms=start + self.window_ms,
            planned_end_ms=start + self.window_ms,
            future_dated=execution_ms is not None,
            tracked_at=at,
        )
        self._by_chf.setdefault(chf, []).append(window)
        self.history.append(window)
        return window

    def has_pending(self, chf: bytes, esme: bytes, at: int) -> bool:
        """Whether ``esme`` holds a pending activation at ``at`` (a new CS06 replaces it)."""
        return any(
            w.esme == esme and w.removed_at is None and w.start_ms > at
            for w in self._by_chf.get(chf, ())
        )

    def outcome(
        self, at: int, *, chf: bytes, esme: bytes, counter: int, code: int
    ) -> Window | None:
        """A CS06 response or 0x00CA alert with outcome ``code`` arrived; returns the
        window it closed or dropped, if any."""
        if code not in CLOSING_OUTCOMES:
            return None
        for w in self._by_chf.get(chf, ()):
            if w.esme == esme and w.counter == counter and w.removed_at is None:
                if at <= w.start_ms:
                    w.removed_at = at  # never started: dropped altogether
                else:
                    w.end_ms = min(w.end_ms, at)
                w.closed_at = at
                return w
        return None

    def covering(self, chf: bytes, instant: int, now: int) -> Window | None:
        """The first window of ``chf`` standing at ``now`` that covers ``instant``."""
        for w in self._by_chf.get(chf, ()):
            if w.covers(instant, now, self.lead_ms, self.retain_ms):
                return w
        return None

    def covering_as_of(self, chf: bytes, instant: int, arrival: int) -> Window | None:
        """As :meth:`covering`, for an alert arriving at ``arrival``, once the whole
        book has been played (for planning alerts around the firmware schedule)."""
        for w in self._by_chf.get(chf, ()):
            if w.covered_as_of(instant, arrival, self.lead_ms, self.retain_ms):
                return w
        return None

    def after_window(self, chf: bytes, instant: int, near_miss_ms: int) -> int | None:
        """A near miss: the time from the end of the latest window of ``chf`` that ran
        its course (neither removed nor closed early) to ``instant``, when it is at most
        ``near_miss_ms``; None otherwise. For an instant no window covers."""
        gaps = [
            instant - w.end_ms
            for w in self._by_chf.get(chf, ())
            if w.removed_at is None
            and w.closed_at is None
            and w.end_ms <= instant <= w.end_ms + near_miss_ms
        ]
        return min(gaps, default=None)

    def windows_of(self, chf: bytes) -> list[Window]:
        """Every window ever opened for ``chf`` (removed ones included)."""
        return list(self._by_chf.get(chf, ()))


Signer = Literal[
    "supplier",
    "other-supplier",
    "network-operator",
    "acb",
    "other-user",
    "impostor",
    "untrusted",
]
"""Who signed a simulated CS06: the Supplier with its own key; another Supplier (trusted,
but not the one the inventory registers for the meters it targets); a Network Operator,
the ACB or an Other User (trusted keys, roles that may not activate firmware); an
*impostor* claiming the Supplier's EUI-64 with the attacker's key (the signature cannot
verify); or the attacker as itself, a party the trust store does not know."""

SUPPLIER_SIGNERS: Final[frozenset[Signer]] = frozenset({"supplier", "other-supplier"})
"""The trusted signers whose certificates carry the Supplier role."""


def refusal_for(
    *,
    signer: Signer,
    smets: int,
    manufacturer: str,
    on_guid_list: bool,
    counter: int,
    last_counter: int | None,
    manufacturers: tuple[str, ...] = ("Landis+Gyr",),
    payload_counter: int | None = None,
    originator: bytes | None = None,
    registered_supplier: bytes | None = None,
) -> str | None:
    """Why MP102B's checks refuse a CS06 to an ESME (docs/engine.md, in the engine's
    order), or None when it is accepted. ``last_counter`` is the last one accepted from
    that originator for that ESME; ``payload_counter`` the payload's originator counter
    when it differs from the header's ``counter``; ``registered_supplier`` the meter's
    supplier as the inventory names it (None: not named, any Supplier will do)."""
    if signer == "impostor":
        return "bad-signature"
    if signer == "untrusted":
        return "untrusted-signer"
    if signer not in SUPPLIER_SIGNERS:
        return "wrong-role"
    if payload_counter is not None and payload_counter != counter:
        return "counter-mismatch"
    if smets != 2:
        return "not-smets2"
    wanted = {"".join(m.split()).casefold() for m in manufacturers}
    if "".join(manufacturer.split()).casefold() not in wanted:
        return "manufacturer-not-listed"
    if not on_guid_list:
        return "not-on-guid-list"
    if registered_supplier is not None and originator != registered_supplier:
        return "not-registered-supplier"
    if last_counter is not None and counter <= last_counter:
        return "replay"
    return None
