"""The trust list from issuer to verifier: served with ETag, pinned to the root, rotated."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from issuer.api import create_app as issuer_app
from issuer.wiring import IssuerContext, build_issuer
from tests.api.test_verifier_api import OPERATOR, operator_settings
from tests.conftest import NOW
from tests.helpers import write_trust_files
from tests.keysigner import KeySigner
from verifier.api.app import create_app as verifier_app
from verifier.core.keys import kid_for
from verifier.core.trust_list import TRUST_LIST_TYP, issue_trust_list, parse_trust_list

TS = int(NOW.timestamp())


def test_issuer_serves_the_trust_list_with_etag(sqlite_issuer: IssuerContext) -> None:
    client = TestClient(issuer_app(sqlite_issuer.settings, "t", context=sqlite_issuer))
    first = client.get("/.well-known/starcard/trust-list")
    assert first.status_code == 200
    assert first.headers["content-type"] == TRUST_LIST_TYP
    listed = parse_trust_list(first.content, sqlite_issuer.root_public_key, TS)
    assert {e.kid for e in listed.entries} == {
        sqlite_issuer.keys.credential_kid,
        sqlite_issuer.keys.status_kid,
    }
    again = client.get(
        "/.well-known/starcard/trust-list", headers={"If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304


def resigned(ctx: IssuerContext, sequence: int) -> bytes:
    """The same keys in a list with another sequence number, signed by the embedded root."""
    from hsm_sim import KeyPurpose

    root = ctx.hsm.signer(ctx.settings.root_key_label, KeyPurpose.TRUST_LIST_ROOT)
    return issue_trust_list(
        ctx.keys.entries(), issuer="sc.example.cn", sequence=sequence, iat=TS, exp=TS + 86_400,
        root_signer=root, root_kid=kid_for(root.public_key()),
    )  # fmt: skip


def test_verifier_takes_newer_lists_and_refuses_older(
    sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:
    root, trust_list = write_trust_files(sqlite_issuer, tmp_path)
    trust_list.write_bytes(resigned(sqlite_issuer, 10))
    client = TestClient(verifier_app(operator_settings(root, trust_list), clock=lambda: TS))
    headers = {**OPERATOR, "content-type": TRUST_LIST_TYP}
    newer = client.post("/v1/trust-lists", content=resigned(sqlite_issuer, 11), headers=headers)
    assert newer.status_code == 204
    older = client.post("/v1/trust-lists", content=resigned(sqlite_issuer, 10), headers=headers)
    assert older.status_code == 409
    assert "unavailable" in older.json()["detail"]


def test_verifier_refuses_a_list_from_another_root(
    sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:
    root, trust_list = write_trust_files(sqlite_issuer, tmp_path)
    client = TestClient(verifier_app(operator_settings(root, trust_list), clock=lambda: TS))
    rogue = KeySigner()
    forged = issue_trust_list(
        sqlite_issuer.keys.entries(), issuer="x", sequence=2**40, iat=TS, exp=TS + 60,
        root_signer=rogue, root_kid=kid_for(rogue.public_key()),
    )  # fmt: skip
    response = client.post(
        "/v1/trust-lists", content=forged, headers={**OPERATOR, "content-type": TRUST_LIST_TYP}
    )
    assert response.status_code == 409


def test_issuer_refuses_to_serve_a_ceremony_list_that_does_not_verify(
    sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:
    root, trust_list = write_trust_files(sqlite_issuer, tmp_path)
    other_root = tmp_path / "other-root.pem"
    from cryptography.hazmat.primitives import serialization

    other_root.write_bytes(
        KeySigner()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    settings = dataclasses.replace(
        sqlite_issuer.settings, trust_list_path=trust_list, root_public_key_path=other_root
    )
    with pytest.raises(RuntimeError, match="cannot be served"):
        build_issuer(settings)
    served = build_issuer(dataclasses.replace(settings, root_public_key_path=root))
    assert served.trust_list == trust_list.read_bytes()
