"""Records delivered or withdrawn by a department re-grade the subject and announce the card
change in the same transaction (ingestion → rights rules → card status outbox)."""

from __future__ import annotations

from urllib.parse import quote

from sqlalchemy import select

from issuer.db import grades
from issuer.events import announced, pending
from issuer.wiring import IssuerContext
from tests.api.test_departments import add_department, client
from tests.conftest import NOW
from tests.helpers import graded_subject

HONOUR = {
    "id_number": "11010519491231002X",
    "category": "honour",
    "direction": "+",
    "severity": "严重",
    "legal_basis": "《国家功勋荣誉表彰条例》",
    "authority": "市人民政府",
    "document_number": "市政发〔2026〕7号",
    "decision_date": "2026-10-01",
}


def test_delivery_and_withdrawal_reissue_the_card_level(issuer_ctx: IssuerContext) -> None:
    subject = graded_subject(issuer_ctx, NOW)  # class A, 3 stars, consent on file
    with issuer_ctx.engine.connect() as conn:
        assert announced(conn, subject).stars == 3
    headers = add_department(issuer_ctx, "city-gov")
    c = client(issuer_ctx)
    delivered = c.post(
        "/v1/departments/records",
        json={"records": [{**HONOUR, "source": "city-gov"}], "mode": "atomic"},
        headers=headers,
    )
    assert delivered.status_code == 200, delivered.text
    with issuer_ctx.engine.connect() as conn:
        stars_now = conn.execute(
            select(grades.c.stars).where(grades.c.subject_id == subject)
        ).scalar_one()
        events = [(e.kind, e.stars) for e in pending(conn) if e.subject_id == subject]
    assert stars_now > 3
    assert events == [("reissue", stars_now)]
    withdrawn = c.post(
        f"/v1/departments/records/{quote(HONOUR['document_number'], safe='')}/withdrawal",
        json={"reason": "decision revoked"},
        headers=headers,
    )
    assert withdrawn.status_code == 200, withdrawn.text
    with issuer_ctx.engine.connect() as conn:
        events = [(e.kind, e.stars) for e in pending(conn) if e.subject_id == subject]
        assert announced(conn, subject).stars == 3
    assert events == [("reissue", stars_now), ("reissue", 3)]
