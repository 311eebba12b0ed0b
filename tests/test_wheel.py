"""The hierarchical timer wheel: unit behaviour, then a model check against a plain list."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from gateway.core.wheel import TimerHandle, TimerWheel

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
YEAR = 365 * DAY
START = 1_750_000_000_000  # 2025-06-15T15:06:40Z
END_OF_9999 = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def test_entries_expire_in_deadline_order() -> None:
    wheel: TimerWheel[str] = TimerWheel(START)
    wheel.schedule(START + 5 * SECOND, "c")
    wheel.schedule(START + 1 * SECOND, "a")
    wheel.schedule(START + 3 * SECOND, "b")

    assert wheel.advance(START + 10 * SECOND) == [
        (START + 1 * SECOND, "a"),
        (START + 3 * SECOND, "b"),
        (START + 5 * SECOND, "c"),
    ]
    assert len(wheel) == 0
    assert wheel.current_ms == START + 10 * SECOND


def test_entry_is_not_returned_before_its_deadline_even_within_its_tick() -> None:
    wheel: TimerWheel[str] = TimerWheel(START)
    wheel.schedule(START + 1500, "x")

    assert wheel.advance(START + 1499) == []
    assert len(wheel) == 1
    assert wheel.advance(START + 1500) == [(START + 1500, "x")]


def test_cancelled_entry_never_fires() -> None:
    wheel: TimerWheel[str] = TimerWheel(START)
    keep = wheel.schedule(START + MINUTE, "keep")
    drop = wheel.schedule(START + MINUTE, "drop")

    assert wheel.cancel(drop) is True
    assert not drop.active
    assert keep.active
    assert len(wheel) == 1
    assert wheel.advance(START + HOUR) == [(START + MINUTE, "keep")]


def test_cancel_after_fire_returns_false() -> None:
    wheel: TimerWheel[str] = TimerWheel(START)
    handle = wheel.schedule(START + SECOND, "x")
    wheel.advance(START + SECOND)

    assert not handle.active
    assert wheel.cancel(handle) is False
    assert len(wheel) == 0


def test_cancel_twice_returns_false_the_second_time() -> None:
    wheel: TimerWheel[str] = TimerWheel(START)
    handle = wheel.schedule(START + DAY, "x")

    assert wheel.cancel(handle) is True
    assert wheel.cancel(handle) is False
    assert wheel.next_deadline() is None


def test_cancel_after_cascading_removes_the_entry() -> None:
    wheel: TimerWheel[str] = TimerWheel(START)
    handle = wheel.schedule(START + 3 * DAY, "x")
    wheel.advance(START + 3 * DAY - 10 * SECOND)  # moved down to level 0 by now

    assert wheel.cancel(handle) is True
    assert wheel.advance(START + 4 * DAY) == []


def test_handle_from_another_wheel_is_refused() -> None:
    one: TimerWheel[str] = TimerWheel(START)
    other: TimerWheel[str] = TimerWheel(START)
    handle = one.schedule(START + SECOND, "x")

    with pytest.raises(ValueError, match="not scheduled on this wheel"):
        other.cancel(handle)
    assert handle.active


@pytest.mark.parametrize(
    "ahead_ms",
    [
        MINUTE + 1,
        HOUR + 7,
        DAY + 1,
        3 * DAY + 123,
        90 * DAY,
        YEAR + 1,
        7 * YEAR + 999,
        100 * YEAR,
        3000 * YEAR + 5,  # beyond the 64**6 s of the default levels: the overflow bucket
    ],
)
def test_far_future_deadline_cascades_down_and_fires_at_the_exact_millisecond(
    ahead_ms: int,
) -> None:
    wheel: TimerWheel[str] = TimerWheel(START)
    deadline = START + ahead_ms
    wheel.schedule(deadline, "far")
    wheel.schedule(START + SECOND, "near")

    assert wheel.advance(START + ahead_ms // 3) == [(START + SECOND, "near")]
    assert wheel.next_deadline() == deadline
    assert wheel.advance(deadline - 1) == []
    assert wheel.next_deadline() == deadline
    assert wheel.advance(deadline) == [(deadline, "far")]
    assert wheel.next_deadline() is None


def test_deadline_at_the_end_of_year_9999_fires() -> None:
    wheel: TimerWheel[str] = TimerWheel(START)
    wheel.schedule(END_OF_9999, "last")

    assert wheel.next_deadline() == END_OF_9999
    assert wheel.advance(END_OF_9999 - 1) == []
    assert wheel.advance(END_OF_9999) == [(END_OF_9999, "last")]


def test_wheel_started_near_year_9999_schedules_past_it() -> None:
    wheel: TimerWheel[str] = TimerWheel(END_OF_9999 - DAY)
    wheel.schedule(END_OF_9999, "a")
    wheel.schedule(END_OF_9999 + YEAR, "b")

    assert wheel.advance(END_OF_9999 + 2 * YEAR) == [
        (END_OF_9999, "a"),
        (END_OF_9999 + YEAR, "b"),
    ]


def test_big_jump_returns_everything_due_and_keeps_the_rest() -> None:
    wheel: TimerWheel[int] = TimerWheel(START)
    deadlines = [START + 30 * MINUTE + i * 997 for i in range(20_000)]  # ~5.5 hours
    deadlines += [START + 3 * DAY + i for i in range(100)]
    for item, deadline in enumerate(deadlines):
        wheel.schedule(deadline, item)
    cut = START + 3 * DAY + 49

    fired = wheel.advance(cut)

    assert fired == [(d, i) for i, d in enumerate(deadlines) if d <= cut]
    assert len(wheel) == 50
    assert wheel.next_deadline() == cut + 1


def test_big_jump_does_not_visit_empty_ticks() -> None:
    # One-millisecond ticks: stepping tick by tick over 30 years would never finish.
    wheel: TimerWheel[str] = TimerWheel(START, tick_ms=1)
    wheel.schedule(START + 30 * YEAR, "b")
    wheel.schedule(START + 10 * YEAR, "a")

    assert wheel.advance(START + 40 * YEAR) == [
        (START + 10 * YEAR, "a"),
        (START + 30 * YEAR, "b"),
    ]


def test_past_deadline_is_returned_by_the_next_advance() -> None:
    wheel: TimerWheel[str] = TimerWheel(START)
    wheel.advance(START + 10 * SECOND)
    wheel.schedule(START + 5 * SECOND, "late")
    wheel.schedule(START + 10 * SECOND, "now")

    assert wheel.next_deadline() == START + 5 * SECOND
    assert wheel.advance(START + 10 * SECOND) == [
        (START + 5 * SECOND, "late"),
        (START + 10 * SECOND, "now"),
    ]


def test_next_deadline_is_exact_across_levels() -> None:
    wheel: TimerWheel[str] = TimerWheel(START)
    assert wheel.next_deadline() is None
    year = wheel.schedule(START + YEAR + 17, "year")
    day = wheel.schedule(START + DAY + 3, "day")
    assert wheel.next_deadline() == START + DAY + 3

    minute = wheel.schedule(START + MINUTE + 1, "minute")
    assert wheel.next_deadline() == START + MINUTE + 1

    wheel.cancel(minute)
    assert wheel.next_deadline() == START + DAY + 3
    wheel.advance(START + DAY + 3)
    assert not day.active
    assert wheel.next_deadline() == START + YEAR + 17
    wheel.cancel(year)
    assert wheel.next_deadline() is None


def test_next_deadline_is_exact_when_a_later_level_holds_an_earlier_deadline() -> None:
    # An entry filed at level 1 before time moved can be due before one filed at level 0
    # afterwards only if the digit rule is broken; check both orders of scheduling.
    wheel: TimerWheel[str] = TimerWheel(0, tick_ms=1, wheel_size=4, levels=3)
    wheel.schedule(4, "level 1")
    wheel.advance(2)
    wheel.schedule(5, "later")

    assert wheel.next_deadline() == 4
    assert wheel.advance(5) == [(4, "level 1"), (5, "later")]


def test_advancing_backwards_is_a_noop() -> None:
    wheel: TimerWheel[str] = TimerWheel(START)
    wheel.advance(START + MINUTE)
    wheel.schedule(START + MINUTE - SECOND, "overdue")

    assert wheel.advance(START) == []
    assert wheel.current_ms == START + MINUTE
    assert len(wheel) == 1
    assert wheel.advance(START + MINUTE) == [(START + MINUTE - SECOND, "overdue")]


def test_same_deadline_entries_keep_insertion_order() -> None:
    wheel: TimerWheel[int] = TimerWheel(START)
    deadline = START + 2 * DAY
    wheel.schedule(deadline, 0)  # filed high, cascaded down later
    wheel.schedule(START + SECOND, -1)
    wheel.schedule(deadline, 1)
    wheel.advance(deadline - MINUTE)
    wheel.schedule(deadline, 2)  # filed low, next to the cascaded ones
    wheel.schedule(deadline - 1, 3)

    assert wheel.advance(deadline) == [
        (deadline - 1, 3),
        (deadline, 0),
        (deadline, 1),
        (deadline, 2),
    ]


def test_len_counts_pending_entries() -> None:
    wheel: TimerWheel[int] = TimerWheel(START)
    handles = [wheel.schedule(START + i * HOUR, i) for i in range(10)]
    wheel.cancel(handles[9])
    wheel.advance(START + 3 * HOUR)

    assert len(wheel) == 5


def test_handle_exposes_its_deadline_and_item() -> None:
    wheel: TimerWheel[str] = TimerWheel(START)
    handle = wheel.schedule(START + SECOND, "x")

    assert (handle.deadline_ms, handle.item, handle.active) == (START + SECOND, "x", True)
    assert "active" in repr(handle)


@pytest.mark.parametrize(
    ("start_ms", "tick_ms", "wheel_size", "levels"),
    [(-1, 1000, 64, 6), (0, 0, 64, 6), (0, 1000, 1, 6), (0, 1000, 48, 6), (0, 1000, 64, 0)],
)
def test_invalid_parameters_are_refused(
    start_ms: int, tick_ms: int, wheel_size: int, levels: int
) -> None:
    with pytest.raises(ValueError, match="must be"):
        TimerWheel[str](start_ms, tick_ms=tick_ms, wheel_size=wheel_size, levels=levels)


# --- Model check -------------------------------------------------------------------------

# Deadlines relative to now: clusters around now and around tick boundaries, minutes,
# days and years ahead, and a few seconds in the past.
OFFSETS = st.one_of(
    st.integers(-5 * SECOND, 5 * SECOND),
    st.sampled_from([-1, 0, 1, 999, 1000, 1001, 63_999, 64_000, 64_001]),
    st.integers(-5 * SECOND, 2 * HOUR),
    st.integers(0, 3 * DAY),
    st.integers(0, 30 * YEAR),
)
STEPS = st.one_of(
    st.integers(-3 * SECOND, -1),
    st.just(0),
    st.integers(1, 3 * SECOND),
    st.integers(0, 2 * HOUR),
    st.integers(0, 10 * DAY),
    st.integers(0, 40 * YEAR),
)


@settings(max_examples=500, stateful_step_count=50, deadline=None)
class WheelMachine(RuleBasedStateMachine):
    """Drives a wheel and a sorted-list model with the same calls; they must agree."""

    handles: Bundle[TimerHandle[int]] = Bundle("handles")

    def __init__(self) -> None:
        super().__init__()
        self.wheel: TimerWheel[int] = TimerWheel(0)
        self.now = 0
        self.pending: dict[int, int] = {}  # item (= scheduling order) -> deadline
        self.scheduled = 0

    @initialize(
        start=st.one_of(
            st.integers(0, 2**42),
            st.sampled_from([START, END_OF_9999 - YEAR, END_OF_9999]),
        ),
        # Small wheels and ticks make cascades and the overflow bucket common.
        tick_ms=st.sampled_from([1, 7, 1000]),
        wheel_size=st.sampled_from([2, 4, 64]),
        levels=st.sampled_from([1, 2, 3, 6]),
    )
    def start(self, start: int, tick_ms: int, wheel_size: int, levels: int) -> None:
        self.wheel = TimerWheel(start, tick_ms=tick_ms, wheel_size=wheel_size, levels=levels)
        self.now = start

    def _schedule(self, deadline: int) -> TimerHandle[int]:
        item = self.scheduled
        self.scheduled += 1
        self.pending[item] = deadline
        return self.wheel.schedule(deadline, item)

    @rule(target=handles, offset=OFFSETS)
    def schedule(self, offset: int) -> TimerHandle[int]:
        return self._schedule(self.now + offset)

    @rule(target=handles, other=handles)
    def schedule_same_deadline(self, other: TimerHandle[int]) -> TimerHandle[int]:
        return self._schedule(other.deadline_ms)

    @rule(handle=handles)
    def cancel(self, handle: TimerHandle[int]) -> None:
        expected = self.pending.pop(handle.item, None) is not None
        assert self.wheel.cancel(handle) is expected
        assert not handle.active

    def _advance(self, now: int) -> None:
        fired = self.wheel.advance(now)
        if now < self.now:
            assert fired == []
            return
        self.now = now
        due = sorted((deadline, item) for item, deadline in self.pending.items() if deadline <= now)
        for _, item in due:
            del self.pending[item]
        assert fired == due

    @rule(step=STEPS)
    def advance(self, step: int) -> None:
        self._advance(self.now + step)

    @rule(delta=st.sampled_from([-1, 0, 1]))
    def advance_to_around_next_deadline(self, delta: int) -> None:
        earliest = self.wheel.next_deadline()
        if earliest is not None:
            self._advance(earliest + delta)

    @invariant()
    def agrees_with_model(self) -> None:
        assert len(self.wheel) == len(self.pending)
        assert self.wheel.next_deadline() == min(self.pending.values(), default=None)
        assert self.wheel.current_ms == self.now


TestWheelModel = WheelMachine.TestCase
