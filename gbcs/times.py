"""Time values in GBCS frames: ASN.1 GeneralizedTime and the 12-byte DLMS date-time.

All instants are returned as timezone-aware UTC ``datetime`` objects. Nothing here
reads a clock.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from .errors import BadTime

UTC = dt.UTC

# GBCS cancels a pending future-dated activation by re-sending CS06 with this
# ExecutionDateTime (GBCS CS06; the RTDS CANCELLATION frames carry exactly it).
CANCELLATION_TIME = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
# DUIS expresses the same cancellation as 3000-12-31; a DSP may pass that date
# through unchanged, so the codec recognises either date as a cancellation.
_CANCELLATION_DATES = frozenset({dt.date(9999, 12, 31), dt.date(3000, 12, 31)})


def is_cancellation_time(when: dt.datetime) -> bool:
    """True for the GBCS (9999-12-31) or DUIS (3000-12-31) cancellation sentinel."""
    return when.astimezone(UTC).date() in _CANCELLATION_DATES


def parse_generalized_time(raw: bytes, offset: int | None = None) -> dt.datetime:
    """DER GeneralizedTime ``YYYYMMDDHHMMSSZ`` (GBCS uses exactly this form)."""
    if len(raw) != 15 or raw[14:] != b"Z" or not raw[:14].isdigit():
        raise BadTime(
            f"GeneralizedTime must be YYYYMMDDHHMMSSZ, got {_clipped(raw)}", offset=offset
        )
    text = raw[:14].decode("ascii")
    try:
        return dt.datetime(
            int(text[0:4]),
            int(text[4:6]),
            int(text[6:8]),
            int(text[8:10]),
            int(text[10:12]),
            int(text[12:14]),
            tzinfo=UTC,
        )
    except ValueError as exc:
        raise BadTime(f"GeneralizedTime {text}Z: {exc}", offset=offset) from exc


def _clipped(raw: bytes, limit: int = 20) -> str:
    # The field's length comes from the frame: quote a bounded part of it.
    shown = repr(raw[:limit])
    return shown if len(raw) <= limit else f"{shown}... ({len(raw)} bytes)"


def format_generalized_time(when: dt.datetime) -> bytes:
    """Inverse of :func:`parse_generalized_time`; sub-second parts must be zero."""
    if when.tzinfo is None:
        raise BadTime("GeneralizedTime needs an aware datetime")
    utc = when.astimezone(UTC)
    if utc.microsecond:
        raise BadTime("GeneralizedTime in GBCS has whole seconds only")
    return utc.strftime("%Y%m%d%H%M%S").rjust(14, "0").encode("ascii") + b"Z"


class DlmsDateTime(msgspec.Struct, frozen=True):
    """A DLMS/COSEM ``date-time`` (12 octets, IEC 62056-6-2 4.1.6.1).

    Fields keep their wire values: 0xFFFF / 0xFF mean "not specified", deviation
    0x8000 (-32768 as a signed value) means "not specified".
    """

    year: int
    month: int
    day: int
    day_of_week: int
    hour: int
    minute: int
    second: int
    hundredths: int
    deviation: int
    clock_status: int

    SIZE = 12
    DEVIATION_UNSPECIFIED = -0x8000

    @classmethod
    def from_bytes(cls, raw: bytes, offset: int | None = None) -> DlmsDateTime:
        """Decode 12 octets."""
        if len(raw) != cls.SIZE:
            raise BadTime(f"DLMS date-time must be 12 bytes, got {len(raw)}", offset=offset)
        return cls(
            year=int.from_bytes(raw[0:2], "big"),
            month=raw[2],
            day=raw[3],
            day_of_week=raw[4],
            hour=raw[5],
            minute=raw[6],
            second=raw[7],
            hundredths=raw[8],
            deviation=int.from_bytes(raw[9:11], "big", signed=True),
            clock_status=raw[11],
        )

    def to_bytes(self) -> bytes:
        """Encode to 12 octets."""
        try:
            return (
                self.year.to_bytes(2, "big")
                + bytes(
                    (
                        self.month,
                        self.day,
                        self.day_of_week,
                        self.hour,
                        self.minute,
                        self.second,
                        self.hundredths,
                    )
                )
                + self.deviation.to_bytes(2, "big", signed=True)
                + bytes((self.clock_status,))
            )
        except (OverflowError, ValueError) as exc:
            raise BadTime(f"DLMS date-time field out of range: {exc}") from exc

    @classmethod
    def from_datetime(cls, when: dt.datetime) -> DlmsDateTime:
        """A fully specified UTC date-time (deviation 0, clock status 0)."""
        utc = when.astimezone(UTC)
        return cls(
            year=utc.year,
            month=utc.month,
            day=utc.day,
            day_of_week=utc.isoweekday(),
            hour=utc.hour,
            minute=utc.minute,
            second=utc.second,
            hundredths=utc.microsecond // 10_000,
            deviation=0,
            clock_status=0,
        )

    def to_datetime(self) -> dt.datetime | None:
        """The UTC instant, or None when a date or time field is "not specified" or the
        instant is not a real one (a 30 February, or a UTC instant past 9999-12-31).

        An unspecified deviation is read as UTC: GB smart meters keep UTC (GBCS 4.5).
        A specified deviation follows the Blue Book: local time = UTC - deviation.
        """
        if self.year == 0xFFFF or 0xFF in (self.month, self.day, self.hour, self.minute):
            return None
        second = 0 if self.second == 0xFF else self.second
        hundredths = 0 if self.hundredths == 0xFF else self.hundredths
        try:
            local = dt.datetime(
                self.year,
                self.month,
                self.day,
                self.hour,
                self.minute,
                second,
                hundredths * 10_000,
                tzinfo=UTC,
            )
        except ValueError:
            return None
        if self.deviation == self.DEVIATION_UNSPECIFIED:
            return local
        try:
            return local + dt.timedelta(minutes=self.deviation)
        except OverflowError:  # e.g. 9999-12-31T23:30 local, with its UTC instant in 10000
            return None
