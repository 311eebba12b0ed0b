"""One MQTT client connection's session, sans-I/O: bytes and ``now`` in, bytes and events out.

Theory of operation
-------------------
:class:`MqttSession` is the protocol half of the MQTT transport (issue 14), written like
h11's connection or aioquic's ``QuicConnection``: it owns no socket, no event loop and no
clock. An adapter (gateway/transport/mqtt.py) opens a TCP or TLS connection and then
only moves bytes and time:

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

The session speaks MQTT 5 by default, or MQTT 3.1.1 with ``protocol=4`` (see "MQTT
3.1.1" below): the embedded broker of ``./dev run``, amqtt, speaks nothing else.

The session is the persistent MQTT session of one client id (``clean_start``, Clean
Session in 3.1.1, is never set), so it outlives its connections; what it keeps across
them is what the adapter (gateway/transport/mqtt.py) relies on:

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
4.13; nothing in MQTT 3.1.1, below) and ignores the rest of the connection. Nothing
the broker sends makes ``receive`` raise. Misuse by the application (publishing to an
invalid topic) raises :class:`InvalidPublish` at the call.

MQTT 3.1.1
----------
With ``protocol=4`` the session speaks MQTT 3.1.1 (OASIS Standard, 29 October 2014;
section numbers below are that document's). mqtt5's codec knows only MQTT 5, so this
module writes and reads the few 3.1.1 packets a QoS 1 client needs by hand
(``_connect_v311``, ``_publish_template_v311``, ``_subscribe_v311``, ``_read_v311``).
The reader turns each packet into the same mqtt5 packet object that ``mqtt5.read``
would give for its MQTT 5 twin, so everything after the read (``_handle`` on) is shared
and behaves the same. PINGREQ (``c0 00``), PUBACK (``40 02`` and the id) and a plain
DISCONNECT (``e0 00``) are the same bytes in both versions. What differs:

- CONNECT (3.1): protocol name "MQTT", level 4, Clean Session 0, no will, no
  properties. There is no Session Expiry Interval: a 3.1.1 broker keeps a Clean
  Session 0 session for as long as its own configuration says (``session_expiry_s``
  is not sent), and no Receive Maximum or Maximum Packet Size (``receive_maximum`` and
  ``max_packet_size`` only bound what the session itself accepts).
- The window is ``inflight``: a 3.1.1 broker announces no Receive Maximum
  (:class:`Connected` reports 65535, MQTT 5's "none set"), nor a Server Keep Alive.
- A 3.1.1 PUBACK carries no reason code: every PUBACK is a :class:`PublishAcked` with
  code 0. A SUBACK's return codes 0x00-0x02 (granted) and 0x80 (failure, MQTT 5's
  0x80 "unspecified error") are reported as they are.
- CONNACK return codes are reported in their MQTT 5 form, so that :class:`Refused`, the
  permanent refusals of gateway/transport/codes.py and the logs are the same whichever
  the version: 1 -> 0x84 unsupported protocol version, 2 -> 0x85 client identifier not
  valid, 3 -> 0x88 server unavailable, 4 -> 0x86 bad user name or password, 5 -> 0x87
  not authorized (3.2.2.3). A return code 6-255 is reserved (a server that cannot use
  one of 1-5 must close the connection without a CONNACK), so it is a
  :class:`PacketRejected`, whose detail keeps the number. A refusal with session
  present set (3.2.2.2 forbids it) is still the refusal its code says.
- A 3.1.1 server never sends DISCONNECT (3.14): one is a :class:`PacketRejected`, and
  :class:`Disconnected` never happens.
- A 3.1.1 client cannot say why it disconnects, and a DISCONNECT would tell the broker
  the client is leaving cleanly (3.14): on a :class:`PacketRejected` the session writes
  nothing and the adapter just closes the socket, as 4.8 asks of a protocol violation.
  ``disconnect()`` writes ``e0 00``.
- The reader is strict where 3.1.1 says "MUST": wrong reserved flag bits (2.2.2), a
  remaining length that is not the packet type's (3.2.1, 3.4.1, 3.13.1), packet id 0
  (2.3.1), a topic that is not well-formed UTF-8, holds U+0000 (1.5.3), is empty
  (4.7.3) or holds a wildcard (3.3.2.1), QoS 3 or DUP on QoS 0 (3.3.1) are malformed;
  a packet a client must not receive (CONNECT, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE,
  UNSUBSCRIBE, UNSUBACK, PINGREQ, DISCONNECT) is unexpected. Both are a
  :class:`PacketRejected`, exactly as in MQTT 5 mode.
- What 3.1.1 cannot carry fails at the call: ValueError from the constructor (an empty
  client id, a password without a user name, a string over 65535 bytes or holding
  U+0000), :class:`InvalidPublish` from ``publish``, ValueError from ``subscribe`` for
  an invalid topic filter (4.7.1).

The version is fixed per session and chosen once per call (``receive``, ``publish``),
never per packet field: the MQTT 5 hot path (PUBLISH and PUBACK in) is the code it was.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from typing import Final, TypeAlias

import mqtt5
import msgspec

from gateway.errors import GatewayError
from gateway.transport.codes import (
    PERMANENT_REFUSALS,
    SESSION_EXPIRY_S,
    ConnectReturnCode,
    refusal_name,
)

__all__ = [
    "MAX_INFLIGHT",
    "PROTOCOLS",
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

PROTOCOLS: Final = (4, 5)
"""The MQTT protocol levels the session speaks: 4 is MQTT 3.1.1, 5 is MQTT 5."""


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
    """The MQTT session of one client id over successive connections (module docstring).

    ``protocol`` is the MQTT protocol level: 5 (MQTT 5, the default) or 4 (MQTT 3.1.1,
    for a broker that speaks nothing newer). Raises ValueError for any other, or for
    an argument the chosen version cannot carry.
    """

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
        protocol: int = 5,
    ) -> None:
        # packet_id_limit: the largest packet id used. Smaller only in tests, so that
        # ids wrap around within a short run.
        if not _IDS_FOR_SUBSCRIBE < packet_id_limit <= MAX_PACKET_ID:
            raise ValueError(f"packet_id_limit must be within 17..{MAX_PACKET_ID}")
        if not 1 <= inflight <= packet_id_limit - _IDS_FOR_SUBSCRIBE:
            raise ValueError(f"inflight must be within 1..{packet_id_limit - _IDS_FOR_SUBSCRIBE}")
        if not 1 <= receive_maximum <= MAX_PACKET_ID:
            raise ValueError(f"receive_maximum must be within 1..{MAX_PACKET_ID}")
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be 5 (MQTT 5) or 4 (MQTT 3.1.1), not {protocol!r}")
        self.protocol = protocol
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
        # The version is chosen here, once: the reader, and for MQTT 3.1.1 the CONNECT
        # (built, and its fields checked, once and for all).
        self._read: Callable[[memoryview], tuple[mqtt5.Packet, int]] = (
            mqtt5.read if protocol == 5 else _read_v311
        )
        self._connect_v311 = (
            _connect_v311(client_id, username, self._password, keep_alive_s)
            if protocol == 4
            else None
        )

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
        if self._connect_v311 is not None:
            self._to_send.append(self._connect_v311)
            return
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
            if self.protocol == 5:
                self._to_send.append(mqtt5.DisconnectPacket().write())
            else:
                self._to_send.append(_DISCONNECT_V311)
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
        read = self._read  # the version's reader: the loop is the same for both
        try:
            while pos < end and not self.paused and not self._over():
                size = self._frame_size(buf, pos)
                if size is None:
                    break
                try:
                    packet, used = read(view[pos : pos + size])
                except _Rejected:
                    raise
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
        if self.protocol == 5:
            code = {
                RejectReason.MALFORMED: mqtt5.DisconnectReasonCode.MALFORMED_PACKET,
                RejectReason.TOO_LARGE: mqtt5.DisconnectReasonCode.PACKET_TOO_LARGE,
                RejectReason.UNEXPECTED: mqtt5.DisconnectReasonCode.PROTOCOL_ERROR,
            }[rejected.reason]
            self._to_send.append(mqtt5.DisconnectPacket(reason_code=code).write())
        # MQTT 3.1.1 writes nothing: its DISCONNECT says "leaving cleanly" and has no
        # reason (3.14); the connection is just closed (4.8).
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
            if self.protocol == 5:
                template = mqtt5.PublishPacket(
                    topic, payload, qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=1
                ).write()
            else:
                template = _publish_template_v311(topic, payload)
        except ValueError as exc:
            raise InvalidPublish(topic, str(exc)) from exc
        # The packet id follows the topic in both versions (MQTT v5.0 3.3.2, v3.1.1
        # 3.3.2): skip the Remaining Length, then the topic's length and bytes.
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
        :class:`Subscribed` or :class:`SubscribeRefused` follows.

        Raises:
            ValueError: a topic filter MQTT cannot carry (refused now, not when it is
                sent: a subscription made while disconnected goes out inside
                ``receive``, which must not raise).
        """
        new = tuple(topics)
        for topic in new:
            if self.protocol == 4:
                _filter_v311(topic)
            else:
                mqtt5.TopicFilter(topic, max_qos=mqtt5.QoS.AT_LEAST_ONCE)
        self._topics.extend(t for t in new if t not in self._topics)
        if self.state is SessionState.CONNECTED:
            self._send_subscribe(new)
        else:
            self._sub_waiting.append(new)

    def _send_subscribe(self, topics: tuple[str, ...]) -> None:
        packet_id = self._allocate()
        if self.protocol == 4:
            self._to_send.append(_subscribe_v311(packet_id, topics))
        else:
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


# -- MQTT 3.1.1, by hand -----------------------------------------------------------------
# Section numbers are those of MQTT Version 3.1.1, OASIS Standard, 29 October 2014. Only
# what a QoS 1 client with a persistent session sends and receives is here.

_PROTOCOL_NAME_V311: Final = b"\x00\x04MQTT\x04"  # "MQTT" and level 4 (3.1.2.1, 3.1.2.2)
_USER_NAME_FLAG: Final = 0x80  # CONNECT flags (3.1.2.3); Clean Session (0x02) stays 0
_PASSWORD_FLAG: Final = 0x40
_DISCONNECT_V311: Final = b"\xe0\x00"  # 3.14
_SUBSCRIBE_V311: Final = 0x82  # SUBSCRIBE's first byte: its reserved flags are 0010 (3.8.1)
_QOS1_V311: Final = b"\x01"  # a SUBSCRIBE's Requested QoS (3.8.3.1)
_PUBLISH_QOS1_V311: Final = 0x32  # PUBLISH, QoS 1, DUP 0, RETAIN 0 (3.3.1)

_CONNACK_V311: Final[dict[int, mqtt5.ConnAckReasonCode]] = {
    # A CONNACK's return code (3.2.2.3) as the MQTT 5 reason code of the same meaning
    # (MQTT v5.0, 3.2.2.2): what Refused, PERMANENT_REFUSALS and the logs know.
    0: mqtt5.ConnAckReasonCode.SUCCESS,
    ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION: (
        mqtt5.ConnAckReasonCode.UNSUPPORTED_PROTOCOL_VERSION
    ),
    ConnectReturnCode.IDENTIFIER_REJECTED: mqtt5.ConnAckReasonCode.CLIENT_ID_NOT_VALID,
    ConnectReturnCode.SERVER_UNAVAILABLE: mqtt5.ConnAckReasonCode.SERVER_UNAVAILABLE,
    ConnectReturnCode.BAD_USER_NAME_OR_PASSWORD: (
        mqtt5.ConnAckReasonCode.BAD_USER_NAME_OR_PASSWORD
    ),
    ConnectReturnCode.NOT_AUTHORIZED: mqtt5.ConnAckReasonCode.NOT_AUTHORIZED,
}
_SUBACK_V311: Final = frozenset({0x00, 0x01, 0x02, 0x80})  # 3.9.3; 0x80 is MQTT 5's too

# Packet types by number (2.2.1), for the packets a client must not receive.
_TYPE_NAMES_V311: Final = (
    "reserved type 0",
    "CONNECT",
    "CONNACK",
    "PUBLISH",
    "PUBACK",
    "PUBREC",
    "PUBREL",
    "PUBCOMP",
    "SUBSCRIBE",
    "SUBACK",
    "UNSUBSCRIBE",
    "UNSUBACK",
    "PINGREQ",
    "PINGRESP",
    "DISCONNECT",
    "reserved type 15",
)


def _packet_v311(first: int, body: bytes) -> bytes:
    # Fixed header: the first byte, then the Remaining Length, seven bits a byte, least
    # significant first, the top bit saying another byte follows (2.2.3).
    header = bytearray((first,))
    n = len(body)
    while n > 0x7F:
        header.append(n & 0x7F | 0x80)
        n >>= 7
    header.append(n)
    return bytes(header) + body


def _string_v311(what: str, text: str) -> bytes:
    # A UTF-8 encoded string: two bytes of length, then the bytes (1.5.3). ValueError
    # names ``what`` when MQTT cannot carry it.
    try:
        data = text.encode()
    except UnicodeEncodeError as exc:  # a lone surrogate: not well-formed UTF-8
        raise ValueError(f"{what} is not valid UTF-8 ({exc.reason})") from exc
    if "\x00" in text:
        raise ValueError(f"{what} holds U+0000, which MQTT forbids (1.5.3)")
    if len(data) > 0xFFFF:
        raise ValueError(f"{what} is {len(data)} bytes of UTF-8, over 65535 (1.5.3)")
    return len(data).to_bytes(2, "big") + data


def _topic_name_problem(topic: str) -> str | None:
    if not topic:
        return "a topic name must be at least one character long (4.7.3)"
    if "+" in topic or "#" in topic:
        return "a topic name must not hold a wildcard, + or # (3.3.2.1)"
    return None


def _filter_v311(topic_filter: str) -> bytes:
    # A SUBSCRIBE's topic filter and its Requested QoS (3.8.3). ValueError when it is not
    # a valid filter: # only as the whole last level, + only as a whole level (4.7.1).
    if not topic_filter:
        raise ValueError("a topic filter must be at least one character long (4.7.3)")
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"{topic_filter!r}: # must be the whole last level (4.7.1.2)")
        if "+" in level and level != "+":
            raise ValueError(f"{topic_filter!r}: + must be a whole level (4.7.1.3)")
    return _string_v311(f"topic filter {topic_filter!r}", topic_filter) + _QOS1_V311


def _connect_v311(
    client_id: str, username: str | None, password: bytes | None, keep_alive_s: int
) -> bytes:
    """CONNECT (3.1): protocol name and level, flags, Keep Alive, then the client id,
    user name and password. Clean Session 0 (3.1.2.4) and no will (3.1.2.5)."""
    if not client_id:
        # 3.1.3.1: a server must refuse an empty client id with Clean Session 0.
        raise ValueError("client_id: MQTT 3.1.1 refuses an empty one for a persistent session")
    if not 0 <= keep_alive_s <= 0xFFFF:
        raise ValueError(f"keep_alive_s must be within 0..65535 (3.1.2.10), not {keep_alive_s}")
    if password is not None and username is None:
        raise ValueError("password: MQTT 3.1.1 sends none without a user name (3.1.2.9)")
    flags = 0
    fields = [_string_v311("client_id", client_id)]  # 3.1.3.1
    if username is not None:
        flags |= _USER_NAME_FLAG
        fields.append(_string_v311("username", username))  # 3.1.3.4
    if password is not None:
        if len(password) > 0xFFFF:
            raise ValueError(f"password is {len(password)} bytes, over 65535 (3.1.3.5)")
        flags |= _PASSWORD_FLAG
        fields.append(len(password).to_bytes(2, "big") + password)  # binary data (3.1.3.5)
    head = _PROTOCOL_NAME_V311 + bytes((flags,)) + keep_alive_s.to_bytes(2, "big")
    return _packet_v311(0x10, head + b"".join(fields))


def _publish_template_v311(topic: str, payload: bytes) -> bytes:
    """A QoS 1 PUBLISH (3.3): fixed header, topic name, packet id 1 (a placeholder that
    ``_Out.stamped`` overwrites), payload; no properties. ValueError when MQTT cannot
    carry it."""
    problem = _topic_name_problem(topic)
    if problem is not None:
        raise ValueError(problem)
    body = b"".join((_string_v311("the topic", topic), b"\x00\x01", payload))
    if len(body) > _MAX_REMAINING_LENGTH:
        raise ValueError(f"a PUBLISH of {len(body)} bytes is over MQTT's 268435455 (2.2.3)")
    return _packet_v311(_PUBLISH_QOS1_V311, body)


def _subscribe_v311(packet_id: int, topics: tuple[str, ...]) -> bytes:
    """SUBSCRIBE (3.8): the packet id, then each topic filter at Requested QoS 1."""
    body = packet_id.to_bytes(2, "big") + b"".join(_filter_v311(t) for t in topics)
    return _packet_v311(_SUBSCRIBE_V311, body)


def _malformed(detail: str) -> _Rejected:
    return _Rejected(RejectReason.MALFORMED, detail)


def _read_v311(frame: memoryview) -> tuple[mqtt5.Packet, int]:
    """Read one whole 3.1.1 packet (``_frame_size`` framed it) as the mqtt5 object of its
    MQTT 5 twin. Raises ``_Rejected`` for a malformed packet or one a client must not
    receive (the CONNACK and PUBLISH checks that both versions share stay in
    ``_handle``)."""
    data = bytes(frame)
    kind, flags = data[0] >> 4, data[0] & 0x0F
    i = 1
    while data[i] & 0x80:  # skip the Remaining Length: _frame_size has checked it
        i += 1
    body = data[i + 1 :]
    name = _TYPE_NAMES_V311[kind]
    if kind == 3:
        return _read_publish_v311(flags, body), len(data)
    if kind not in (2, 4, 9, 13):
        if kind in (0, 15):
            raise _malformed(f"a packet of {name} (2.2.1)")
        raise _Rejected(RejectReason.UNEXPECTED, f"{name} (a client must not receive it)")
    if flags:  # reserved, 0000 for each of these (2.2.2)
        raise _malformed(f"{name} with reserved flags 0x{flags:x} set (2.2.2)")
    packet: mqtt5.Packet
    if kind == 2:  # CONNACK (3.2)
        if len(body) != 2:
            raise _malformed(f"a CONNACK of remaining length {len(body)}, not 2 (3.2.1)")
        ack_flags, code = body
        if ack_flags & 0xFE:
            raise _malformed(f"CONNACK flags 0x{ack_flags:02x}: bits 7-1 are reserved (3.2.2.1)")
        reason = _CONNACK_V311.get(code)
        if reason is None:
            raise _malformed(f"CONNACK return code {code} is reserved (3.2.2.3)")
        # A refusal must come with session present 0 (3.2.2.2); one that does not is
        # still a refusal (_handle looks at the code first), whose code is worth more to
        # the operator than "malformed".
        packet = mqtt5.ConnAckPacket(session_present=bool(ack_flags), reason_code=reason)
    elif kind == 4:  # PUBACK (3.4): the packet id, no reason code
        if len(body) != 2:
            raise _malformed(f"a PUBACK of remaining length {len(body)}, not 2 (3.4.1)")
        packet = mqtt5.PubAckPacket(_packet_id_v311(body, "PUBACK"))
    elif kind == 9:  # SUBACK (3.9): the packet id, a return code per topic filter
        if len(body) < 3:
            raise _malformed(f"a SUBACK of remaining length {len(body)}, under 3 (3.9.3)")
        for code in body[2:]:
            if code not in _SUBACK_V311:
                raise _malformed(f"SUBACK return code 0x{code:02x} is reserved (3.9.3)")
        codes = [mqtt5.SubAckReasonCode(code) for code in body[2:]]
        packet = mqtt5.SubAckPacket(_packet_id_v311(body, "SUBACK"), codes)
    else:  # PINGRESP (3.13)
        if body:
            raise _malformed(f"a PINGRESP of remaining length {len(body)}, not 0 (3.13.1)")
        packet = mqtt5.PingRespPacket()
    return packet, len(data)


def _packet_id_v311(body: bytes, name: str) -> int:
    packet_id = int.from_bytes(body[:2], "big")
    if packet_id == 0:
        raise _malformed(f"{name} with packet id 0 (2.3.1)")
    return packet_id


def _read_publish_v311(flags: int, body: bytes) -> mqtt5.PublishPacket:
    # PUBLISH (3.3): DUP, QoS and RETAIN in the flags; topic name, packet id (QoS 1 and
    # 2), payload. A QoS 2 PUBLISH is read, for _handle to refuse as in MQTT 5.
    qos = flags >> 1 & 0x03
    if qos == 3:
        raise _malformed("a PUBLISH with both QoS bits set (3.3.1.2)")
    duplicate = bool(flags & _DUP)
    if duplicate and qos == 0:
        raise _malformed("a QoS 0 PUBLISH with DUP set (3.3.1.1)")
    if len(body) < 2:
        raise _malformed("a PUBLISH without room for its topic length (3.3.2.1)")
    at = 2 + int.from_bytes(body[:2], "big")
    if at > len(body):
        raise _malformed("a PUBLISH shorter than its topic name (3.3.2.1)")
    try:
        topic = body[2:at].decode()  # strict: no overlong forms, no surrogates (1.5.3)
    except UnicodeDecodeError as exc:
        raise _malformed(f"a topic name that is not UTF-8 ({exc.reason}) (1.5.3)") from exc
    problem = "a topic name holding U+0000 (1.5.3)" if "\x00" in topic else None
    problem = problem or _topic_name_problem(topic)
    if problem is not None:
        raise _malformed(problem)
    packet_id = None
    if qos:
        if at + 2 > len(body):
            raise _malformed(f"a QoS {qos} PUBLISH without room for its packet id (3.3.2.2)")
        packet_id = _packet_id_v311(body[at:], "PUBLISH")
        at += 2
    return mqtt5.PublishPacket(
        topic,
        body[at:],
        qos=mqtt5.QoS(qos),
        retain=bool(flags & 0x01),
        packet_id=packet_id,
        duplicate=duplicate,
    )
