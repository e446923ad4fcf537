"""Citizen identity numbers (GB 11643-1999): validation, normalisation and masking.

An identity number is 18 characters: a 6-digit region, the birth date YYYYMMDD, a 3-digit
sequence and a check character computed with ISO 7064 MOD 11-2. Input may use a lower-case
``x``; the stored form is upper-case. The number never leaves the issuer unmasked.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"


class InvalidIdentityNumber(ValueError):
    """The text is not a valid GB 11643 identity number; the message says what to fix."""


@dataclass(frozen=True)
class IdentityNumber:
    """A validated identity number in its canonical (upper-case) form."""

    value: str

    @property
    def birth_date(self) -> dt.date:
        return dt.date(int(self.value[6:10]), int(self.value[10:12]), int(self.value[12:14]))

    def masked(self) -> str:
        """Shows the first 4 and last 4 characters only, e.g. ``1101**********002X``."""
        return self.value[:4] + "*" * 10 + self.value[-4:]

    def age_on(self, day: dt.date) -> int:
        born = self.birth_date
        return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def parse_identity_number(text: str) -> IdentityNumber:
    """Validates ``text`` as a GB 11643 number.

    Raises:
        InvalidIdentityNumber: wrong length or characters, impossible birth date, or a check
            character that does not match (the message names which).
    """
    value = text.strip().upper()
    if len(value) != 18:
        raise InvalidIdentityNumber(f"an identity number has 18 characters, got {len(value)}")
    if not value[:17].isdigit() or not (value[17].isdigit() or value[17] == "X"):
        raise InvalidIdentityNumber("only digits are allowed, and X as the last character")
    try:
        dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        raise InvalidIdentityNumber(
            f"characters 7-14 must be a real birth date, got {value[6:14]}"
        ) from None
    expected = _CHECK[sum(int(c) * w for c, w in zip(value[:17], _WEIGHTS, strict=True)) % 11]
    if value[17] != expected:
        raise InvalidIdentityNumber("the check character does not match: please re-type the number")
    return IdentityNumber(value)
