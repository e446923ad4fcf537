"""Composition root for the issuer: the one place that builds engines, HSM and services."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event

from hsm_sim import HsmSim
from issuer.issuance import Issuance
from issuer.keys import IssuerKeys, ensure_issuer_keys
from issuer.migrate import upgrade
from issuer.pii import PiiVault
from issuer.policy import DEFAULT_POLICY, Policy, load_policy
from issuer.settings import IssuerSettings


@dataclass(frozen=True)
class IssuerContext:
    settings: IssuerSettings
    engine: Engine
    hsm: HsmSim
    keys: IssuerKeys
    policy: Policy
    vault: PiiVault
    issuance: Issuance


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
    policy = load_policy(settings.policy_path or DEFAULT_POLICY)
    issuance = Issuance(engine, keys, settings, policy.version)
    return IssuerContext(settings, engine, hsm, keys, policy, PiiVault(settings.pii_key), issuance)
