"""Receipts: a terminal sees and uploads only its own; the issuer service reads a card's."""

from __future__ import annotations

import uuid
from pathlib import Path

from issuer.wiring import IssuerContext
from tests.api.test_verifier_api import ISSUER, OPERATOR, TS, make_world, tap, verifier_db

__all__ = ["verifier_db"]  # the fixture, shared


def receipt(terminal_id: str, serial: str = "00aa", state: str = "valid") -> dict[str, object]:
    return {
        "id": str(uuid.uuid4()),
        "terminal_id": terminal_id,
        "at": TS - 3600,
        "serial": serial,
        "state": state,
        "reason_class": None,
    }


def test_a_terminal_reads_only_its_own_receipts(
    sqlite_issuer: IssuerContext, tmp_path: Path, verifier_db: str
) -> None:
    world = make_world(sqlite_issuer, tmp_path, verifier_db)
    a = world.terminal("term-a")
    b = world.terminal("term-b")
    tap(world, a)
    tap(world, b)
    tap(world, b)
    mine = a.get("/v1/receipts").json()["receipts"]
    assert len(mine) == 1
    assert len(b.get("/v1/receipts").json()["receipts"]) == 2
    assert {r["id"] for r in mine}.isdisjoint(
        r["id"] for r in b.get("/v1/receipts").json()["receipts"]
    )


def test_offline_upload_is_idempotent_and_only_for_oneself(
    sqlite_issuer: IssuerContext, tmp_path: Path, verifier_db: str
) -> None:
    world = make_world(sqlite_issuer, tmp_path, verifier_db)
    a = world.terminal("term-a", "library")
    b = world.terminal("term-b")
    batch = [receipt("term-a"), receipt("term-a", state="invalid")]
    batch[1]["reason_class"] = "suspended"
    first = a.post("/v1/receipts", json={"receipts": batch})
    assert first.json() == {"stored": 2, "already_held": 0}
    assert a.post("/v1/receipts", json={"receipts": batch}).json() == {
        "stored": 0,
        "already_held": 2,
    }
    shown = {r["id"]: r for r in a.get("/v1/receipts").json()["receipts"]}
    assert shown[batch[1]["id"]]["reason_class"] == "not_valid"  # coarse, even for its own
    assert shown[batch[0]["id"]]["category"] == "library"  # from the registration
    as_other = a.post("/v1/receipts", json={"receipts": [receipt("term-b")]})
    assert as_other.status_code == 403
    stolen_id = b.post("/v1/receipts", json={"receipts": [dict(batch[0], terminal_id="term-b")]})
    assert stolen_id.status_code == 409
    assert b.get("/v1/receipts").json()["receipts"] == []
    future = dict(receipt("term-a"), at=TS + 3600)
    assert a.post("/v1/receipts", json={"receipts": [future]}).status_code == 422


def test_issuer_reads_who_checked_a_card_without_terminal_keys(
    sqlite_issuer: IssuerContext, tmp_path: Path, verifier_db: str
) -> None:
    world = make_world(sqlite_issuer, tmp_path, verifier_db)
    world.push_benefits()
    office = world.terminal("office-1", "office")
    library = world.terminal("lib-1", "library")
    tap(world, office)
    world.clock.now += 5
    tap(world, library)
    library.post("/v1/receipts", json={"receipts": [receipt("lib-1", serial="00bb")]})
    serial = office.get("/v1/receipts").json()["receipts"][0]["serial"]
    checks = world.client.get(f"/v1/cards/{serial}/receipts", headers=ISSUER)
    assert checks.status_code == 200
    assert checks.json() == {
        "serial": serial,
        "checks": [
            {
                "at": TS + 5,
                "merchant_name": "Merchant lib-1",
                "category": "library",
                "state": "valid",
            },
            {
                "at": TS,
                "merchant_name": "Merchant office-1",
                "category": "office",
                "state": "valid",
            },
        ],
    }
    assert "PUBLIC KEY" not in checks.text
    refused = world.client.get(f"/v1/cards/{serial}/receipts", headers=OPERATOR)
    assert refused.status_code == 401
    assert world.client.get("/v1/cards/NOT-HEX/receipts", headers=ISSUER).status_code == 422
