from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from issuer.identity import InvalidIdentityNumber, parse_identity_number


@pytest.mark.parametrize(
    "number", ["11010519491231002X", "440524188001010014", "11010519491231002x"]
)
def test_standard_annex_examples_are_valid(number: str) -> None:
    parsed = parse_identity_number(number)
    assert parsed.value == number.upper()


def test_birth_date_mask_and_age() -> None:
    parsed = parse_identity_number("11010519491231002X")
    assert parsed.birth_date == dt.date(1949, 12, 31)
    assert parsed.masked() == "1101**********002X"
    assert parsed.age_on(dt.date(1967, 12, 30)) == 17
    assert parsed.age_on(dt.date(1967, 12, 31)) == 18


@pytest.mark.parametrize(
    ("number", "fragment"),
    [
        ("110105194912310021", "check character"),
        ("110105194902300020", "birth date"),
        ("1101051949123100", "18 characters"),
        ("11010519491231002Y", "digits"),
    ],
)
def test_invalid_numbers_say_what_to_fix(number: str, fragment: str) -> None:
    with pytest.raises(InvalidIdentityNumber, match=fragment):
        parse_identity_number(number)


_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def _with_check(body: str) -> str:
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, _WEIGHTS, strict=True)) % 11]


_BODIES = st.builds(
    lambda region, day, seq: f"{region}{day:%Y%m%d}{seq:03d}",
    st.integers(110000, 659999).map(str),
    st.dates(dt.date(1900, 1, 1), dt.date(2026, 12, 31)),
    st.integers(0, 999),
)


@given(_BODIES)
def test_any_real_date_with_its_check_character_is_valid(body: str) -> None:
    number = _with_check(body)
    parsed = parse_identity_number(number.lower())
    assert parsed.value == number
    assert parsed.masked() == number[:4] + "*" * 10 + number[-4:]


@given(_BODIES, st.integers(0, 16), st.integers(1, 9))
def test_every_single_digit_substitution_is_caught(body: str, position: int, shift: int) -> None:
    number = _with_check(body)
    digit = str((int(number[position]) + shift) % 10)
    altered = number[:position] + digit + number[position + 1 :]
    with pytest.raises(InvalidIdentityNumber):
        parse_identity_number(altered)
