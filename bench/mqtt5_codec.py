"""Benchmark: mqtt5's codec against hand-written Python for the session's hot packets.

Run from the checkout::

    .venv/bin/python bench/mqtt5_codec.py [--number N]

Decodes a 150-byte QoS 1 PUBLISH (the size of a wrapped AD1 alert's envelope) and
encodes a PUBACK, each with mqtt5 and with a pure-Python baseline, and prints the cost
of one call (best of five ``timeit`` repeats). The figures are in docs/decisions.md D28.
"""

from __future__ import annotations

import argparse
import platform
import timeit
from importlib import metadata

import mqtt5

TOPIC = "dcc/alerts/in"


def publish_150() -> bytes:
    payload_len = 150 - (3 + 2 + len(TOPIC) + 2 + 1)  # header, topic, id, properties
    data = mqtt5.PublishPacket(
        TOPIC, b"\xa5" * payload_len, qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=4242
    ).write()
    assert len(data) == 150, len(data)
    return data


def decode_by_hand(data: bytes) -> tuple[str, int, bytes]:
    """A PUBLISH read in Python: fixed header, remaining length, topic, id, properties."""
    i, length, shift = 1, 0, 0
    while True:
        byte = data[i]
        length |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            break
        shift += 7
    topic_len = int.from_bytes(data[i : i + 2], "big")
    topic = data[i + 2 : i + 2 + topic_len].decode()
    i += 2 + topic_len
    packet_id = int.from_bytes(data[i : i + 2], "big")
    i += 2
    props = data[i]  # a one-byte property length (none here)
    i += 1 + props
    return topic, packet_id, data[i:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000)
    n = parser.parse_args().number
    data = publish_150()
    view = memoryview(data)
    packet, _ = mqtt5.read(view)
    assert isinstance(packet, mqtt5.PublishPacket)
    assert decode_by_hand(data) == (packet.topic, packet.packet_id, packet.payload)
    assert mqtt5.PubAckPacket(4242).write() == b"\x40\x02" + (4242).to_bytes(2, "big")

    cases = {
        "decode PUBLISH 150 B, mqtt5.read": lambda: mqtt5.read(view),
        "decode PUBLISH 150 B, Python by hand": lambda: decode_by_hand(data),
        "encode PUBACK, mqtt5 PubAckPacket.write": lambda: mqtt5.PubAckPacket(4242).write(),
        "encode PUBACK, Python by hand": lambda: b"\x40\x02" + (4242).to_bytes(2, "big"),
    }
    print(
        f"mqtt5 {metadata.version('mqtt5')}, Python {platform.python_version()}, "
        f"{platform.machine()}; best of 5 x {n:,} calls"
    )
    for name, call in cases.items():
        best = min(timeit.repeat(call, number=n, repeat=5)) / n
        print(f"  {name:<42} {best * 1e9:8.0f} ns")


if __name__ == "__main__":
    main()
