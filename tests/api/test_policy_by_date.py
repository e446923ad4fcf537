"""Policy by date through the staff API: the rights routes apply the policy version in force on
the day (``ctx.policies.policy_for``), and each record keeps the periods of the regime in force
on its own decision date (DOMAIN.md: 2019 notice vs. the 2026 repair measures).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from fastapi.testclient import TestClient

from issuer.api import create_app
from issuer.policy import load_registry, policy_in_force
from issuer.wiring import IssuerContext
from issuer.workdays import local_date
from tests.api.test_events import person_with

STAFF = {"Authorization": "Bearer t"}
TODAY = local_date(dt.datetime.now(dt.UTC))
LAST_DAY_2019 = dt.date(2026, 3, 31)
"""The last decision date under 发改办财金〔2019〕527号 (严重: 184 days to 1095 days)."""
OLD_ENOUGH = TODAY - dt.timedelta(days=200)
"""Decided under the 2026 measures (严重: 366 to 1095 days): past the 2019 minimum, not the
2026 one."""
APPLICATION = {
    "obligations_performed": True,
    "obligations_evidence": "缴款凭证",
    "commitment": "本人承诺依法诚信经营",
}


def test_the_registry_picks_the_version_in_force() -> None:
    registry = load_registry()
    old = registry.by_version("pilot-2019.1")
    assert policy_in_force(registry, dt.date(2026, 3, 31)) is old
    assert policy_in_force(registry, dt.date(2026, 4, 1)).version == "pilot-2026.1"
    assert policy_in_force(old, dt.date(2030, 1, 1)) is old  # a fixed version stays fixed


def test_records_of_each_regime_get_their_own_periods_over_http(
    issuer_ctx: IssuerContext,
) -> None:
    _, (old, new) = person_with(
        issuer_ctx,
        ("tax_arrears", "-", "严重", LAST_DAY_2019),
        ("tax_arrears", "-", "严重", OLD_ENOUGH),
    )
    c = TestClient(create_app(issuer_ctx.settings, "t", context=issuer_ctx))
    before = c.get(f"/v1/records/{old}/repair-outlook", headers=STAFF).json()
    after = c.get(f"/v1/records/{new}/repair-outlook", headers=STAFF).json()
    assert before["policy_version"] == after["policy_version"] == "pilot-2026.1"
    assert "2019" in before["window"]["regime"]
    assert "信用修复管理办法" in after["window"]["regime"]
    assert (before["window"]["min_days"], after["window"]["min_days"]) == (184, 366)
    assert before["window"]["repair_from"] == "2026-10-01"
    assert before["window"]["effect_until"] == "2029-03-30"
    assert after["window"]["repair_from"] == (OLD_ENOUGH + dt.timedelta(366)).isoformat()
    assert before["blockers"] == []
    assert any("minimum period runs until" in b for b in after["blockers"])

    granted = c.post(f"/v1/records/{old}/repair-requests", json=APPLICATION, headers=STAFF)
    assert granted.status_code == 201, granted.text
    refused = c.post(f"/v1/records/{new}/repair-requests", json=APPLICATION, headers=STAFF)
    assert refused.status_code == 422
    (unmet,) = refused.json()["unmet"]
    assert unmet.startswith(f"the minimum period runs until {after['window']['repair_from']}")


def test_the_rights_routes_use_the_version_in_force_not_a_stale_current_one(
    issuer_ctx: IssuerContext,
) -> None:
    """A context whose ``policy`` is still pilot-2019.1 (one regime, 严重 from 184 days)
    would let the 2026 record be repaired too early; the routes ask the registry instead."""
    _, (new,) = person_with(issuer_ctx, ("tax_arrears", "-", "严重", OLD_ENOUGH))
    stale = dataclasses.replace(issuer_ctx, policy=issuer_ctx.policies.by_version("pilot-2019.1"))
    period = stale.policy.period_for("-", "严重", OLD_ENOUGH)
    assert period is not None and period.min_days == 184
    c = TestClient(create_app(stale.settings, "t", context=stale))
    outlook = c.get(f"/v1/records/{new}/repair-outlook", headers=STAFF).json()
    assert (outlook["policy_version"], outlook["window"]["min_days"]) == ("pilot-2026.1", 366)
    refused = c.post(f"/v1/records/{new}/repair-requests", json=APPLICATION, headers=STAFF)
    assert refused.status_code == 422, refused.text
