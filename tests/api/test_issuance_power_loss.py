"""Power lost during every APDU of a personalization (the virtual card's power-loss switch).

For every APDU number N of a whole personalization, and for every tear point of that APDU
(before its first EEPROM write, between its two writes — EXTERNAL AUTHENTICATE has two —
and after its last), the card loses power:

* its EEPROM (the state file) holds for every object the old or the new value, never a mix:
  no credential or exactly the one the issuer signed for this run, with its version; a
  SECURED card always holds that credential; the try counter is the limit or one below;
* the database has no active record for it, and the published status list does not say
  VALID for its entry — so there is never an active record without a working card;
* powered on again, the same card personalized again (issuance re-run on the same state)
  becomes an active card that taps valid, with the try counter back at the limit and
  exactly one active card for the person.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from card_profiles.errors import CardError
from card_profiles.profiles import Lifecycle
from card_profiles.starcard import StarCardSession
from card_profiles.transport import InProcessTransport
from card_profiles.virtual.starcard_v1 import PowerLost, VirtualStarCard
from card_profiles.virtual.state import AUTH_TRY_LIMIT, CardState, load_state
from issuer.db import cards
from issuer.publisher import VALID, current_token
from issuer.wiring import IssuerContext
from tests.conftest import NOW
from tests.helpers import factory_card, graded_subject, id_number
from verifier.core.status_list import parse_status_list_token
from verifier.service import VerifierService
from verifier.tap import read_tap

TEAR_POINTS = (0, 1, 2)
"""EEPROM writes of the torn APDU that complete: none, one, all (no command has more)."""


def tap_state(ctx: IssuerContext, card: VirtualStarCard, at: dt.datetime) -> str:
    verifier = VerifierService(trust=ctx.keys.trust_store())
    with ctx.engine.connect() as conn:
        token = current_token(conn, ctx.settings.status_list_id)
    assert token is not None
    verifier.accept_status_list(token, int(at.timestamp()))
    handle, challenge = verifier.begin("t-1", b"test", int(at.timestamp()))
    data = read_tap(StarCardSession(InProcessTransport(card)), challenge)
    verdict = verifier.complete(
        handle, "t-1", data.credential, data.card_signature, int(at.timestamp())
    )
    return verdict.state


def point(private_key: bytes) -> bytes:
    key = ec.derive_private_key(int.from_bytes(private_key, "big"), ec.SECP256R1())
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def check_eeprom_is_old_or_new(ctx: IssuerContext, eeprom: CardState) -> None:
    with ctx.engine.connect() as conn:
        row = conn.execute(select(cards).where(cards.c.serial == eeprom.serial.hex())).first()
    assert eeprom.lifecycle in (Lifecycle.PERSONALIZATION, Lifecycle.SECURED)
    assert eeprom.auth_tries in (AUTH_TRY_LIMIT, AUTH_TRY_LIMIT - 1)
    if eeprom.credential is None:
        assert eeprom.credential_version == 0
        assert eeprom.lifecycle is Lifecycle.PERSONALIZATION
        return
    # A credential on the card is exactly the one signed in this run, bound to its key.
    assert row is not None
    assert eeprom.credential == bytes(row.credential)
    assert eeprom.credential_version == row.credential_version == 1
    assert eeprom.private_key is not None
    assert point(eeprom.private_key) == bytes(row.card_public_key)


def check_not_active(ctx: IssuerContext, serial: bytes, at: dt.datetime) -> None:
    with ctx.engine.connect() as conn:
        row = conn.execute(select(cards).where(cards.c.serial == serial.hex())).first()
        token = current_token(conn, ctx.settings.status_list_id)
    if row is None:
        return
    assert row.state != "active"
    if row.credential is not None:  # a credential for this entry exists: never VALID yet
        assert token is not None
        parsed = parse_status_list_token(token, ctx.keys.trust_store(), int(at.timestamp()))
        assert parsed.statuses.get(int(row.status_idx)) != VALID


def db_credential_version(ctx: IssuerContext, serial: bytes) -> int:
    with ctx.engine.connect() as conn:
        version = conn.execute(
            select(cards.c.credential_version).where(cards.c.serial == serial.hex())
        ).scalar_one_or_none()
    return 0 if version is None else int(version)


def at_most_one_active_per_subject(ctx: IssuerContext) -> None:
    with ctx.engine.connect() as conn:
        most = conn.execute(
            select(func.count())
            .select_from(cards)
            .where(cards.c.state == "active")
            .group_by(cards.c.subject_id)
            .order_by(func.count().desc())
        ).first()
    assert most is None or most[0] == 1


def test_power_loss_after_every_apdu_of_personalization(
    sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:
    ctx = sqlite_issuer
    reference = factory_card(ctx)
    issued = ctx.issuance.personalize(
        StarCardSession(InProcessTransport(reference)),
        graded_subject(ctx, NOW, id_number=id_number(0)),
        NOW,
        "c",
    )
    total = issued.apdu_count
    assert total == reference.apdu_count
    runs = 0
    seen: set[tuple[bool, Lifecycle, int]] = set()
    for n in range(total):
        for commits in TEAR_POINTS:
            runs += 1
            subject = graded_subject(ctx, NOW, id_number=id_number(runs))
            path = tmp_path / f"card-{n}-{commits}.json"
            card = factory_card(ctx, path, power_loss_after=n, power_loss_commits=commits)
            with pytest.raises(CardError) as lost:
                ctx.issuance.personalize(
                    StarCardSession(InProcessTransport(card)), subject, NOW, "c"
                )
            assert isinstance(lost.value, PowerLost), (n, commits, lost.value)
            assert not card.powered
            eeprom = load_state(path)  # never torn: it always parses
            signed = db_credential_version(ctx, eeprom.serial)
            check_eeprom_is_old_or_new(ctx, eeprom)
            seen.add((eeprom.credential is not None, eeprom.lifecycle, eeprom.auth_tries))
            check_not_active(ctx, eeprom.serial, NOW)

            card.reset()  # power on again; the card reloads its EEPROM
            assert card.state == eeprom
            again = ctx.issuance.personalize(
                StarCardSession(InProcessTransport(card)), subject, NOW, "c"
            )
            assert again.serial == eeprom.serial.hex()
            # The version grows past both the card's and the one the database last signed.
            assert again.credential_version == max(eeprom.credential_version, signed) + 1
            assert load_state(path).credential_version == again.credential_version
            assert tap_state(ctx, card, NOW) == "valid", (n, commits)
            assert load_state(path).auth_tries == AUTH_TRY_LIMIT
            assert load_state(path).lifecycle is Lifecycle.SECURED
            at_most_one_active_per_subject(ctx)
    assert runs == total * len(TEAR_POINTS)
    # The switch really tore at every stage: nothing written yet, the try counter down by one
    # (power lost inside EXTERNAL AUTHENTICATE), the new credential written, the card SECURED.
    limit = AUTH_TRY_LIMIT
    assert {
        (False, Lifecycle.PERSONALIZATION, limit),
        (False, Lifecycle.PERSONALIZATION, limit - 1),
        (True, Lifecycle.PERSONALIZATION, limit),
        (True, Lifecycle.SECURED, limit),
    } <= seen


def test_power_loss_then_a_new_card_for_the_same_person(
    sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:
    """The clerk gives up on the card that lost power and takes a new one: the new card is
    activated, the first never verifies and cannot be activated any more."""
    ctx = sqlite_issuer
    subject = graded_subject(ctx, NOW)
    first = factory_card(ctx, tmp_path / "first.json", power_loss_after=11, power_loss_commits=1)
    with pytest.raises(PowerLost):
        ctx.issuance.personalize(StarCardSession(InProcessTransport(first)), subject, NOW, "c")
    second = factory_card(ctx, tmp_path / "second.json")
    ctx.issuance.personalize(StarCardSession(InProcessTransport(second)), subject, NOW, "c")
    assert tap_state(ctx, second, NOW) == "valid"
    first.reset()
    if first.state.credential is not None:
        assert tap_state(ctx, first, NOW) == "invalid"
    with pytest.raises(Exception, match="already has an active card"):
        ctx.issuance.personalize(StarCardSession(InProcessTransport(first)), subject, NOW, "c")
    at_most_one_active_per_subject(ctx)
