"""Test data builders shared by the api, unit and e2e tests."""

from __future__ import annotations

import dataclasses
import datetime as dt

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
