"""The one root error of the GBCS codec and its typed leaves.

Every failure to read or build a frame is a :class:`GbcsError`; nothing else escapes
the decoder (a bug in the codec itself excepted). Each leaf has a stable ``reason``
code, meant to become a log field and a metric label, and carries the byte offset at
which decoding gave up when there is one.
"""

from __future__ import annotations


class GbcsError(Exception):
    """Root of every codec error.

    Attributes:
        reason: stable, machine-readable code (``truncated``, ``bad-tag`` ...).
        offset: byte offset in the frame where the problem was found, or None.
        detail: human-readable explanation.
    """

    reason: str = "gbcs-error"

    def __init__(self, detail: str, *, offset: int | None = None) -> None:
        self.detail = detail
        self.offset = offset
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{self.reason}{where}: {detail}")


class TruncatedFrame(GbcsError):
    """The frame ends before a field it announced."""

    reason = "truncated"


class BadTag(GbcsError):
    """A tag byte is not the one the structure requires here."""

    reason = "bad-tag"


class BadLength(GbcsError):
    """A length field is malformed, not minimal, or contradicts the enclosing length."""

    reason = "bad-length"


class TrailingBytes(GbcsError):
    """Bytes follow the end of a structure that must end the frame (or its container)."""

    reason = "trailing-bytes"


class BadField(GbcsError):
    """A field has a value the specification does not allow (CRA flag, EUI-64 size...)."""

    reason = "bad-field"


class BadPayload(GbcsError):
    """The payload does not have the structure its message code requires."""

    reason = "bad-payload"


class BadTime(GbcsError):
    """A GeneralizedTime or DLMS date-time is not a valid UTC instant."""

    reason = "bad-time"


class BadSignatureField(GbcsError):
    """The signature field is missing where required, or is not 64 bytes (r || s)."""

    reason = "bad-signature-field"


class BadCertificate(GbcsError):
    """A certificate cannot be used for the trust store (format, curve, identity)."""

    reason = "bad-certificate"


class EncodeError(GbcsError):
    """A value given to the encoder cannot be represented in a GBCS frame."""

    reason = "bad-value"
