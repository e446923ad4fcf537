"""The card side of a tap: exactly three APDUs (SELECT, READ CREDENTIAL, INTERNAL AUTHENTICATE)."""

from __future__ import annotations

from dataclasses import dataclass

from card_profiles.starcard import StarCardSession


@dataclass(frozen=True)
class TapData:
    """What the card said during one tap, as received."""

    credential: bytes
    card_signature: bytes
    apdu_count: int


def read_tap(session: StarCardSession, challenge: bytes) -> TapData:
    """Reads the credential and has the card sign ``challenge``.

    Raises the card layer's errors (``card_profiles.errors``) when the card is pulled or fails.
    """
    before = session.apdu_count
    session.select()
    credential = session.read_credential()
    signature = session.internal_authenticate(challenge)
    return TapData(credential, signature, session.apdu_count - before)
