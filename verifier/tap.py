"""The card side of a tap: the card's application is detected and selected, its credential
read, and (for cards with a key) the challenge signed. 3 APDUs on ``starcard-v1`` and on a
PIV card with extended length; ``iso7816-fs`` cards have no key and read in 2-3 APDUs.
"""

from __future__ import annotations

from dataclasses import dataclass

from card_profiles.detect import TapSession, detect
from card_profiles.transport import Transport


@dataclass(frozen=True)
class TapData:
    """What the card said during one tap, as received."""

    credential: bytes
    card_signature: bytes
    apdu_count: int
    profile: str


def read_tap(session: TapSession, challenge: bytes) -> TapData:
    """Taps a card of a known profile: SELECT, read, then sign if the card has a key.

    A keyless card returns an empty signature; the verifier then reports low assurance.
    Raises the card layer's errors (``card_profiles.errors``) when the card is pulled or fails.
    """
    before = session.apdu_count
    session.select()
    return _read_selected(session, challenge, before, session.profile.name)


def tap_card(transport: Transport, atr: bytes, challenge: bytes) -> TapData:
    """Detects the profile (its SELECT is the tap's first APDU), then reads and signs.

    Raises ``card_profiles.detect.UnknownCard`` if no StarCard application answers.
    """
    detected = detect(transport, atr)
    return _read_selected(detected.session, challenge, 0, detected.profile)


def _read_selected(session: TapSession, challenge: bytes, before: int, profile: str) -> TapData:
    credential = session.read_credential()
    signature = session.internal_authenticate(challenge) if session.has_card_key else b""
    return TapData(credential, signature, session.apdu_count - before, profile)
