"""The MQTT adapter: the only module that imports the MQTT client library (gmqtt).

Theory of operation
-------------------
At-least-once, end to end. The adapter holds two connections to the broker, each with
a fixed client id and a persistent session (MQTT v5, ``clean_session=False``, a long
session expiry): ``client_id`` subscribes and receives, ``client_id-out`` publishes.
The broker keeps the receiving session's subscriptions and queues messages while the
gateway is away.

Inbound messages are QoS 1, acknowledged only once their effect is durable (a
suppression record committed, a forwarded copy acknowledged by the broker, a state
change committed). gmqtt can do that (``optimistic_acknowledgement=False``: the PUBACK
goes out when an ``on_message`` coroutine returns), but at the price of a task per
message; the adapter takes the messages from gmqtt's QoS 1 handler instead
(:meth:`_Link.take_qos1`) and hands each to the application with a :class:`Delivery`,
whose ``ack()`` sends the PUBACK. A coroutine handler (``on_message``, for the simulator
and the tests) is run as a task and acknowledged when it returns; the daemon's
``on_delivery`` handler batches the DCC alerts of one loop pass and acknowledges them
together (docs/decisions.md D20).

Why two connections. Inbound messages in progress are bounded by ``receive_maximum``: MQTT 5
asks the broker to respect the Receive Maximum we send, but mosquitto before 2.0.13
ignores it once acknowledgements flow (eclipse/mosquitto#2306; measured with mosquitto
2.0.11: 49,633 messages in flight at once), and a backlog of a million alerts then sits
in the gateway's memory. So the adapter stops *reading* the receiving socket while that
many handlers are running and reads again when half of them are done; the broker keeps
the rest queued (how, without a public gmqtt API: :meth:`_Link.gate_reads`).
The PUBACKs of our own publishes must still be read while inbound reading is paused,
which is why publishing has a connection of its own (on one connection, pausing would
deadlock: the handlers wait for PUBACKs that are never read).

Withholding an acknowledgement. A message whose effect failed (``delivery.fail``, or a
coroutine handler that raised) is not acknowledged, so the broker redelivers it; since
mosquitto redelivers only on a new session, the adapter reconnects (once per failing
connection). A message whose connection was lost before its ``ack()`` is not
acknowledged either: its packet id belonged to the old connection, and acknowledging
it on the new one could acknowledge a different message. Both are logged as
``mqtt.ack_withheld`` with the reason.

Outbound publishes are QoS 1 and awaitable until the broker's PUBACK: gmqtt has no
public PUBACK callback, but it hands every QoS 1 message to its ``persistent_storage``
(``push_message`` on send, ``remove_message_by_mid`` on PUBACK), which is a documented
constructor argument; :class:`_AckStorage` resolves a future there. Unacknowledged
publishes are bounded by a window, clamped below the broker's Receive Maximum: gmqtt's
packet-id allocator raises OverflowError beyond it. The window
is a counter and a FIFO of waiters rather than an ``asyncio.Semaphore``, whose release
re-scans its waiters (13 % of the daemon's CPU in a storm). gmqtt re-sends stored
publishes after a reconnect, so their futures still resolve; if the broker lost the
session, they are published again.

Reconnects use gmqtt's own loop with the delay re-drawn before each attempt:
exponential backoff between ``reconnect_min`` and ``reconnect_max`` with full jitter,
so a fleet of gateways does not reconnect in lockstep.

Connection events (``on_event``), one per fact, so that the daemon's ``poa_up`` can
follow the connection: ``mqtt.connected`` when a link comes up, ``mqtt.disconnected``
when it goes down, ``mqtt.connect_failed`` for every attempt that fails (no socket, a
transient refusal, a connection closed before its CONNACK), ``mqtt.refused`` for a
permanent refusal. :attr:`MqttAdapter.connected` is true exactly while both links are
between their ``mqtt.connected`` and the next ``mqtt.disconnected``. gmqtt reports
none of the failed attempts: a socket that cannot be opened is seen through its retry
(:meth:`_Link._watch_failed_reconnects`), a refusal through the CONNACK itself.

Refusals. A broker that refuses a connection says why in its CONNACK (MQTT 5 reason
code, MQTT 3.1.1 return code). Some refusals the same CONNECT would meet again (bad
user name or password, not authorised, a banned or invalid client id): gmqtt stops
reconnecting on those, and the daemon would idle for ever, running but deaf. The
adapter reads each CONNACK's code before gmqtt does (:meth:`_Link._watch_connacks`).
A permanent refusal of the first connection makes :meth:`MqttAdapter.connect` raise
:class:`ConnectionRefusedPermanently`; one on a reconnect is reported (``mqtt.refused``)
and ends :meth:`MqttAdapter.wait_failed`, so that the daemon exits non-zero. Transient
refusals (server unavailable or busy, a quota, a connection rate) are retried with the
backoff above (docs/decisions.md D23).
"""

from __future__ import annotations

import asyncio
import collections
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import gmqtt
import msgspec
from gmqtt.mqtt.constants import UNLIMITED_RECONNECTS, MQTTv50, MQTTv311
from gmqtt.storage import PersistentStorage

from gateway.errors import GatewayError

# The CONNACK tables live in codes.py, shared with the sans-I/O session (session.py).
from gateway.transport.codes import (
    PERMANENT_REFUSALS,
    SESSION_EXPIRY_S,
    ConnectReturnCode,
    refusal_name,
)

MessageHandler = Callable[[str, bytes], Awaitable[None]]
DeliveryHandler = Callable[[str, bytes, "Delivery"], None]
EventSink = Callable[[str, dict[str, Any]], None]

_DISCONNECT = b"\xe0"  # the fixed header's first byte of an MQTT DISCONNECT

# The publishing connection's client id is the configured one with this suffix.
OUT_SUFFIX = "-out"

# The reconnect delay of a link that may no longer act (see MqttAdapter's ``may_act``):
# long enough never to come, since gmqtt has no public way to cancel a reconnect it
# has already scheduled.
_NEVER_S = 10.0**7


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
    inflight: int = 100  # unacknowledged publishes (clamped below the broker's limit)
    receive_maximum: int = 1000  # inbound messages being handled at once
    # How long the broker keeps the session after a disconnect: a week for the daemon;
    # 0 for a one-off client (poa-gateway quarantine replay), whose session ends with it.
    session_expiry_s: int = SESSION_EXPIRY_S
    # MQTT 5 unless the broker speaks only 3.1.1 (the embedded demo broker). With
    # 3.1.1 gmqtt acknowledges on receipt, so the at-least-once guarantee is lost:
    # production brokers must speak MQTT 5.
    protocol: int = 5

    def __repr__(self) -> str:  # never show the password
        return f"MqttSettings(host={self.host!r}, port={self.port}, client_id={self.client_id!r})"


class NotConnected(GatewayError):
    """A publish was attempted before the first connection."""


class PublishRefused(GatewayError):
    """The broker answered a publish with a failure reason code (MQTT 5), e.g. 0x87
    "not authorized" from an ACL: the message was not accepted."""

    def __init__(self, topic: str, code: int) -> None:
        super().__init__(f"the broker refused a publish on {topic!r}: reason code 0x{code:02X}")
        self.topic = topic
        self.code = code


class ConnectionRefusedPermanently(GatewayError):
    """The broker refused to connect us for a reason retrying cannot fix (see
    :data:`PERMANENT_REFUSALS`): bad user name or password, not authorised, a banned or
    invalid client id... The gateway's configuration or the broker's must change.

    Attributes:
        code: the CONNACK's reason code (MQTT 5) or return code (MQTT 3.1.1).
        reason: its name, a stable slug (:func:`refusal_name`), e.g. ``not-authorized``.
        host: the broker's host, as configured.
        port: the broker's port.
        client_id: the client id that was refused.
        link: which connection: ``in`` (receiving) or ``out`` (publishing).
    """

    def __init__(self, code: int, *, host: str, port: int, client_id: str, link: str) -> None:
        self.code = code
        self.reason = refusal_name(code)
        self.host = host
        self.port = port
        self.client_id = client_id
        self.link = link
        super().__init__(
            f"the broker at {host}:{port} refused the connection of client {client_id!r}: "
            f"reason code 0x{code:02X} ({self.reason.replace('-', ' ')}); retrying cannot "
            "fix this: check [broker] username, password and client_id against the "
            "broker's users"
        )


class Delivery:
    """One inbound QoS 1 message, handed to a :data:`DeliveryHandler`: call :meth:`ack`
    once its effect is durable (the PUBACK goes out), or :meth:`fail` to leave it with
    the broker for redelivery. The first call counts; later ones are ignored."""

    __slots__ = ("_adapter", "generation", "mid", "settled", "started", "topic")

    def __init__(self, adapter: MqttAdapter, mid: int | None, generation: int, topic: str) -> None:
        self._adapter = adapter
        self.mid = mid  # None for QoS 0: nothing to acknowledge
        self.generation = generation
        self.topic = topic
        self.started = time.monotonic()
        self.settled = False

    def ack(self) -> None:
        """The effect is durable: acknowledge (unless its connection is gone)."""
        self._adapter._settle(self, None)

    def fail(self, exc: BaseException) -> None:
        """The effect could not be made durable: do not acknowledge."""
        self._adapter._settle(self, exc)


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


class _Link:
    """One gmqtt client: its connection generation, backoff and connected state."""

    def __init__(
        self,
        name: str,
        settings: MqttSettings,
        client_id: str,
        on_event: EventSink,
        *,
        receives: bool,
        storage: PersistentStorage | None = None,
        may_act: Callable[[], bool] = lambda: True,
    ) -> None:
        self.name = name
        self._may_act = may_act
        self._leaving: asyncio.Future[Any] | None = None  # a disconnect after a fence
        self._settings = settings
        self._client_id = client_id
        self._on_event = on_event
        kwargs: dict[str, Any] = {}
        if storage is not None:
            kwargs["persistent_storage"] = storage
        if receives:
            # Our Receive Maximum, for the broker. Only on the receiving link: gmqtt
            # hands on_connect the CONNECT properties merged over the CONNACK's, so a
            # value sent here would hide the broker's own.
            kwargs["receive_maximum"] = max(settings.receive_maximum, 1)
        self.client = gmqtt.Client(
            client_id,
            clean_session=False,
            optimistic_acknowledgement=False,
            session_expiry_interval=settings.session_expiry_s,
            **kwargs,
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.refused: Callable[[int, int], None] | None = None
        self.watching_reasons = self._watch_puback_reasons()
        if settings.username:
            self.client.set_auth_credentials(settings.username, settings.password)
        self.generation = 0
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.coalescing = False
        self._attempt = 0
        # Called with (session_present, CONNACK properties, first connection?).
        self.connect_hook: Callable[[bool, Any, bool], None] = lambda _s, _p, _f: None
        self.up = False  # from on_connect to the next on_disconnect
        self.failure: ConnectionRefusedPermanently | None = None
        self.failed = asyncio.Event()  # set with failure
        self.on_failure: Callable[[ConnectionRefusedPermanently], None] = lambda _exc: None
        self._refusal: int | None = None  # the current attempt's refused CONNACK code
        self._refusals = 0  # refused CONNACKs so far
        self._downgraded = False
        self._closing = False
        self.watching_connacks = self._watch_connacks()
        self._reconnect = self._watch_failed_reconnects()

    def _ssl(self) -> ssl.SSLContext | bool:
        s = self._settings
        if not s.tls:
            return False
        context = ssl.create_default_context(cafile=s.ca_file or None)
        if s.cert_file:
            context.load_cert_chain(s.cert_file, s.key_file or None)
        return context

    async def connect(self) -> None:
        """Connect, retrying with jittered backoff until the broker accepts.

        Raises:
            ConnectionRefusedPermanently: the broker refused for a reason retrying
                cannot fix (then gmqtt does not retry either).
        """
        self.client.set_config(
            {"reconnect_retries": UNLIMITED_RECONNECTS, "reconnect_delay": self._next_delay()}
        )
        while True:
            refusals = self._refusals
            try:
                await self.client.connect(
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
                    "mqtt.connect_failed",
                    {"link": self.name, "reason": type(exc).__name__, "retry_in_s": delay},
                )
                await asyncio.sleep(delay)
            except gmqtt.MQTTConnectError:
                if self._refusals == refusals:
                    raise  # not a refusal (a CONNACK gmqtt could not read): no retry
                # A refused CONNACK, already judged by _on_refused: if transient, gmqtt
                # is reconnecting by itself (calling connect again would race it).
                break
        waits = [asyncio.ensure_future(e.wait()) for e in (self.connected, self.failed)]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        if not self.connected.is_set():
            assert self.failure is not None
            raise self.failure

    def _next_delay(self) -> float:
        s = self._settings
        ceiling = min(s.reconnect_max_s, s.reconnect_min_s * (2**self._attempt))
        self._attempt = min(self._attempt + 1, 32)
        return random.uniform(s.reconnect_min_s, max(ceiling, s.reconnect_min_s))  # noqa: S311

    def _on_connect(self, _client: Any, session_present: Any, _rc: Any, properties: Any) -> None:
        if not self._may_act():
            # A reconnect that was already scheduled when this process lost the right to
            # act (gmqtt cannot cancel one): leave at once, so the broker session goes
            # back to the instance that holds it, and say so.
            self._on_event("mqtt.fenced", {"link": self.name, "reason": "connected-after-fence"})
            self._stop_reconnecting()
            self._leaving = asyncio.ensure_future(self.client.disconnect())
            return
        self.generation += 1
        self._attempt = 0
        self.up = True
        self._refusal = None
        first = not self.connected.is_set()
        self.connected.set()
        if not first:
            self.reconnects += 1
        self.coalescing = self.coalesce_writes()
        if not self.coalescing:
            self._on_event("mqtt.internals", {"link": self.name, "reason": "no-write-coalescing"})
        self.connect_hook(bool(session_present), properties, first)
        self._on_event(
            "mqtt.connected",
            {
                "link": self.name,
                "generation": self.generation,
                "reconnect": not first,
                "session_present": bool(session_present),
            },
        )

    def _on_disconnect(self, _client: Any, _packet: Any, exc: Any = None) -> None:
        if not self._may_act():
            self.up = False
            self._stop_reconnecting()
            self._on_event(
                "mqtt.disconnected",
                {"link": self.name, "reason": repr(exc) if exc else "closed", "reconnect": False},
            )
            return
        if self.up:
            self.up = False
            self.client.reconnect_delay = self._next_delay()
            self._on_event(
                "mqtt.disconnected", {"link": self.name, "reason": repr(exc) if exc else "closed"}
            )
        elif self._refusal is not None:
            # The broker closes the socket after refusing: that attempt is reported.
            self._refusal = None
        elif not self._closing:
            # The connection closed before its CONNACK: a failed attempt.
            self._retry_reported("closed-before-connack")

    def _stop_reconnecting(self) -> None:
        # Synchronous, before gmqtt schedules its reconnect: with no retries left it does
        # not start one, and one already sleeping waits _NEVER_S.
        self.client.stop_reconnect()
        self.client.reconnect_delay = _NEVER_S

    def _retry_reported(self, reason: str, **fields: Any) -> None:
        if not self._may_act():
            self._stop_reconnecting()
            return
        # Re-drawn here, before gmqtt's reconnect sleeps: the backoff grows with every
        # failed attempt, not only with every lost connection.
        delay = self._next_delay()
        self.client.reconnect_delay = delay
        self._on_event(
            "mqtt.connect_failed",
            {"link": self.name, "reason": reason, **fields, "retry_in_s": delay},
        )

    def _on_refused(self, code: int) -> None:
        self._refusal = code
        self._refusals += 1
        s = self._settings
        if (
            code == ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION
            and s.protocol == 5
            and not self._downgraded
        ):
            # gmqtt's answer to a broker without MQTT 5: it tries again in 3.1.1.
            self._downgraded = True
            self._retry_reported(refusal_name(code), code=code)
            return
        if code not in PERMANENT_REFUSALS:
            self._retry_reported(refusal_name(code), code=code)
            return
        # gmqtt stops reconnecting on these codes already (PERMANENT_REFUSALS); said
        # again here so that giving up does not depend on its table.
        self.client.stop_reconnect()
        if self.failure is not None:
            return
        self.failure = ConnectionRefusedPermanently(
            code, host=s.host, port=s.port, client_id=self._client_id, link=self.name
        )
        self.failed.set()
        self._on_event(
            "mqtt.refused",
            {
                "link": self.name,
                "code": code,
                "reason": self.failure.reason,
                "host": s.host,
                "port": s.port,
                "client_id": self._client_id,
            },
        )
        self.on_failure(self.failure)

    # gmqtt's internals, reached in one place each (docs/decisions.md D19).

    def _package_handler(self) -> Any:
        return getattr(self.client, "_package_handler", None)

    def _watch_connacks(self) -> bool:
        """Have every refused CONNACK's code handed to :meth:`_on_refused` before gmqtt
        handles it.

        gmqtt keeps the code to itself: it raises it from the first ``connect()`` only,
        and after a refused reconnect it just stops (a permanent code) or retries, with
        no callback. Like the PUBACK handler, its CONNACK handler is looked up by name
        on first use, so an instance attribute set before the first CONNACK takes its
        place. Returns False when gmqtt's internals are not where expected.
        """
        handler = self._package_handler()
        original = getattr(handler, "_handle_connack_packet", None)
        if original is None:
            return False

        def connack(cmd: int, packet: bytes) -> None:
            # MQTT 5 3.2.2 / 3.1.1 3.2.2: the acknowledge flags, then the code.
            if len(packet) >= 2 and packet[1] != 0:
                self._on_refused(packet[1])
            original(cmd, packet)

        handler._handle_connack_packet = connack
        return True

    def _watch_failed_reconnects(self) -> Callable[..., Awaitable[None]]:
        """Report each reconnect attempt that could not open a socket (broker down,
        unreachable), which gmqtt only logs; returns gmqtt's own ``reconnect``.

        gmqtt retries such an attempt by calling ``self.reconnect(delay=True)`` (its
        other callers hold the bound method from before), so a ``reconnect`` set on the
        instance runs exactly when an attempt failed that way; it also re-draws the
        backoff, which gmqtt would keep as drawn at the disconnection.
        tests/test_mqtt.py fails if gmqtt retries another way.
        """
        original: Callable[..., Awaitable[None]] = self.client.reconnect

        async def reconnect(delay: bool = False) -> None:
            if not self._closing:
                self._retry_reported("cannot-connect")
            await original(delay=delay)

        self.client.reconnect = reconnect
        return original

    def resync(self) -> Awaitable[None]:
        """Start a new connection (and session) after the reconnect delay."""
        return self._reconnect(delay=True)

    def _protocol(self) -> Any:
        """The current connection's protocol object (a new one per connection)."""
        return getattr(getattr(self.client, "_connection", None), "_protocol", None)

    def _watch_puback_reasons(self) -> bool:
        """Report PUBACKs that carry a failure reason code (MQTT 5, 0x80 and up).

        gmqtt ignores the reason code and treats every PUBACK as success ("TODO" in its
        handler), so a publish the broker refused (an ACL, a quota) would count as
        delivered and its alert be acknowledged: lost. gmqtt looks its packet handlers
        up by name on first use, so an instance attribute set before the first PUBACK
        takes the method's place; it calls ``refused`` first, then gmqtt's own handler.
        """
        handler = self._package_handler()
        original = getattr(handler, "_handle_puback_packet", None)
        if original is None:
            return False

        def puback(cmd: int, packet: bytes) -> None:
            if len(packet) >= 3 and packet[2] >= 0x80 and self.refused is not None:
                self.refused(int.from_bytes(packet[:2], "big"), packet[2])
            original(cmd, packet)

        handler._handle_puback_packet = puback
        return True

    def take_qos1(self, deliver: Callable[[int | None, str, bytes], None]) -> bool:
        """Have inbound QoS 1 messages handed to ``deliver(mid, topic, payload)`` at once,
        in place of gmqtt's handling, which starts a task per message and sends the PUBACK
        from its completion callback: a third of the loop's time in a storm. gmqtt calls
        the handler's ``_handle_qos_1_publish_packet`` by name, so an instance attribute
        takes its place; :meth:`send_puback` sends the acknowledgement later. Returns
        False when gmqtt's internals are not where expected (tests/test_mqtt.py fails
        then)."""
        handler = self._package_handler()
        if handler is None or not hasattr(handler, "_handle_qos_1_publish_packet"):
            return False
        if not hasattr(handler, "_send_puback"):
            return False

        def qos1(mid: int, packet: bytes, topic: str, _properties: Any) -> None:
            deliver(mid, topic, packet)

        handler._handle_qos_1_publish_packet = qos1
        return True

    def send_puback(self, mid: int) -> None:
        """Acknowledge inbound message ``mid`` on the current connection."""
        self._package_handler()._send_puback(mid)

    def packet_id_limit(self) -> int | None:
        """gmqtt's packet-id allocator's size (the broker's Receive Maximum), if found."""
        limit = getattr(getattr(self._package_handler(), "id_generator", None), "_max", None)
        return limit if isinstance(limit, int) else None

    def free_packet_id(self, mid: int) -> None:
        """Return a packet id to gmqtt's allocator (only for publishes the broker forgot)."""
        generator = getattr(self._package_handler(), "id_generator", None)
        if generator is not None:
            generator.free_id(mid)

    def gate_reads(self, gate: asyncio.Event) -> bool:
        """Make the current connection's read loop wait for ``gate`` before each read.

        gmqtt has no public flow control: its protocol object reads the socket in a
        loop and dispatches every packet at once. Wrapping that object's ``read``
        (looked up per iteration) lets the loop block; asyncio's own stream flow control
        then pauses the socket once 128 KiB are buffered. Returns False when gmqtt's
        internals are not where this expects them (tests/test_mqtt.py fails then).
        """
        protocol = self._protocol()
        read = getattr(protocol, "read", None)
        if read is None:
            return False
        if getattr(read, "poa_gated", False):
            return True

        async def gated_read(n: int = -1) -> bytes:
            if not gate.is_set():
                await gate.wait()
            data: bytes = await read(n)
            return data

        gated_read.poa_gated = True  # type: ignore[attr-defined]
        protocol.read = gated_read
        return True

    def coalesce_writes(self) -> bool:
        """Gather the packets written in one pass of the event loop into one socket write.

        gmqtt writes each packet (every PUBLISH, every PUBACK) with a system call of its
        own: a third of its cost per message in a storm. The protocol's ``write_data``
        is looked up per packet, so wrapping it on the instance is enough; the gathered
        bytes are written, in order, by a callback at the end of the current pass. A
        DISCONNECT is written at once with everything before it: the socket closes
        right after it. Returns False when gmqtt's internals are not where expected.
        """
        protocol = self._protocol()
        write = getattr(protocol, "write_data", None)
        if write is None:
            return False
        if getattr(write, "poa_coalesced", False):
            return True
        pending: list[bytes] = []
        loop = asyncio.get_running_loop()

        def flush() -> None:
            if pending:
                data = b"".join(pending)
                pending.clear()
                write(data)

        def coalesced(data: bytes) -> None:
            if not pending:
                loop.call_soon(flush)
            pending.append(data)
            if data[:1] == _DISCONNECT:
                flush()

        coalesced.poa_coalesced = True  # type: ignore[attr-defined]
        protocol.write_data = coalesced
        return True

    async def close(self) -> None:
        self._closing = True
        self.client.reconnect_retries = 0
        await self.client.disconnect()


class MqttAdapter:
    """QoS 1 in and out with acknowledgement after the effect is durable."""

    def __init__(
        self,
        settings: MqttSettings,
        on_message: MessageHandler | None = None,
        *,
        on_delivery: DeliveryHandler | None = None,
        on_event: EventSink | None = None,
        may_act: Callable[[], bool] | None = None,
    ) -> None:
        """``on_message(topic, payload)``: a coroutine per message, acknowledged when it
        returns. Or ``on_delivery(topic, payload, delivery)``: called at once, on the event
        loop, and acknowledged when ``delivery.ack()`` is called (the daemon's way).

        ``may_act()``, asked synchronously before every acknowledgement, publish and
        reconnection: once it says False (a leader that lost its lease, gateway/ha.py)
        nothing more is acknowledged or published, and neither link reconnects (a
        reconnect under the deployment's client id would take the broker session from
        the new leader)."""
        if (on_message is None) == (on_delivery is None):
            raise ValueError("give exactly one of on_message and on_delivery")
        self._settings = settings
        self._handler = on_message
        self._on_delivery = on_delivery
        self._tasks: set[asyncio.Future[Any]] = set()
        self._on_event: EventSink = on_event or (lambda _event, _fields: None)
        self._storage = _AckStorage(self._acked, self._session_lost)
        self._topics: list[str] = []
        self._may_act: Callable[[], bool] = may_act or (lambda: True)
        self._in = _Link(
            "in",
            settings,
            settings.client_id,
            self._on_event,
            receives=True,
            may_act=self._may_act,
        )
        self._out = _Link(
            "out",
            settings,
            settings.client_id + OUT_SUFFIX,
            self._on_event,
            receives=False,
            storage=self._storage,
            may_act=self._may_act,
        )
        if not self._in.take_qos1(self._deliver):
            raise RuntimeError("gmqtt's internals moved: cannot take inbound QoS 1 messages")
        if not (self._in.watching_connacks and self._out.watching_connacks):
            # Without the codes a permanent refusal would leave the daemon idle for ever.
            raise RuntimeError("gmqtt's internals moved: cannot read CONNACK reason codes")
        self._failure: ConnectionRefusedPermanently | None = None
        self._failed = asyncio.Event()
        self._in.on_failure = self._out.on_failure = self._link_failed
        # Only QoS 1 is subscribed; should the broker grant less, QoS 0 messages still
        # reach the handler (with nothing to acknowledge).
        self._in.client.on_message = self._qos0
        self._in.client.on_subscribe = self._on_subscribe
        self._in.connect_hook = self._in_connected
        self._out.connect_hook = self._out_connected
        self._out.refused = self._refused
        self._refusals: dict[int, int] = {}
        self._pending: dict[int, _Pending] = {}
        self.refusals = 0
        self._subscribed: asyncio.Future[None] | None = None
        self.window_size = max(settings.inflight, 1)
        self._window_ready = False
        self._free = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._resync_generation = -1
        self.withheld_not_leader = 0  # acknowledgements not sent once may_act() said no
        # Inbound flow control (see the module docstring).
        self.inbound_limit = max(settings.receive_maximum, 1)
        self.inbound = 0
        self.inbound_peak = 0
        self.pauses = 0
        self._gate = asyncio.Event()  # set: reading; clear: paused
        self._gate.set()
        self._held = False  # paused by the application (hold_intake), whatever the count
        self.flow_control = False

    # -- connection -----------------------------------------------------------------

    async def connect(self) -> None:
        """Connect both links, retrying with jittered backoff until the broker accepts
        (transient refusals included).

        Raises:
            ConnectionRefusedPermanently: the broker refused a link for a reason retrying
                cannot fix (bad user name or password, not authorised, ...).
        """
        # Publishing first: a subscription may deliver as soon as it exists.
        await self._out.connect()
        await self._in.connect()

    def _link_failed(self, exc: ConnectionRefusedPermanently) -> None:
        if self._failure is None:
            self._failure = exc
            self._failed.set()

    @property
    def failure(self) -> ConnectionRefusedPermanently | None:
        """The broker's first permanent refusal of either link, or None."""
        return self._failure

    async def wait_failed(self) -> ConnectionRefusedPermanently:
        """Wait until the broker refuses a link permanently, and return the refusal.

        For the daemon while it runs: a reconnect refused that way is not retried (the
        same CONNECT would be refused again), so the process must stop and exit non-zero
        rather than idle. Also returns for a refusal of the first connection, which
        :meth:`connect` raises.
        """
        await self._failed.wait()
        assert self._failure is not None
        return self._failure

    def _out_connected(self, _session_present: bool, properties: Any, _first: bool) -> None:
        # Every connection: a broker restarted with another max_inflight_messages
        # changes the limit. gmqtt allocates at most receive_maximum - 1 packet ids and
        # raises OverflowError beyond; its allocator is the authority.
        limit = self._out.packet_id_limit() or _property(properties, "receive_maximum")
        size = max(self._settings.inflight, 1)
        if limit is not None:
            size = max(1, min(size, limit - 1))
        if not self._window_ready:
            self.window_size = size
            self._free = size
            self._window_ready = True
        elif size != self.window_size:
            # Slots in use stay in use; a smaller window waits for them (free < 0).
            self._free += size - self.window_size
            self.window_size = size
            while self._free > 0 and self._wake_one():
                self._free -= 1

    def _in_connected(self, session_present: bool, _properties: Any, first: bool) -> None:
        self.flow_control = self._in.gate_reads(self._gate)
        if not self.flow_control:
            self._on_event("mqtt.internals", {"link": "in", "reason": "no-flow-control"})
        if not first and not session_present and self._topics:
            # The broker lost our session (and so our subscriptions): subscribe again.
            self._in.client.subscribe([gmqtt.Subscription(t, qos=1) for t in self._topics])

    def _on_subscribe(self, _client: Any, _mid: Any, _qos: Any, _properties: Any) -> None:
        if self._subscribed is not None and not self._subscribed.done():
            self._subscribed.set_result(None)

    async def subscribe(self, topics: list[str]) -> None:
        """Subscribe at QoS 1 and wait for the broker's SUBACK."""
        self._topics = list(topics)
        self._subscribed = asyncio.get_running_loop().create_future()
        self._in.client.subscribe([gmqtt.Subscription(t, qos=1) for t in topics])
        await self._subscribed

    async def close(self) -> None:
        """Disconnect cleanly (unacknowledged inbound messages stay with the broker)."""
        await self._in.close()
        await self._out.close()

    @property
    def connected(self) -> bool:
        """True while both connections are up: each between its ``mqtt.connected`` event
        and its next ``mqtt.disconnected`` (a refused CONNACK never counts as up)."""
        return self._in.up and self._out.up

    @property
    def paused(self) -> bool:
        """True while inbound reading waits for handlers to finish, or is held."""
        return not self._gate.is_set()

    def hold_intake(self) -> None:
        """Stop reading inbound messages until :meth:`release_intake`, whatever the number
        in progress: the daemon holds intake while its state store cannot commit, so the
        broker keeps new messages instead of the gateway deciding what it cannot record."""
        if not self._held:
            self._held = True
            self.pauses += 1
            self._gate.clear()

    def release_intake(self) -> None:
        """Read again after :meth:`hold_intake` (unless the inbound bound still holds it)."""
        if self._held:
            self._held = False
            if self.inbound < self.inbound_limit:
                self._gate.set()

    @property
    def coalescing(self) -> bool:
        """True while both connections gather their writes (see :meth:`_Link.coalesce_writes`)."""
        return self._in.coalescing and self._out.coalescing

    @property
    def checks_puback_reasons(self) -> bool:
        """True when refused publishes are recognised (see :meth:`_Link._watch_puback_reasons`)."""
        return self._out.watching_reasons

    @property
    def reconnects(self) -> int:
        """Reconnections so far, both links together."""
        return self._in.reconnects + self._out.reconnects

    # -- inbound ----------------------------------------------------------------------

    def _qos0(self, _client: Any, topic: str, payload: bytes, qos: int, _properties: Any) -> int:
        if qos == 0:
            self._deliver(None, topic, payload)
        return 0

    def _deliver(self, mid: int | None, topic: str, payload: bytes) -> None:
        delivery = Delivery(self, mid, self._in.generation, topic)
        self.inbound += 1
        if self.inbound >= self.inbound_limit and not self.paused:
            self.pauses += 1
            self._gate.clear()
        self.inbound_peak = max(self.inbound_peak, self.inbound)
        if self._on_delivery is not None:
            try:
                self._on_delivery(topic, payload, delivery)
            except Exception as exc:  # noqa: BLE001 - not acknowledged, and said why
                delivery.fail(exc)
            return
        self._spawn(self._run_handler(topic, payload, delivery))

    def _spawn(self, awaitable: Awaitable[Any]) -> None:
        # The loop keeps only weak references to tasks: hold them until they finish.
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_handler(self, topic: str, payload: bytes, delivery: Delivery) -> None:
        assert self._handler is not None
        try:
            await self._handler(topic, payload)
        except Exception as exc:  # noqa: BLE001 - not acknowledged, and said why
            delivery.fail(exc)
        else:
            delivery.ack()

    def _settle(self, delivery: Delivery, exc: BaseException | None) -> None:
        if delivery.settled:
            return
        delivery.settled = True
        self.inbound -= 1
        if self.paused and not self._held and self.inbound <= self.inbound_limit // 2:
            self._gate.set()
        generation = delivery.generation
        if not self._may_act():
            # Another instance leads: it gets this message from the broker session. Said
            # once, then counted: a step-down finds up to receive_maximum in hand.
            self.withheld_not_leader += 1
            if self.withheld_not_leader == 1:
                self._on_event(
                    "mqtt.ack_withheld",
                    {"reason": "not the leader (the rest: withheld in mqtt.stats)"},
                )
            return
        if exc is not None:
            # Not acknowledged; the broker redelivers it only on a new session, so
            # start one (once per failing connection).
            if generation == self._in.generation and self._resync_generation != generation:
                self._resync_generation = generation
                self._on_event("mqtt.resync", {"reason": repr(exc), "topic": delivery.topic})
                self._spawn(self._in.resync())
            self._on_event(
                "mqtt.ack_withheld", {"reason": f"handler failed: {exc!r}", "topic": delivery.topic}
            )
            return
        if generation != self._in.generation or not self._in.client.is_connected:
            # Its packet id belonged to a connection that is gone: acknowledging it on a
            # new one could acknowledge a different message. The broker redelivers it.
            self._on_event(
                "mqtt.ack_withheld",
                {"reason": f"connection {generation} is gone; the broker will redeliver"},
            )
            return
        if delivery.mid is not None:
            self._in.send_puback(delivery.mid)

    # -- outbound ---------------------------------------------------------------------

    def _session_lost(self) -> None:
        # gmqtt clears its store when the broker answers without our session: those
        # publishes will never be acknowledged. At least once: each goes out again, in
        # order, on the new session, keeping its window slot and its group.
        pending, self._pending = self._pending, {}
        self._refusals.clear()
        for mid in pending:
            # gmqtt keeps the packet ids of the publishes it forgot allocated, so each
            # session loss would shrink the pool until every publish overflowed.
            self._out.free_packet_id(mid)
        lost = list(pending.values())
        if lost:
            asyncio.get_running_loop().call_soon(self._resend, lost)

    def _resend(self, lost: list[_Pending]) -> None:
        for entry in lost:
            if entry.group.future.done():
                self._release()  # its group already failed: nobody waits for it
            else:
                self._send(entry.topic, entry.payload, entry.group)

    def _refused(self, mid: int, code: int) -> None:
        # Called just before gmqtt removes the message as if it had been accepted.
        self._refusals[mid] = code

    def _acked(self, mid: int) -> None:
        entry = self._pending.pop(mid, None)
        if entry is None:
            return
        self._release()
        code = self._refusals.pop(mid, None) if self._refusals else None
        if code is None:
            entry.group.one_done()
        else:
            self.refusals += 1
            entry.group.fail(PublishRefused(entry.topic, code))

    @property
    def inflight_publishes(self) -> int:
        """Publishes sent and not yet acknowledged by the broker."""
        return self.window_size - self._free if self._window_ready else 0

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and return once the broker has acknowledged it."""
        await self.publish_many([(topic, payload)])

    async def publish_many(self, messages: list[tuple[str, bytes]]) -> None:
        """Publish each (topic, payload) at QoS 1, in order, and return once the broker
        has acknowledged them all; raises :class:`PublishRefused` if it refused one.

        One future for the lot rather than one per message: a batch of alerts costs
        one wake-up, not one each.
        """
        if not self._window_ready:
            raise NotConnected("publish before the first connection")
        if not self._may_act():
            raise NotConnected("not the leader: publishing is fenced")
        if not messages:
            return
        group = _Group(asyncio.get_running_loop(), len(messages))
        for topic, payload in messages:
            await self._acquire()
            self._send(topic, payload, group)
        await group.future

    def publish_soon(self, topic: str, payload: bytes) -> asyncio.Task[None]:
        """Publish at QoS 1 in the background (the live suppression feed)."""
        return asyncio.ensure_future(self.publish(topic, payload))

    def _send(self, topic: str, payload: bytes, group: _Group) -> None:
        # The caller holds a window slot, which the acknowledgement releases.
        if not self._may_act():
            self._release()
            group.fail(NotConnected("not the leader: publishing is fenced"))
            return
        try:
            self._out.client.publish(topic, payload, qos=1)
        except Exception as exc:  # noqa: BLE001 - any failure to send fails the group
            self._release()
            group.fail(exc)
            return
        mid = self._storage.last_mid
        if mid is None:
            self._release()
            group.fail(RuntimeError("gmqtt did not store the QoS 1 publish"))
            return
        self._pending[mid] = _Pending(topic, payload, group)

    async def _acquire(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # granted and cancelled at once: pass the slot on
            raise

    def _release(self) -> None:
        if self._free >= 0 and self._wake_one():
            return
        self._free += 1

    def _wake_one(self) -> bool:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return True
        return False


class _Group:
    """Publishes awaited together: done when all are acknowledged, failed at the first
    refusal."""

    __slots__ = ("future", "remaining")

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self.future: asyncio.Future[None] = loop.create_future()
        self.remaining = count

    def one_done(self) -> None:
        self.remaining -= 1
        if self.remaining == 0 and not self.future.done():
            self.future.set_result(None)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


class _Pending(NamedTuple):
    """A publish awaiting the broker's PUBACK (kept to send it again if the session is lost)."""

    topic: str
    payload: bytes
    group: _Group


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
    """Route errors the event loop would print (an exception nobody retrieved, in gmqtt
    or here) through our log, as ``loop.error`` with the reason."""

    def handler(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, asyncio.CancelledError):
            # A task cancelled at shutdown (gmqtt's reconnect among them, whose done
            # callback re-raises it): not a failure.
            return
        fields = {"reason": repr(exc) if exc else context.get("message", "")}
        if exc is not None and context.get("message"):
            fields["detail"] = str(context["message"])[:300]
        log("loop.error", fields)

    loop.set_exception_handler(handler)
