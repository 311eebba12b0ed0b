"""EUI-64 identifiers as humans write them and as the wire carries them.

On the wire (WIRE.md) every device and party identifier is an 8-byte byte string; people,
the GUID list and configuration files write it as ``00-DB-12-34-56-78-90-A0`` (the DCC
form), ``00DB1234567890A0`` or ``00:db:12:34:56:78:90:a0``. This module is the one place
that turns those spellings into bytes, so that a typo is reported with the text that
caused it rather than becoming a device that never matches.
"""

from __future__ import annotations

from gbcs import format_eui64

__all__ = ["EUI64_LENGTH", "eui64_to_int", "format_eui64", "int_to_eui64", "parse_eui64"]

EUI64_LENGTH = 8
"""Bytes in an EUI-64."""

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_SEPARATORS = ("-", ":")


def _shown(text: str) -> str:
    # Input may come from a large file: keep error messages bounded.
    return repr(text if len(text) <= 40 else text[:37] + "...")


def parse_eui64(text: str) -> bytes:
    """Parse an EUI-64 written as ``00-DB-12-34-56-78-90-A0``, ``00:db:...`` or 16 hex digits.

    Hex digits may be in either case and surrounding whitespace is ignored. Within the
    string one notation must be used throughout: eight groups of two hex digits joined by
    ``-`` or by ``:``, or sixteen hex digits with no separator.

    Raises:
        ValueError: the text is not an EUI-64 in one of those notations; the message
            quotes the text and says what is wrong with it.
    """
    stripped = text.strip()
    used = [sep for sep in _SEPARATORS if sep in stripped]
    if len(used) > 1:
        raise ValueError(f"EUI-64 {_shown(text)}: mixes '-' and ':' separators")
    if used:
        sep = used[0]
        groups = stripped.split(sep)
        if len(groups) != EUI64_LENGTH or any(len(group) != 2 for group in groups):
            raise ValueError(
                f"EUI-64 {_shown(text)}: expected {EUI64_LENGTH} groups of 2 hex digits "
                f"separated by {sep!r}"
            )
        digits = "".join(groups)
    else:
        digits = stripped
        if len(digits) != 2 * EUI64_LENGTH:
            raise ValueError(
                f"EUI-64 {_shown(text)}: expected {2 * EUI64_LENGTH} hex digits, "
                f"got {len(digits)} characters"
            )
    # Checked by hand: bytes.fromhex would also accept embedded spaces.
    bad = next((ch for ch in digits if ch not in _HEX_DIGITS), None)
    if bad is not None:
        raise ValueError(f"EUI-64 {_shown(text)}: {bad!r} is not a hex digit")
    return bytes.fromhex(digits)


def eui64_to_int(eui: bytes) -> int:
    """The EUI-64 as an unsigned 64-bit integer, most significant byte first.

    Raises:
        ValueError: ``eui`` is not exactly 8 bytes long.
    """
    if len(eui) != EUI64_LENGTH:
        raise ValueError(f"EUI-64 must be {EUI64_LENGTH} bytes, got {len(eui)}")
    return int.from_bytes(eui, "big")


def int_to_eui64(n: int) -> bytes:
    """The 8-byte EUI-64 whose big-endian value is ``n`` (inverse of :func:`eui64_to_int`).

    Raises:
        ValueError: ``n`` is outside ``0 .. 2**64 - 1``.
    """
    if not 0 <= n < 1 << 64:
        raise ValueError(f"EUI-64 value out of range 0 .. 2**64 - 1: {n:#x}")
    return n.to_bytes(EUI64_LENGTH, "big")
