"""MPAN cores: parsing, the check digit and the distributor (gateway/core/mpan.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.mpan import (
    GB_AREAS,
    Distributor,
    MpanCore,
    MpanError,
    MpanReason,
    distributor_of,
)
from gateway.errors import GatewayError


def reference_check_digit(first12: str) -> int:
    # Written out here, apart from the module's, so that a slip in one is caught by the
    # other: the primes from 3 with 11 left out, sum mod 11 mod 10.
    weights = [p for p in range(3, 44) if all(p % d for d in range(2, p)) and p != 11]
    assert len(weights) == 12
    total = 0
    for position, weight in enumerate(weights):
        total += int(first12[position]) * weight
    return (total % 11) % 10


def core(first12: str) -> str:
    return first12 + str(reference_check_digit(first12))


# Published examples, each checked against the algorithm by its source:
# - "1312345678907": the README of the mpan package on PyPI
#   (https://pypi.org/project/mpan/1.0.2, `MPAN("1312345678907").core`);
# - "1800021679848": http://www.shaunfreeman.name/validating-mpan-numbers-in-php/, a
#   worked example in the comments ("1800021679848 has the check digit 8").
PUBLISHED = [("1312345678907", "13"), ("1800021679848", "18")]


@pytest.mark.parametrize(("text", "distributor_id"), PUBLISHED)
def test_published_example_cores_are_valid(text: str, distributor_id: str) -> None:
    mpan = MpanCore.parse(text)
    assert mpan.digits == text
    assert mpan.distributor_id == distributor_id
    assert mpan.distributor is GB_AREAS[distributor_id]


def test_the_reference_check_digit_agrees_with_the_published_examples() -> None:
    # Guards the test's own algorithm, which builds every other valid core here.
    for text, _ in PUBLISHED:
        assert core(text[:12]) == text


@given(st.text("0123456789", min_size=12, max_size=12))
def test_twelve_digits_and_their_check_digit_make_a_valid_core(first12: str) -> None:
    assert MpanCore.parse(core(first12)).digits == core(first12)


@given(st.text("0123456789", min_size=12, max_size=12), st.integers(1, 9))
def test_any_other_check_digit_is_refused(first12: str, shift: int) -> None:
    good = reference_check_digit(first12)
    wrong = first12 + str((good + shift) % 10)
    with pytest.raises(MpanError) as error:
        MpanCore.parse(wrong)
    assert error.value.reason is MpanReason.BAD_CHECK_DIGIT
    assert f"check digit is {(good + shift) % 10}" in str(error.value)
    assert f"give {good}" in str(error.value)


EXPECTED_AREAS = {
    "10": "Eastern (UKPN)",
    "11": "East Midlands (NGED)",
    "12": "London (UKPN)",
    "13": "Merseyside and North Wales (SPEN)",
    "14": "West Midlands (NGED)",
    "15": "North Eastern (NPg)",
    "16": "North Western (ENWL)",
    "17": "North of Scotland (SSEN)",
    "18": "South of Scotland (SPEN)",
    "19": "South Eastern (UKPN)",
    "20": "Southern (SSEN)",
    "21": "South Wales (NGED)",
    "22": "South Western (NGED)",
    "23": "Yorkshire (NPg)",
}


@pytest.mark.parametrize(("distributor_id", "name"), EXPECTED_AREAS.items())
def test_every_gb_area_is_named_with_its_operator(distributor_id: str, name: str) -> None:
    mpan = MpanCore.parse(core(distributor_id + "0012345678"))
    assert mpan.distributor_id == distributor_id
    assert mpan.distributor.name == name


def test_the_table_has_the_fourteen_gb_areas_and_nothing_else() -> None:
    assert sorted(GB_AREAS) == [str(n) for n in range(10, 24)]
    assert {k: d.id for k, d in GB_AREAS.items()} == {k: k for k in GB_AREAS}


@pytest.mark.parametrize("distributor_id", ["24", "25", "29", "00", "09", "99"])
def test_an_id_outside_the_table_is_an_unknown_distributor_not_an_error(
    distributor_id: str,
) -> None:
    mpan = MpanCore.parse(core(distributor_id + "9876543210"))
    assert mpan.distributor == Distributor(id=distributor_id)
    assert mpan.distributor.name == f"unknown (id {distributor_id})"
    assert distributor_of(distributor_id).area is None


@pytest.mark.parametrize(
    "text",
    ["13 1234 5678 907", " 1312345678907 ", "1312 3456\t78907", "\u00a01312345678907"],
)
def test_spaces_are_ignored(text: str) -> None:
    assert MpanCore.parse(text).digits == "1312345678907"


@pytest.mark.parametrize(
    ("text", "digits"),
    [("", 0), ("131234567890", 12), ("13123456789070", 14), ("001112221312345678907", 21)],
)
def test_a_core_that_is_not_13_digits_is_refused(text: str, digits: int) -> None:
    with pytest.raises(MpanError) as error:
        MpanCore.parse(text)
    assert error.value.reason is MpanReason.WRONG_LENGTH
    assert error.value.value == text
    assert f"got {digits}" in str(error.value)


@pytest.mark.parametrize(
    ("text", "odd"),
    [
        ("13123456789O7", "O"),  # a letter O for a zero
        ("13-1234-5678-907", "-"),
        ("1312345678\uff1907", "\uff19"),  # a full-width digit: a digit to str.isdigit, not to us
        ("abcdefghijklm", "a"),
    ],
)
def test_anything_but_ascii_digits_is_refused_naming_it(text: str, odd: str) -> None:
    with pytest.raises(MpanError) as error:
        MpanCore.parse(text)
    assert error.value.reason is MpanReason.NOT_DIGITS
    assert repr(odd) in str(error.value)


def test_an_mpan_error_is_a_gateway_error() -> None:
    assert issubclass(MpanError, GatewayError)


def test_the_core_prints_as_its_digits() -> None:
    assert str(MpanCore.parse("13 1234 5678 907")) == "1312345678907"
