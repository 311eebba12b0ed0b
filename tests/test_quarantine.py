"""What makes a message poison, and the record kept of it (gateway/quarantine.py)."""

from __future__ import annotations

import pytest

from gateway import wire
from gateway.quarantine import (
    HANDLER_ATTEMPTS,
    Poisoned,
    attempt,
    describe,
    quarantine_entry,
    quarantine_notice,
)
from gateway.state.sqlite import StoreError, StoreReason
from gateway.wire import WireError, WireReason


def test_a_bug_is_tried_a_bounded_number_of_times_then_the_message_is_poisoned() -> None:
    calls = []

    def buggy(x: int) -> int:
        calls.append(x)
        raise ZeroDivisionError("a bug")

    with pytest.raises(Poisoned) as caught:
        attempt(buggy, 7)
    assert calls == [7] * HANDLER_ATTEMPTS
    assert isinstance(caught.value.cause, ZeroDivisionError)
    assert caught.value.attempts == HANDLER_ATTEMPTS


def test_a_failure_that_passes_on_a_later_try_is_no_poison() -> None:
    tries = iter([KeyError("once"), None])

    def flaky() -> str:
        error = next(tries)
        if error is not None:
            raise error
        return "done"

    assert attempt(flaky) == "done"


@pytest.mark.parametrize(
    "error",
    [
        StoreError(StoreReason.COMMIT_FAILED, "disk full"),
        WireError(WireReason.BAD_CBOR, "not CBOR"),
    ],
    ids=["the surroundings", "a typed refusal"],
)
def test_the_surroundings_and_typed_refusals_are_raised_at_once_not_retried(
    error: Exception,
) -> None:
    calls = []

    def fails() -> None:
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        attempt(fails)
    assert calls == [1]


def test_the_text_of_any_exception_can_be_shown() -> None:
    assert describe(ValueError(10**5000)).startswith("<ValueError")  # str() would raise
    assert len(describe(RuntimeError("x" * 10_000))) <= 503


def test_a_redelivered_copy_names_the_same_entry_and_the_notice_carries_the_bytes() -> None:
    poisoned = Poisoned(ZeroDivisionError("boom"), HANDLER_ATTEMPTS)
    first = quarantine_entry("csp/dcc/alert", b"\xa1", 10, poisoned, 20, forward=True)
    again = quarantine_entry("csp/dcc/alert", b"\xa1", 30, poisoned, 40, forward=True)
    assert first.id == again.id
    assert (first.reason, first.error, first.attempts) == ("ZeroDivisionError", "boom", 3)
    notice = wire.decode_quarantine_notice(wire.encode(quarantine_notice(first)))
    assert (notice.id, notice.payload, notice.forwarded) == (first.id, b"\xa1", True)
