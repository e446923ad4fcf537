"""GB 32100 unified social credit codes: the test values of DOMAIN.md and the check's power."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from issuer.uscc import (
    ALPHABET,
    InvalidUscc,
    UsccCheckMismatch,
    check_character,
    parse_uscc,
)


@pytest.mark.parametrize("code", ["91110000600037341L", "91350200776049653A"])
def test_domain_examples_are_valid(code: str) -> None:
    parsed = parse_uscc(code)
    assert parsed.value == code
    assert parsed.check_ok


def test_letter_prefixed_code_is_valid() -> None:
    # python-stdnum rejects it; GB 32100 allows letters in positions 1 and 2.
    parsed = parse_uscc("N2520113MA6H00003A")
    assert parsed.region == "520113"  # 贵阳市白云区


def test_lower_case_and_spaces_are_normalised() -> None:
    assert parse_uscc(" 91110000600037341l ").value == "91110000600037341L"


def test_wrong_check_character_is_refused() -> None:
    with pytest.raises(UsccCheckMismatch, match="check character") as caught:
        parse_uscc("91110000600037341M")
    assert caught.value.code.value == "91110000600037341M"
    assert "91110000600037341M" not in str(caught.value)  # shown masked


def test_pilot_area_code_fails_the_check_but_can_be_accepted_on_request() -> None:
    with pytest.raises(UsccCheckMismatch, match="override reason"):
        parse_uscc("91350100M0001TGQXM")
    parsed = parse_uscc("91350100M0001TGQXM", accept_check_mismatch=True)
    assert parsed.value == "91350100M0001TGQXM"
    assert not parsed.check_ok


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        ("9111000060003734", "18 characters"),
        ("91110000600037341LL", "18 characters"),
        ("9111000060003O341L", "did you mean 0"),
        ("9111000060003734IL", "did you mean 1"),
        ("91110000600037341Z", "character 18"),
        ("91A10000600037341L", "region code"),
        ("91110000600037341-", "never contains"),
    ],
)
def test_malformed_codes_say_what_to_fix(code: str, fragment: str) -> None:
    with pytest.raises(InvalidUscc, match=fragment) as caught:
        parse_uscc(code, accept_check_mismatch=True)
    assert not isinstance(caught.value, UsccCheckMismatch)


def test_weights_are_powers_of_three_mod_31() -> None:
    # 1 3 9 27 19 26 16 17 20 29 25 13 8 24 10 30 28 (DOMAIN.md): a body with a single 1 at
    # position i has the check value (31 - w_i) mod 31.
    weights = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28]
    for i, weight in enumerate(weights):
        body = "0" * i + "1" + "0" * (16 - i)
        assert check_character(body) == ALPHABET[(31 - weight) % 31]


_BODIES = st.tuples(
    st.text(ALPHABET, min_size=2, max_size=2),
    st.text("0123456789", min_size=6, max_size=6),
    st.text(ALPHABET, min_size=9, max_size=9),
).map("".join)


@given(_BODIES)
def test_any_body_with_its_check_character_is_valid(body: str) -> None:
    assert parse_uscc(body + check_character(body)).check_ok


@given(_BODIES, st.integers(0, 16), st.integers(1, 30))
def test_every_single_substitution_is_caught(body: str, position: int, shift: int) -> None:
    code = body + check_character(body)
    changed = ALPHABET[(ALPHABET.index(code[position]) + shift) % 31]
    altered = code[:position] + changed + code[position + 1 :]
    if not altered[2:8].isdigit():
        return  # a letter in the region is refused as malformed, also fine
    with pytest.raises(UsccCheckMismatch):
        parse_uscc(altered)
