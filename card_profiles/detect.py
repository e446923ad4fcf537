"""Which card is this? Profile detection from the ATR and by SELECT, costing no extra APDU.

Every supported card application is tried by its own SELECT, in an order that starts with the
profile the ATR hints at. The first SELECT that succeeds is also the first APDU of the tap,
so a card whose ATR we know taps in the same 3 APDUs as before; an unknown ATR costs one
refused SELECT per profile tried before the right one.

The result is a session that is already selected and offers the tap operations of
:class:`TapSession`. Profiles stay data: this module only lists them in order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from card_profiles.errors import CardError, StatusWordError
from card_profiles.iso7816_fs import ISO7816_FS, ISO7816_FS_MF, Iso7816FsSession
from card_profiles.piv import PIV, PivSession
from card_profiles.profiles import STARCARD_V1
from card_profiles.starcard import StarCardSession
from card_profiles.transport import Transport


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class TapSession(Protocol):
    """What a tap needs from any card application."""

    @property
    def profile(self) -> _Named: ...

    @property
    def has_card_key(self) -> bool: ...

    @property
    def apdu_count(self) -> int: ...

    def select(self) -> object: ...

    def read_credential(self) -> bytes: ...

    def internal_authenticate(self, challenge: bytes) -> bytes: ...


class UnknownCard(CardError):
    """No supported card application answered SELECT: not a StarCard of any profile."""


@dataclass(frozen=True)
class Candidate:
    """One profile to try: its name, an ATR test, and how to open and select a session."""

    name: str
    atr_matches: Callable[[bytes], bool]
    open: Callable[[Transport, bytes], TapSession]


def _starcard(transport: Transport, atr: bytes) -> TapSession:
    session = StarCardSession(transport)
    session.select()
    return session


def _piv(transport: Transport, atr: bytes) -> TapSession:
    session = PivSession(transport, PIV, atr=atr)
    session.select()
    return session


def _iso(profile_name: str) -> Callable[[Transport, bytes], TapSession]:
    profile = ISO7816_FS if profile_name == ISO7816_FS.name else ISO7816_FS_MF

    def open_session(transport: Transport, atr: bytes) -> TapSession:
        session = Iso7816FsSession(transport, profile)
        session.select()
        return session

    return open_session


CANDIDATES: Sequence[Candidate] = (
    Candidate(STARCARD_V1.name, lambda atr: atr == STARCARD_V1.atr, _starcard),
    Candidate(PIV.name, lambda atr: PIV.aid[:5].hex().upper() in atr.hex().upper(), _piv),
    Candidate(ISO7816_FS.name, lambda atr: False, _iso(ISO7816_FS.name)),
    Candidate(ISO7816_FS_MF.name, lambda atr: False, _iso(ISO7816_FS_MF.name)),
)
"""Default order when the ATR says nothing: our own card, PIV, then plain file systems."""


@dataclass(frozen=True)
class DetectedCard:
    profile: str
    session: TapSession
    tried: tuple[str, ...]
    """Profiles whose SELECT was refused before this one answered."""


def detect(
    transport: Transport, atr: bytes, candidates: Sequence[Candidate] = CANDIDATES
) -> DetectedCard:
    """Selects the first application that answers, trying the ATR's hint first.

    Raises:
        UnknownCard: no candidate's SELECT succeeded.
        CardIOError and subclasses: the card was pulled or broke the protocol (never
            swallowed: only a refused SELECT moves on to the next profile).
    """
    ordered = sorted(candidates, key=lambda c: not c.atr_matches(atr))
    refused: list[str] = []
    for candidate in ordered:
        try:
            session = candidate.open(transport, atr)
        except StatusWordError:
            refused.append(candidate.name)
            continue
        return DetectedCard(candidate.name, session, tuple(refused))
    raise UnknownCard(f"no StarCard application on this card (tried {', '.join(refused)})")
