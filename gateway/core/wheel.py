"""A hierarchical timer wheel: when to clean up tracked activations.

Theory of operation
-------------------
The wheel follows Varghese & Lauck's hierarchical timing wheels, as Kafka's TimingWheel
and the Linux timer wheel do. It is pure: it never reads a clock. The caller passes the
current wall-clock UTC time in integer milliseconds to :meth:`TimerWheel.advance`, and
the deadlines it schedules are UTC milliseconds too.

*Ticks and digits.* Time is cut into ticks of ``tick_ms`` (tick ``t`` covers
``[t * tick_ms, (t + 1) * tick_ms)``, aligned to the epoch, not to the start time).
Write a tick number in base ``wheel_size`` (W): digit ``k`` is the slot index at level
``k``, so a level-0 slot is one tick wide and a level-``k`` slot is ``W**k`` ticks wide.
An entry is filed at the lowest level ``k`` at which its tick agrees with the current
tick in every digit above ``k``, in the slot named by its own digit ``k``. Two facts
follow and carry the whole design:

* At each level the occupied slots lie at or after the current tick's digit (strictly
  after it above level 0) and never wrap round, so "the first non-empty slot from the
  cursor" is simply the lowest set bit of the level's occupancy bitmap.
* Every entry at a lower level is due before every entry at a higher level (the lower
  one agrees with the current tick on the digit where the higher one is ahead of it).
  The earliest deadline is therefore the minimum of one slot: the first occupied slot
  of the lowest non-empty level. :meth:`TimerWheel.next_deadline` computes it that way
  and caches it until an entry that might have been the minimum leaves.

*Cascading.* When time reaches the start of an occupied level-``k`` slot (``k > 0``), its
entries now agree with the current tick on digit ``k``, so they are re-filed at lower
levels. Only cascading moves an entry, at most once per level (and once out of overflow).
Each handle records the bucket it sits in, and cascading updates that record, which is
what makes :meth:`TimerWheel.cancel` O(1).

*Big jumps.* :meth:`TimerWheel.advance` never steps tick by tick. It repeatedly takes
the first occupied slot of the lowest non-empty level; if that slot starts after the
target tick, nothing else is due and the loop stops. Otherwise a level-0 slot is fired
and a higher slot is cascaded (jumping the current tick straight to its start, which is
safe because every lower level is empty at that moment; entries already due are fired
without being moved). The cost is proportional to the occupied slots visited, the entries
moved and the sorting of those returned, whatever the number of ticks skipped: a jump of
three days over 1.4 million entries visits about fifty slots, not 259,200 ticks. The
wheel also keeps a lower bound on the first tick at which anything can fire or cascade,
so the usual once-a-tick call with nothing due costs O(1).

*Overflow.* With the defaults (1 s ticks, W = 64, 6 levels) the levels span 64**6 s,
about 2,177 years. An entry whose tick differs from the current tick above the top level
goes to a single overflow bucket. It is re-examined only when the top level wraps, i.e.
when the current tick enters a new rotation of ``W**levels`` ticks: the wheel then jumps
to the rotation of the earliest overflow entry and re-files the entries of that rotation
into the levels. There is no upper bound on deadlines: times near the year 9999
(253402300799999 ms) and beyond are accepted and fire exactly like any other, because
Python integers do not overflow.

*Exactness, and what the wheel is for.* :meth:`TimerWheel.advance` returns exactly the
entries whose deadline is at or before the time passed, even inside a tick: entries of
the current tick whose deadline is still ahead stay in their slot. But a caller that
advances the wheel once per tick sees an entry up to one tick after its deadline. So the
wheel decides *when to clean up* (forget an activation window, expire an alert id),
never *whether to suppress*: suppression compares exact timestamps against the stored
window, so a bucket that fires late cannot make an alert inside or outside a window.

*Edge cases.* A deadline at or before the current time is accepted and filed in the
current tick's slot; the next :meth:`TimerWheel.advance` returns it. Time never moves
backwards: advancing to an earlier time is a no-op that returns nothing.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Generic, TypeVar

__all__ = ["TimerHandle", "TimerWheel"]

T = TypeVar("T")

# Fired entries are returned by (deadline, insertion order).
_FIRING_ORDER = attrgetter("_deadline", "_seq")

_INACTIVE = -1


class TimerHandle(Generic[T]):
    """A scheduled entry; pass it to :meth:`TimerWheel.cancel` to withdraw it.

    Handles are created by :meth:`TimerWheel.schedule` only.
    """

    __slots__ = ("_deadline", "_item", "_pos", "_seq")

    def __init__(self, deadline_ms: int, item: T, seq: int) -> None:
        self._deadline = deadline_ms
        self._item = item
        self._seq = seq
        # Index of the bucket holding this handle in its wheel, or _INACTIVE once the
        # entry has fired or been cancelled. Cascading keeps it current.
        self._pos = _INACTIVE

    @property
    def deadline_ms(self) -> int:
        """The deadline, in milliseconds since the epoch (UTC)."""
        return self._deadline

    @property
    def item(self) -> T:
        """The value scheduled with this deadline."""
        return self._item

    @property
    def active(self) -> bool:
        """True until the entry has been returned by ``advance`` or cancelled."""
        return self._pos != _INACTIVE

    def __repr__(self) -> str:
        state = "active" if self.active else "inactive"
        return f"TimerHandle(deadline_ms={self._deadline}, item={self._item!r}, {state})"


class TimerWheel(Generic[T]):
    """Entries with millisecond deadlines, returned in deadline order as time advances.

    Args:
        start_ms: the current time, in milliseconds since the epoch (UTC); at least 0.
        tick_ms: width of a level-0 slot, in milliseconds.
        wheel_size: slots per level; a power of two, at least 2.
        levels: number of levels; deadlines beyond ``wheel_size ** levels`` ticks go to
            an overflow bucket (see the module docstring), so any deadline is accepted.

    Raises:
        ValueError: a parameter is out of range.
    """

    __slots__ = (
        "_bits",
        "_buckets",
        "_count",
        "_level_of",
        "_mask",
        "_min_ms",
        "_min_valid",
        "_now_ms",
        "_occupied",
        "_overflow",
        "_seq",
        "_tick",
        "_tick_ms",
        "_top_shift",
        "_wake_tick",
    )

    def __init__(
        self, start_ms: int, *, tick_ms: int = 1000, wheel_size: int = 64, levels: int = 6
    ) -> None:
        if start_ms < 0:
            raise ValueError(f"start_ms must be >= 0, got {start_ms}")
        if tick_ms < 1:
            raise ValueError(f"tick_ms must be >= 1, got {tick_ms}")
        if wheel_size < 2 or wheel_size & (wheel_size - 1):
            raise ValueError(f"wheel_size must be a power of two >= 2, got {wheel_size}")
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        self._tick_ms = tick_ms
        # A power-of-two size makes a tick's base-W digits bit fields: an entry's level is
        # read off the bit length of (its tick XOR the current tick) in one table lookup.
        bits = wheel_size.bit_length() - 1
        self._bits = bits
        self._mask = wheel_size - 1
        self._top_shift = bits * levels
        self._level_of = [max(length - 1, 0) // bits for length in range(self._top_shift + 1)]
        # Buckets of level k are _buckets[k << bits : (k + 1) << bits]; the overflow
        # bucket comes last. Sets give O(1) removal on cancel.
        self._overflow = levels << bits
        self._buckets: list[set[TimerHandle[T]]] = [set() for _ in range(self._overflow + 1)]
        # One bitmap per level, bit i set when slot i is non-empty.
        self._occupied = [0] * levels
        self._now_ms = start_ms
        self._tick = start_ms // tick_ms
        # A lower bound on the first tick at which advance has anything to fire or
        # cascade; below it, advance only moves the clock. The next top-level wrap is
        # always a valid bound, whatever the overflow bucket holds.
        self._wake_tick = self._next_wrap(self._tick)
        self._count = 0
        self._seq = 0
        self._min_ms: int | None = None
        self._min_valid = True

    @property
    def current_ms(self) -> int:
        """The time the wheel has been advanced to, in milliseconds since the epoch."""
        return self._now_ms

    @property
    def tick_ms(self) -> int:
        """Width of a level-0 slot, in milliseconds."""
        return self._tick_ms

    def __len__(self) -> int:
        """The number of pending (scheduled, not fired, not cancelled) entries."""
        return self._count

    def schedule(self, deadline_ms: int, item: T) -> TimerHandle[T]:
        """Schedule ``item`` to be returned by ``advance`` once time reaches ``deadline_ms``.

        O(1). A deadline at or before the current time is allowed: the entry is returned
        by the next ``advance``.
        """
        handle = TimerHandle(deadline_ms, item, self._seq)
        self._seq += 1
        self._count += 1
        # An overdue entry goes in the current tick's slot, which advance always examines.
        start = self._file(handle, max(deadline_ms // self._tick_ms, self._tick))
        self._wake_tick = min(self._wake_tick, start)
        if self._min_valid and (self._min_ms is None or deadline_ms < self._min_ms):
            self._min_ms = deadline_ms
        return handle

    def cancel(self, handle: TimerHandle[T]) -> bool:
        """Withdraw a scheduled entry. O(1).

        Returns:
            True if the entry was pending; False if it had already fired or been
            cancelled.

        Raises:
            ValueError: the handle was scheduled on another wheel.
        """
        pos = handle._pos
        if pos == _INACTIVE:
            return False
        try:
            bucket = self._buckets[pos]
            bucket.remove(handle)
        except (IndexError, KeyError):
            raise ValueError(f"{handle!r} was not scheduled on this wheel") from None
        handle._pos = _INACTIVE
        self._count -= 1
        if not bucket and pos != self._overflow:
            self._occupied[pos >> self._bits] &= ~(1 << (pos & self._mask))
        # Another entry may share the minimum; recompute lazily rather than scan now.
        # (_wake_tick stays: a lower bound remains a lower bound when entries leave.)
        if self._min_valid and handle._deadline == self._min_ms:
            self._min_valid = False
        return True

    def advance(self, now_ms: int) -> list[tuple[int, T]]:
        """Move time forward to ``now_ms`` and return the entries that are due.

        Returns exactly the ``(deadline_ms, item)`` pairs whose deadline is at or before
        ``now_ms``, sorted by deadline and then by the order they were scheduled in;
        entries due later stay, even within the current tick. Time never moves backwards:
        a ``now_ms`` before :attr:`current_ms` is a no-op that returns ``[]``.

        The cost depends on the occupied slots visited and the entries moved or returned,
        not on how far time moves (see the module docstring).
        """
        if now_ms < self._now_ms:
            return []
        target = now_ms // self._tick_ms
        if target < self._wake_tick:
            # No slot starts by the target tick (the usual tick with nothing due): every
            # entry still sits at a valid level relative to the target.
            self._tick = target
            self._now_ms = now_ms
            return []
        if (
            target == self._tick
            and self._min_valid
            and (self._min_ms is None or self._min_ms > now_ms)
        ):
            # A later call within the same tick, with nothing due yet.
            self._now_ms = now_ms
            return []
        bits = self._bits
        buckets = self._buckets
        occupied = self._occupied
        levels = len(occupied)
        fired: list[TimerHandle[T]] = []
        wake: int | None = None
        while True:
            level = 0
            while level < levels and not occupied[level]:
                level += 1
            if level == levels:
                if buckets[self._overflow] and self._refill_from_overflow(target, now_ms, fired):
                    continue
                break
            bitmap = occupied[level]
            index = (bitmap & -bitmap).bit_length() - 1
            shift = level * bits
            above = shift + bits
            start = ((self._tick >> above) << above) | (index << shift)
            if start > target:
                wake = start
                break
            pos = (level << bits) | index
            bucket = buckets[pos]
            if level == 0 and start == target:
                # The target tick itself: only what is due by now_ms, to the millisecond.
                due = [handle for handle in bucket if handle._deadline <= now_ms]
                bucket.difference_update(due)
                if not bucket:
                    occupied[0] &= ~(1 << index)
                fired.extend(due)
                # Every other entry is due after the target tick. Where the next one sits
                # is left to the next call: the target tick is a valid lower bound.
                wake = target
                break
            buckets[pos] = set()
            occupied[level] &= ~(1 << index)
            if level == 0:
                fired.extend(bucket)
                continue
            # Every lower level is empty, so the current tick may jump to the slot start;
            # the slot's entries then agree with it on this digit and go lower.
            self._tick = start
            self._refile(bucket, now_ms, fired)
        self._tick = target
        self._now_ms = now_ms
        self._wake_tick = self._next_wrap(target) if wake is None else wake
        if not fired:
            return []
        for handle in fired:
            handle._pos = _INACTIVE
        self._count -= len(fired)
        self._min_valid = False
        fired.sort(key=_FIRING_ORDER)
        return [(handle._deadline, handle._item) for handle in fired]

    def next_deadline(self) -> int | None:
        """The earliest pending deadline, exactly, or None when the wheel is empty.

        This is what a caller arms its one real timer with. It does not scan all
        entries: only the first occupied slot of the lowest non-empty level, and the
        result is cached until an entry that may have been the earliest leaves.
        """
        if not self._min_valid:
            self._min_ms = self._earliest()
            self._min_valid = True
        return self._min_ms

    def _earliest(self) -> int | None:
        for level, bitmap in enumerate(self._occupied):
            if bitmap:
                index = (bitmap & -bitmap).bit_length() - 1
                bucket = self._buckets[(level << self._bits) | index]
                return min(handle._deadline for handle in bucket)
        overflow = self._buckets[self._overflow]
        return min((handle._deadline for handle in overflow), default=None)

    def _next_wrap(self, tick: int) -> int:
        top = self._top_shift
        return ((tick >> top) + 1) << top

    def _file(self, handle: TimerHandle[T], tick: int) -> int:
        # File at the level of the highest base-W digit where tick (>= the current tick)
        # differs from the current tick; differing above the top level means overflow.
        # Returns the first tick at which advance must look at the entry again.
        length = (tick ^ self._tick).bit_length()
        if length > self._top_shift:
            handle._pos = self._overflow
            self._buckets[self._overflow].add(handle)
            return self._next_wrap(self._tick)
        level = self._level_of[length]
        shift = level * self._bits
        index = (tick >> shift) & self._mask
        pos = (level << self._bits) | index
        self._occupied[level] |= 1 << index
        handle._pos = pos
        self._buckets[pos].add(handle)
        return (tick >> shift) << shift

    def _refile(
        self, handles: set[TimerHandle[T]], now_ms: int, fired: list[TimerHandle[T]]
    ) -> None:
        # _file for a whole cascaded bucket, inlined: cascades move most entries once or
        # twice, so this loop is the bulk of the expiry cost. Entries already due skip
        # the move and go straight to fired.
        tick_ms = self._tick_ms
        current = self._tick
        bits = self._bits
        mask = self._mask
        top_shift = self._top_shift
        level_of = self._level_of
        buckets = self._buckets
        occupied = self._occupied
        overflow = self._overflow
        for handle in handles:
            deadline = handle._deadline
            if deadline <= now_ms:
                fired.append(handle)
                continue
            tick = deadline // tick_ms
            length = (tick ^ current).bit_length()
            if length > top_shift:
                pos = overflow
            else:
                level = level_of[length]
                index = (tick >> (level * bits)) & mask
                pos = (level << bits) | index
                occupied[level] |= 1 << index
            handle._pos = pos
            buckets[pos].add(handle)

    def _refill_from_overflow(self, target: int, now_ms: int, fired: list[TimerHandle[T]]) -> bool:
        # Called when every level is empty. Overflow entries lie in later rotations of
        # W**levels ticks than the current tick; nothing there is due before the top
        # level wraps, so the common case costs one comparison and no scan.
        if self._next_wrap(self._tick) > target:
            return False
        overflow = self._buckets[self._overflow]
        earliest = min(handle._deadline for handle in overflow) // self._tick_ms
        top = self._top_shift
        rotation_start = (earliest >> top) << top
        if rotation_start > target:
            return False
        self._buckets[self._overflow] = set()
        self._tick = rotation_start
        self._refile(overflow, now_ms, fired)
        return True
