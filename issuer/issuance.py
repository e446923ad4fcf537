"""Card issuance: eligibility, personalization as a persisted state machine, revocation.

Personalization steps, each persisted before the next card write::

    requested → card_key_generated → credential_signed → written → verified → active

The card's status-list entry is SUSPENDED from ``credential_signed`` until ``active`` (the
list is republished in the same transaction), so a card pulled out half-way never verifies.
``active`` is guarded by a partial unique index: one active card per subject, enforced by
the database.

Card protection (``docs/card-starcard-v1.md``):

* Every write goes through the card's secure channel, opened by mutual authentication with
  the card's diversified key held in the HSM (the injected
  :class:`~card_profiles.scp.SecureChannelAuthenticator`). A card that cannot authenticate
  is not ours: :class:`CardRejected`, nothing written.
* The serial and ATR read at the start are re-checked before every write step; a different
  card in the reader raises :class:`CardSwapped` before anything is written to it (and the
  secure channel, keyed to the first card, would refuse the write anyway).
* Each credential written carries a version above both the card's and the database's
  (``cards.credential_version``); the card refuses an older one, so a replayed credential
  cannot roll a card back.
* A re-run restarts cleanly whatever the card holds: a card still in PERSONALIZATION gets a
  new key; a card that reached SECURED before the database recorded ``active`` (power lost
  after SET LIFECYCLE) keeps the key recorded for this job and gets a new credential version.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, insert, select, update

from card_profiles.profiles import Lifecycle
from card_profiles.scp import CardNotAuthentic, SecureChannelAuthenticator
from card_profiles.starcard import AuthenticationBlocked, StarCardSession
from issuer.audit import audit
from issuer.db import cards, grades, records, subjects
from issuer.keys import IssuerKeys
from issuer.platform import PROGRAMME_MIN_AGE
from issuer.publisher import publish
from issuer.settings import IssuerSettings
from verifier.core.challenge import begin, challenge_bytes
from verifier.core.credential import CredentialClaims, issue_credential
from verifier.core.errors import Suspended
from verifier.core.status_list import MIN_ENTRIES, StatusListCache
from verifier.core.verify import verify_card


class IssuanceError(RuntimeError):
    """Issuance cannot go on; the message is meant for the clerk at the counter."""


class NotEligible(IssuanceError):
    def __init__(self, reasons: list[str]) -> None:
        super().__init__("not eligible: " + "; ".join(reasons))
        self.reasons = reasons


class CardCheckFailed(IssuanceError):
    """The card did not pass the self-check after writing; it is not activated."""


class CardSwapped(IssuanceError):
    """The card in the reader is not the one this personalization started with (serial or
    ATR changed). Nothing was written to it; put the first card back and re-run."""


class CardRejected(IssuanceError):
    """This card cannot be personalized here: it failed mutual authentication (not keyed by
    this issuer's master key), its secure channel is blocked, it is LOCKED or TERMINATED,
    or it was secured by another personalization."""


@dataclass(frozen=True)
class _CardIdentity:
    serial: bytes
    atr: bytes | None


@dataclass(frozen=True)
class _Job:
    """What the database already knows about this card's personalization."""

    credential_version: int
    card_public_key: bytes | None


@dataclass(frozen=True)
class Eligibility:
    eligible: bool
    reasons: tuple[str, ...]
    stars: int


@dataclass(frozen=True)
class IssuedCard:
    """The result handed to the clerk. ``access_code`` and ``qr_token`` are shown once."""

    serial: str
    subject_id: str
    stars: int
    credential: bytes
    qr_token: str
    access_code: str
    expires_at: dt.datetime
    apdu_count: int
    credential_version: int


def hash_secret(value: str) -> str:
    """Salted scrypt hash for access codes (``scrypt$salt$hash``, hex)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(value.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def qr_binding(qr_token: str) -> bytes:
    return hashlib.sha256(qr_token.encode()).digest()[:16]


def check_eligibility(conn: Connection, subject_id: str, today: dt.date) -> Eligibility:
    """Reasons are plain sentences a clerk can read aloud."""
    subject = conn.execute(select(subjects).where(subjects.c.id == subject_id)).first()
    if subject is None:
        return Eligibility(False, ("no such person is registered",), 0)
    if subject.kind != "individual":
        return Eligibility(False, ("organisations cannot hold the star card (it is personal)",), 0)
    reasons = []
    born = subject.birth_date
    age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    if age < PROGRAMME_MIN_AGE:
        reasons.append("the star card is for adults (18 or older)")
    if subject.consent_given_at is None or subject.consent_withdrawn_at is not None:
        reasons.append("no consent to the star programme is on file")
    grade = conn.execute(select(grades).where(grades.c.subject_id == subject_id)).first()
    stars = 0 if grade is None else int(grade.stars)
    if grade is None:
        reasons.append("the person has not been graded yet")
    elif grade.grade_class != "A" or stars < 1:
        reasons.append("the grade is not class A (star level)")
    pending = conn.execute(
        select(records.c.id).where(
            records.c.subject_id == subject_id, records.c.objection_open != 0
        )
    ).first()
    if pending is not None:
        # Conservative on purpose: while an objection is open the stored grade is provisional
        # (the disputed record does not count), so no card is issued at a level that the
        # decision may take back.
        reasons.append("an objection is being verified; issue after it is decided")
    active = conn.execute(
        select(cards.c.serial).where(cards.c.subject_id == subject_id, cards.c.state == "active")
    ).first()
    if active is not None:
        reasons.append("the person already has an active card (use replacement)")
    return Eligibility(not reasons, tuple(reasons), stars)


class Issuance:
    """Personalizes and revokes cards. Collaborators are injected; the clock is ``now``."""

    def __init__(
        self,
        engine: Engine,
        keys: IssuerKeys,
        settings: IssuerSettings,
        policy_version: str,
        random_index: Callable[[int], int] = secrets.randbelow,
        *,
        card_authenticator: SecureChannelAuthenticator,
    ) -> None:
        self._engine = engine
        self._keys = keys
        self._settings = settings
        self._policy_version = policy_version
        self._random_index = random_index
        self._authenticator = card_authenticator

    def personalize(
        self, session: StarCardSession, subject_id: str, now: dt.datetime, actor: str
    ) -> IssuedCard:
        """Runs the whole personalization on the card in ``session``.

        Raises:
            NotEligible: the subject cannot get a card now (reasons attached).
            CardRejected: the card is not ours, blocked, LOCKED/TERMINATED or secured by
                another job; nothing was written.
            CardSwapped: another card is in the reader; nothing was written to it.
            CardCheckFailed: the written card did not verify; it stays inactive.
            card_profiles.errors.CardError: the card was pulled or failed; the job's state
                is persisted and a re-run restarts the card cleanly.
        """
        start_apdus = session.apdu_count
        session.select()
        card = _CardIdentity(session.serial(), session.atr())
        serial = card.serial.hex()
        lifecycle = session.lifecycle()
        if lifecycle not in (Lifecycle.PERSONALIZATION, Lifecycle.SECURED):
            raise CardRejected(f"card {serial} is {lifecycle.name}: it cannot be personalized")
        card_version = session.credential_version()
        with self._engine.connect() as conn:
            eligibility = check_eligibility(conn, subject_id, now.date())
        if not eligibility.eligible:
            raise NotEligible(list(eligibility.reasons))
        key_version = self._open_secure_channel(session, card)
        with self._engine.begin() as conn:
            eligibility = check_eligibility(conn, subject_id, now.date())
            if not eligibility.eligible:
                raise NotEligible(list(eligibility.reasons))
            job = self._start_job(conn, serial, subject_id, eligibility.stars, now, actor)

        if lifecycle is Lifecycle.PERSONALIZATION:
            self._check_same_card(session, card)
            card_key = session.generate_key()
        else:
            card_key = session.public_key()
            if job.card_public_key is None or bytes(job.card_public_key) != card_key:
                raise CardRejected(f"card {serial} was secured by another personalization")
        self._set_state(serial, "card_key_generated", now, card_public_key=card_key)

        version = max(job.credential_version, card_version) + 1
        qr_token = secrets.token_urlsafe(16)
        access_code = f"{secrets.randbelow(10**8):08d}"
        expires = now + dt.timedelta(days=self._settings.credential_valid_days)
        with self._engine.begin() as conn:
            idx = conn.execute(
                select(cards.c.status_idx).where(cards.c.serial == serial)
            ).scalar_one()
            claims = CredentialClaims(
                iss=self._settings.issuer_id,
                iat=int(now.timestamp()),
                nbf=int(now.timestamp()),
                exp=int(expires.timestamp()),
                cti=card.serial,
                card_key=card_key,
                status_idx=int(idx),
                status_uri=self._settings.status_list_uri,
                star_level=eligibility.stars,
                policy_version=self._policy_version,
                profile=session.profile.name,
                qr_hash=qr_binding(qr_token),
            )
            credential = issue_credential(claims, self._keys.credential, self._keys.credential_kid)
            conn.execute(
                update(cards)
                .where(cards.c.serial == serial)
                .values(
                    state="credential_signed",
                    credential=credential,
                    credential_version=version,
                    card_key_version=key_version,
                    qr_token_hash=hashlib.sha256(qr_token.encode()).digest(),
                    access_code_hash=hash_secret(access_code),
                    expires_at=expires,
                    updated_at=now,
                )
            )
            status_token = self._publish(conn, now)

        self._check_same_card(session, card)
        session.write_credential(credential, version)
        self._set_state(serial, "written", now)

        self._self_check(session, credential, version, status_token, int(now.timestamp()))
        self._set_state(serial, "verified", now)

        if lifecycle is Lifecycle.PERSONALIZATION:
            self._check_same_card(session, card)
            session.secure()
        with self._engine.begin() as conn:
            conn.execute(
                update(cards).where(cards.c.serial == serial).values(state="active", updated_at=now)
            )
            self._publish(conn, now)
            audit(conn, now, actor, "card.activated", subject_id=subject_id, card_serial=serial)
        return IssuedCard(
            serial=serial,
            subject_id=subject_id,
            stars=eligibility.stars,
            credential=credential,
            qr_token=qr_token,
            access_code=access_code,
            expires_at=expires,
            apdu_count=session.apdu_count - start_apdus,
            credential_version=version,
        )

    def _open_secure_channel(self, session: StarCardSession, card: _CardIdentity) -> int:
        """Mutual authentication through the HSM; returns the card's key version."""
        serial = card.serial.hex()
        try:
            info = session.open_secure_channel(self._authenticator)
        except CardNotAuthentic as exc:
            raise CardRejected(
                f"card {serial} failed mutual authentication (not a card of this issuer): {exc}"
            ) from exc
        except AuthenticationBlocked as exc:
            raise CardRejected(f"card {serial}: its secure channel is blocked for ever") from exc
        if info.serial != card.serial:
            raise CardSwapped(f"the card answered as {info.serial.hex()}, not {serial}")
        return info.key_version

    @staticmethod
    def _check_same_card(session: StarCardSession, card: _CardIdentity) -> None:
        """Before a write: is the card in the reader still the one we started with?"""
        atr = session.atr()
        if atr != card.atr:
            raise CardSwapped(
                f"the card in the reader changed (ATR {atr.hex() if atr else None}); "
                f"nothing was written to it: put card {card.serial.hex()} back and re-run"
            )
        serial = session.serial()
        if serial != card.serial:
            raise CardSwapped(
                f"card {serial.hex()} is in the reader, not {card.serial.hex()}; nothing was "
                "written to it: put the first card back and re-run"
            )

    def revoke(self, serial: str, reason: str, now: dt.datetime, actor: str) -> None:
        """Revokes a card (lost, stolen, damaged, consent withdrawn...) and republishes."""
        with self._engine.begin() as conn:
            row = conn.execute(select(cards).where(cards.c.serial == serial)).first()
            if row is None:
                raise IssuanceError(f"no card {serial}")
            conn.execute(
                update(cards)
                .where(cards.c.serial == serial)
                .values(state="revoked", revoked_reason=reason, updated_at=now)
            )
            self._publish(conn, now)
            audit(
                conn,
                now,
                actor,
                "card.revoked",
                subject_id=row.subject_id,
                card_serial=serial,
                reason=reason,
            )

    def publish_now(self, now: dt.datetime) -> bytes:
        with self._engine.begin() as conn:
            return self._publish(conn, now)

    def _publish(self, conn: Connection, now: dt.datetime) -> bytes:
        return publish(
            conn,
            self._keys,
            self._settings.status_list_id,
            self._settings.status_list_uri,
            int(now.timestamp()),
            self._settings.status_list_valid_s,
            self._settings.status_list_ttl_s,
        )

    def _start_job(
        self,
        conn: Connection,
        serial: str,
        subject_id: str,
        stars: int,
        now: dt.datetime,
        actor: str,
    ) -> _Job:
        existing = conn.execute(select(cards).where(cards.c.serial == serial)).first()
        if existing is not None:
            if existing.state in ("active", "revoked"):
                raise IssuanceError(f"card {serial} was already issued ({existing.state})")
            if existing.subject_id != subject_id:
                raise IssuanceError(f"card {serial} is being personalized for someone else")
            conn.execute(
                update(cards)
                .where(cards.c.serial == serial)
                .values(state="requested", stars=stars, updated_at=now)
            )
            audit(conn, now, actor, "card.restarted", subject_id=subject_id, card_serial=serial)
            key = existing.card_public_key
            return _Job(int(existing.credential_version), None if key is None else bytes(key))
        taken = set(
            conn.execute(
                select(cards.c.status_idx).where(
                    cards.c.status_list_id == self._settings.status_list_id
                )
            ).scalars()
        )
        if len(taken) >= MIN_ENTRIES:
            raise IssuanceError("the status list is full: open a new list")
        idx = self._random_index(MIN_ENTRIES)
        while idx in taken:
            idx = self._random_index(MIN_ENTRIES)
        conn.execute(
            insert(cards).values(
                serial=serial,
                subject_id=subject_id,
                state="requested",
                profile="starcard-v1",
                status_list_id=self._settings.status_list_id,
                status_idx=idx,
                stars=stars,
                created_at=now,
                updated_at=now,
            )
        )
        audit(conn, now, actor, "card.requested", subject_id=subject_id, card_serial=serial)
        return _Job(0, None)

    def _set_state(self, serial: str, state: str, now: dt.datetime, **values: object) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                update(cards)
                .where(cards.c.serial == serial)
                .values(state=state, updated_at=now, **values)
            )

    def _self_check(
        self,
        session: StarCardSession,
        credential: bytes,
        version: int,
        status_token: bytes,
        now: int,
    ) -> None:
        """Reads the card back and runs the verifier's own ``verify_card`` on it.

        The entry is still SUSPENDED, and the status lookup is the last step of
        ``verify_card``: so ``Suspended`` (and nothing else) proves that every earlier check
        (issuer signature, validity, the card's signature with the bound key) passed.
        """
        read_back = session.read_credential()
        if read_back != credential:
            raise CardCheckFailed("the card returned a different credential than was written")
        if session.credential_version() != version:
            raise CardCheckFailed("the card reports another credential version than was written")
        state = begin("issuer-self-check", b"personalization", now)
        signature = session.internal_authenticate(challenge_bytes(state))
        status = StatusListCache()
        trust = self._keys.trust_store()
        status.accept(status_token, trust, now)
        try:
            verify_card(credential, signature, state, trust, status, now)
        except Suspended:
            return
        except Exception as exc:
            raise CardCheckFailed(f"the written card does not verify: {exc}") from exc
        raise CardCheckFailed("the card verified as active before activation")
