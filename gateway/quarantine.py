"""What makes a message poison, and the record kept of it (docs/decisions.md D24).

A message whose handling raises something unexpected is tried :data:`HANDLER_ATTEMPTS`
times (:func:`attempt`); if every try raised, it is quarantined: kept with its topic and
exact bytes (:func:`quarantine_entry`, stored by the state store), announced on
``gateway/quarantine`` (:func:`quarantine_notice`) and acknowledged, so that it cannot
hold back the messages behind it. A failure of the surroundings (the store, the broker;
:data:`NOT_THE_MESSAGE`) is not the message's fault and never quarantines it, and a
typed refusal of the input (``WireError``, ``GbcsError``) is a refusal with its reason.

Pure: nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

from gbcs import GbcsError

from .errors import GatewayError
from .ha import LeaseLost
from .state.inventory import InventoryUnavailable
from .state.sqlite import QuarantineEntry, StoreError, quarantine_id
from .transport.mqtt import NotConnected, PublishRefused
from .wire import QuarantineNotice, WireError

__all__ = [
    "HANDLER_ATTEMPTS",
    "NOT_THE_MESSAGE",
    "Poisoned",
    "attempt",
    "describe",
    "quarantine_entry",
    "quarantine_notice",
]

HANDLER_ATTEMPTS: Final = 3
"""How often a message's handling is tried before the message is quarantined."""

NOT_THE_MESSAGE: Final = (
    StoreError,
    PublishRefused,
    NotConnected,
    LeaseLost,
    InventoryUnavailable,
)
"""Failures of the gateway's surroundings, not of one message: the message is left with
the broker (not acknowledged) rather than quarantined, and comes back."""

_ERROR_TEXT_LIMIT: Final = 500

_T = TypeVar("_T")


class Poisoned(GatewayError):
    """Handling one message raised on every attempt: the message is quarantined."""

    def __init__(self, cause: BaseException, attempts: int) -> None:
        super().__init__(f"{type(cause).__name__} after {attempts} attempt(s): {cause}")
        self.cause = cause
        self.attempts = attempts


def describe(exc: BaseException) -> str:
    """The text of an unexpected exception, clipped, for a log line or a quarantine entry;
    never raises (``str()`` itself can: an int past the digit limit in its args)."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - whatever its __str__ does
        text = f"<{type(exc).__name__}: its text cannot be shown>"
    if len(text) > _ERROR_TEXT_LIMIT:
        text = text[:_ERROR_TEXT_LIMIT] + "..."
    return text


def attempt(fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)``, tried up to :data:`HANDLER_ATTEMPTS` times; raises :class:`Poisoned`
    with the last error when every try raised. A failure of the surroundings (the
    store, the broker) and a typed refusal of the input (``WireError``, ``GbcsError``)
    are raised as they are."""
    error: BaseException | None = None
    for _ in range(HANDLER_ATTEMPTS):
        try:
            return fn(*args)
        except (*NOT_THE_MESSAGE, WireError, GbcsError):
            raise  # the surroundings, or a typed refusal of the input: no bug to retry
        except Exception as exc:  # noqa: BLE001 - any bug on one message: try again
            error = exc
    assert error is not None
    raise Poisoned(error, HANDLER_ATTEMPTS) from error


def quarantine_entry(
    topic: str,
    payload: bytes,
    received: int,
    error: BaseException,
    now: int,
    *,
    forward: bool,
) -> QuarantineEntry:
    """The record of a poisoned message: its id (from topic and bytes, so a redelivered
    copy names the same entry), its bytes, the exception's class and text, the tries."""
    cause = error.cause if isinstance(error, Poisoned) else error
    attempts = error.attempts if isinstance(error, Poisoned) else HANDLER_ATTEMPTS
    return QuarantineEntry(
        id=quarantine_id(topic, payload),
        topic=topic,
        payload=payload,
        reason=type(cause).__name__,
        error=describe(cause),
        attempts=attempts,
        received_at=received,
        quarantined_at=now,
        forwarded=forward,
    )


def quarantine_notice(entry: QuarantineEntry) -> QuarantineNotice:
    """The ``gateway/quarantine`` envelope announcing ``entry``."""
    return QuarantineNotice(
        v=1,
        kind="quarantine",
        id=entry.id,
        topic=entry.topic,
        payload=entry.payload,
        reason=entry.reason,
        error=entry.error,
        attempts=entry.attempts,
        received_at=entry.received_at,
        quarantined_at=entry.quarantined_at,
        forwarded=entry.forwarded,
    )
