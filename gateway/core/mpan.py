"""The MPAN core of an electricity meter point, and the distributor it names (pure).

Theory of operation
-------------------
An MPAN (Meter Point Administration Number) is 21 digits on a bill: 8 of "top line"
(profile class, meter time-switch code, line loss factor class) that the supplier keeps,
and the 13-digit *core* that identifies the supply point for its whole life. Only the
core is kept here. It reads::

    DD NNNNNNNNNN C
    |  |          +-- check digit
    |  +------------- meter point id, unique within the distribution area
    +---------------- distributor id: which distribution business allocated it

The check digit catches a mistyped or transposed digit: multiply the first 12 digits by
the primes 3, 5, 7, 13, 17, 19, 23, 29, 31, 37, 41, 43 (11 left out), add, take the sum
modulo 11 and that modulo 10 (the algorithm once given on Wikipedia's MPAN page, kept at
https://bitbucket.org/tlocke/mpan).

The distributor id 10 to 23 is one of the 14 GB distribution licence areas, allocated
to the regional electricity companies of 1990; the areas keep their ids whoever owns the
licence today (:data:`GB_AREAS`). Independent network operators (IDNOs) have ids of
their own (24 and above, among others); those are not tabled and give an "unknown"
distributor rather than an error, since an MPAN from an IDNO network is perfectly valid.

No I/O, no clock: text in, values or :class:`MpanError` out.
"""

from __future__ import annotations

import enum
import operator
from typing import Final

import msgspec

from gateway.errors import GatewayError

__all__ = [
    "GB_AREAS",
    "MPAN_CORE_LENGTH",
    "Distributor",
    "MpanCore",
    "MpanError",
    "MpanReason",
    "check_digit",
    "distributor_of",
]

MPAN_CORE_LENGTH: Final = 13
"""Digits in an MPAN core: 2 distributor id, 10 meter point id, 1 check digit."""

# The weights of the check digit, one per digit of the first 12 (the primes from 3, with
# 11 left out).
_PRIMES: Final = (3, 5, 7, 13, 17, 19, 23, 29, 31, 37, 41, 43)
_ZERO_OFFSET: Final = ord("0") * sum(_PRIMES)


class MpanReason(enum.StrEnum):
    """The stable reason codes of :class:`MpanError` (a log field)."""

    NOT_DIGITS = "not-digits"  # something other than the digits 0-9 (spaces aside)
    WRONG_LENGTH = "wrong-length"  # not 13 digits
    BAD_CHECK_DIGIT = "bad-check-digit"  # the 13th digit does not match the first 12


class MpanError(GatewayError):
    """Text that is not a valid MPAN core.

    ``str(error)`` says what is wrong, quoting the text.

    Attributes:
        reason: stable code, a :class:`MpanReason`.
        value: the text as given.
    """

    def __init__(self, reason: MpanReason, detail: str, *, value: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.value = value


class Distributor(msgspec.Struct, frozen=True, kw_only=True):
    """The distribution business named by an MPAN core's first two digits.

    ``area`` and ``operator`` are None for an id outside :data:`GB_AREAS` (an IDNO's,
    or one not allocated); :attr:`name` then says "unknown (id NN)".
    """

    id: str
    """The two-digit distributor id, e.g. ``"10"``."""
    area: str | None = None
    """The GB distribution licence area, e.g. ``"Eastern"``."""
    operator: str | None = None
    """Today's operator of that area, abbreviated, e.g. ``"UKPN"``."""

    @property
    def name(self) -> str:
        """``"Eastern (UKPN)"``; ``"unknown (id 24)"`` for an id not in the table."""
        if self.area is None:
            return f"unknown (id {self.id})"
        return f"{self.area} ({self.operator})"


# The 14 GB distribution licence areas by distributor id, with their operators today
# (UKPN: UK Power Networks; NGED: National Grid Electricity Distribution, formerly
# Western Power Distribution; SPEN: SP Energy Networks; NPg: Northern Powergrid; ENWL:
# Electricity North West; SSEN: Scottish and Southern Electricity Networks). Sources,
# checked for this table: the ids 10-23 and their original companies,
# https://greenenergyconsulting.co.uk/mpanexplained.php ("10 - Eastern Electricity" to
# "23 - Yorkshire Electricity"); area and company per id, Wikipedia "Distribution network
# operator" (https://en.wikipedia.org/wiki/Distribution_network_operator, table "Area ID,
# Area, Company", as of 2013, WPD since renamed NGED); NGED's own ids 11, 14, 21, 22,
# https://connecteddata.nationalgrid.co.uk/dataset/rota-load-disconnection ("MPAS_ID").
GB_AREAS: Final[dict[str, Distributor]] = {
    d.id: d
    for d in (
        Distributor(id="10", area="Eastern", operator="UKPN"),
        Distributor(id="11", area="East Midlands", operator="NGED"),
        Distributor(id="12", area="London", operator="UKPN"),
        Distributor(id="13", area="Merseyside and North Wales", operator="SPEN"),
        Distributor(id="14", area="West Midlands", operator="NGED"),
        Distributor(id="15", area="North Eastern", operator="NPg"),
        Distributor(id="16", area="North Western", operator="ENWL"),
        Distributor(id="17", area="North of Scotland", operator="SSEN"),
        Distributor(id="18", area="South of Scotland", operator="SPEN"),
        Distributor(id="19", area="South Eastern", operator="UKPN"),
        Distributor(id="20", area="Southern", operator="SSEN"),
        Distributor(id="21", area="South Wales", operator="NGED"),
        Distributor(id="22", area="South Western", operator="NGED"),
        Distributor(id="23", area="Yorkshire", operator="NPg"),
    )
}
"""The 14 GB distribution areas, keyed by two-digit distributor id (``"10"`` to ``"23"``)."""


def check_digit(first12: str) -> int:
    """The check digit of an MPAN core whose first 12 digits are ``first12``.

    Raises:
        ValueError: ``first12`` is not 12 ASCII digits (a bug of the caller's).
    """
    if len(first12) != len(_PRIMES) or not (first12.isascii() and first12.isdigit()):
        raise ValueError(f"expected 12 digits, got {first12!r}")
    # On the ASCII codes, the offset of "0" taken off once: a third of the time of int()
    # per digit, which a bulk import of an estate's MPANs feels.
    weighted: int = sum(map(operator.mul, first12.encode(), _PRIMES))
    return (weighted - _ZERO_OFFSET) % 11 % 10


def distributor_of(distributor_id: str) -> Distributor:
    """The distributor with this two-digit id; "unknown (id NN)" if not a GB area."""
    return GB_AREAS.get(distributor_id) or Distributor(id=distributor_id)


class MpanCore(msgspec.Struct, frozen=True):
    """A valid 13-digit MPAN core. Build with :meth:`parse`, which checks it."""

    digits: str
    """The 13 digits, without spaces."""

    @classmethod
    def parse(cls, text: str) -> MpanCore:
        """The MPAN core written in ``text``; spaces (and other whitespace) are ignored,
        so ``"12 3456 7890 123"`` is read as printed on a bill.

        Raises:
            MpanError: ``not-digits``, ``wrong-length`` or ``bad-check-digit``.
        """
        digits = "".join(text.split())
        # Compared by range: str.isdigit would take other scripts' digits and superscripts.
        odd = next((c for c in digits if not "0" <= c <= "9"), None)
        if odd is not None:
            raise MpanError(
                MpanReason.NOT_DIGITS,
                f"MPAN {text!r}: only the digits 0-9 are allowed, found {odd!r}",
                value=text,
            )
        if len(digits) != MPAN_CORE_LENGTH:
            raise MpanError(
                MpanReason.WRONG_LENGTH,
                f"MPAN {text!r}: an MPAN core has {MPAN_CORE_LENGTH} digits, got {len(digits)}",
                value=text,
            )
        expected = check_digit(digits[:12])
        if int(digits[12]) != expected:
            raise MpanError(
                MpanReason.BAD_CHECK_DIGIT,
                f"MPAN {text!r}: check digit is {digits[12]}, the first 12 digits give "
                f"{expected} (a digit mistyped or two swapped?)",
                value=text,
            )
        return cls(digits)

    @property
    def distributor_id(self) -> str:
        """The first two digits: the distribution business that allocated the core."""
        return self.digits[:2]

    @property
    def distributor(self) -> Distributor:
        """The distributor of :attr:`distributor_id` (unknown for an IDNO's id)."""
        return distributor_of(self.distributor_id)

    def __str__(self) -> str:
        return self.digits
