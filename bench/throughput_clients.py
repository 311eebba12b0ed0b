"""Load generator and sink for ``bench/throughput.py``: each runs as its own process.

Both speak MQTT 3.1.1 directly on an :class:`asyncio.Protocol` (under uvloop), so that
neither the publisher nor the sink is the slow part of the measurement:

* ``pub``: publishes ``--count`` AD1 ``dcc-alert`` envelopes at QoS 1 with up to
  ``--window`` unacknowledged (pipelined, like ``mosquitto_pub -M``), as fast as it can
  or paced at ``--rate`` per second. Each payload is the bytes :func:`gateway.wire.encode`
  would produce (checked at start-up): alert ``<prefix>-<seq, 9 digits>``; even sequence
  numbers on one of the ``--windowed`` CHFs, odd ones on one of :data:`OTHER_CHFS` other
  CHFs; ``raised_at`` = ``sent_at`` = the wall clock in ms when the message is written.
  The exact write time of every message (ns) goes to ``--times`` (int64 array, indexed
  by sequence number). Prints ``READY``, ``PROGRESS <acked>`` every second and
  ``DONE <first write ns> <last write ns> <last ack ns> <CPU s>`` on stdout.
* ``sink``: subscribes at QoS 1 to the ``--topic`` list, acknowledges every message at
  once and records, per message, the topic, the receive time (ns, wall clock, one
  reading per socket read) and the payload in ``--out``
  (:func:`read_records` reads it back). Decoding is left to the caller, after the run,
  so the sink costs as little CPU as possible while the clock runs. Prints ``READY``
  (subscribed), ``PROGRESS <count>`` every half second, ``ALL <ns>`` when ``--expect``
  messages have arrived and ``DONE <count>`` when stopped by SIGTERM.

Run by ``bench/throughput.py``; not meant to be run by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import struct
import sys
import time
import typing
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway import wire

__all__ = [
    "ESME_BASE",
    "OTHER_BASE",
    "OTHER_CHFS",
    "WINDOWED_BASE",
    "chf_of",
    "esme_id",
    "other_chf",
    "read_records",
    "windowed_chf",
]

WINDOWED_BASE = 0x00DB_5000_0000_0000  # the CHFs whose ESME gets a CS06 (window open)
ESME_BASE = 0x00DB_4000_0000_0000  # the listed Landis+Gyr SMETS2 ESMEs on those CHFs
OTHER_BASE = 0x00DB_6000_0000_0000  # CHFs with no window: their AD1s are forwarded
OTHER_CHFS = 10_000

_RECORD = struct.Struct("<BqH")  # topic index, receive time (ns), payload length


def windowed_chf(i: int) -> bytes:
    return (WINDOWED_BASE | i).to_bytes(8, "big")


def esme_id(i: int) -> bytes:
    return (ESME_BASE | i).to_bytes(8, "big")


def other_chf(i: int) -> bytes:
    return (OTHER_BASE | i).to_bytes(8, "big")


def chf_of(seq: int, windowed: int) -> bytes:
    """The CHF that raises alert number ``seq``: half windowed, half not."""
    half = seq // 2
    return windowed_chf(half % windowed) if seq % 2 == 0 else other_chf(half % OTHER_CHFS)


def alert_id(prefix: str, seq: int) -> str:
    return f"{prefix}-{seq:09d}"


# -- MQTT 3.1.1 framing ---------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def _connect_packet(client_id: str) -> bytes:
    # Protocol "MQTT" level 4, clean session, keepalive 0 (no PINGREQ needed).
    body = _utf8("MQTT") + bytes([4, 0x02]) + (0).to_bytes(2, "big") + _utf8(client_id)
    return b"\x10" + _varint(len(body)) + body


def _subscribe_packet(packet_id: int, topics: list[str]) -> bytes:
    body = packet_id.to_bytes(2, "big") + b"".join(_utf8(t) + b"\x01" for t in topics)
    return b"\x82" + _varint(len(body)) + body


class _Mqtt(asyncio.Protocol):
    """Connection, framing and dispatch; subclasses handle the packets they care about."""

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        loop = asyncio.get_running_loop()
        self.connected: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(_connect_packet(self.client_id))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.connected.done():
            self.connected.set_exception(ConnectionError(f"connection lost: {exc!r}"))

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        pos = 0
        end = len(buf)
        packets: list[tuple[int, bytes]] = []
        while end - pos >= 2:
            header = buf[pos]
            length = 0
            multiplier = 1
            i = pos + 1
            complete = False
            while i < end:
                byte = buf[i]
                length += (byte & 0x7F) * multiplier
                multiplier *= 128
                i += 1
                if not byte & 0x80:
                    complete = True
                    break
            if not complete or end - i < length:
                break
            packets.append((header, bytes(buf[i : i + length])))
            pos = i + length
        if pos:
            del buf[:pos]
        if packets:
            self.handle(packets)

    def handle(self, packets: list[tuple[int, bytes]]) -> None:
        for header, body in packets:
            kind = header >> 4
            if kind == 2:  # CONNACK
                if body[1] != 0:
                    self.connected.set_exception(ConnectionError(f"CONNACK code {body[1]}"))
                else:
                    self.connected.set_result(None)
            else:
                self.other(header, body)

    def other(self, header: int, body: bytes) -> None:
        """Packets other than CONNACK (subclasses)."""


# -- the publisher ----------------------------------------------------------------------


class _Template:
    """The CBOR of one alert, with the places where its id, CHF and times go."""

    def __init__(self, prefix: str) -> None:
        placeholder_id = alert_id(prefix, 0).replace("0", "~")
        chf = bytes.fromhex("F1F2F3F4F5F6F7F8")
        raised, sent = 0x0123_4567_89AB_CDEF, 0x0FED_CBA9_8765_4321
        self.payload = bytearray(
            wire.encode(
                wire.DccAlertEnvelope(
                    v=1,
                    kind="dcc-alert",
                    code="AD1",
                    alert_id=placeholder_id,
                    device_id=chf,
                    raised_at=raised,
                    sent_at=sent,
                )
            )
        )
        data = bytes(self.payload)
        self.prefix = prefix
        self.id_at = data.index(placeholder_id.encode())
        self.id_len = len(placeholder_id)
        self.chf_at = data.index(chf)
        self.raised_at = data.index(b"\x1b" + raised.to_bytes(8, "big")) + 1
        self.sent_at = data.index(b"\x1b" + sent.to_bytes(8, "big")) + 1

    def build(self, seq: int, chf: bytes, ms: int) -> bytes:
        p = self.payload
        p[self.id_at : self.id_at + self.id_len] = alert_id(self.prefix, seq).encode()
        p[self.chf_at : self.chf_at + 8] = chf
        stamp = ms.to_bytes(8, "big")
        p[self.raised_at : self.raised_at + 8] = stamp
        p[self.sent_at : self.sent_at + 8] = stamp
        return bytes(p)

    def check(self, windowed: int) -> None:
        """Fail loudly if a built payload is not what ``wire.encode`` makes."""
        for seq in (0, 1, 12345):
            ms = time.time_ns() // 1_000_000
            built = self.build(seq, chf_of(seq, windowed), ms)
            expected = wire.encode(
                wire.DccAlertEnvelope(
                    v=1,
                    kind="dcc-alert",
                    code="AD1",
                    alert_id=alert_id(self.prefix, seq),
                    device_id=chf_of(seq, windowed),
                    raised_at=ms,
                    sent_at=ms,
                )
            )
            if built != expected or wire.decode_dcc_alert(built).alert_id != alert_id(
                self.prefix, seq
            ):
                raise RuntimeError("payload template does not match wire.encode")


class _Publisher(_Mqtt):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(f"bench-pub-{args.prefix}")
        self.count: int = args.count
        self.window: int = args.window
        self.windowed: int = args.windowed
        self.template = _Template(args.prefix)
        self.template.check(self.windowed)
        topic = _utf8(args.topic)
        payload_len = len(self.template.payload)
        # Fixed header (QoS 1), remaining length and topic: the same for every message.
        self.head = b"\x32" + _varint(len(topic) + 2 + payload_len) + topic
        self.times = array("q", bytes(8 * self.count))
        self.next = 0
        self.inflight = 0
        self.acked = 0
        self.first_ns = 0
        self.last_ns = 0
        self.last_ack_ns = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def send(self, limit: int) -> None:
        """Write up to ``limit`` messages (within the window) in one write."""
        n = min(limit, self.window - self.inflight, self.count - self.next)
        if n <= 0 or self.transport is None:
            return
        now = time.time_ns()
        ms = now // 1_000_000
        parts = []
        build, head, times, windowed = self.template.build, self.head, self.times, self.windowed
        for seq in range(self.next, self.next + n):
            parts.append(head)
            parts.append(((seq % 65535) + 1).to_bytes(2, "big"))
            parts.append(build(seq, chf_of(seq, windowed), ms))
            times[seq] = now
        self.transport.write(b"".join(parts))
        if self.next == 0:
            self.first_ns = now
        self.last_ns = now
        self.next += n
        self.inflight += n

    def other(self, header: int, body: bytes) -> None:
        if header >> 4 == 4:  # PUBACK
            self.inflight -= 1
            self.acked += 1
            if self.acked == self.count and not self.done.done():
                self.last_ack_ns = time.time_ns()
                self.done.set_result(None)

    def handle(self, packets: list[tuple[int, bytes]]) -> None:
        super().handle(packets)
        if self.pump:
            self.send(1000)

    pump = False  # set once the free-running publisher starts


async def _progress(value: Callable[[], int], every: float) -> None:
    while True:
        await asyncio.sleep(every)
        print(f"PROGRESS {value()}", flush=True)


async def _pub(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: _Publisher(args), "127.0.0.1", args.port)
    await proto.connected
    print("READY", flush=True)
    reporter = asyncio.create_task(_progress(lambda: proto.acked, 1.0))
    if args.rate:
        start = time.monotonic()
        while proto.next < proto.count:
            due = min(proto.count, int((time.monotonic() - start) * args.rate) + 1)
            if due > proto.next:
                proto.send(due - proto.next)
            # Sleep until the next one is due (the loop's timers have 1 ms resolution).
            await asyncio.sleep(max(0.001, start + proto.next / args.rate - time.monotonic()))
    else:
        proto.pump = True
        proto.send(proto.window)
    if proto.count:
        await proto.done
    reporter.cancel()
    await asyncio.to_thread(Path(args.times).write_bytes, proto.times.tobytes())
    cpu = time.process_time()
    print(f"DONE {proto.first_ns} {proto.last_ns} {proto.last_ack_ns} {cpu:.3f}", flush=True)
    assert proto.transport is not None
    proto.transport.write(b"\xe0\x00")  # DISCONNECT
    proto.transport.close()


# -- the sink ---------------------------------------------------------------------------


class _Sink(_Mqtt):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(f"bench-sink-{args.name}")
        self.topics: dict[bytes, int] = {t.encode(): i for i, t in enumerate(args.topic)}
        self.out = Path(args.out).open("wb")  # noqa: SIM115 - closed in finish()
        self.pending = bytearray()
        self.count = 0
        self.expect: int = args.expect
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def handle(self, packets: list[tuple[int, bytes]]) -> None:
        now = time.time_ns()
        acks = bytearray()
        pending = self.pending
        pack = _RECORD.pack
        topics = self.topics
        for header, body in packets:
            kind = header >> 4
            if kind == 3:  # PUBLISH
                tlen = int.from_bytes(body[0:2], "big")
                topic = body[2 : 2 + tlen]
                if header & 0x06:  # QoS 1 (or 2, never asked for)
                    acks += b"\x40\x02"
                    acks += body[2 + tlen : 4 + tlen]
                    payload = body[4 + tlen :]
                else:
                    payload = body[2 + tlen :]
                pending += pack(topics.get(topic, 255), now, len(payload))
                pending += payload
                self.count += 1
            elif kind == 9:  # SUBACK
                if not self.subscribed.done():
                    self.subscribed.set_result(None)
            elif kind == 2:
                super().handle([(header, body)])
        if acks and self.transport is not None:
            self.transport.write(bytes(acks))
        if len(pending) > 1 << 22:
            self.out.write(pending)
            pending.clear()
        if self.expect and self.count >= self.expect:
            print(f"ALL {now}", flush=True)
            self.expect = 0

    def finish(self) -> None:
        self.out.write(self.pending)
        self.pending.clear()
        self.out.close()


async def _sink(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_connection(lambda: _Sink(args), "127.0.0.1", args.port)
    await proto.connected
    transport.write(_subscribe_packet(1, list(args.topic)))
    await proto.subscribed
    stop = asyncio.Event()  # until here SIGTERM simply ends the process
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("READY", flush=True)
    reporter = asyncio.create_task(_progress(lambda: proto.count, 0.5))
    await stop.wait()
    reporter.cancel()
    proto.finish()
    with contextlib.suppress(Exception):
        transport.write(b"\xe0\x00")
        transport.close()
    print(f"DONE {proto.count}", flush=True)


def read_records(path: Path, topics: list[str]) -> Iterator[tuple[str, int, bytes]]:
    """(topic, receive time ns, payload) for each message a sink recorded."""
    data = path.read_bytes()
    pos = 0
    size = _RECORD.size
    while pos < len(data):
        index, ns, length = _RECORD.unpack_from(data, pos)
        pos += size
        yield (topics[index] if index < len(topics) else "?"), ns, data[pos : pos + length]
        pos += length


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="role", required=True)
    pub = sub.add_parser("pub")
    pub.add_argument("--port", type=int, required=True)
    pub.add_argument("--topic", default="csp/dcc/alert")
    pub.add_argument("--count", type=int, required=True)
    pub.add_argument("--prefix", required=True)
    pub.add_argument("--windowed", type=int, default=200)
    pub.add_argument("--window", type=int, default=1000)
    pub.add_argument("--rate", type=float, default=0.0, help="per second; 0: as fast as possible")
    pub.add_argument("--times", required=True)
    sink = sub.add_parser("sink")
    sink.add_argument("--port", type=int, required=True)
    sink.add_argument("--topic", action="append", required=True)
    sink.add_argument("--out", required=True)
    sink.add_argument("--expect", type=int, default=0)
    sink.add_argument("--name", default="1")
    args = parser.parse_args()
    import uvloop

    uvloop.run(_pub(args) if args.role == "pub" else _sink(args))


if __name__ == "__main__":
    main()
