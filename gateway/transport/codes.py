"""MQTT code tables and constants of the sans-I/O session (gateway/transport/session.py)
and the adapter that drives it (gateway/transport/mqtt.py)."""

from __future__ import annotations

import enum
from typing import Final

__all__ = [
    "PERMANENT_REFUSALS",
    "SESSION_EXPIRY_S",
    "ConnectReason",
    "ConnectReturnCode",
    "refusal_name",
]

# A persistent session outlives a restart or a long broker outage: one week.
SESSION_EXPIRY_S = 7 * 24 * 3600


class ConnectReason(enum.IntEnum):
    """The failure reason codes of an MQTT 5 CONNACK (MQTT v5.0, 3.2.2.2 Connect Reason
    Code). Success is 0x00; every failure is 0x80 or above."""

    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    BAD_AUTHENTICATION_METHOD = 0x8C
    TOPIC_NAME_INVALID = 0x90
    PACKET_TOO_LARGE = 0x95
    QUOTA_EXCEEDED = 0x97
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    CONNECTION_RATE_EXCEEDED = 0x9F


class ConnectReturnCode(enum.IntEnum):
    """The failure return codes of an MQTT 3.1.1 CONNACK (MQTT v3.1.1, 3.2.2.3 Connect
    Return code). Success is 0."""

    UNACCEPTABLE_PROTOCOL_VERSION = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_USER_NAME_OR_PASSWORD = 4
    NOT_AUTHORIZED = 5


PERMANENT_REFUSALS: Final[frozenset[int]] = frozenset(
    {
        # What the same CONNECT would meet again: the operator must change something
        # (credentials, the client id, the broker's users or bans, the protocol) or the
        # packet is one the broker cannot take (a bug). A redirect is not followed.
        ConnectReason.MALFORMED_PACKET,
        ConnectReason.PROTOCOL_ERROR,
        ConnectReason.UNSUPPORTED_PROTOCOL_VERSION,
        ConnectReason.CLIENT_IDENTIFIER_NOT_VALID,
        ConnectReason.BAD_USER_NAME_OR_PASSWORD,
        ConnectReason.NOT_AUTHORIZED,
        ConnectReason.BANNED,
        ConnectReason.BAD_AUTHENTICATION_METHOD,
        ConnectReason.TOPIC_NAME_INVALID,
        ConnectReason.PACKET_TOO_LARGE,
        ConnectReason.PAYLOAD_FORMAT_INVALID,
        ConnectReason.RETAIN_NOT_SUPPORTED,
        ConnectReason.QOS_NOT_SUPPORTED,
        ConnectReason.USE_ANOTHER_SERVER,
        ConnectReason.SERVER_MOVED,
        ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION,
        ConnectReturnCode.IDENTIFIER_REJECTED,
        ConnectReturnCode.BAD_USER_NAME_OR_PASSWORD,
        ConnectReturnCode.NOT_AUTHORIZED,
    }
)
"""CONNACK codes on which the adapter gives up. Every other failure (server unavailable
or busy, quota or connection rate exceeded, unspecified) is retried with the backoff.
A 3.1.1 broker's return codes are reported in their MQTT 5 form by the session
(gateway/transport/session.py), so the 3.1.1 codes here serve only to name them."""


def refusal_name(code: int) -> str:
    """A CONNACK code's name as a stable slug (``bad-user-name-or-password``), for logs.
    Codes from 0x80 are MQTT 5 reason codes, below are MQTT 3.1.1 return codes (the
    ranges do not overlap)."""
    table: type[enum.IntEnum] = ConnectReason if code >= 0x80 else ConnectReturnCode
    try:
        return table(code).name.lower().replace("_", "-")
    except ValueError:
        return f"unknown-0x{code:02x}"
