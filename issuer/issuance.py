"""Card issuance: the card side of personalization, replacement, revocation.

Personalization steps, each persisted (:mod:`issuer.card_jobs`) before the next card write::

    requested → card_key_generated → credential_signed → written → verified → active

Eligibility (:mod:`issuer.eligibility`) is checked before anything is written and again under
the subject's lock when the job starts. The card's status-list entry is SUSPENDED from
``credential_signed`` until ``active``, so a card pulled out half-way never verifies.
``active`` is guarded by partial unique indexes: one active (and one live: active or
suspended) card per subject, enforced by the database. Starting a job gives up the person's
other unfinished jobs (the newest request wins; the others stop with :class:`Superseded`).

Replacement (``personalize(..., replaces=serial, replace_reason=...)``): allowed when the
person's only live card is ``replaces``; the old card is revoked in the activation's
transaction, before the new card becomes active, and the list is republished once: never two
valid cards, and the one-live-card index is never violated.

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
* The HSM unreachable at any step (:class:`hsm_sim.HsmUnavailable`): :class:`HsmUnreachable`,
  the job stays in the state it reached, and a re-run once the HSM is back completes it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, select

from card_profiles.profiles import Lifecycle
from card_profiles.scp import CardNotAuthentic, SecureChannelAuthenticator
from card_profiles.starcard import AuthenticationBlocked, StarCardSession
from hsm_sim import HsmUnavailable
from issuer.card_jobs import (
    FAULT_POINTS,
    JOB_STATES,
    REPLACE_REASONS,
    CardJobs,
    ReplaceReason,
    refuse_issued,
    set_card,
)
from issuer.db import cards
from issuer.eligibility import Eligibility, check_eligibility, lock_subject
from issuer.faults import fault_point
from issuer.issuance_errors import (
    CardCheckFailed,
    CardRejected,
    CardSwapped,
    HsmUnreachable,
    IssuanceError,
    NotEligible,
    Superseded,
)
from issuer.keys import IssuerKeys
from issuer.policy import Policy
from issuer.settings import IssuerSettings
from verifier.core.challenge import begin, challenge_bytes
from verifier.core.credential import CredentialClaims, issue_credential
from verifier.core.errors import Suspended
from verifier.core.status_list import StatusListCache
from verifier.core.verify import verify_card

__all__ = [
    "FAULT_POINTS",
    "JOB_STATES",
    "REPLACE_REASONS",
    "CardCheckFailed",
    "CardRejected",
    "CardSwapped",
    "Eligibility",
    "HsmUnreachable",
    "Issuance",
    "IssuanceError",
    "IssuedCard",
    "NotEligible",
    "ReplaceReason",
    "Superseded",
    "check_eligibility",
]


@dataclass(frozen=True)
class _CardIdentity:
    serial: bytes
    atr: bytes | None


@dataclass(frozen=True)
class IssuedCard:
    """The result handed to the clerk. ``access_code`` and ``qr_token`` are shown once.
    ``replaced``: the serial of the card this one replaced (now revoked), if any."""

    serial: str
    subject_id: str
    stars: int
    credential: bytes
    qr_token: str
    access_code: str
    expires_at: dt.datetime
    apdu_count: int
    credential_version: int
    replaced: str | None = None


def hash_secret(value: str) -> str:
    """Salted scrypt hash for access codes (``scrypt$salt$hash``, hex)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(value.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


class WrongSecret(ValueError):
    """The secret given is not the one hashed (or the stored hash is malformed)."""


def check_secret(value: str, stored: str) -> None:
    """Checks ``value`` against ``stored`` (:func:`hash_secret`) in constant time; the scrypt
    work is done even for a malformed ``stored``.

    Raises:
        WrongSecret: ``value`` is not the secret, or ``stored`` is malformed.
    """
    try:
        scheme, salt_hex, digest_hex = stored.split("$")
        salt, expected = bytes.fromhex(salt_hex), bytes.fromhex(digest_hex)
    except ValueError:
        scheme, salt, expected = "", b"\0" * 16, b""
    digest = hashlib.scrypt(value.encode(), salt=salt, n=2**14, r=8, p=1)
    if not hmac.compare_digest(digest, expected) or scheme != "scrypt":
        raise WrongSecret("the secret does not match")


def qr_binding(qr_token: str) -> bytes:
    return hashlib.sha256(qr_token.encode()).digest()[:16]


class Issuance:
    """Personalizes and revokes cards. Collaborators are injected; the clock is ``now``."""

    def __init__(
        self,
        engine: Engine,
        keys: IssuerKeys,
        settings: IssuerSettings,
        policy: Policy,
        random_index: Callable[[int], int] = secrets.randbelow,
        *,
        card_authenticator: SecureChannelAuthenticator,
    ) -> None:
        self._engine = engine
        self._keys = keys
        self._settings = settings
        self._policy = policy
        self._authenticator = card_authenticator
        self._jobs = CardJobs(engine, keys, settings, random_index)

    def personalize(
        self,
        session: StarCardSession,
        subject_id: str,
        now: dt.datetime,
        actor: str,
        *,
        replaces: str | None = None,
        replace_reason: ReplaceReason | None = None,
    ) -> IssuedCard:
        """Runs the whole personalization on the card in ``session``; re-run it on the same
        card after any interruption (it continues or restarts cleanly).

        ``replaces``: the serial of the person's live card that this card replaces; it is
        revoked with ``replace_reason`` when this card is activated (same transaction).

        Raises:
            NotEligible: the subject cannot get a card now, or ``replaces`` is not their only
                live card (reasons attached).
            IssuanceError: ``replace_reason`` missing or not one of :data:`REPLACE_REASONS`;
                the card was already issued; it is being personalized for someone else.
            CardRejected: the card is not ours, blocked, LOCKED/TERMINATED, secured by
                another job or given up after a credential was signed; nothing was written.
            CardSwapped: another card is in the reader; nothing was written to it.
            CardCheckFailed: the written card did not verify; it stays inactive.
            Superseded: a personalization for the same person started on another card.
            HsmUnreachable: the HSM is down; the job waits in its state, re-run later.
            card_profiles.errors.CardError: the card was pulled or failed; the job's state
                is persisted and a re-run restarts the card cleanly.
        """
        if replaces is not None and replace_reason not in REPLACE_REASONS:
            raise IssuanceError(
                f"say why card {replaces} is replaced: one of {', '.join(REPLACE_REASONS)} "
                "(a lost or stolen card is revoked first, then a new card is issued)"
            )
        start_apdus = session.apdu_count
        serial: str | None = None
        try:
            session.select()
            card = _CardIdentity(session.serial(), session.atr())
            serial = card.serial.hex()
            issued = self._personalize(
                session, card, subject_id, now, actor, replaces, replace_reason
            )
        except HsmUnavailable as exc:
            raise HsmUnreachable(
                f"the HSM cannot be reached ({exc}); {self._jobs.kept_at(serial)}: "
                "re-run the personalization when the HSM is back"
            ) from exc
        return dataclasses.replace(issued, apdu_count=session.apdu_count - start_apdus)

    def _personalize(
        self,
        session: StarCardSession,
        card: _CardIdentity,
        subject_id: str,
        now: dt.datetime,
        actor: str,
        replaces: str | None,
        replace_reason: str | None,
    ) -> IssuedCard:
        serial = card.serial.hex()
        lifecycle = session.lifecycle()
        if lifecycle not in (Lifecycle.PERSONALIZATION, Lifecycle.SECURED):
            raise CardRejected(f"card {serial} is {lifecycle.name}: it cannot be personalized")
        card_version = session.credential_version()
        with self._engine.connect() as conn:
            refuse_issued(conn, serial)
            eligibility = check_eligibility(
                conn, self._policy, subject_id, now.date(), replaces=replaces
            )
        if not eligibility.eligible:
            raise NotEligible(list(eligibility.reasons))
        key_version = self._open_secure_channel(session, card)
        with self._engine.begin() as conn:
            lock_subject(conn, subject_id)
            eligibility = check_eligibility(
                conn, self._policy, subject_id, now.date(), replaces=replaces
            )
            if not eligibility.eligible:
                raise NotEligible(list(eligibility.reasons))
            job = self._jobs.start(conn, serial, subject_id, eligibility.stars, now, actor)
            fault_point("issuance.start_job.before_commit")
        fault_point("issuance.start_job.after_commit")

        if lifecycle is Lifecycle.PERSONALIZATION:
            self._check_same_card(session, card)
            card_key = session.generate_key()
        else:
            card_key = session.public_key()
            if job.card_public_key is None or bytes(job.card_public_key) != card_key:
                raise CardRejected(f"card {serial} was secured by another personalization")
        with self._jobs.step(serial, "requested", "card_key_generated", now) as conn:
            set_card(conn, serial, card_public_key=card_key)

        version = max(job.credential_version, card_version) + 1
        qr_token = secrets.token_urlsafe(16)
        access_code = f"{secrets.randbelow(10**8):08d}"
        expires = now + dt.timedelta(days=self._settings.credential_valid_days)
        with self._jobs.step(serial, "card_key_generated", "credential_signed", now) as conn:
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
                policy_version=self._policy.version,
                profile=session.profile.name,
                qr_hash=qr_binding(qr_token),
            )
            credential = issue_credential(claims, self._keys.credential, self._keys.credential_kid)
            set_card(
                conn,
                serial,
                credential=credential,
                credential_version=version,
                card_key_version=key_version,
                qr_token_hash=hashlib.sha256(qr_token.encode()).digest(),
                access_code_hash=hash_secret(access_code),
                expires_at=expires,
            )
            status_token = self._jobs.publish(conn, now)

        self._check_same_card(session, card)
        session.write_credential(credential, version)
        with self._jobs.step(serial, "credential_signed", "written", now):
            pass

        self._self_check(session, credential, version, status_token, int(now.timestamp()))
        with self._jobs.step(serial, "written", "verified", now):
            pass

        if lifecycle is Lifecycle.PERSONALIZATION:
            self._check_same_card(session, card)
            session.secure()
        self._jobs.activate(serial, subject_id, now, actor, replaces, replace_reason)
        return IssuedCard(
            serial=serial,
            subject_id=subject_id,
            stars=eligibility.stars,
            credential=credential,
            qr_token=qr_token,
            access_code=access_code,
            expires_at=expires,
            apdu_count=0,
            credential_version=version,
            replaced=replaces,
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
        """Revokes a card (lost, stolen, damaged, consent withdrawn...) and republishes.

        Raises:
            IssuanceError: no such card.
            HsmUnreachable: the list could not be signed; nothing changed, revoke again later.
        """
        try:
            self._jobs.revoke(serial, reason, now, actor)
        except HsmUnavailable as exc:
            raise HsmUnreachable(
                f"the HSM cannot be reached ({exc}); card {serial} is not revoked yet: "
                "revoke it again when the HSM is back"
            ) from exc

    def publish_now(self, now: dt.datetime) -> bytes:
        with self._engine.begin() as conn:
            return self._jobs.publish(conn, now)

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
