"""The one root error of the GBCS codec and its typed leaves.

Every failure to read or build a frame is a :class:`GbcsError`; nothing else escapes
the decoder (a bug in the codec itself excepted). Each leaf has a stable ``reason``
code, meant to become a log field and a metric label, and carries the byte offset at
which decoding gave up when there is one.
"""

from __future__ import annotations

import enum

__all__ = [
    "BadCertificate",
    "BadField",
    "BadLength",
    "BadPayload",
    "BadSignatureField",
    "BadTag",
    "BadTime",
    "EncodeError",
    "GbcsError",
    "GbcsReason",
    "TrailingBytes",
    "TruncatedFrame",
]


class GbcsReason(enum.StrEnum):
    """The stable reason codes of :class:`GbcsError` and its leaves (a log field and the
    ``reason`` label of ``poa_decode_errors_total``); one member per class."""

    GBCS_ERROR = "gbcs-error"
    TRUNCATED = "truncated"
    BAD_TAG = "bad-tag"
    BAD_LENGTH = "bad-length"
    TRAILING_BYTES = "trailing-bytes"
    BAD_FIELD = "bad-field"
    BAD_PAYLOAD = "bad-payload"
    BAD_TIME = "bad-time"
    BAD_SIGNATURE_FIELD = "bad-signature-field"
    BAD_CERTIFICATE = "bad-certificate"
    BAD_VALUE = "bad-value"


class GbcsError(Exception):
    """Root of every codec error.

    Attributes:
        reason: stable, machine-readable code, a :class:`GbcsReason` (``truncated``,
            ``bad-tag`` ...).
        offset: byte offset in the frame where the problem was found, or None.
        detail: human-readable explanation.
    """

    reason: GbcsReason = GbcsReason.GBCS_ERROR

    def __init__(self, detail: str, *, offset: int | None = None) -> None:
        self.detail = detail
        self.offset = offset
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{self.reason}{where}: {detail}")


class TruncatedFrame(GbcsError):
    """The frame ends before a field it announced."""

    reason = GbcsReason.TRUNCATED


class BadTag(GbcsError):
    """A tag byte is not the one the structure requires here."""

    reason = GbcsReason.BAD_TAG


class BadLength(GbcsError):
    """A length field is malformed, not minimal, or contradicts the enclosing length."""

    reason = GbcsReason.BAD_LENGTH


class TrailingBytes(GbcsError):
    """Bytes follow the end of a structure that must end the frame (or its container)."""

    reason = GbcsReason.TRAILING_BYTES


class BadField(GbcsError):
    """A field has a value the specification does not allow (CRA flag, EUI-64 size...)."""

    reason = GbcsReason.BAD_FIELD


class BadPayload(GbcsError):
    """The payload does not have the structure its message code requires."""

    reason = GbcsReason.BAD_PAYLOAD


class BadTime(GbcsError):
    """A GeneralizedTime or DLMS date-time is not a valid UTC instant."""

    reason = GbcsReason.BAD_TIME


class BadSignatureField(GbcsError):
    """The signature field is missing where required, or is not 64 bytes (r || s)."""

    reason = GbcsReason.BAD_SIGNATURE_FIELD


class BadCertificate(GbcsError):
    """A certificate cannot be used for the trust store (format, curve, identity)."""

    reason = GbcsReason.BAD_CERTIFICATE


class EncodeError(GbcsError):
    """A value given to the encoder cannot be represented in a GBCS frame."""

    reason = GbcsReason.BAD_VALUE
