"""The MQTT adapter: the only module that imports the MQTT client library (gmqtt).

Theory of operation
-------------------
At-least-once, end to end. The gateway connects with a fixed client id and a persistent
session (MQTT v5, ``clean_session=False``, a long session expiry), so the broker keeps
its subscriptions and queues messages while it is away. Inbound messages are QoS 1 and
gmqtt runs with ``optimistic_acknowledgement=False``: each message is handed to the
service's coroutine, and gmqtt sends the PUBACK only when that coroutine *returns*. The
service returns only once the message's effect is durable (a suppression record
committed, a forwarded copy acknowledged by the broker, a state change committed).

Withholding an acknowledgement. If the handler raises, gmqtt's completion callback
raises before sending the PUBACK, so the message stays unacknowledged and the broker
redelivers it on the next session (the exception is recognised and kept out of the
logs' error path by the loop's exception handler). A handler that finishes after its
connection was lost also raises: its packet id belonged to the old connection, and
acknowledging it on the new one could acknowledge a different message.

Outbound publishes are QoS 1 and awaitable until the broker's PUBACK: gmqtt has no
public PUBACK callback, but it hands every QoS 1 message to its ``persistent_storage``
(``push_message`` on send, ``remove_message_by_mid`` on PUBACK), which is a documented
constructor argument; :class:`_AckStorage` resolves a future there. Unacknowledged
publishes are bounded by a window (a semaphore), clamped below the broker's Receive
Maximum: gmqtt's packet-id allocator raises OverflowError beyond it (measured in
../shared/anchors/relaybench, pitfall P4). gmqtt re-sends stored publishes after a
reconnect, so their futures still resolve.

Reconnects use gmqtt's own loop with the delay re-drawn before each attempt:
exponential backoff between ``reconnect_min`` and ``reconnect_max`` with full jitter,
so a fleet of gateways does not reconnect in lockstep.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import gmqtt
import msgspec
from gmqtt.mqtt.constants import UNLIMITED_RECONNECTS, MQTTv50, MQTTv311
from gmqtt.storage import PersistentStorage

MessageHandler = Callable[[str, bytes], Awaitable[None]]

# A persistent session outlives a restart or a long broker outage: one week.
SESSION_EXPIRY_S = 7 * 24 * 3600


class MqttSettings(msgspec.Struct, frozen=True):
    """Connection settings (built from the configuration's ``[broker]`` section)."""

    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = "poa-gateway"
    username: str | None = None
    password: str | None = msgspec.field(default=None)
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive_s: int = 30
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0
    inflight: int = 100
    # MQTT 5 unless the broker speaks only 3.1.1 (the embedded demo broker). With
    # 3.1.1 gmqtt acknowledges on receipt, so the at-least-once guarantee is lost:
    # production brokers must speak MQTT 5.
    protocol: int = 5

    def __repr__(self) -> str:  # never show the password
        return f"MqttSettings(host={self.host!r}, port={self.port}, client_id={self.client_id!r})"


class AckWithheld(Exception):
    """Raised from a handler to keep a message unacknowledged (it will be redelivered)."""


class NotConnected(Exception):
    """A publish was attempted before the first connection."""


class SessionLost(Exception):
    """The broker came back without our session; unacknowledged publishes are re-sent."""


class _AckStorage(PersistentStorage):  # type: ignore[misc]
    """gmqtt's message store, extended to resolve a future when a publish is PUBACKed."""

    def __init__(self, on_ack: Callable[[int], None], on_clear: Callable[[], None]) -> None:
        super().__init__()
        self._on_ack = on_ack
        self._on_clear = on_clear
        self.last_mid: int | None = None

    def push_message(self, mid: int, raw_package: bytes) -> None:
        self.last_mid = mid
        super().push_message(mid, raw_package)

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        self._on_ack(mid)

    def clear(self) -> None:
        # gmqtt clears its store when the broker has no session for us; those
        # publishes will never be acknowledged, so their senders must re-send.
        super().clear()
        self._on_clear()


class MqttAdapter:
    """QoS 1 in and out with acknowledgement after the effect is durable."""

    def __init__(
        self,
        settings: MqttSettings,
        on_message: MessageHandler,
        *,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self._settings = settings
        self._handler = on_message
        self._on_event = on_event or (lambda _event, _fields: None)
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._storage = _AckStorage(self._acked, self._session_lost)
        self._topics: list[str] = []
        self._client = gmqtt.Client(
            settings.client_id,
            clean_session=False,
            optimistic_acknowledgement=False,
            persistent_storage=self._storage,
            receive_maximum=max(settings.inflight, 1),
            session_expiry_interval=SESSION_EXPIRY_S,
        )
        self._client.on_message = self._on_message
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        if settings.username:
            self._client.set_auth_credentials(settings.username, settings.password)
        self._generation = 0
        self._connected = asyncio.Event()
        self._subscribed: asyncio.Future[None] | None = None
        # Created at the first CONNACK, once the broker's Receive Maximum is known.
        self._window: asyncio.Semaphore | None = None
        self.window_size = max(settings.inflight, 1)
        self._attempt = 0
        self._resync_generation = -1
        self._background: set[asyncio.Future[Any]] = set()
        self.reconnects = 0
        self.inflight_publishes = 0

    # -- connection -----------------------------------------------------------------

    def _ssl(self) -> ssl.SSLContext | bool:
        s = self._settings
        if not s.tls:
            return False
        context = ssl.create_default_context(cafile=s.ca_file or None)
        if s.cert_file:
            context.load_cert_chain(s.cert_file, s.key_file or None)
        return context

    async def connect(self) -> None:
        """Connect, retrying with jittered backoff until the broker answers."""
        self._client.set_config(
            {"reconnect_retries": UNLIMITED_RECONNECTS, "reconnect_delay": self._next_delay()}
        )
        while True:
            try:
                await self._client.connect(
                    self._settings.host,
                    self._settings.port,
                    ssl=self._ssl(),
                    keepalive=self._settings.keepalive_s,
                    version=MQTTv50 if self._settings.protocol == 5 else MQTTv311,
                )
                break
            except (TimeoutError, OSError) as exc:
                delay = self._next_delay()
                self._on_event(
                    "mqtt.connect_failed", {"reason": type(exc).__name__, "retry_in_s": delay}
                )
                await asyncio.sleep(delay)
        await self._connected.wait()

    def _next_delay(self) -> float:
        s = self._settings
        ceiling = min(s.reconnect_max_s, s.reconnect_min_s * (2**self._attempt))
        self._attempt = min(self._attempt + 1, 32)
        return random.uniform(s.reconnect_min_s, max(ceiling, s.reconnect_min_s))  # noqa: S311

    def _on_connect(self, _client: Any, session_present: Any, _rc: Any, properties: Any) -> None:
        self._generation += 1
        self._attempt = 0
        first = not self._connected.is_set()
        self._connected.set()
        if self._window is None:
            broker_max = _property(properties, "receive_maximum")
            if broker_max is not None:
                # gmqtt allocates at most receive_maximum - 1 packet ids (relaybench P4).
                self.window_size = max(1, min(self.window_size, broker_max - 1))
            self._window = asyncio.Semaphore(self.window_size)
        if not first:
            self.reconnects += 1
            if not session_present and self._topics:
                # The broker lost our session (and so our subscriptions): subscribe again.
                self._client.subscribe([gmqtt.Subscription(t, qos=1) for t in self._topics])
        self._on_event(
            "mqtt.connected",
            {
                "generation": self._generation,
                "window": self.window_size,
                "reconnect": not first,
                "session_present": bool(session_present),
            },
        )

    def _on_disconnect(self, _client: Any, _packet: Any, exc: Any = None) -> None:
        self._client.reconnect_delay = self._next_delay()
        self._on_event("mqtt.disconnected", {"reason": repr(exc) if exc else "closed"})

    def _on_subscribe(self, _client: Any, _mid: Any, _qos: Any, _properties: Any) -> None:
        if self._subscribed is not None and not self._subscribed.done():
            self._subscribed.set_result(None)

    async def subscribe(self, topics: list[str]) -> None:
        """Subscribe at QoS 1 and wait for the broker's SUBACK."""
        self._topics = list(topics)
        self._subscribed = asyncio.get_running_loop().create_future()
        self._client.subscribe([gmqtt.Subscription(t, qos=1) for t in topics])
        await self._subscribed

    async def close(self) -> None:
        """Disconnect cleanly (unacknowledged inbound messages stay with the broker)."""
        self._client.reconnect_retries = 0
        await self._client.disconnect()

    @property
    def connected(self) -> bool:
        """True while a connection is up."""
        return bool(self._client.is_connected)

    # -- inbound ----------------------------------------------------------------------

    async def _on_message(
        self, _client: Any, topic: str, payload: bytes, _qos: int, _properties: Any
    ) -> int:
        generation = self._generation
        try:
            await self._handler(topic, bytes(payload))
        except Exception as exc:
            # Not acknowledged; the broker redelivers it only on a new session, so
            # start one (once per failing connection).
            if generation == self._generation and self._resync_generation != generation:
                self._resync_generation = generation
                self._on_event("mqtt.resync", {"reason": repr(exc), "topic": topic})
                task = asyncio.ensure_future(self._client.reconnect(delay=True))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            raise AckWithheld(f"handler failed: {exc!r}") from exc
        if generation != self._generation:
            raise AckWithheld(f"connection {generation} is gone; the broker will redeliver")
        return 0  # PUBACK, reason "success"

    # -- outbound ---------------------------------------------------------------------

    def _session_lost(self) -> None:
        waiting, self._acks = self._acks, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(SessionLost("the broker lost our session"))

    def _acked(self, mid: int) -> None:
        future = self._acks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(None)

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and return once the broker has acknowledged it."""
        await self._publish(topic, payload)

    def publish_soon(self, topic: str, payload: bytes) -> asyncio.Task[None]:
        """Publish at QoS 1 in the background (the live suppression feed)."""
        return asyncio.ensure_future(self._publish(topic, payload))

    async def _publish(self, topic: str, payload: bytes) -> None:
        if self._window is None:
            raise NotConnected("publish before the first connection")
        async with self._window:
            self.inflight_publishes += 1
            try:
                while True:
                    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                    self._client.publish(topic, payload, qos=1)
                    mid = self._storage.last_mid
                    if mid is None:
                        raise RuntimeError("gmqtt did not store the QoS 1 publish")
                    self._acks[mid] = future
                    try:
                        await future
                        return
                    except SessionLost:
                        # At least once: publish again on the new session.
                        await self._connected.wait()
            finally:
                self.inflight_publishes -= 1


def _property(properties: Any, name: str) -> int | None:
    if not isinstance(properties, dict):
        return None
    value = properties.get(name)
    if isinstance(value, list | tuple) and value:
        value = value[0]
    return value if isinstance(value, int) else None


def install_exception_filter(
    loop: asyncio.AbstractEventLoop, log: Callable[[str, dict[str, Any]], None]
) -> None:
    """Route gmqtt's completion-callback errors through our log: an :class:`AckWithheld`
    is expected (debug), anything else is an error with its reason."""

    def handler(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, AckWithheld):
            log("mqtt.ack_withheld", {"reason": str(exc)})
            return
        log("loop.error", {"reason": repr(exc) if exc else context.get("message", "")})

    loop.set_exception_handler(handler)
