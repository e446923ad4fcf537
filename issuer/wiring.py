"""Composition root for the issuer: the one place that builds engines, HSM and services."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine, create_engine, event

from card_profiles.scp import CardChallenge, CardNotAuthentic, SessionKeys
from hsm_sim import CardCryptogramMismatch, Hsm, HsmSim
from hsm_sim.client import RemoteHsm
from hsm_sim.pkcs11_backend import Pkcs11Hsm
from issuer.audit import enable_checkpoints
from issuer.issuance import Issuance
from issuer.keys import IssuerKeys, embedded_trust_list, ensure_issuer_keys
from issuer.migrate import upgrade
from issuer.pii import PiiVault
from issuer.policy import DEFAULT_POLICY, Policy, PolicyRegistry, load_policy, load_registry
from issuer.settings import IssuerSettings
from verifier.core.errors import VerificationError
from verifier.core.trust_list import parse_trust_list


@dataclass(frozen=True)
class HsmCardKeys:
    """The card master key in the HSM, as the card layer's
    :class:`~card_profiles.scp.SecureChannelAuthenticator` and as the card factory.

    ``open_session`` raises :class:`~card_profiles.scp.CardNotAuthentic` for a card of
    another key version or whose cryptogram does not verify; K_card never leaves the HSM.
    ``factory_card_key`` is the HSM's audited FACTORY operation (card manufacture); it raises
    :class:`hsm_sim.ExportNotAllowed` unless the master key was created exportable.
    """

    hsm: Hsm
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


def ensure_card_master_key(hsm: Hsm, settings: IssuerSettings) -> HsmCardKeys:
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
    hsm: Hsm
    keys: IssuerKeys
    policy: Policy
    vault: PiiVault
    issuance: Issuance
    card_keys: HsmCardKeys
    root_public_key: ec.EllipticCurvePublicKey
    trust_list: bytes
    policies: PolicyRegistry
    """Every policy version by date (``policy_for(day)``); ``policy`` is the current one."""


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


def open_hsm(settings: IssuerSettings) -> Hsm:
    """The configured HSM backend: ``sim`` (embedded hsm_sim), ``remote`` (an hsm_sim server
    over a Unix socket) or ``pkcs11`` (any PKCS#11 module; SoftHSM2 in tests)."""
    if settings.hsm_backend == "sim":
        return HsmSim(settings.hsm_path, passphrase=settings.hsm_passphrase)
    if settings.hsm_backend == "remote":
        if settings.hsm_socket is None:
            raise RuntimeError("hsm_backend remote needs hsm_socket (STARCARD_HSM_SOCKET)")
        return RemoteHsm(settings.hsm_socket)
    if settings.hsm_backend == "pkcs11":
        if settings.pkcs11_token is None:
            raise RuntimeError("hsm_backend pkcs11 needs pkcs11_token (STARCARD_PKCS11_TOKEN)")
        return Pkcs11Hsm(settings.pkcs11_module, settings.pkcs11_token, settings.pkcs11_pin)
    raise RuntimeError(f"unknown hsm_backend {settings.hsm_backend!r}: sim, remote or pkcs11")


def build_issuer(
    settings: IssuerSettings, *, migrate: bool = True, clock: Callable[[], float] = time.time
) -> IssuerContext:
    """Wires the issuer for ``settings``; ``clock`` dates the embedded trust list."""
    engine = make_engine(settings.database_url)
    if migrate:
        upgrade(engine)
    hsm = open_hsm(settings)
    enable_checkpoints(engine, hsm, settings.audit_key_label, settings.audit_checkpoint_every)
    keys = ensure_issuer_keys(hsm, settings.credential_key_label, settings.status_key_label)
    card_keys = ensure_card_master_key(hsm, settings)
    policy = load_policy(settings.policy_path or DEFAULT_POLICY)
    issuance = Issuance(engine, keys, settings, policy, card_authenticator=card_keys)
    vault = PiiVault(settings.pii_key)
    root, trust_list = load_trust_list(settings, hsm, keys, int(clock()))
    registry = load_registry(extra=[settings.policy_path] if settings.policy_path else ())
    return IssuerContext(
        settings, engine, hsm, keys, policy, vault, issuance, card_keys, root, trust_list, registry
    )


def load_trust_list(
    settings: IssuerSettings, hsm: Hsm, keys: IssuerKeys, now: int
) -> tuple[ec.EllipticCurvePublicKey, bytes]:
    """The ceremony's trust list (checked against its root and our keys), or an embedded one.

    Raises RuntimeError with what to fix if the configured list is unusable.
    """
    if settings.trust_list_path is None:
        return embedded_trust_list(
            hsm, settings.root_key_label, keys, settings.issuer_id, now, settings.trust_list_valid_s
        )
    if settings.root_public_key_path is None:
        raise RuntimeError("trust_list_path needs root_public_key_path (the root's PEM)")
    root = serialization.load_pem_public_key(settings.root_public_key_path.read_bytes())
    if not isinstance(root, ec.EllipticCurvePublicKey):
        raise RuntimeError(f"{settings.root_public_key_path} is not an EC public key")
    data = settings.trust_list_path.read_bytes()
    try:
        store = parse_trust_list(data, root, now).store()
        for key in keys.trusted_keys():
            store.lookup(key.kid, key.purpose, now)
    except VerificationError as exc:
        raise RuntimeError(
            f"{settings.trust_list_path} cannot be served: {exc.diagnostics()}"
        ) from exc
    return root, data
