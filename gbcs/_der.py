"""Bounded byte reader plus the few ASN.1 DER primitives GBCS payloads use.

Hand-written rather than taken from pyasn1/asn1crypto on purpose: the gateway needs
five DER types (SEQUENCE, OCTET STRING, INTEGER, NULL, GeneralizedTime), strict
bounds checks that turn every fault into a typed GbcsError with a byte offset, and a
decode cost of a few microseconds per frame. A general ASN.1 library gives none of
those three for free.

Lengths are read leniently (a long form where the short form would do is accepted:
RTDS frames for CS02b carry ``82 00 DE``); the encoder always writes the minimal form.
"""

from __future__ import annotations

from .errors import BadLength, BadPayload, BadTag, TruncatedFrame

TAG_INTEGER = 0x02
TAG_OCTET_STRING = 0x04
TAG_NULL = 0x05
TAG_GENERALIZED_TIME = 0x18
TAG_SEQUENCE = 0x30

# Longest length field we accept: four bytes after the 0x8N prefix (4 GiB) is far
# beyond any GBCS frame; anything longer is an attack or garbage.
_MAX_LENGTH_BYTES = 4


class Reader:
    """A cursor over ``data[pos:end]`` that raises GbcsError leaves instead of IndexError."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def remaining(self) -> int:
        return self.end - self.pos

    def at_end(self) -> bool:
        return self.pos >= self.end

    def u8(self, what: str) -> int:
        if self.pos >= self.end:
            raise TruncatedFrame(f"{what}: frame ends", offset=self.pos)
        value = self.data[self.pos]
        self.pos += 1
        return value

    def take(self, n: int, what: str) -> bytes:
        if n > self.end - self.pos:
            raise TruncatedFrame(
                f"{what}: needs {n} bytes, {self.end - self.pos} left", offset=self.pos
            )
        start = self.pos
        self.pos += n
        return self.data[start : self.pos]

    def uint(self, n: int, what: str) -> int:
        return int.from_bytes(self.take(n, what), "big")

    def length(self, what: str) -> int:
        """A BER/DER definite length (short form, or 0x81..0x84 long form)."""
        at = self.pos
        first = self.u8(what)
        if first < 0x80:
            return first
        count = first & 0x7F
        if count == 0 or count > _MAX_LENGTH_BYTES:
            raise BadLength(f"{what}: unsupported length prefix 0x{first:02X}", offset=at)
        return self.uint(count, what)

    def sub(self, n: int, what: str) -> Reader:
        """A reader over the next ``n`` bytes; this reader moves past them."""
        if n > self.end - self.pos:
            raise TruncatedFrame(
                f"{what}: announces {n} bytes, {self.end - self.pos} left", offset=self.pos
            )
        child = Reader(self.data, self.pos, self.pos + n)
        self.pos += n
        return child

    def expect(self, tag: int, what: str) -> None:
        at = self.pos
        got = self.u8(what)
        if got != tag:
            raise BadTag(f"{what}: expected tag 0x{tag:02X}, found 0x{got:02X}", offset=at)

    def peek(self) -> int | None:
        return self.data[self.pos] if self.pos < self.end else None

    # -- DER values -------------------------------------------------------------

    def der(self, tag: int, what: str) -> Reader:
        """Enter a TLV with the given tag; returns a reader over its value."""
        self.expect(tag, what)
        return self.sub(self.length(what), what)

    def der_octets(self, what: str) -> bytes:
        r = self.der(TAG_OCTET_STRING, what)
        return r.take(r.remaining(), what)

    def der_uint(self, what: str, maximum: int) -> int:
        """A DER INTEGER in ``0..maximum`` (the range of its GBCS field).

        The size of the content is checked before it is converted: a frame may announce
        an INTEGER of any length, and turning kilobytes of it into a Python int (or
        printing one in an error) costs time and raises ValueError past 4,300 digits.
        """
        r = self.der(TAG_INTEGER, what)
        at = r.pos
        size = r.remaining()
        if size == 0:
            raise BadPayload(f"{what}: empty INTEGER", offset=at)
        raw = r.take(size, what)
        if raw[0] & 0x80:  # two's complement: the sign is the top bit of the first octet
            raise BadPayload(f"{what}: negative INTEGER {clipped_hex(raw)}", offset=at)
        # A non-negative value needs one octet more than its bits when the top one is set.
        octets = maximum.bit_length() // 8 + 1
        if size > octets:
            raise BadPayload(
                f"{what}: INTEGER of {size} octets {clipped_hex(raw)}, at most {octets}",
                offset=at,
            )
        value = int.from_bytes(raw, "big")
        if value > maximum:
            raise BadPayload(f"{what}: {value} is above {maximum}", offset=at)
        return value

    def der_null(self, what: str) -> None:
        r = self.der(TAG_NULL, what)
        if r.remaining():
            raise BadLength(f"{what}: NULL with content", offset=r.pos)

    def der_generalized_time(self, what: str) -> bytes:
        r = self.der(TAG_GENERALIZED_TIME, what)
        return r.take(r.remaining(), what)


def clipped_hex(raw: bytes, limit: int = 16) -> str:
    """``raw`` as upper-case hex for an error message, clipped to ``limit`` bytes.

    Error messages quote bytes from the wire; a frame may carry kilobytes of them.
    """
    if len(raw) <= limit:
        return raw.hex().upper()
    return f"{raw[:limit].hex().upper()}... ({len(raw)} bytes)"


# -- encoding ---------------------------------------------------------------------


def enc_length(n: int) -> bytes:
    """Minimal DER length."""
    if n < 0:
        raise ValueError("negative length")
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def enc_tlv(tag: int, value: bytes) -> bytes:
    return bytes((tag,)) + enc_length(len(value)) + value


def enc_uint(value: int, maximum: int) -> bytes:
    """Minimal two's-complement DER INTEGER for a value in ``0..maximum``."""
    if not 0 <= value <= maximum:
        raise ValueError(f"INTEGER outside 0..{maximum}")
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return enc_tlv(TAG_INTEGER, body)
