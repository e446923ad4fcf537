from __future__ import annotations

import datetime as dt

import pytest

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
