"""Typed errors of the card layer.

Invariants:

* Every failure the card layer reports is a :class:`CardError`.
* Status words never travel above :mod:`card_profiles.starcard`: :func:`raise_for_sw` turns each
  one into a :class:`StatusWordError` subclass named after its meaning, so callers branch on
  types, not on numbers. ``sw`` stays available on the exception for logs only.
* Errors split by who is at fault: :class:`CardIOError` and its subclasses are infrastructure
  problems (retry or ask for the card again); :class:`StatusWordError` means the card refused
  the command (wrong state or bad input); :class:`NoReader` is a setup problem.
"""

from __future__ import annotations

from typing import ClassVar

SW_OK = 0x9000


class CardError(Exception):
    """Base of every error raised by :mod:`card_profiles`."""


class CardIOError(CardError):
    """Talking to the card failed: transport broken, garbled or missing response."""


class CardRemoved(CardIOError):
    """The card left the reader (or was never there) while we needed it."""


class CardTimeout(CardIOError):
    """The card or reader did not answer within the allowed time.

    The transport that raised it is broken afterwards; open a new one.
    """


class MalformedResponse(CardIOError):
    """The card answered 9000 but its data does not match the profile (length, format)."""


class CardReset(CardIOError):
    """Someone else reset the card since we connected: any session state on it is gone."""


class ReaderBusy(CardIOError):
    """Another process holds the reader exclusively (sharing violation); try again later."""


class NoReader(CardError):
    """The named reader does not exist, or the PC/SC service is not running."""


class StatusWordError(CardError):
    """The card refused a command with status word ``sw`` (not 9000).

    Raised as the subclass registered for ``sw`` when there is one (see :func:`raise_for_sw`),
    else as this class.
    """

    SW: ClassVar[int | None] = None
    MEANING: ClassVar[str] = "unexpected status word"

    def __init__(self, sw: int | None = None) -> None:
        if sw is None:
            if self.SW is None:
                raise TypeError("StatusWordError needs a status word")
            sw = self.SW
        if not 0 <= sw <= 0xFFFF:
            raise ValueError(f"status word out of range: {sw:#x}")
        self.sw = sw
        super().__init__(f"{self.MEANING} (SW {sw:04X})")


class WrongLength(StatusWordError):
    SW = 0x6700
    MEANING = "wrong length"


class SecurityStatusNotSatisfied(StatusWordError):
    SW = 0x6982
    MEANING = "security status not satisfied"


class ConditionsNotSatisfied(StatusWordError):
    SW = 0x6985
    MEANING = "conditions of use not satisfied (wrong lifecycle state)"


class WrongData(StatusWordError):
    SW = 0x6A80
    MEANING = "incorrect data"


class FunctionNotSupported(StatusWordError):
    SW = 0x6A81
    MEANING = "function not supported (card terminated)"


class NotFound(StatusWordError):
    SW = 0x6A82
    MEANING = "file or application not found"


class NotEnoughMemory(StatusWordError):
    SW = 0x6A84
    MEANING = "not enough memory"


class IncorrectP1P2(StatusWordError):
    SW = 0x6A86
    MEANING = "incorrect P1/P2"


class DataNotFound(StatusWordError):
    SW = 0x6A88
    MEANING = "referenced data not found"


class InsNotSupported(StatusWordError):
    SW = 0x6D00
    MEANING = "instruction not supported"


class ClaNotSupported(StatusWordError):
    SW = 0x6E00
    MEANING = "class not supported"


class CardInternalError(StatusWordError):
    SW = 0x6F00
    MEANING = "card internal error"


_BY_SW: dict[int, type[StatusWordError]] = {
    cls.SW: cls
    for cls in (
        WrongLength,
        SecurityStatusNotSatisfied,
        ConditionsNotSatisfied,
        WrongData,
        FunctionNotSupported,
        NotFound,
        NotEnoughMemory,
        IncorrectP1P2,
        DataNotFound,
        InsNotSupported,
        ClaNotSupported,
        CardInternalError,
    )
    if cls.SW is not None
}


def error_for_sw(sw: int) -> StatusWordError:
    """Return (do not raise) the exception for a non-9000 status word ``sw``.

    Raises ValueError if ``sw`` is 9000 or not a 16-bit value.
    """
    if sw == SW_OK:
        raise ValueError("9000 is not an error")
    cls = _BY_SW.get(sw)
    return cls(sw) if cls is not None else StatusWordError(sw)


def raise_for_sw(sw: int) -> None:
    """Return if ``sw`` is 9000, else raise the matching :class:`StatusWordError` subclass."""
    if sw != SW_OK:
        raise error_for_sw(sw)
