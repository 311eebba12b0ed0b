"""What the daemon's shell drives: a durable state store and a transport with its outbox.

The service (gateway/service.py) is written against these protocols, not against SQLite
or gmqtt: the SQLite store (gateway/store.py) and the MQTT adapter (gateway/mqtt.py)
implement them, the service is handed them (``Gateway(open_store=..., make_transport=...)``),
and a new state backend or transport is one more implementation. Tests drive the shell
with in-memory fakes of both, and inject faults by wrapping a real store.

Contracts the shell relies on:

* Writes are queued and idempotent (a redelivered message may write twice); ``flush()``
  returns once every write queued before it is durable, or raises a ``StoreError``
  (reason ``commit-failed``: the writes are kept and retried by the next flush).
* ``Outbox.publish_many`` returns once the broker has acknowledged every message of the
  group, in order, and raises when the broker refused one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from .events import Activation, AlertDecision
from .store import QuarantineEntry
from .wire import SuppressionRecord

__all__ = [
    "DeliveryHandler",
    "EventSink",
    "MakeTransport",
    "OpenStore",
    "Outbox",
    "StateStore",
    "Transport",
]


class StateStore(Protocol):
    """The durable state: activations, counters, decisions, the suppression log, the
    report cursor (which records are reported), and the quarantine."""

    # -- writes, queued; durable once flush() returns ---------------------------------
    def put_activation(self, a: Activation) -> None: ...
    def delete_activation(self, a: Activation) -> None: ...
    def set_counter(self, originator: bytes, device: bytes, counter: int) -> None: ...
    def put_decision(self, decision: AlertDecision, *, effect_done: bool) -> None: ...
    def append_suppression(
        self, record: SuppressionRecord, encoded: bytes | None = None
    ) -> None: ...
    def mark_reported_range(self, first: int, last: int, report_id: str) -> None: ...
    def prune_decisions(self, before_ms: int) -> None: ...
    def put_quarantine(self, entry: QuarantineEntry) -> None: ...
    async def flush(self) -> None: ...
    async def aclose(self) -> None: ...

    # -- reads of committed state (last_counter also sees queued counters) -----------
    def load_activations(self) -> list[Activation]: ...
    def load_decisions(self, since_ms: int) -> list[tuple[AlertDecision, bool]]: ...
    def decision(self, alert_id: str) -> tuple[AlertDecision, bool] | None: ...
    def last_counter(self, originator: bytes, device: bytes) -> int | None: ...
    def unreported(self, limit: int) -> list[tuple[int, SuppressionRecord]]: ...
    async def read_unreported(self, limit: int) -> list[tuple[int, SuppressionRecord]]: ...
    def unreported_count(self) -> int: ...


OpenStore = Callable[[Path], StateStore]
"""Opens the state store at a path (``Store.open`` by default)."""


class Outbox(Protocol):
    """Publishes, each awaited until the broker has it."""

    async def publish(self, topic: str, payload: bytes) -> None: ...
    async def publish_many(self, messages: list[tuple[str, bytes]]) -> None: ...
    def publish_soon(self, topic: str, payload: bytes) -> Any: ...


DeliveryHandler = Callable[[str, bytes, Any], None]
"""Called with (topic, payload, delivery) for each inbound message; the delivery is
acknowledged with ``delivery.ack()`` once the message's effect is durable."""

EventSink = Callable[[str, dict[str, Any]], None]
"""Receives the transport's events (``mqtt.connected``, ``mqtt.disconnected`` ...)."""


class Transport(Outbox, Protocol):
    """The broker connection: inbound deliveries, the outbox, flow control, health."""

    async def connect(self) -> None: ...
    async def subscribe(self, topics: list[str]) -> None: ...
    async def close(self) -> None: ...
    async def wait_failed(self) -> BaseException: ...
    def hold_intake(self) -> None: ...
    def release_intake(self) -> None: ...

    @property
    def connected(self) -> bool: ...
    @property
    def inflight_publishes(self) -> int: ...

    # Counters for the logs and the gauges.
    inbound: int
    inbound_peak: int
    inbound_limit: int
    pauses: int
    window_size: int

    @property
    def reconnects(self) -> int: ...


MakeTransport = Callable[[DeliveryHandler, EventSink], Transport]
"""Builds the transport, given where inbound messages and events go."""
