"""One MQTT 5 client connection's session, sans-I/O: bytes and ``now`` in, bytes and events out.

Theory of operation
-------------------
:class:`MqttSession` is the protocol half of the MQTT transport (issue 14), written like
h11's connection or aioquic's ``QuicConnection``: it owns no socket, no event loop and no
clock. An adapter (the next step; today's daemon still runs gateway/transport/mqtt.py
on gmqtt) opens a TCP or TLS connection and then only moves bytes and time:

- ``connect(now)`` once the socket is open, ``receive(data, now)`` with whatever the
  socket read, ``tick(now)`` when ``next_deadline()`` comes, ``connection_lost()`` when
  the socket closes, for whatever reason; then ``connect`` again on a new socket.
- After every call, ``data_to_send()`` holds the bytes to write. ``receive`` and
  ``tick`` return the events: :class:`Connected`, :class:`MessageReceived`,
  :class:`PublishAcked` ... A :class:`Refused`, :class:`TimedOut`,
  :class:`Disconnected` or :class:`PacketRejected` means the connection is over: the
  adapter writes what is left to send and closes the socket.
- The packets are read and written by mqtt5's codec (a Rust extension); this module
  frames the byte stream itself (fixed header, remaining length), so that mqtt5 is only
  ever handed one whole packet, and anything it refuses is a malformed packet.

The session is the persistent MQTT session of one client id (``clean_start`` is never
set), so it outlives its connections; what it keeps across them is what the adapter
over gmqtt guarantees today:

Outbound publishes are QoS 1. ``publish`` returns a token at once and queues the
packet; it goes out while fewer than the *window* are unacknowledged, the window being
``min(inflight, the broker's Receive Maximum)`` of the current connection (MQTT v5.0,
4.9 Flow Control). Each publish ends with one event for its token: :class:`PublishAcked`,
or :class:`PublishRefused` when the PUBACK's reason code is 0x80 or above (an ACL's 0x87
"not authorized"): the broker did not take the message. Packet ids (1..65535, shared
with SUBSCRIBE) are never reused while their packet is unacknowledged.

After a reconnect, every publish not yet acknowledged goes out again, in order, before
any newer one. If the CONNACK says the broker kept our session (session present), they
are re-sent with their packet ids and the DUP flag (MQTT v5.0, 4.4); if it lost the
session, their ids mean nothing to it any more, so they are sent as new packets with
new ids. Either way the window of the new connection applies.

Subscriptions are kept too: a ``subscribe`` made while disconnected, or whose SUBACK
was lost with its connection, is sent on the next connection; and when the broker lost
the session (and with it our subscriptions) every topic is subscribed again.

Inbound messages are acknowledged only when the application says so: each
:class:`MessageReceived` carries a ``delivery`` number, and ``ack(delivery)`` writes its
PUBACK, once its effect is durable. A delivery whose connection is gone is never
acknowledged (``ack`` returns False): its packet id belonged to the old connection, and
on the new one it may name a different message; the broker redelivers it.
``withhold(delivery)`` gives a message up without acknowledging it. The inbound bound:
while ``receive_maximum`` deliveries are unsettled (connections gone included: the
application still holds them), or while the application holds intake (``hold``),
``receive`` stops parsing and keeps the bytes; ``paused`` tells the adapter to stop
reading the socket. Parsing resumes when half of them are settled: the adapter then
calls ``receive(b"", now)`` and reads again. That bound does not trust the broker to
respect our Receive Maximum (mosquitto before 2.0.13 does not, docs/decisions.md D19).

Keep-alive: a PINGREQ every ``keep_alive`` seconds (the broker's Server Keep Alive if it
sets one); no PINGRESP within ``ping_timeout_s`` is a :class:`TimedOut`, except while
parsing is paused (the answer may be among the bytes kept). A CONNACK that does not come
within ``connect_timeout_s`` is a :class:`TimedOut` too.

A CONNACK refusal is a :class:`Refused` with ``permanent`` set for the codes the same
CONNECT would meet again (gateway/transport/codes.py, docs/decisions.md D23). Bytes from
the broker that do not parse, or a packet a client must not receive here, are a
:class:`PacketRejected`: the session writes a DISCONNECT with the reason (MQTT v5.0,
4.13) and ignores the rest of the connection. Nothing the broker sends makes ``receive``
raise. Misuse by the application (publishing to an invalid topic) raises
:class:`InvalidPublish` at the call.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Final, TypeAlias

import mqtt5
import msgspec

from gateway.errors import GatewayError
from gateway.transport.codes import PERMANENT_REFUSALS, SESSION_EXPIRY_S, refusal_name

__all__ = [
    "MAX_INFLIGHT",
    "Connected",
    "Disconnected",
    "Event",
    "InvalidPublish",
    "MessageReceived",
    "MqttSession",
    "PacketRejected",
    "PublishAcked",
    "PublishRefused",
    "Refused",
    "RejectReason",
    "SessionState",
    "SubscribeRefused",
    "Subscribed",
    "TimedOut",
    "Waited",
]

MAX_PACKET_ID: Final = 0xFFFF
# Packet ids left for SUBSCRIBE when the window is at its largest.
_IDS_FOR_SUBSCRIBE: Final = 16
MAX_INFLIGHT: Final = MAX_PACKET_ID - _IDS_FOR_SUBSCRIBE
"""The largest publish window the session accepts (packet ids are 16 bits)."""

_PUBLISH: Final = 3
_DUP: Final = 0x08  # PUBLISH fixed header flag (MQTT v5.0, 3.3.1.1)
_PUBACK: Final = 0x40  # PUBACK's first byte (MQTT v5.0, 3.4.1)
_PINGREQ: Final = mqtt5.PingReqPacket().write()
_MAX_REMAINING_LENGTH: Final = 268_435_455  # four bytes of variable byte integer


# -- events ------------------------------------------------------------------------------


class Connected(msgspec.Struct, frozen=True):
    """The broker accepted the connection (CONNACK 0x00)."""

    session_present: bool
    receive_maximum: int  # the broker's Receive Maximum (65535 when it sets none)
    window: int  # publishes that may be unacknowledged at once on this connection
    keep_alive_s: int  # the keep-alive in force (the broker's Server Keep Alive, if set)


class Refused(msgspec.Struct, frozen=True):
    """The broker refused the connection (CONNACK 0x80 or above). ``permanent``: the
    same CONNECT would be refused again (docs/decisions.md D23)."""

    code: int
    reason: str  # refusal_name(code), e.g. ``not-authorized``
    permanent: bool


class MessageReceived(msgspec.Struct, frozen=True):
    """An inbound message: settle it with ``ack(delivery)`` or ``withhold(delivery)``."""

    delivery: int  # unique for the session's life, across connections
    packet_id: int | None  # the broker's (None for QoS 0)
    topic: str
    payload: bytes
    qos: int
    duplicate: bool  # the broker's DUP flag: it may have been delivered before


class PublishAcked(msgspec.Struct, frozen=True):
    """The broker acknowledged the publish of ``token`` (a PUBACK below 0x80)."""

    token: int
    code: int  # 0x00, or 0x10 "no matching subscribers"


class PublishRefused(msgspec.Struct, frozen=True):
    """The broker refused the publish of ``token`` (a PUBACK of 0x80 or above)."""

    token: int
    code: int


class Subscribed(msgspec.Struct, frozen=True):
    """The broker granted a SUBSCRIBE (every reason code below 0x80)."""

    topics: tuple[str, ...]
    codes: tuple[int, ...]


class SubscribeRefused(msgspec.Struct, frozen=True):
    """The broker refused at least one topic filter of a SUBSCRIBE."""

    topics: tuple[str, ...]
    codes: tuple[int, ...]


class Waited(enum.StrEnum):
    """What a :class:`TimedOut` waited for."""

    CONNACK = "connack"
    PINGRESP = "pingresp"


class TimedOut(msgspec.Struct, frozen=True):
    """The broker did not answer in time; the connection is over."""

    waited_for: Waited


class Disconnected(msgspec.Struct, frozen=True):
    """The broker sent a DISCONNECT; the connection is over."""

    code: int
    reason: str | None


class RejectReason(enum.StrEnum):
    """Why a :class:`PacketRejected`: a stable log field."""

    MALFORMED = "malformed"  # not a packet mqtt5 can read
    TOO_LARGE = "too-large"  # larger than our Maximum Packet Size
    UNEXPECTED = "unexpected"  # a valid packet a client must not receive now


class PacketRejected(msgspec.Struct, frozen=True):
    """The broker sent bytes the session refuses; the connection is over."""

    reason: RejectReason
    detail: str


Event: TypeAlias = (
    Connected
    | Refused
    | MessageReceived
    | PublishAcked
    | PublishRefused
    | Subscribed
    | SubscribeRefused
    | TimedOut
    | Disconnected
    | PacketRejected
)


class InvalidPublish(GatewayError):
    """``publish`` was given what MQTT cannot carry (an empty topic, a wildcard...)."""

    def __init__(self, topic: str, detail: str) -> None:
        super().__init__(f"cannot publish on {topic!r}: {detail}")
        self.topic = topic
        self.detail = detail


class SessionState(enum.Enum):
    """Where the current connection is."""

    IDLE = "idle"  # no connection (before the first, or after connection_lost)
    CONNECTING = "connecting"  # CONNECT written, waiting for the CONNACK
    CONNECTED = "connected"
    CLOSED = "closed"  # over (refused, rejected, timed out, disconnected): close the socket


class _Rejected(GatewayError):
    # Internal: unwinds the parse loop, never leaves receive() (becomes PacketRejected).
    def __init__(self, why: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = why
        self.detail = detail


class _Out:
    """An unacknowledged publish: its packet encoded once, the packet id stamped in when
    it is sent (so a re-send costs no encoding)."""

    __slots__ = ("dup", "id_offset", "packet_id", "sent", "template", "token")

    def __init__(self, token: int, template: bytes, id_offset: int) -> None:
        self.token = token
        self.template = template
        self.id_offset = id_offset
        self.packet_id: int | None = None  # allocated when first sent on this session
        self.dup = False  # the broker's session may hold it: re-send with DUP
        self.sent = False  # sent on the current connection

    def stamped(self, packet_id: int, dup: bool) -> bytes:
        t, i = self.template, self.id_offset
        first = t[0] | _DUP if dup else t[0]
        return b"".join((bytes((first,)), t[1:i], packet_id.to_bytes(2, "big"), t[i + 2 :]))


class MqttSession:
    """The MQTT 5 session of one client id over successive connections (module docstring)."""

    def __init__(
        self,
        client_id: str,
        *,
        username: str | None = None,
        password: str | None = None,
        keep_alive_s: int = 30,
        session_expiry_s: int = SESSION_EXPIRY_S,
        inflight: int = 100,
        receive_maximum: int = 1000,
        max_packet_size: int | None = None,
        connect_timeout_s: float = 30.0,
        ping_timeout_s: float | None = None,
        packet_id_limit: int = MAX_PACKET_ID,
    ) -> None:
        # packet_id_limit: the largest packet id used. Smaller only in tests, so that
        # ids wrap around within a short run.
        if not _IDS_FOR_SUBSCRIBE < packet_id_limit <= MAX_PACKET_ID:
            raise ValueError(f"packet_id_limit must be within 17..{MAX_PACKET_ID}")
        if not 1 <= inflight <= packet_id_limit - _IDS_FOR_SUBSCRIBE:
            raise ValueError(f"inflight must be within 1..{packet_id_limit - _IDS_FOR_SUBSCRIBE}")
        if not 1 <= receive_maximum <= MAX_PACKET_ID:
            raise ValueError(f"receive_maximum must be within 1..{MAX_PACKET_ID}")
        self.client_id = client_id
        self._username = username
        self._password = password.encode() if password is not None else None
        self._keep_alive = keep_alive_s
        self._session_expiry = session_expiry_s
        self._inflight = inflight
        self.receive_maximum = receive_maximum
        self._max_packet_size = max_packet_size
        self._connect_timeout = connect_timeout_s
        self._ping_timeout = ping_timeout_s

        self.state = SessionState.IDLE
        self.generation = 0  # connections so far; deliveries remember theirs
        self._to_send: list[bytes] = []
        self._rest = b""  # unparsed bytes of the current connection

        # Outbound: every publish not yet acknowledged, in token order.
        self._next_token = 0
        self._outs: dict[int, _Out] = {}
        self._by_id: dict[int, _Out] = {}  # packet id -> publish holding it
        self._waiting: deque[_Out] = deque()  # not sent on this connection yet
        self._outstanding = 0  # sent on this connection, not yet acknowledged
        self.window = inflight
        self._next_id = 1
        self._id_limit = packet_id_limit

        # Subscriptions.
        self._topics: list[str] = []  # every topic subscribed, for a lost session
        self._subs: dict[int, tuple[str, ...]] = {}  # SUBACK awaited, by packet id
        self._sub_waiting: list[tuple[str, ...]] = []  # for the next connection

        # Inbound: delivery -> (generation, packet id); packet id -> delivery.
        self._next_delivery = 0
        self._deliveries: dict[int, tuple[int, int | None]] = {}
        self._inbound_ids: dict[int, int] = {}
        self._bounded = False  # parsing stopped at the inbound bound
        self.held = False  # parsing stopped by the application

        # Time.
        self._connack_deadline: float | None = None
        self._next_ping: float | None = None
        self._ping_sent: float | None = None
        self.keep_alive_s = keep_alive_s

        self.stray_acks = 0  # PUBACKs or SUBACKs for no packet of ours (counted, ignored)

    # -- connection -----------------------------------------------------------------

    def connect(self, now: float) -> None:
        """Start a connection on a freshly opened socket: writes the CONNECT."""
        if self.state is not SessionState.IDLE:
            raise RuntimeError(f"connect() in state {self.state.value}: call connection_lost()")
        self.generation += 1
        self.state = SessionState.CONNECTING
        self._connack_deadline = now + self._connect_timeout
        self._to_send.append(
            mqtt5.ConnectPacket(
                self.client_id,
                username=self._username,
                password=self._password,
                clean_start=False,
                keep_alive=self._keep_alive,
                session_expiry_interval=self._session_expiry,
                receive_max=self.receive_maximum,
                max_packet_size=self._max_packet_size,
            ).write()
        )

    def disconnect(self) -> None:
        """End the connection cleanly (a DISCONNECT; the broker keeps the session)."""
        if self.state in (SessionState.CONNECTING, SessionState.CONNECTED):
            self._to_send.append(mqtt5.DisconnectPacket().write())
            self.state = SessionState.CLOSED

    def connection_lost(self) -> None:
        """The socket is closed (by either side). Unacknowledged publishes wait for the
        next connection; unsettled deliveries of this one can no longer be acknowledged."""
        self.state = SessionState.IDLE
        self._rest = b""
        self._to_send.clear()  # bytes for a socket that is gone
        self._connack_deadline = self._next_ping = self._ping_sent = None
        self._outstanding = 0
        for out in self._outs.values():
            out.sent = False
        self._waiting = deque(self._outs.values())
        self._inbound_ids.clear()
        self._sub_waiting[:0] = self._subs.values()
        self._subs.clear()

    @property
    def connected(self) -> bool:
        """True between an accepting CONNACK and the end of the connection."""
        return self.state is SessionState.CONNECTED

    # -- output ---------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """The bytes to write to the socket, in order (empty when there are none)."""
        if not self._to_send:
            return b""
        data = b"".join(self._to_send)
        self._to_send.clear()
        return data

    # -- input ----------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        """True while parsing waits (inbound bound or :meth:`hold`): stop reading the socket."""
        return self.held or self._bounded

    def receive(self, data: bytes, now: float) -> list[Event]:
        """Take bytes read from the socket; return the events they complete.

        ``receive(b"", now)`` parses the bytes kept while :attr:`paused`.
        """
        events: list[Event] = []
        if self.state not in (SessionState.CONNECTING, SessionState.CONNECTED):
            return events
        buf = self._rest + data if self._rest else data
        pos, end = 0, len(buf)
        view = memoryview(buf)  # slices of it are handed to mqtt5 without a copy
        try:
            while pos < end and not self.paused and not self._over():
                size = self._frame_size(buf, pos)
                if size is None:
                    break
                try:
                    packet, used = mqtt5.read(view[pos : pos + size])
                except Exception as exc:
                    raise _Rejected(RejectReason.MALFORMED, f"{type(exc).__name__}: {exc}") from exc
                if used != size:
                    raise _Rejected(RejectReason.MALFORMED, "length does not match the contents")
                pos += size
                self._handle(packet, now, events)
        except _Rejected as rejected:
            self._reject(rejected, events)
            return events
        self._rest = b"" if self._over() else buf[pos:]
        return events

    def _over(self) -> bool:
        # A method, not an inline test: mypy would keep the state narrowed across calls.
        return self.state is SessionState.CLOSED

    def _frame_size(self, buf: bytes, pos: int) -> int | None:
        # Fixed header: one byte, then the remaining length as a variable byte integer
        # of at most four bytes (MQTT v5.0, 1.5.5, 2.1.4). None: not all here yet.
        length, shift, i = 0, 0, pos + 1
        while True:
            if i >= len(buf):
                return None
            byte = buf[i]
            length |= (byte & 0x7F) << shift
            i += 1
            if not byte & 0x80:
                break
            shift += 7
            if shift > 21:
                raise _Rejected(RejectReason.MALFORMED, "remaining length over four bytes")
        size = i - pos + length
        if self._max_packet_size is not None and size > self._max_packet_size:
            raise _Rejected(RejectReason.TOO_LARGE, f"a packet of {size} bytes")
        return size if len(buf) - pos >= size else None

    def _reject(self, rejected: _Rejected, events: list[Event]) -> None:
        code = {
            RejectReason.MALFORMED: mqtt5.DisconnectReasonCode.MALFORMED_PACKET,
            RejectReason.TOO_LARGE: mqtt5.DisconnectReasonCode.PACKET_TOO_LARGE,
            RejectReason.UNEXPECTED: mqtt5.DisconnectReasonCode.PROTOCOL_ERROR,
        }[rejected.reason]
        self._to_send.append(mqtt5.DisconnectPacket(reason_code=code).write())
        self.state = SessionState.CLOSED
        self._rest = b""
        events.append(PacketRejected(rejected.reason, rejected.detail))

    def _handle(self, packet: mqtt5.Packet, now: float, events: list[Event]) -> None:
        if isinstance(packet, mqtt5.ConnAckPacket):
            if self.state is not SessionState.CONNECTING:
                raise _Rejected(RejectReason.UNEXPECTED, "a second CONNACK")
            self._on_connack(packet, now, events)
            return
        if self.state is not SessionState.CONNECTED:
            raise _Rejected(RejectReason.UNEXPECTED, f"{type(packet).__name__} before CONNACK")
        if isinstance(packet, mqtt5.PublishPacket):
            self._on_publish(packet, events)
        elif isinstance(packet, mqtt5.PubAckPacket):
            self._on_puback(packet, events)
        elif isinstance(packet, mqtt5.PingRespPacket):
            self._ping_sent = None
        elif isinstance(packet, mqtt5.SubAckPacket):
            self._on_suback(packet, events)
        elif isinstance(packet, mqtt5.DisconnectPacket):
            self.state = SessionState.CLOSED
            events.append(Disconnected(int(packet.reason_code), packet.reason_str))
        else:
            # QoS 2 flows, AUTH, UNSUBACK (we send none of them), or a server-bound packet.
            raise _Rejected(RejectReason.UNEXPECTED, type(packet).__name__)

    def _on_connack(self, packet: mqtt5.ConnAckPacket, now: float, events: list[Event]) -> None:
        self._connack_deadline = None
        code = int(packet.reason_code)
        if code >= 0x80:
            self.state = SessionState.CLOSED
            events.append(Refused(code, refusal_name(code), code in PERMANENT_REFUSALS))
            return
        self.state = SessionState.CONNECTED
        if packet.server_keep_alive is not None:  # the broker's says (MQTT v5.0, 3.2.2.3.14)
            self.keep_alive_s = packet.server_keep_alive
        else:
            self.keep_alive_s = self._keep_alive
        self._next_ping = now + self.keep_alive_s if self.keep_alive_s else None
        self.window = max(1, min(self._inflight, packet.receive_max))
        if packet.session_present:
            for out in self._outs.values():
                out.dup = out.packet_id is not None
        else:
            # The broker lost the session: the ids of our unacknowledged publishes mean
            # nothing to it now. Each goes out again as a new packet.
            for out in self._outs.values():
                if out.packet_id is not None:
                    del self._by_id[out.packet_id]
                out.packet_id = None
                out.dup = False
        events.append(
            Connected(packet.session_present, packet.receive_max, self.window, self.keep_alive_s)
        )
        if not packet.session_present and self._topics:
            # ... and our subscriptions with it: subscribe to every topic again.
            self._sub_waiting.clear()
            self._send_subscribe(tuple(self._topics))
        else:
            waiting, self._sub_waiting = self._sub_waiting, []
            for topics in waiting:
                self._send_subscribe(topics)
        self._pump()

    def _on_publish(self, packet: mqtt5.PublishPacket, events: list[Event]) -> None:
        qos = int(packet.qos)
        if qos == 2:
            raise _Rejected(RejectReason.UNEXPECTED, "a QoS 2 PUBLISH (we subscribe at QoS 1)")
        if not packet.topic:
            raise _Rejected(RejectReason.UNEXPECTED, "a topic alias (we allow none)")
        packet_id = packet.packet_id if qos == 1 else None
        if packet_id is not None and packet_id in self._inbound_ids:
            raise _Rejected(RejectReason.UNEXPECTED, f"packet id {packet_id} is in use")
        delivery = self._next_delivery
        self._next_delivery += 1
        self._deliveries[delivery] = (self.generation, packet_id)
        if packet_id is not None:
            self._inbound_ids[packet_id] = delivery
        if len(self._deliveries) >= self.receive_maximum:
            self._bounded = True
        events.append(
            MessageReceived(
                delivery, packet_id, packet.topic, packet.payload, qos, packet.duplicate
            )
        )

    def _on_puback(self, packet: mqtt5.PubAckPacket, events: list[Event]) -> None:
        out = self._by_id.get(packet.packet_id)
        if out is None or not out.sent:
            self.stray_acks += 1
            return
        del self._by_id[packet.packet_id]
        del self._outs[out.token]
        self._outstanding -= 1
        code = int(packet.reason_code)
        if code >= 0x80:
            events.append(PublishRefused(out.token, code))
        else:
            events.append(PublishAcked(out.token, code))
        self._pump()

    def _on_suback(self, packet: mqtt5.SubAckPacket, events: list[Event]) -> None:
        topics = self._subs.pop(packet.packet_id, None)
        if topics is None:
            self.stray_acks += 1
            return
        codes = tuple(int(code) for code in packet.reason_codes)
        if len(codes) == len(topics) and all(code < 0x80 for code in codes):
            events.append(Subscribed(topics, codes))
        else:
            events.append(SubscribeRefused(topics, codes))

    # -- inbound settlement ---------------------------------------------------------

    @property
    def inbound(self) -> int:
        """Deliveries not settled yet (acknowledged or withheld), all connections."""
        return len(self._deliveries)

    def ack(self, delivery: int) -> bool:
        """Acknowledge a delivery: its PUBACK is written if its connection is the current
        one. False when it was not (the broker redelivers it), or is unknown or settled."""
        entry = self._settle(delivery)
        if entry is None:
            return False
        generation, packet_id = entry
        if packet_id is None:
            return True  # QoS 0: nothing to acknowledge
        if generation != self.generation or self.state is not SessionState.CONNECTED:
            return False
        del self._inbound_ids[packet_id]
        # Built by hand: four bytes, twice as fast as the codec (docs/decisions.md D28).
        self._to_send.append(b"\x40\x02" + packet_id.to_bytes(2, "big"))
        return True

    def withhold(self, delivery: int) -> None:
        """Settle a delivery without acknowledging it: the broker keeps the message and
        redelivers it on a later connection. Its packet id stays taken on this one."""
        self._settle(delivery)

    def _settle(self, delivery: int) -> tuple[int, int | None] | None:
        entry = self._deliveries.pop(delivery, None)
        if self._bounded and len(self._deliveries) <= self.receive_maximum // 2:
            self._bounded = False
        return entry

    def hold(self) -> None:
        """Stop parsing inbound bytes until :meth:`release` (the store cannot commit)."""
        self.held = True

    def release(self) -> None:
        """Parse again after :meth:`hold` (then call ``receive(b"", now)``)."""
        self.held = False

    # -- outbound -------------------------------------------------------------------

    @property
    def outstanding(self) -> int:
        """Publishes sent on this connection and not yet acknowledged (<= window)."""
        return self._outstanding

    @property
    def unacknowledged(self) -> int:
        """Publishes not yet acknowledged, sent or waiting."""
        return len(self._outs)

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1; returns the token that its :class:`PublishAcked` or
        :class:`PublishRefused` will carry. Sent now if the window has room, else queued
        (across reconnects too).

        Raises:
            InvalidPublish: MQTT cannot carry this topic (an empty one, a wildcard...).
        """
        try:
            template = mqtt5.PublishPacket(
                topic, payload, qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=1
            ).write()
        except ValueError as exc:
            raise InvalidPublish(topic, str(exc)) from exc
        i = 1
        while template[i] & 0x80:
            i += 1
        topic_at = i + 1
        id_offset = topic_at + 2 + int.from_bytes(template[topic_at : topic_at + 2], "big")
        token = self._next_token
        self._next_token += 1
        out = _Out(token, template, id_offset)
        self._outs[token] = out
        self._waiting.append(out)
        if self.state is SessionState.CONNECTED:
            self._pump()
        return token

    def _pump(self) -> None:
        while self._waiting and self._outstanding < self.window:
            out = self._waiting.popleft()
            if out.packet_id is None:
                out.packet_id = self._allocate()
                self._by_id[out.packet_id] = out
            self._to_send.append(out.stamped(out.packet_id, out.dup))
            out.sent = True
            self._outstanding += 1

    def _allocate(self) -> int:
        for _ in range(self._id_limit):
            packet_id = self._next_id
            self._next_id = packet_id % self._id_limit + 1
            if packet_id not in self._by_id and packet_id not in self._subs:
                return packet_id
        raise RuntimeError("no free packet id")  # a bug: the window keeps ids free

    def subscribe(self, topics: list[str]) -> None:
        """Subscribe to topic filters at QoS 1 (now, or on the next connection); a
        :class:`Subscribed` or :class:`SubscribeRefused` follows."""
        new = tuple(topics)
        self._topics.extend(t for t in new if t not in self._topics)
        if self.state is SessionState.CONNECTED:
            self._send_subscribe(new)
        else:
            self._sub_waiting.append(new)

    def _send_subscribe(self, topics: tuple[str, ...]) -> None:
        packet_id = self._allocate()
        filters = [
            mqtt5.TopicFilter(t, max_qos=mqtt5.QoS.AT_LEAST_ONCE, retain_as_published=False)
            for t in topics
        ]
        self._to_send.append(mqtt5.SubscribePacket(packet_id, filters).write())
        self._subs[packet_id] = topics

    # -- time -----------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has something to do next (None: nothing timed)."""
        deadlines: list[float] = []
        if self.state is SessionState.CONNECTING and self._connack_deadline is not None:
            deadlines.append(self._connack_deadline)
        elif self.state is SessionState.CONNECTED:
            if self._next_ping is not None:
                deadlines.append(self._next_ping)
            if self._ping_sent is not None:
                deadlines.append(self._ping_sent + self._ping_wait())
        return min(deadlines) if deadlines else None

    def _ping_wait(self) -> float:
        return self._ping_timeout if self._ping_timeout is not None else float(self.keep_alive_s)

    def tick(self, now: float) -> list[Event]:
        """Let time pass: keep-alive PINGREQs, the CONNACK and PINGRESP timeouts."""
        events: list[Event] = []
        if self.state is SessionState.CONNECTING:
            if self._connack_deadline is not None and now >= self._connack_deadline:
                self.state = SessionState.CLOSED
                events.append(TimedOut(Waited.CONNACK))
            return events
        if self.state is not SessionState.CONNECTED:
            return events
        if self._ping_sent is not None:
            if self.paused:
                self._ping_sent = now  # the PINGRESP may be among the bytes kept
            elif now >= self._ping_sent + self._ping_wait():
                self.state = SessionState.CLOSED
                events.append(TimedOut(Waited.PINGRESP))
                return events
        if self._next_ping is not None and now >= self._next_ping:
            self._to_send.append(_PINGREQ)
            if self._ping_sent is None:
                self._ping_sent = now
            self._next_ping = now + self.keep_alive_s
        return events
