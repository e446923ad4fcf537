"""Unified social credit codes (GB 32100-2015) of organisations: validation and masking.

A code is 18 characters over the 31-character alphabet ``0123456789ABCDEFGHJKLMNPQRTUWXY``
(no I, O, Z, S, V): position 1 the registration authority, position 2 the organisation type,
positions 3-8 the region (digits), positions 9-17 the organisation code and position 18 the
check character. Each character has the value of its place in the alphabet; with weights
``3^(i-1) mod 31`` the check value is ``(31 - sum mod 31) mod 31``.

Positions 1 and 2 may be letters (``N2520113MA6H00003A`` is a farmers' co-operative in
贵阳市白云区): only the alphabet is checked there, never a list of known prefixes.

Some codes issued in early pilot areas are legal but fail the check (``91350100M0001TGQXM``).
:func:`parse_uscc` raises :class:`UsccCheckMismatch` for them unless the caller passes
``accept_check_mismatch=True`` — which only code acting on a staff override with a recorded
reason may do (see :func:`issuer.platform.register_organisation`).
"""

from __future__ import annotations

from dataclasses import dataclass

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_VALUE = {c: i for i, c in enumerate(ALPHABET)}
_WEIGHTS = tuple(pow(3, i, 31) for i in range(17))
# Letters that are not in the alphabet, and the character a clerk most likely meant.
_LOOKALIKES = {"I": "1", "O": "0", "Z": "2", "S": "5", "V": "U"}


class InvalidUscc(ValueError):
    """The text is not a usable GB 32100 code; the message says what to fix."""


class UsccCheckMismatch(InvalidUscc):
    """Well-formed, but the check character does not match.

    ``code`` is the normalised code, so that staff can register an early pilot-area code
    with an override reason.
    """

    def __init__(self, code: Uscc) -> None:
        super().__init__(
            f"the check character of USCC {code.masked()} does not match: re-type the code; "
            "an early pilot-area code that is known to fail the check can only be accepted "
            "by staff with an override reason"
        )
        self.code = code


@dataclass(frozen=True)
class Uscc:
    """A well-formed code in canonical (upper-case) form.

    ``check_ok`` is False only for a code parsed with ``accept_check_mismatch=True`` whose
    check character does not match.
    """

    value: str
    check_ok: bool = True

    @property
    def region(self) -> str:
        """The 6-digit administrative region code (positions 3-8)."""
        return self.value[2:8]

    def masked(self) -> str:
        """The first 4 and last 4 characters, as identity numbers are shown."""
        return self.value[:4] + "*" * 10 + self.value[-4:]


def check_character(body: str) -> str:
    """The check character for the first 17 characters ``body`` (alphabet already checked)."""
    total = sum(_VALUE[c] * w for c, w in zip(body, _WEIGHTS, strict=True))
    return ALPHABET[(31 - total % 31) % 31]


def parse_uscc(text: str, *, accept_check_mismatch: bool = False) -> Uscc:
    """Validates ``text`` as a GB 32100 code (surrounding spaces ignored, any letter case).

    Raises:
        InvalidUscc: wrong length, a character outside the alphabet (the message names it
            and the character probably meant), or non-digits in the region (positions 3-8).
        UsccCheckMismatch: the check character does not match and ``accept_check_mismatch``
            is False.
    """
    value = text.strip().upper()
    if len(value) != 18:
        raise InvalidUscc(f"a USCC has 18 characters, got {len(value)}")
    for position, char in enumerate(value, start=1):
        if char in _VALUE:
            continue
        hint = f" (did you mean {_LOOKALIKES[char]}?)" if char in _LOOKALIKES else ""
        raise InvalidUscc(
            f"character {position} of the USCC is {char!r}, which a USCC never contains{hint}; "
            "it uses digits and the capital letters except I, O, Z, S and V"
        )
    if not value[2:8].isdigit():
        raise InvalidUscc("characters 3-8 of a USCC are the region code and must be digits")
    code = Uscc(value)
    if value[17] != check_character(value[:17]):
        if not accept_check_mismatch:
            raise UsccCheckMismatch(code)
        return Uscc(value, check_ok=False)
    return code
