"""What the daemon's shell talks to the broker through: a transport with its outbox.

The service (gateway/service.py) is written against these protocols, not an MQTT client:
the MQTT adapter (gateway/transport/mqtt.py) implements them, the service is handed a
factory (``Gateway(make_transport=...)``), and another transport is one more
implementation. Its counterpart for durable state is gateway/state/protocol.py. Tests
drive the shell with an in-memory fake.

Contract the shell relies on: ``Outbox.publish_many`` returns once the broker has
acknowledged every message of the group, in order, and raises when the broker refused
one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = [
    "DeliveryHandler",
    "EventSink",
    "MakeTransport",
    "Outbox",
    "Transport",
]


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
    withheld_not_leader: int  # acknowledgements not sent after losing the leader lease

    @property
    def reconnects(self) -> int: ...


MakeTransport = Callable[[DeliveryHandler, EventSink], Transport]
"""Builds the transport, given where inbound messages and events go."""
