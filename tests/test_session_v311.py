"""The sans-I/O MQTT session in MQTT 3.1.1 mode (``protocol=4``), driven by bytes.

mqtt5's codec knows only MQTT 5, so the broker's 3.1.1 packets are built here by hand
and the session's output is read back by a small reader of this file's own; expected
bytes are written out from the standard (MQTT Version 3.1.1, OASIS Standard, 29 October
2014; section numbers in the comments). No socket, no clock."""

from __future__ import annotations

import re

import mqtt5
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.transport.session import (
    Connected,
    Event,
    InvalidPublish,
    MessageReceived,
    MqttSession,
    PacketRejected,
    PublishAcked,
    Refused,
    RejectReason,
    SessionState,
    Subscribed,
    SubscribeRefused,
    TimedOut,
    Waited,
)
from tests.test_session import SessionAgainstModel, publishes

QOS1 = mqtt5.QoS.AT_LEAST_ONCE
PINGRESP = b"\xd0\x00"  # 3.13


def frame(first: int, body: bytes) -> bytes:
    """A packet: its first byte, the Remaining Length (2.2.3), the body."""
    length = bytearray()
    n = len(body)
    while True:
        n, byte = divmod(n, 128)
        length.append(byte | 0x80 if n else byte)
        if not n:
            return bytes((first,)) + bytes(length) + body


def connack4(*, present: bool = False, code: int = 0) -> bytes:
    return bytes((0x20, 0x02, int(present), code))  # 3.2


def publish4(
    packet_id: int | None,
    topic: str = "dcc/in",
    payload: bytes = b"alert",
    *,
    dup: bool = False,
    retain: bool = False,
) -> bytes:
    """A PUBLISH (3.3): QoS 1 with a packet id, QoS 0 without."""
    first = 0x30 | (0x08 if dup else 0) | (0x02 if packet_id is not None else 0) | int(retain)
    name = topic.encode()
    pid = b"" if packet_id is None else packet_id.to_bytes(2, "big")
    return frame(first, len(name).to_bytes(2, "big") + name + pid + payload)


def puback4(packet_id: int) -> bytes:
    return b"\x40\x02" + packet_id.to_bytes(2, "big")  # 3.4


def suback4(packet_id: int, *codes: int) -> bytes:
    return frame(0x90, packet_id.to_bytes(2, "big") + bytes(codes))  # 3.9


def _string(body: bytes, at: int) -> tuple[bytes, int]:
    end = at + 2 + int.from_bytes(body[at : at + 2], "big")
    return body[at + 2 : end], end


def packets4(data: bytes) -> list[mqtt5.Packet]:
    """The session's 3.1.1 output as the mqtt5 objects of the same meaning, checking the
    fixed header of each against the standard on the way."""
    out: list[mqtt5.Packet] = []
    pos = 0
    while pos < len(data):
        first, length, shift, i = data[pos], 0, 0, pos + 1
        while True:
            length |= (data[i] & 0x7F) << shift
            i += 1
            if data[i - 1] < 0x80:
                break
            shift += 7
        body, pos = data[i : i + length], i + length
        assert len(body) == length, "a packet cut short"
        kind, flags = first >> 4, first & 0x0F
        packet: mqtt5.Packet
        if kind == 1:  # CONNECT (3.1)
            assert flags == 0
            assert body[:7] == b"\x00\x04MQTT\x04"
            connect_flags = body[7]
            assert connect_flags & 0x3F == 0, "clean session, will or reserved bit set"
            client_id, at = _string(body, 10)
            username = password = None
            if connect_flags & 0x80:
                name, at = _string(body, at)
                username = name.decode()
            if connect_flags & 0x40:
                password, at = _string(body, at)
            assert at == len(body)
            packet = mqtt5.ConnectPacket(
                client_id.decode(),
                username=username,
                password=password,
                clean_start=False,
                keep_alive=int.from_bytes(body[8:10], "big"),
            )
        elif kind == 3:  # PUBLISH (3.3): the session sends QoS 1, never RETAIN
            assert flags & 0x07 == 0x02
            topic, at = _string(body, 0)
            packet = mqtt5.PublishPacket(
                topic.decode(),
                body[at + 2 :],
                qos=QOS1,
                packet_id=int.from_bytes(body[at : at + 2], "big"),
                duplicate=bool(flags & 0x08),
            )
        elif kind == 4:  # PUBACK (3.4)
            assert (flags, length) == (0, 2)
            packet = mqtt5.PubAckPacket(int.from_bytes(body, "big"))
        elif kind == 8:  # SUBSCRIBE (3.8): reserved flags 0010
            assert flags == 0x02
            filters, at = [], 2
            while at < len(body):
                pattern, at = _string(body, at)
                assert body[at] == 0x01, "requested QoS is not 1"
                at += 1
                filters.append(mqtt5.TopicFilter(pattern.decode(), max_qos=QOS1))
            packet = mqtt5.SubscribePacket(int.from_bytes(body[:2], "big"), filters)
        elif kind == 12:  # PINGREQ (3.12)
            assert (flags, length) == (0, 0)
            packet = mqtt5.PingReqPacket()
        elif kind == 14:  # DISCONNECT (3.14)
            assert (flags, length) == (0, 0)
            packet = mqtt5.DisconnectPacket()
        else:
            raise AssertionError(f"a client does not send packet type {kind}")
        out.append(packet)
    return out


def sent(session: MqttSession) -> list[mqtt5.Packet]:
    return packets4(session.data_to_send())


def session4(
    *,
    inflight: int = 100,
    keep_alive_s: int = 30,
    ping_timeout_s: float | None = None,
    max_packet_size: int | None = None,
) -> MqttSession:
    return MqttSession(
        "gw",
        protocol=4,
        inflight=inflight,
        keep_alive_s=keep_alive_s,
        ping_timeout_s=ping_timeout_s,
        max_packet_size=max_packet_size,
    )


def up(session: MqttSession, *, present: bool = False) -> list[Event]:
    session.connect(0.0)
    session.data_to_send()
    return session.receive(connack4(present=present), 0.0)


# -- what the session writes, byte for byte ------------------------------------------------


def test_connect_is_level_4_with_clean_session_0_and_nothing_of_mqtt5() -> None:
    # Session expiry, Receive Maximum and Maximum Packet Size have no place in a 3.1.1
    # CONNECT: the bytes are the same whatever they are set to.
    session = MqttSession(
        "gw",
        protocol=4,
        keep_alive_s=30,
        session_expiry_s=5,
        receive_maximum=500,
        max_packet_size=4096,
    )
    session.connect(0.0)
    assert session.data_to_send() == bytes.fromhex(
        "10 0e"  # CONNECT, remaining length 14 (3.1.1)
        "0004 4d515454 04"  # protocol name "MQTT", level 4 (3.1.2.1, 3.1.2.2)
        "00"  # flags: no user name, password, will; Clean Session 0 (3.1.2.3)
        "001e"  # Keep Alive 30 (3.1.2.10)
        "0002 6777"  # client id "gw" (3.1.3.1)
    )


def test_connect_carries_the_user_name_and_password() -> None:
    session = MqttSession("gw", protocol=4, username="u", password="pw", keep_alive_s=20)
    session.connect(0.0)
    assert session.data_to_send() == bytes.fromhex(
        "10 15 0004 4d515454 04"
        "c0"  # User Name and Password flags (3.1.2.8, 3.1.2.9)
        "0014 0002 6777"
        "0001 75"  # user name "u" (3.1.3.4)
        "0002 7077"  # password "pw" (3.1.3.5)
    )
    alone = MqttSession("gw", protocol=4, username="u", keep_alive_s=20)
    alone.connect(0.0)
    assert alone.data_to_send() == bytes.fromhex("10 11 0004 4d515454 04 80 0014 0002 6777 0001 75")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"password": "pw"}, "password: MQTT 3.1.1 sends none without a user name"),
        ({"keep_alive_s": 65536}, "keep_alive_s must be within 0..65535"),
        ({"username": "a\x00b"}, "username holds U+0000"),
        ({"username": "\ud800"}, "username is not valid UTF-8"),
        ({"username": "é" * 40000}, "username is 80000 bytes of UTF-8, over 65535"),
    ],
)
def test_what_a_311_connect_cannot_carry_is_refused_at_construction(
    kwargs: dict[str, str | int], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        MqttSession("gw", protocol=4, **kwargs)  # type: ignore[arg-type]


def test_an_empty_client_id_is_refused_at_construction() -> None:
    # 3.1.3.1: the broker would refuse it with Clean Session 0, on every connection.
    with pytest.raises(ValueError, match=re.escape("client_id: MQTT 3.1.1 refuses an empty")):
        MqttSession("", protocol=4)


def test_subscribe_asks_for_qos_1_per_filter() -> None:
    session = session4()
    up(session)
    session.subscribe(["dcc/in", "a/+/#"])
    assert session.data_to_send() == bytes.fromhex(
        "82 13"  # SUBSCRIBE, reserved flags 0010 (3.8.1), remaining length 19
        "0001"  # packet id 1
        "0006 6463632f696e 01"  # "dcc/in", Requested QoS 1 (3.8.3.1)
        "0005 612f2b2f23 01"  # "a/+/#", Requested QoS 1
    )


def test_publish_is_qos_1_with_its_packet_id_stamped_after_the_topic() -> None:
    session = session4()
    up(session)
    session.subscribe(["dcc/in"])  # takes packet id 1
    session.data_to_send()
    session.publish("o/t", b"abc")
    assert session.data_to_send() == bytes.fromhex("32 0a 0003 6f2f74 0002 616263")


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (200, b"\x32\xcf\x01"),  # remaining length 207 in two bytes (2.2.3)
        (20_000, b"\x32\xa7\x9c\x01"),  # 20007 in three
    ],
)
def test_a_long_publish_keeps_its_id_in_place_when_re_sent_with_dup(
    size: int, header: bytes
) -> None:
    session = session4()
    up(session)
    session.publish("out", b"\x01")  # id 1, acknowledged below
    session.publish("o/t", b"p" * size)  # id 2
    assert session.data_to_send() == (
        bytes.fromhex("32 08 0003 6f7574 0001 01") + header + b"\x00\x03o/t\x00\x02" + b"p" * size
    )
    session.receive(puback4(1), 0.0)
    session.connection_lost()
    up(session, present=True)
    # DUP (3.3.1.1), the same packet id (4.4).
    assert session.data_to_send() == bytes((0x3A,)) + header[1:] + b"\x00\x03o/t\x00\x02" + (
        b"p" * size
    )


def test_disconnect_is_two_bytes() -> None:
    session = session4()
    up(session)
    session.disconnect()
    assert session.data_to_send() == b"\xe0\x00"  # 3.14
    assert session.state is SessionState.CLOSED


def test_keep_alive_pings_and_times_out_without_an_answer() -> None:
    session = session4(keep_alive_s=10, ping_timeout_s=5)
    up(session)
    assert session.next_deadline() == 10.0
    assert session.tick(10.0) == []
    assert session.data_to_send() == b"\xc0\x00"  # PINGREQ (3.12)
    session.receive(PINGRESP, 11.0)
    assert session.tick(20.0) == []
    assert session.data_to_send() == b"\xc0\x00"
    assert session.tick(25.0) == [TimedOut(Waited.PINGRESP)]


def test_ack_writes_a_four_byte_puback() -> None:
    session = session4()
    up(session)
    (event,) = session.receive(publish4(9, payload=b"AD1"), 0.0)
    assert event == MessageReceived(0, 9, "dcc/in", b"AD1", 1, False)
    assert session.data_to_send() == b""
    assert session.ack(event.delivery) is True
    assert session.data_to_send() == b"\x40\x02\x00\x09"  # 3.4


@settings(max_examples=200)
@given(
    topic=st.text(st.characters(codec="utf-8", exclude_characters="+#\x00"), min_size=1),
    payload=st.binary(max_size=300),
    before=st.integers(0, 40),
)
def test_a_publish_is_the_standards_bytes_and_reads_back_as_written(
    topic: str, payload: bytes, before: int
) -> None:
    sender = session4()
    up(sender)
    for _ in range(before):  # unacknowledged, each holds its packet id
        sender.publish("x", b"")
    sender.data_to_send()
    receiver = session4()
    up(receiver)
    sender.publish(topic, payload)  # packet id before + 1
    data = sender.data_to_send()
    assert data == publish4(before + 1, topic, payload)
    (event,) = receiver.receive(data, 0.0)
    assert event == MessageReceived(0, before + 1, topic, payload, 1, False)


# -- what the session reads ----------------------------------------------------------------


def test_the_window_is_our_inflight_as_the_broker_sets_no_receive_maximum() -> None:
    session = session4(inflight=70, keep_alive_s=15)
    assert up(session, present=True) == [Connected(True, 65535, 70, 15)]
    for i in range(71):
        session.publish("out", bytes([i]))
    assert len(publishes(sent(session))) == 70


@pytest.mark.parametrize(
    ("return_code", "code", "reason", "permanent"),
    [
        # 3.2.2.3, in the MQTT 5 form of the same meaning (MQTT v5.0, 3.2.2.2).
        (1, 0x84, "unsupported-protocol-version", True),
        (2, 0x85, "client-identifier-not-valid", True),
        (3, 0x88, "server-unavailable", False),
        (4, 0x86, "bad-user-name-or-password", True),
        (5, 0x87, "not-authorized", True),
    ],
)
def test_a_refused_connack_is_reported_in_its_mqtt5_form(
    return_code: int, code: int, reason: str, permanent: bool
) -> None:
    session = session4()
    session.connect(0.0)
    session.data_to_send()
    assert session.receive(connack4(code=return_code), 0.0) == [Refused(code, reason, permanent)]
    assert session.state is SessionState.CLOSED
    assert session.data_to_send() == b""


def test_a_refusal_with_session_present_set_is_still_a_refusal() -> None:
    # 3.2.2.2 wants session present 0 on a refusal; the return code is what matters.
    session = session4()
    session.connect(0.0)
    events = session.receive(connack4(present=True, code=4), 0.0)
    assert events == [Refused(0x86, "bad-user-name-or-password", True)]


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (connack4(code=6), "CONNACK return code 6 is reserved (3.2.2.3)"),
        (connack4(code=0x80), "CONNACK return code 128 is reserved (3.2.2.3)"),
        (b"\x20\x03\x00\x00\x00", "a CONNACK of remaining length 3, not 2 (3.2.1)"),
        (b"\x20\x01\x00", "a CONNACK of remaining length 1, not 2 (3.2.1)"),
        (b"\x21\x02\x00\x00", "CONNACK with reserved flags 0x1 set (2.2.2)"),
        (b"\x20\x02\x02\x00", "CONNACK flags 0x02: bits 7-1 are reserved (3.2.2.1)"),
    ],
)
def test_a_malformed_connack_is_rejected_and_nothing_is_written(data: bytes, detail: str) -> None:
    session = session4()
    session.connect(0.0)
    session.data_to_send()
    assert session.receive(data, 0.0) == [PacketRejected(RejectReason.MALFORMED, detail)]
    assert session.data_to_send() == b""
    assert session.state is SessionState.CLOSED


def test_a_packet_before_the_connack_is_unexpected() -> None:
    session = session4()
    session.connect(0.0)
    session.data_to_send()
    (event,) = session.receive(publish4(1), 0.0)
    assert event == PacketRejected(RejectReason.UNEXPECTED, "PublishPacket before CONNACK")


def test_inbound_publishes_at_qos_0_and_1_with_dup_and_retain() -> None:
    session = session4()
    up(session)
    events = session.receive(
        publish4(None, "a", b"zero")
        + publish4(7, "b/c", b"", dup=True)
        + publish4(8, "d", b"kept", retain=True),
        0.0,
    )
    assert events == [
        MessageReceived(0, None, "a", b"zero", 0, False),
        MessageReceived(1, 7, "b/c", b"", 1, True),
        MessageReceived(2, 8, "d", b"kept", 1, False),
    ]
    assert session.ack(0) is True  # QoS 0: nothing to acknowledge
    assert session.data_to_send() == b""


def test_a_puback_acknowledges_the_publish_always_with_success() -> None:
    session = session4()
    up(session)
    token = session.publish("out", b"a")
    (p,) = publishes(sent(session))
    assert p.packet_id == 1
    assert session.receive(puback4(1), 0.0) == [PublishAcked(token, 0)]
    assert session.receive(puback4(1), 0.0) == []
    assert session.stray_acks == 1


def test_suback_return_codes_grant_or_fail() -> None:
    session = session4()
    up(session)
    session.subscribe(["a"])
    session.subscribe(["b", "c"])
    session.data_to_send()
    events = session.receive(suback4(1, 0x01) + suback4(2, 0x00, 0x80), 0.0)
    assert events == [Subscribed(("a",), (1,)), SubscribeRefused(("b", "c"), (0, 0x80))]


def test_bytes_split_anywhere_give_the_same_events() -> None:
    stream = connack4() + publish4(1) + publish4(2, payload=b"b" * 300) + PINGRESP
    whole = session4()
    whole.connect(0.0)
    expected = whole.receive(stream, 0.0)
    split = session4()
    split.connect(0.0)
    events: list[Event] = []
    for i in range(len(stream)):
        events += split.receive(stream[i : i + 1], 0.0)
    assert events == expected
    assert expected == [
        Connected(False, 65535, 100, 30),
        MessageReceived(0, 1, "dcc/in", b"alert", 1, False),
        MessageReceived(1, 2, "dcc/in", b"b" * 300, 1, False),
    ]


@pytest.mark.parametrize("size", [117, 118, 16_373, 16_374, 200_000])
def test_a_publish_with_a_longer_remaining_length_reads_whole(size: int) -> None:
    # The remaining length is size + 10 (topic length, "dcc/in", packet id): 127 is one
    # byte, 128 two, 16383 two, 16384 three (2.2.3).
    session = session4()
    up(session)
    (event,) = session.receive(publish4(3, payload=b"L" * size), 0.0)
    assert event == MessageReceived(0, 3, "dcc/in", b"L" * size, 1, False)


# -- the broker misbehaving ----------------------------------------------------------------

MALFORMED = RejectReason.MALFORMED
UNEXPECTED = RejectReason.UNEXPECTED


@pytest.mark.parametrize(
    ("data", "reason", "detail"),
    [
        # Packet types (2.2.1).
        (b"\x00\x00", MALFORMED, "a packet of reserved type 0 (2.2.1)"),
        (b"\xf0\x00", MALFORMED, "a packet of reserved type 15 (2.2.1)"),
        (b"\x10\x00", UNEXPECTED, "CONNECT (a client must not receive it)"),
        (b"\x50\x02\x00\x01", UNEXPECTED, "PUBREC (a client must not receive it)"),
        (b"\x62\x02\x00\x01", UNEXPECTED, "PUBREL (a client must not receive it)"),
        (b"\x70\x02\x00\x01", UNEXPECTED, "PUBCOMP (a client must not receive it)"),
        (b"\x82\x04\x00\x01\x00\x00", UNEXPECTED, "SUBSCRIBE (a client must not receive it)"),
        (b"\xa2\x02\x00\x01", UNEXPECTED, "UNSUBSCRIBE (a client must not receive it)"),
        (b"\xb0\x02\x00\x01", UNEXPECTED, "UNSUBACK (a client must not receive it)"),
        (b"\xc0\x00", UNEXPECTED, "PINGREQ (a client must not receive it)"),
        (b"\xe0\x00", UNEXPECTED, "DISCONNECT (a client must not receive it)"),
        (connack4(), UNEXPECTED, "a second CONNACK"),
        # Reserved flags (2.2.2) and remaining lengths.
        (b"\x41\x02\x00\x01", MALFORMED, "PUBACK with reserved flags 0x1 set (2.2.2)"),
        (b"\x92\x03\x00\x01\x01", MALFORMED, "SUBACK with reserved flags 0x2 set (2.2.2)"),
        (b"\xd8\x00", MALFORMED, "PINGRESP with reserved flags 0x8 set (2.2.2)"),
        (b"\x40\x01\x00", MALFORMED, "a PUBACK of remaining length 1, not 2 (3.4.1)"),
        (b"\x40\x03\x00\x01\x87", MALFORMED, "a PUBACK of remaining length 3, not 2 (3.4.1)"),
        (b"\x90\x02\x00\x01", MALFORMED, "a SUBACK of remaining length 2, under 3 (3.9.3)"),
        (b"\xd0\x01\x00", MALFORMED, "a PINGRESP of remaining length 1, not 0 (3.13.1)"),
        # Packet ids (2.3.1) and SUBACK return codes (3.9.3).
        (b"\x40\x02\x00\x00", MALFORMED, "PUBACK with packet id 0 (2.3.1)"),
        (b"\x90\x03\x00\x00\x01", MALFORMED, "SUBACK with packet id 0 (2.3.1)"),
        (b"\x90\x03\x00\x01\x03", MALFORMED, "SUBACK return code 0x03 is reserved (3.9.3)"),
        (b"\x90\x03\x00\x01\x87", MALFORMED, "SUBACK return code 0x87 is reserved (3.9.3)"),
        # PUBLISH (3.3).
        (b"\x36\x03\x00\x01t", MALFORMED, "a PUBLISH with both QoS bits set (3.3.1.2)"),
        (b"\x38\x03\x00\x01t", MALFORMED, "a QoS 0 PUBLISH with DUP set (3.3.1.1)"),
        (b"\x30\x01\x00", MALFORMED, "a PUBLISH without room for its topic length (3.3.2.1)"),
        (b"\x30\x03\x00\x05a", MALFORMED, "a PUBLISH shorter than its topic name (3.3.2.1)"),
        (
            b"\x32\x03\x00\x01t",
            MALFORMED,
            "a QoS 1 PUBLISH without room for its packet id (3.3.2.2)",
        ),
        (
            b"\x32\x04\x00\x01t\x00",
            MALFORMED,
            "a QoS 1 PUBLISH without room for its packet id (3.3.2.2)",
        ),
        (b"\x32\x05\x00\x01t\x00\x00", MALFORMED, "PUBLISH with packet id 0 (2.3.1)"),
        (
            b"\x30\x04\x00\x02\xc3\x28",
            MALFORMED,
            "a topic name that is not UTF-8 (invalid continuation byte) (1.5.3)",
        ),
        (
            b"\x30\x05\x00\x03\xed\xa0\x80",  # an encoded surrogate, U+D800
            MALFORMED,
            "a topic name that is not UTF-8 (invalid continuation byte) (1.5.3)",
        ),
        (b"\x30\x05\x00\x03a\x00b", MALFORMED, "a topic name holding U+0000 (1.5.3)"),
        (
            b"\x30\x02\x00\x00",
            MALFORMED,
            "a topic name must be at least one character long (4.7.3)",
        ),
        (
            publish4(None, "a/+"),
            MALFORMED,
            "a topic name must not hold a wildcard, + or # (3.3.2.1)",
        ),
        (
            publish4(1, "a/#"),
            MALFORMED,
            "a topic name must not hold a wildcard, + or # (3.3.2.1)",
        ),
        (
            b"\x34\x05\x00\x01t\x00\x01",
            UNEXPECTED,
            "a QoS 2 PUBLISH (we subscribe at QoS 1)",
        ),
    ],
)
def test_a_bad_packet_from_the_broker_is_an_event_and_the_end_of_the_connection(
    data: bytes, reason: RejectReason, detail: str
) -> None:
    session = session4()
    up(session)
    assert session.receive(data + publish4(1), 0.0) == [PacketRejected(reason, detail)]
    # A 3.1.1 client has no DISCONNECT that says why (3.14): it just closes (4.8).
    assert session.data_to_send() == b""
    assert session.state is SessionState.CLOSED
    assert session.receive(publish4(2), 0.0) == []  # the rest of the connection is ignored


def test_a_packet_id_the_broker_has_in_flight_already_is_rejected() -> None:
    session = session4()
    up(session)
    events = session.receive(publish4(5) + publish4(5), 0.0)
    assert events[1] == PacketRejected(RejectReason.UNEXPECTED, "packet id 5 is in use")


def test_a_packet_larger_than_our_maximum_is_rejected_before_it_is_read() -> None:
    session = session4(max_packet_size=100)
    up(session)
    packet = publish4(1, payload=b"x" * 200)
    (event,) = session.receive(packet[:10], 0.0)
    assert event == PacketRejected(RejectReason.TOO_LARGE, f"a packet of {len(packet)} bytes")
    assert session.data_to_send() == b""


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_any_bytes_from_the_broker_never_raise(data: bytes) -> None:
    session = session4()
    up(session)
    session.receive(data, 0.0)  # events or nothing, never an exception
    session.receive(data, 0.0)
    connecting = session4()
    connecting.connect(0.0)
    connecting.receive(data, 0.0)


# -- what the application cannot send -------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "detail"),
    [
        ("", "a topic name must be at least one character long (4.7.3)"),
        ("out/#", "a topic name must not hold a wildcard, + or # (3.3.2.1)"),
        ("out/+/x", "a topic name must not hold a wildcard, + or # (3.3.2.1)"),
        ("out\x00", "the topic holds U+0000, which MQTT forbids (1.5.3)"),
        ("out\ud800", "the topic is not valid UTF-8 (surrogates not allowed)"),
        ("t" * 65536, "the topic is 65536 bytes of UTF-8, over 65535 (1.5.3)"),
    ],
)
def test_an_invalid_topic_is_refused_at_the_call(topic: str, detail: str) -> None:
    session = session4()
    with pytest.raises(InvalidPublish) as info:
        session.publish(topic, b"x")
    assert info.value.detail == detail
    assert session.unacknowledged == 0


@pytest.mark.parametrize(
    ("topic_filter", "detail"),
    [
        ("", "a topic filter must be at least one character long"),
        ("a#", "'a#': # must be the whole last level"),
        ("a/#/b", "'a/#/b': # must be the whole last level"),
        ("a/b+", "'a/b+': + must be a whole level"),
        ("a\x00", "holds U+0000"),
    ],
)
def test_an_invalid_topic_filter_is_refused_at_the_call(topic_filter: str, detail: str) -> None:
    session = session4()
    with pytest.raises(ValueError, match=re.escape(detail)):
        session.subscribe(["ok/+/#", topic_filter])
    session.connect(0.0)
    session.receive(connack4(), 0.0)
    assert not [p for p in sent(session) if isinstance(p, mqtt5.SubscribePacket)]


# -- the persistent session ------------------------------------------------------------------


def test_a_lost_session_resends_every_unacknowledged_publish_as_new_and_resubscribes() -> None:
    session = session4(inflight=2)
    up(session)
    session.subscribe(["dcc/in"])
    session.data_to_send()
    session.receive(suback4(1, 0x01), 0.0)
    for i in range(3):
        session.publish("out", bytes([i]))
    before = publishes(sent(session))
    assert [(p.packet_id, p.payload) for p in before] == [(2, b"\x00"), (3, b"\x01")]
    session.connection_lost()
    session.publish("out", b"\x03")
    session.connect(1.0)
    sent(session)
    assert session.receive(connack4(present=False), 1.0) == [Connected(False, 65535, 2, 30)]
    after = sent(session)
    (sub,) = [p for p in after if isinstance(p, mqtt5.SubscribePacket)]
    assert [f.pattern for f in sub.topic_filters] == ["dcc/in"]
    assert [(p.packet_id, p.payload, p.duplicate) for p in publishes(after)] == [
        (5, b"\x00", False),  # new ids, after the SUBSCRIBE's 4
        (6, b"\x01", False),
    ]
    session.receive(puback4(5), 1.0)
    assert [(p.packet_id, p.payload) for p in publishes(sent(session))] == [(7, b"\x02")]


def test_a_kept_session_resends_with_dup_and_the_same_ids_and_no_subscribe() -> None:
    session = session4()
    up(session)
    session.subscribe(["dcc/in"])
    session.data_to_send()
    session.receive(suback4(1, 0x01), 0.0)
    session.publish("out", b"a")
    session.publish("out", b"b")
    before = publishes(sent(session))
    session.connection_lost()
    session.connect(1.0)
    sent(session)
    session.receive(connack4(present=True), 1.0)
    after = sent(session)
    assert not any(isinstance(p, mqtt5.SubscribePacket) for p in after)
    assert [(p.packet_id, p.payload, p.duplicate) for p in publishes(after)] == [
        (2, b"a", True),
        (3, b"b", True),
    ]
    assert [p.packet_id for p in before] == [2, 3]


def test_a_subscribe_whose_suback_was_lost_is_sent_again_even_with_the_session() -> None:
    session = session4()
    up(session)
    session.subscribe(["a", "b"])
    session.data_to_send()
    session.connection_lost()
    up(session, present=True)
    (sub,) = sent(session)
    assert isinstance(sub, mqtt5.SubscribePacket)
    assert [f.pattern for f in sub.topic_filters] == ["a", "b"]
    events = session.receive(suback4(sub.packet_id, 0x01, 0x80), 1.0)
    assert events == [SubscribeRefused(("a", "b"), (1, 0x80))]


def test_a_message_of_a_lost_connection_is_never_acknowledged_on_the_next() -> None:
    session = session4()
    up(session)
    (old,) = session.receive(publish4(9), 0.0)
    session.connection_lost()
    up(session, present=True)
    (new,) = session.receive(publish4(9, payload=b"another", dup=True), 0.0)
    assert isinstance(old, MessageReceived)
    assert isinstance(new, MessageReceived)
    assert session.ack(old.delivery) is False
    assert session.data_to_send() == b""
    assert session.ack(new.delivery) is True
    assert session.data_to_send() == puback4(9)


# -- the model, over MQTT 3.1.1 ----------------------------------------------------------------


class SessionAgainstModelV311(SessionAgainstModel):
    """tests/test_session.py's model with a broker that speaks MQTT 3.1.1: no Receive
    Maximum (the window is the session's inflight), no reason code on a PUBACK."""

    protocol = 4

    def sent_packets(self) -> list[mqtt5.Packet]:
        return sent(self.session)

    def connack_bytes(self, present: bool, receive_max: int) -> bytes:
        return connack4(present=present)

    def puback_bytes(self, packet_id: int, refuse: bool) -> bytes:
        return puback4(packet_id)

    def inbound_bytes(self, packet_id: int) -> bytes:
        return publish4(packet_id)


SessionAgainstModelV311.TestCase.settings = settings(max_examples=200, stateful_step_count=80)
test_session_against_the_model_over_311 = SessionAgainstModelV311.TestCase
