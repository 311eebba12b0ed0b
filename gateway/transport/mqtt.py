"""The MQTT adapter: asyncio sockets carrying bytes to and from the sans-I/O session.

Theory of operation
-------------------
At-least-once, end to end. The protocol lives in :class:`~gateway.transport.session.MqttSession`
(a pure state machine over the ``mqtt5`` codec: bytes and time in, bytes and events out);
this module only opens sockets, moves bytes, keeps one timer per connection and turns the
session's events into the daemon's (docs/decisions.md D28, D35). No MQTT library runs here,
so nothing reaches into one.

The adapter holds two connections to the broker, each with a fixed client id and a
persistent session (MQTT 5 ``clean_start`` 0 and a long session expiry; 3.1.1 clean
session 0): ``client_id`` subscribes and receives, ``client_id-out`` publishes. The broker
keeps the receiving session's subscriptions and queues messages while the gateway is away.

Why two connections. Inbound messages in progress are bounded by ``receive_maximum``: the
session stops parsing at the bound (mosquitto before 2.0.13 ignores the Receive Maximum we
send once acknowledgements flow, eclipse/mosquitto#2306) and the adapter stops *reading*
the socket, so the broker keeps the rest queued and a backlog of a million alerts stays
with the broker, not in the gateway's memory. The PUBACKs of our own publishes must still
be read meanwhile (the handlers in progress wait for them), which is why publishing has a
connection of its own: on one connection, pausing would deadlock.

Inbound messages are QoS 1 and acknowledged only once their effect is durable: each is
handed to the application with a :class:`Delivery`, whose :meth:`Delivery.ack` has the
session write the PUBACK, if the message's connection is still the current one (a packet
id of a lost connection may name another message on the new one; the broker redelivers
it). A coroutine handler (``on_message``, for the simulator and tests) is run as a task
and acknowledged when it returns; the daemon's ``on_delivery`` handler is called at once
and acknowledges when it is done (docs/decisions.md D20). A message whose effect failed
(:meth:`Delivery.fail`) is not acknowledged; since mosquitto redelivers only on a new
connection, the adapter reconnects (once per failing connection).

Outbound publishes are QoS 1 and awaitable until the broker's PUBACK. The session keeps
them across reconnects, re-sends them with DUP when the broker kept our session and as new
packets when it did not, and sends at most ``min(inflight, the broker's Receive Maximum)``
at once. A PUBACK with a reason code of 0x80 or above fails the publish
(:class:`PublishRefused`): the broker did not take the message.

Writes are gathered: whatever the session has to send after a read, an acknowledgement or
a publish is written once, at the end of the event loop's pass (one system call for a
batch of PUBACKs, not one each).

Reconnects: exponential backoff between ``reconnect_min`` and ``reconnect_max`` with full
jitter, so a fleet of gateways does not reconnect in lockstep. Connection events
(``on_event``), one per fact, so that the daemon's ``poa_up`` can follow the connection:
``mqtt.connected`` when a link comes up, ``mqtt.disconnected`` when it goes down (with
why: closed by the broker, a DISCONNECT and its reason, no PINGRESP, a packet the session
rejected), ``mqtt.connect_failed`` for every attempt that fails (no socket, a transient
refusal, a connection closed before its CONNACK, no CONNACK in time), ``mqtt.refused`` for
a permanent refusal, ``mqtt.rejected`` for bytes from the broker that are not a packet we
accept (the connection is then closed, never the process). :attr:`MqttAdapter.connected`
is true exactly while both links are between their ``mqtt.connected`` and the next
``mqtt.disconnected``.

Refusals: a CONNACK refusal the same CONNECT would meet again (bad user name or password,
not authorised, a banned or invalid client id, an unsupported protocol version) makes the
first :meth:`MqttAdapter.connect` raise :class:`ConnectionRefusedPermanently`; on a
reconnect it is reported (``mqtt.refused``) and ends :meth:`MqttAdapter.wait_failed`, so
that the daemon exits non-zero rather than idle deaf. Transient refusals are retried with
the backoff (docs/decisions.md D23).

Leadership (docs/ha.md): ``may_act()`` is asked before every acknowledgement, publish and
connection attempt. Once it says no, nothing more is acknowledged or published and no link
connects again: a reconnect under the deployment's client id would take the broker session
from the new leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast

import msgspec

from gateway.errors import GatewayError
from gateway.transport.codes import SESSION_EXPIRY_S, refusal_name
from gateway.transport.session import (
    Connected,
    Disconnected,
    Event,
    MessageReceived,
    MqttSession,
    PacketRejected,
    PublishAcked,
    Refused,
    SessionState,
    Subscribed,
    SubscribeRefused,
    TimedOut,
    Waited,
)
from gateway.transport.session import PublishRefused as _Refused

__all__ = [
    "OUT_SUFFIX",
    "ConnectionRefusedPermanently",
    "Delivery",
    "DeliveryHandler",
    "EventSink",
    "MessageHandler",
    "MqttAdapter",
    "MqttSettings",
    "NotConnected",
    "PublishRefused",
    "SubscriptionRefused",
    "install_exception_filter",
]

MessageHandler = Callable[[str, bytes], Awaitable[None]]
DeliveryHandler = Callable[[str, bytes, "Delivery"], None]
EventSink = Callable[[str, dict[str, Any]], None]

OUT_SUFFIX: Final = "-out"
"""The publishing connection's client id is the configured one with this suffix."""

_CLOSE_WAIT_S: Final = 5.0  # at close, how long the broker gets to see our DISCONNECT


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
    inflight: int = 100  # unacknowledged publishes (and at most the broker's Receive Maximum)
    receive_maximum: int = 1000  # inbound messages being handled at once
    # How long the broker keeps the session after a disconnect: a week for the daemon;
    # 0 for a one-off client (poa-gateway quarantine replay), whose session ends with it.
    session_expiry_s: int = SESSION_EXPIRY_S
    # MQTT 5, or 4 for a broker that speaks only MQTT 3.1.1 (the embedded demo broker).
    # Both acknowledge only after the effect; 3.1.1 has no reason codes on PUBACK, so a
    # broker's refusal of a publish cannot be told, and no Receive Maximum.
    protocol: int = 5
    # No CONNACK this long after the socket opened: the attempt failed.
    connect_timeout_s: float = 30.0

    def __repr__(self) -> str:  # never show the password
        return f"MqttSettings(host={self.host!r}, port={self.port}, client_id={self.client_id!r})"


class NotConnected(GatewayError):
    """A publish was attempted before the first connection, or after leadership was lost."""


class PublishRefused(GatewayError):
    """The broker answered a publish with a failure reason code (MQTT 5), e.g. 0x87
    "not authorized" from an ACL: the message was not accepted."""

    def __init__(self, topic: str, code: int) -> None:
        super().__init__(f"the broker refused a publish on {topic!r}: reason code 0x{code:02X}")
        self.topic = topic
        self.code = code


class SubscriptionRefused(GatewayError):
    """The broker refused a topic filter we subscribed to (a SUBACK code 0x80 or above)."""

    def __init__(self, topics: tuple[str, ...], codes: tuple[int, ...]) -> None:
        shown = ", ".join(f"{t} (0x{c:02X})" for t, c in zip(topics, codes, strict=False))
        super().__init__(f"the broker refused the subscription: {shown}")
        self.topics = topics
        self.codes = codes


class ConnectionRefusedPermanently(GatewayError):
    """The broker refused to connect us for a reason retrying cannot fix (see
    :data:`~gateway.transport.codes.PERMANENT_REFUSALS`): bad user name or password, not
    authorised, a banned or invalid client id... The configuration must change.

    Attributes:
        code: the CONNACK's reason code (MQTT 5 form, also for a 3.1.1 broker).
        reason: its name, a stable slug (``refusal_name``), e.g. ``not-authorized``.
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
            "fix this: check [broker] username, password, client_id and protocol against "
            "the broker's"
        )


class Delivery:
    """One inbound message, handed to a :data:`DeliveryHandler`: call :meth:`ack` once its
    effect is durable (the PUBACK goes out), or :meth:`fail` to leave it with the broker
    for redelivery. The first call counts; later ones are ignored."""

    __slots__ = ("_adapter", "generation", "number", "settled", "started", "topic")

    def __init__(self, adapter: MqttAdapter, number: int, generation: int, topic: str) -> None:
        self._adapter = adapter
        self.number = number  # the session's delivery number
        self.generation = generation  # the receiving link's connection it came on
        self.topic = topic
        self.started = time.monotonic()
        self.settled = False

    def ack(self) -> None:
        """The effect is durable: acknowledge (unless its connection is gone)."""
        self._adapter._settle(self, None)

    def fail(self, exc: BaseException) -> None:
        """The effect could not be made durable: do not acknowledge."""
        self._adapter._settle(self, exc)


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


class _Link(asyncio.Protocol):
    """One connection of the adapter and its session: opens the socket (again, with
    backoff), moves bytes between it and the session, keeps the session's one timer, and
    hands the session's events to the adapter."""

    def __init__(
        self,
        name: str,
        settings: MqttSettings,
        client_id: str,
        adapter: MqttAdapter,
        *,
        receive_maximum: int,
    ) -> None:
        self.name = name
        self._settings = settings
        self._client_id = client_id
        self._adapter = adapter
        self.session = MqttSession(
            client_id,
            username=settings.username or None,
            password=settings.password if settings.username else None,
            keep_alive_s=settings.keepalive_s,
            session_expiry_s=settings.session_expiry_s,
            inflight=max(1, min(settings.inflight, 65_000)),
            receive_maximum=receive_maximum,
            connect_timeout_s=settings.connect_timeout_s,
            protocol=settings.protocol,
        )
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        self._flush_pending = False
        self._resume_pending = False
        self._reading = True
        self._lost: asyncio.Future[None] | None = None
        self._ended: str | None = None  # why the current connection ended, when known
        self._refused_now = False  # the current attempt's CONNACK was a refusal
        self._run_task: asyncio.Task[None] | None = None
        self._handshaking = False  # the socket is open, the TLS handshake not done
        self._attempt = 0
        self._retry_delay = 0.0  # drawn per failed attempt or lost connection
        self._closing = False
        self._resync_generation = -1
        self.generation = 0  # accepted connections so far
        self.up = False  # from the accepting CONNACK to the end of that connection
        self.ever_connected = asyncio.Event()
        self.reconnects = 0
        self.failure: ConnectionRefusedPermanently | None = None
        self.failed = asyncio.Event()

    # -- the connection loop --------------------------------------------------------

    async def connect(self) -> None:
        """Connect, retrying with jittered backoff until the broker accepts; the link
        then reconnects by itself whenever the connection is lost.

        Raises:
            ConnectionRefusedPermanently: the broker refused for a reason retrying
                cannot fix.
        """
        if self._run_task is None:
            self._run_task = asyncio.create_task(self._run(), name=f"mqtt-{self.name}")
        waits = [
            asyncio.ensure_future(self.ever_connected.wait()),
            asyncio.ensure_future(self.failed.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        if not self.ever_connected.is_set():
            assert self.failure is not None
            raise self.failure

    async def _run(self) -> None:
        s = self._settings
        while not self._closing and self.failure is None:
            if not self._adapter.may_act():
                self._adapter.event("mqtt.fenced", link=self.name, reason="not-the-leader")
                return
            self._lost = self._loop.create_future()
            self._ended = None
            self._refused_now = False
            context = self._ssl()
            self._handshaking = context is not None
            try:
                raw, _ = await self._loop.create_connection(lambda: self, s.host, s.port)
            except (OSError, TimeoutError) as exc:
                if self._closing:
                    return
                self.failed_attempt("cannot-connect", detail=_describe(exc))
                await asyncio.sleep(self._retry_delay)
                continue
            if context is not None and not await self._secure(raw, context):
                await asyncio.sleep(self._retry_delay)
                continue
            # Shielded: close() cancels this loop, and then waits on the same future for
            # the connection's end.
            await asyncio.shield(self._lost)
            if self._closing or self.failure is not None:
                return
            await asyncio.sleep(self._retry_delay)

    async def _secure(self, raw: asyncio.BaseTransport, context: ssl.SSLContext) -> bool:
        """The TLS handshake on the open socket, then the session's CONNECT. Done here
        rather than by ``create_connection(ssl=...)``: when a handshake fails that way,
        asyncio leaves the plain socket open (CPython 3.11), one more per reconnect to a
        broker whose certificate is not trusted; here it is closed."""
        transport = cast("asyncio.Transport", raw)
        try:
            secured = await self._loop.start_tls(
                transport,
                self,
                context,
                server_hostname=self._settings.host,
                ssl_handshake_timeout=self._settings.connect_timeout_s,
            )
        except BaseException as exc:
            transport.abort()
            self._transport = None
            self._handshaking = False
            if isinstance(exc, Exception) and not self._closing:
                self.failed_attempt("tls-failed", detail=_describe(exc))
                return False
            raise
        self._handshaking = False
        if secured is None:  # closed during the handshake
            transport.abort()
            self._transport = None
            self.failed_attempt("tls-failed", detail="the connection closed")
            return False
        self._begin(secured)
        return True

    def _ssl(self) -> ssl.SSLContext | None:
        s = self._settings
        if not s.tls:
            return None
        context = ssl.create_default_context(cafile=s.ca_file or None)
        if s.cert_file:
            context.load_cert_chain(s.cert_file, s.key_file or None)
        return context

    def _next_delay(self) -> float:
        s = self._settings
        ceiling = min(s.reconnect_max_s, s.reconnect_min_s * (2**self._attempt))
        self._attempt = min(self._attempt + 1, 32)
        return random.uniform(s.reconnect_min_s, max(ceiling, s.reconnect_min_s))  # noqa: S311

    def failed_attempt(self, reason: str, **fields: Any) -> None:
        # Drawn per failed attempt, so that the backoff grows with each, not only with
        # each lost connection.
        self._retry_delay = self._next_delay()
        self._adapter.event(
            "mqtt.connect_failed",
            link=self.name,
            reason=reason,
            **fields,
            retry_in_s=self._retry_delay,
        )

    # -- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The socket is open: the session writes its CONNECT (after the TLS handshake,
        with TLS: :meth:`_secure`)."""
        # A stream transport (uvloop's is not an asyncio.Transport subclass, but has its
        # methods).
        self._transport = cast("asyncio.Transport", transport)
        if not self._handshaking:
            self._begin(self._transport)

    def _begin(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._reading = True
        self.session.connect(self._loop.time())
        self._flush()
        self._arm()

    def data_received(self, data: bytes) -> None:
        """Bytes from the broker: to the session, and its events on."""
        self._handle(self.session.receive(data, self._loop.time()))

    def eof_received(self) -> bool | None:
        """The broker closed its side: close ours (no half-open connections)."""
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """The socket is closed, by either side, for whatever reason."""
        was_up = self.up
        state = self.session.state
        self.session.connection_lost()
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadline = None
        self.up = False
        if was_up:
            reason = self._ended or (_describe(exc) if exc is not None else "closed")
            self._retry_delay = self._next_delay()
            self._adapter.link_down(self, reason)
        elif self._ended is not None and not self._refused_now:
            self.failed_attempt(self._ended)
        elif not self._refused_now and not self._closing and state is SessionState.CONNECTING:
            self.failed_attempt("closed-before-connack")
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        """The socket's buffer is full (a slow broker): nothing to do, the session's window
        bounds what is written."""

    def resume_writing(self) -> None:
        """The socket's buffer drained."""

    # -- the session's events -------------------------------------------------------

    def _handle(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, MessageReceived):
                self._adapter.deliver(self, event)
            elif isinstance(event, PublishAcked):
                self._adapter.acked(event.token, None)
            elif isinstance(event, _Refused):
                self._adapter.acked(event.token, event.code)
            elif isinstance(event, Connected):
                self._connected(event)
            elif isinstance(event, Subscribed | SubscribeRefused):
                self._adapter.subscribed(event)
            else:
                self._ending(event)
        if self.session.paused and self._reading and self._transport is not None:
            self._reading = False
            self._transport.pause_reading()
            if not self.session.held:
                self._adapter.pauses += 1  # the inbound bound (hold_intake counts its own)
        self._flush()
        self._arm()

    def _connected(self, event: Connected) -> None:
        if not self._adapter.may_act():
            # Connected after this process lost the right to act: leave at once, so the
            # broker session goes back to the instance that holds it.
            self._adapter.event("mqtt.fenced", link=self.name, reason="connected-after-fence")
            self._closing = True
            self.session.disconnect()
            self._close_transport()
            return
        self.generation += 1
        self._attempt = 0
        self.up = True
        first = not self.ever_connected.is_set()
        if not first:
            self.reconnects += 1
        self.ever_connected.set()
        self._adapter.link_up(self, event, first)

    def _ending(self, event: Event) -> None:
        # A terminal event: the session is CLOSED; write what it has (a DISCONNECT with
        # the reason, when it rejected a packet) and close the socket.
        if isinstance(event, Refused):
            self._refused_now = True
            self._adapter.refused(self, event.code, permanent=event.permanent)
        elif isinstance(event, TimedOut):
            self._ended = (
                "connack-timeout" if event.waited_for is Waited.CONNACK else "pingresp-timeout"
            )
        elif isinstance(event, Disconnected):
            self._ended = f"disconnect-by-broker: 0x{event.code:02X}" + (
                f" {event.reason}" if event.reason else ""
            )
        elif isinstance(event, PacketRejected):
            self._ended = f"rejected: {event.reason}: {event.detail}"[:300]
            self._adapter.event(
                "mqtt.rejected", link=self.name, reason=str(event.reason), detail=event.detail[:300]
            )
        self._flush()
        self._close_transport()

    def _close_transport(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # -- writes, reads and time -----------------------------------------------------

    def kick(self) -> None:
        """The session has bytes to send (an acknowledgement, a publish): write them at
        the end of this pass of the event loop, with whatever else comes meanwhile."""
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        data = self.session.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def maybe_resume(self) -> None:
        """Deliveries were settled (or intake released): read again once the session's
        bound allows, in a later pass (never inside a handler's call)."""
        if not self._reading and not self.session.paused and not self._resume_pending:
            self._resume_pending = True
            self._loop.call_soon(self._resume)

    def _resume(self) -> None:
        self._resume_pending = False
        if self._reading or self.session.paused or self._transport is None:
            return
        self._reading = True
        self._transport.resume_reading()
        # The bytes kept while paused are parsed now.
        self._handle(self.session.receive(b"", self._loop.time()))

    def _arm(self) -> None:
        deadline = self.session.next_deadline()
        if deadline == self._deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._deadline = deadline
        self._timer = None if deadline is None else self._loop.call_at(deadline, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._deadline = None
        self._handle(self.session.tick(self._loop.time()))

    def resync(self) -> None:
        """End the current connection (a new one follows after the backoff): mosquitto
        redelivers an unacknowledged message only on a new connection."""
        if self._transport is not None:
            self._ended = "resync"
            self.session.disconnect()
            self._flush()
            self._close_transport()

    async def close(self) -> None:
        """Disconnect cleanly and stop reconnecting (the broker keeps the session)."""
        self._closing = True
        if self._run_task is not None and not self._run_task.done():
            self._run_task.cancel()
            # First the connection loop ends: a connection it was opening may come up
            # meanwhile (its transport is then ours to close, below).
            with contextlib.suppress(asyncio.CancelledError):
                await self._run_task
        if self._transport is not None:
            lost = self._lost
            self.session.disconnect()
            self._flush()
            self._close_transport()
            if lost is not None and not lost.done():
                try:
                    await asyncio.wait_for(asyncio.shield(lost), _CLOSE_WAIT_S)
                except TimeoutError:
                    if self._transport is not None:
                        self._transport.abort()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


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
        connection attempt: once it says False (a leader that lost its lease,
        gateway/ha.py) nothing more is acknowledged or published, and neither link
        connects again."""
        if (on_message is None) == (on_delivery is None):
            raise ValueError("give exactly one of on_message and on_delivery")
        self._settings = settings
        self._handler = on_message
        self._on_delivery = on_delivery
        self._on_event: EventSink = on_event or (lambda _event, _fields: None)
        self._may_act: Callable[[], bool] = may_act or (lambda: True)
        self._tasks: set[asyncio.Future[Any]] = set()
        self.inbound_limit = max(settings.receive_maximum, 1)
        self._in = _Link(
            "in", settings, settings.client_id, self, receive_maximum=self.inbound_limit
        )
        # The publishing link receives nothing of its own: its bound only guards against
        # a broker that sends it messages anyway.
        self._out = _Link(
            "out", settings, settings.client_id + OUT_SUFFIX, self, receive_maximum=16
        )
        self._failure: ConnectionRefusedPermanently | None = None
        self._failed = asyncio.Event()
        self._groups: dict[int, tuple[_Group, str]] = {}  # publish token -> (group, topic)
        self._subscribed: asyncio.Future[None] | None = None
        self.refusals = 0  # publishes the broker refused
        self.withheld_not_leader = 0  # acknowledgements not sent once may_act() said no
        self.inbound = 0  # deliveries handed out and not yet settled
        self.inbound_peak = 0
        self.pauses = 0
        self.window_size = max(1, settings.inflight)
        """Publishes that may be unacknowledged at once on the current connection:
        ``inflight``, or the broker's Receive Maximum when lower."""
        self._held = False

    # -- events from the links -----------------------------------------------------------

    def may_act(self) -> bool:
        """Whether this process may act (see the constructor)."""
        return self._may_act()

    def event(self, name: str, **fields: Any) -> None:
        """Report an event to the sink."""
        self._on_event(name, fields)

    def link_up(self, link: _Link, event: Connected, first: bool) -> None:
        """A link's connection was accepted."""
        if link is self._out:
            self.window_size = event.window
        self.event(
            "mqtt.connected",
            link=link.name,
            generation=link.generation,
            reconnect=not first,
            session_present=event.session_present,
        )

    def link_down(self, link: _Link, reason: str) -> None:
        """A link's accepted connection ended."""
        fields: dict[str, Any] = {"link": link.name, "reason": reason}
        if not self._may_act():
            fields["reconnect"] = False
        self._on_event("mqtt.disconnected", fields)

    def refused(self, link: _Link, code: int, *, permanent: bool) -> None:
        """A link's CONNECT was refused."""
        if not permanent:
            link.failed_attempt(refusal_name(code), code=code)
            return
        s = self._settings
        failure = ConnectionRefusedPermanently(
            code, host=s.host, port=s.port, client_id=link.session.client_id, link=link.name
        )
        link.failure = failure
        link.failed.set()
        self.event(
            "mqtt.refused",
            link=link.name,
            code=code,
            reason=failure.reason,
            host=s.host,
            port=s.port,
            client_id=failure.client_id,
        )
        if self._failure is None:
            self._failure = failure
            self._failed.set()

    def subscribed(self, event: Subscribed | SubscribeRefused) -> None:
        """A SUBACK."""
        waiting = self._subscribed
        if isinstance(event, SubscribeRefused):
            self.event("mqtt.subscribe_refused", topics=list(event.topics), codes=list(event.codes))
            if waiting is not None and not waiting.done():
                waiting.set_exception(SubscriptionRefused(event.topics, event.codes))
            return
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

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

    @property
    def failure(self) -> ConnectionRefusedPermanently | None:
        """The broker's first permanent refusal of either link, or None."""
        return self._failure

    async def wait_failed(self) -> ConnectionRefusedPermanently:
        """Wait until the broker refuses a link permanently, and return the refusal.

        For the daemon while it runs: such a refusal is not retried (the same CONNECT
        would be refused again), so the process must stop and exit non-zero rather than
        idle. Also returns for a refusal of the first connection, which :meth:`connect`
        raises.
        """
        await self._failed.wait()
        assert self._failure is not None
        return self._failure

    async def subscribe(self, topics: list[str]) -> None:
        """Subscribe at QoS 1 and wait for the broker's SUBACK (kept across reconnects:
        subscribed again whenever the broker lost our session).

        Raises:
            SubscriptionRefused: the broker refused a topic filter.
        """
        self._subscribed = asyncio.get_running_loop().create_future()
        self._in.session.subscribe(list(topics))
        self._in.kick()
        await self._subscribed

    async def close(self) -> None:
        """Disconnect cleanly (unacknowledged inbound messages stay with the broker)."""
        await self._in.close()
        await self._out.close()
        for group, _ in list(self._groups.values()):
            group.fail(NotConnected("the adapter was closed"))
        self._groups.clear()

    @property
    def connected(self) -> bool:
        """True while both connections are up: each between its ``mqtt.connected`` event
        and its next ``mqtt.disconnected`` (a refused CONNACK never counts as up)."""
        return self._in.up and self._out.up

    @property
    def paused(self) -> bool:
        """True while inbound reading waits for handlers to finish, or is held."""
        return self._in.session.paused

    def hold_intake(self) -> None:
        """Stop reading inbound messages until :meth:`release_intake`, whatever the number
        in progress: the daemon holds intake while its state store cannot commit, so the
        broker keeps new messages instead of the gateway deciding what it cannot record."""
        if not self._held:
            self._held = True
            self.pauses += 1
            self._in.session.hold()

    def release_intake(self) -> None:
        """Read again after :meth:`hold_intake` (unless the inbound bound still holds it)."""
        if self._held:
            self._held = False
            self._in.session.release()
            self._in.maybe_resume()

    @property
    def reconnects(self) -> int:
        """Reconnections so far, both links together."""
        return self._in.reconnects + self._out.reconnects

    # -- inbound ----------------------------------------------------------------------

    def deliver(self, link: _Link, event: MessageReceived) -> None:
        """A message from the broker: to the application, with its :class:`Delivery`."""
        delivery = Delivery(self, event.delivery, link.generation, event.topic)
        if link is not self._in:
            # Nothing is subscribed on the publishing link: a broker bug. Acknowledged,
            # so it does not come back, and said.
            self.event("mqtt.unexpected_message", link=link.name, topic=event.topic[:200])
            link.session.ack(event.delivery)
            link.kick()
            return
        self.inbound += 1
        self.inbound_peak = max(self.inbound_peak, self.inbound)
        if self._on_delivery is not None:
            try:
                self._on_delivery(event.topic, event.payload, delivery)
            except Exception as exc:  # noqa: BLE001 - not acknowledged, and said why
                delivery.fail(exc)
            return
        self._spawn(self._run_handler(event.topic, event.payload, delivery))

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
        link, session = self._in, self._in.session
        if not self._may_act():
            # Another instance leads: it gets this message from the broker session. Said
            # once, then counted: a step-down finds up to receive_maximum in hand.
            session.withhold(delivery.number)
            self.withheld_not_leader += 1
            if self.withheld_not_leader == 1:
                self.event(
                    "mqtt.ack_withheld",
                    reason="not the leader (the rest: withheld in mqtt.stats)",
                )
        elif exc is not None:
            session.withhold(delivery.number)
            # Not acknowledged; mosquitto redelivers it only on a new connection, so
            # start one (once per failing connection).
            generation = delivery.generation
            if generation == link.generation and link._resync_generation != generation:
                link._resync_generation = generation
                self.event("mqtt.resync", reason=repr(exc), topic=delivery.topic)
                link.resync()
            self.event("mqtt.ack_withheld", reason=f"handler failed: {exc!r}", topic=delivery.topic)
        elif session.ack(delivery.number):
            link.kick()
        else:
            # Its packet id belonged to a connection that is gone: acknowledging it on a
            # new one could acknowledge a different message. The broker redelivers it.
            self.event(
                "mqtt.ack_withheld",
                reason=f"connection {delivery.generation} is gone; the broker will redeliver",
            )
        link.maybe_resume()

    # -- outbound ---------------------------------------------------------------------

    def acked(self, token: int, refused_code: int | None) -> None:
        """The broker's PUBACK for the publish of ``token``."""
        entry = self._groups.pop(token, None)
        if entry is None:
            return
        group, topic = entry
        if refused_code is None:
            group.one_done()
        else:
            self.refusals += 1
            group.fail(PublishRefused(topic, refused_code))

    @property
    def inflight_publishes(self) -> int:
        """Publishes sent and not yet acknowledged by the broker."""
        return self._out.session.outstanding

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and return once the broker has acknowledged it."""
        await self.publish_many([(topic, payload)])

    async def publish_many(self, messages: list[tuple[str, bytes]]) -> None:
        """Publish each (topic, payload) at QoS 1, in order, and return once the broker
        has acknowledged them all; raises :class:`PublishRefused` if it refused one.

        One future for the lot rather than one per message: a batch of alerts costs
        one wake-up, not one each. The session sends at most the window at once and
        keeps the rest queued, across reconnects.

        Raises:
            NotConnected: before the first connection, or once ``may_act`` said no.
            PublishRefused: the broker refused one of them.
            InvalidPublish: a topic MQTT cannot carry.
        """
        if not self._out.ever_connected.is_set():
            raise NotConnected("publish before the first connection")
        if not self._may_act():
            raise NotConnected("not the leader: publishing is fenced")
        if not messages:
            return
        group = _Group(asyncio.get_running_loop(), len(messages))
        session, groups = self._out.session, self._groups
        for topic, payload in messages:
            groups[session.publish(topic, payload)] = (group, topic)
        self._out.kick()
        await group.future

    def publish_soon(self, topic: str, payload: bytes) -> asyncio.Task[None]:
        """Publish at QoS 1 in the background (the live suppression feed)."""
        return asyncio.ensure_future(self.publish(topic, payload))


def install_exception_filter(
    loop: asyncio.AbstractEventLoop, log: Callable[[str, dict[str, Any]], None]
) -> None:
    """Route errors the event loop would print (an exception nobody retrieved) through
    our log, as ``loop.error`` with the reason."""

    def handler(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, asyncio.CancelledError):
            return  # a task cancelled at shutdown: not a failure
        fields = {"reason": repr(exc) if exc else context.get("message", "")}
        if exc is not None and context.get("message"):
            fields["detail"] = str(context["message"])[:300]
        log("loop.error", fields)

    loop.set_exception_handler(handler)
