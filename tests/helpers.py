"""Test data builders shared by the api, unit and e2e tests."""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from card_profiles.starcard import StarCardSession
from card_profiles.transport import InProcessTransport
from card_profiles.virtual.starcard_v1 import VirtualStarCard, manufacture
from issuer.demo import DEMO_RECORDS
from issuer.grading import regrade
from issuer.platform import add_record, record_consent, register_subject
from issuer.wiring import IssuerContext


def graded_subject(
    ctx: IssuerContext,
    now: dt.datetime,
    id_number: str = "11010519491231002X",
    consent: bool = True,
) -> str:
    """Registers a person with the demo records (class A, 3 stars) and grades them."""
    with ctx.engine.begin() as conn:
        subject = register_subject(conn, ctx.vault, id_number, "张三", now, "test")
        if consent:
            record_consent(conn, subject, "counter", now, "test")
        for record in DEMO_RECORDS:
            own = dataclasses.replace(record, document_number=f"{record.document_number}/{subject}")
            add_record(conn, ctx.policy, subject, own, now, "test")
        regrade(conn, ctx.policy, [subject], now.date(), now)
    return subject


def factory_card(
    ctx: IssuerContext,
    state_path: Path | None = None,
    serial: bytes | None = None,
    *,
    power_loss_after: int | None = None,
    power_loss_commits: int = 0,
) -> VirtualStarCard:
    """A new virtual card keyed by the issuer's HSM factory operation (as card manufacture)."""
    serial = serial or secrets.token_bytes(8)
    return manufacture(
        state_path,
        serial,
        ctx.card_keys.factory_card_key(serial),
        key_version=ctx.card_keys.key_version,
        power_loss_after=power_loss_after,
        power_loss_commits=power_loss_commits,
    )


def factory_card_state(ctx: IssuerContext, state_path: Path, serial: bytes | None = None) -> Path:
    """Writes a factory-new card's state file (for a card process in a vpcd reader)."""
    factory_card(ctx, state_path, serial)
    return state_path


def factory_session(ctx: IssuerContext, state_path: Path | None = None) -> StarCardSession:
    """A session with a factory-new card in-process."""
    return StarCardSession(InProcessTransport(factory_card(ctx, state_path)))


def id_number(i: int) -> str:
    """The ``i``-th distinct valid GB 11643 citizen ID number (adult, district 110105)."""
    body = f"1101051980{1 + i // 28 % 12:02d}{1 + i % 28:02d}{i % 1000:03d}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, weights, strict=True)) % 11]


def write_trust_files(ctx: IssuerContext, folder: Path) -> tuple[Path, Path]:
    """The pinned root key (PEM) and the signed trust list, as a verifier is given them."""
    root = folder / "root-key.pem"
    root.write_bytes(
        ctx.root_public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    trust_list = folder / "trust-list.cbor"
    trust_list.write_bytes(ctx.trust_list)
    return root, trust_list
