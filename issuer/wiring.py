"""Composition root for the issuer: the one place that builds engines, HSM and services."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event

from card_profiles.scp import CardChallenge, CardNotAuthentic, SessionKeys
from hsm_sim import CardCryptogramMismatch, HsmSim
from issuer.issuance import Issuance
from issuer.keys import IssuerKeys, ensure_issuer_keys
from issuer.migrate import upgrade
from issuer.pii import PiiVault
from issuer.policy import DEFAULT_POLICY, Policy, load_policy
from issuer.settings import IssuerSettings


@dataclass(frozen=True)
class HsmCardKeys:
    """The card master key in the HSM, as the card layer's
    :class:`~card_profiles.scp.SecureChannelAuthenticator` and as the card factory.

    ``open_session`` raises :class:`~card_profiles.scp.CardNotAuthentic` for a card of
    another key version or whose cryptogram does not verify; K_card never leaves the HSM.
    ``factory_card_key`` is the HSM's audited FACTORY operation (card manufacture); it raises
    :class:`hsm_sim.ExportNotAllowed` unless the master key was created exportable.
    """

    hsm: HsmSim
    label: str
    key_version: int

    def open_session(self, challenge: CardChallenge) -> SessionKeys:
        if challenge.key_version != self.key_version:
            raise CardNotAuthentic(
                f"card {challenge.serial.hex()} uses key version {challenge.key_version}, "
                f"this issuer holds version {self.key_version}"
            )
        try:
            return self.hsm.scp_session(
                self.label,
                challenge.serial,
                challenge.host_challenge,
                challenge.card_challenge,
                challenge.card_cryptogram,
            )
        except CardCryptogramMismatch as exc:
            raise CardNotAuthentic(str(exc)) from exc

    def factory_card_key(self, serial: bytes) -> bytes:
        return self.hsm.factory_card_key(self.label, serial)


def ensure_card_master_key(hsm: HsmSim, settings: IssuerSettings) -> HsmCardKeys:
    """Creates the card master key on first use (exportable per settings) and wraps it."""
    if not hsm.has_key(settings.card_master_key_label):
        hsm.create_master_key(
            settings.card_master_key_label, factory_export=settings.card_factory_export
        )
    return HsmCardKeys(hsm, settings.card_master_key_label, settings.card_key_version)


@dataclass(frozen=True)
class IssuerContext:
    settings: IssuerSettings
    engine: Engine
    hsm: HsmSim
    keys: IssuerKeys
    policy: Policy
    vault: PiiVault
    issuance: Issuance
    card_keys: HsmCardKeys


def make_engine(url: str) -> Engine:
    """SQLite gets WAL and enforced foreign keys; PostgreSQL is used as configured."""
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

    return engine


def build_issuer(settings: IssuerSettings, *, migrate: bool = True) -> IssuerContext:
    engine = make_engine(settings.database_url)
    if migrate:
        upgrade(engine)
    hsm = HsmSim(settings.hsm_path, passphrase=settings.hsm_passphrase)
    keys = ensure_issuer_keys(hsm, settings.credential_key_label, settings.status_key_label)
    card_keys = ensure_card_master_key(hsm, settings)
    policy = load_policy(settings.policy_path or DEFAULT_POLICY)
    issuance = Issuance(engine, keys, settings, policy.version, card_authenticator=card_keys)
    vault = PiiVault(settings.pii_key)
    return IssuerContext(settings, engine, hsm, keys, policy, vault, issuance, card_keys)
