"""Citizen pages on SQLite and PostgreSQL: the QR status page, indistinguishable unknown,
revoked and malformed tokens, the rate limit, the access code with its lockout, CSRF, and the
report with objection, repair, review, simulator and "who checked my card"."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import re
import statistics
import time
from pathlib import Path

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import inspect, select, update

from issuer.api import create_app
from issuer.citizen import citizen_router
from issuer.citizen_i18n import CATALOGUE, pick_language
from issuer.citizen_report import fetch_checks
from issuer.citizen_security import CitizenLimits
from issuer.db import cards, grades, metadata
from issuer.db_rights import objections, repair_requests, review_requests
from issuer.grading import load_grade, regrade
from issuer.issuance import IssuedCard
from issuer.platform import NewRecord, add_record
from issuer.query_log import reads_of
from issuer.receipts import verify_receipt
from issuer.wiring import IssuerContext
from tests.conftest import NOW
from tests.helpers import factory_session, graded_subject

CANNOT = "此卡无法显示"


class Clock:
    def __init__(self, at: dt.datetime) -> None:
        self.at = at

    def __call__(self) -> dt.datetime:
        return self.at


def browser(ctx: IssuerContext, clock: Clock, limits: CitizenLimits | None = None) -> TestClient:
    app = FastAPI()
    app.include_router(citizen_router(ctx, clock, limits=limits or CitizenLimits(burst=1000)))
    return TestClient(app, follow_redirects=False)


def issue(ctx: IssuerContext, tmp_path: Path, name: str = "card") -> IssuedCard:
    subject = graded_subject(ctx, NOW)
    session = factory_session(ctx, tmp_path / f"{name}.json")
    return ctx.issuance.personalize(session, subject, NOW, "clerk")


def add_negatives(ctx: IssuerContext, subject: str) -> tuple[int, int]:
    """A repairable tax arrears (minimum period over) and a recent traffic penalty (not yet
    repairable): 118 - 10 - 10 = 98, class B."""
    tax = NewRecord(
        "tax_arrears", "-", "一般", "《税收征收管理法》第六十八条", "区税务局",
        f"区税罚〔2026〕7号/{subject}", dt.date(2026, 6, 1), "tax",
    )  # fmt: skip
    penalty = NewRecord(
        "admin_penalty", "-", "一般", "《道路交通安全法》第九十条", "区交通警察大队",
        f"区公交决字〔2026〕0912号/{subject}", dt.date(2026, 10, 15), "traffic",
    )  # fmt: skip
    with ctx.engine.begin() as conn:
        ids = (
            add_record(conn, ctx.policy, subject, tax, NOW, "test"),
            add_record(conn, ctx.policy, subject, penalty, NOW, "test"),
        )
        regrade(conn, ctx.policy, [subject], NOW.date(), NOW)
    return ids


def csrf_of(c: TestClient, token: str) -> str:
    assert c.get(f"/c/{token}").status_code == 200
    return str(c.cookies["sc_csrf"])


def log_in(c: TestClient, card: IssuedCard) -> str:
    csrf = csrf_of(c, card.qr_token)
    r = c.post(f"/c/{card.qr_token}/code", data={"code": card.access_code, "csrf": csrf})
    assert r.status_code == 303, r.text
    assert r.headers["location"] == f"/c/{card.qr_token}/report"
    return csrf


def score_on(page: str) -> int:
    found = re.search(r'<dd id="score">(-?\d+)</dd>', page)
    assert found is not None, page
    return int(found.group(1))


def record_section(page: str, record_id: int) -> str:
    found = re.search(
        rf'<section class="record" id="record-{record_id}">(.*?)</section>', page, re.S
    )
    assert found is not None
    return found.group(1)


def test_status_page_shows_validity_and_stars_only(
    issuer_ctx: IssuerContext, tmp_path: Path
) -> None:
    card = issue(issuer_ctx, tmp_path)
    app = TestClient(create_app(issuer_ctx.settings, "staff-token", context=issuer_ctx))
    page = app.get(f"/c/{card.qr_token}")
    assert page.status_code == 200
    assert "有效" in page.text and "★★★" in page.text
    for secret in ("张三", card.subject_id, card.serial, "11010519491231002X", 'id="score"'):
        assert secret not in page.text
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert 'name="csrf"' in page.text and 'name="code"' in page.text
    with issuer_ctx.engine.begin() as conn:
        conn.execute(update(cards).where(cards.c.serial == card.serial).values(state="suspended"))
    suspended = app.get(f"/c/{card.qr_token}").text
    assert "当前暂时无效" in suspended and "★" not in suspended


def test_unknown_revoked_and_malformed_tokens_are_indistinguishable(
    issuer_ctx: IssuerContext, tmp_path: Path
) -> None:
    card = issue(issuer_ctx, tmp_path)
    revoked = issue_other(issuer_ctx, tmp_path)
    issuer_ctx.issuance.revoke(revoked.serial, "lost", NOW, "clerk")
    c = browser(issuer_ctx, Clock(NOW))
    tokens = {
        "unknown": "x" * len(card.qr_token),
        "revoked": revoked.qr_token,
        "malformed": "%00%ff..;'<script>",
    }
    pages = {kind: c.get(f"/c/{token}") for kind, token in tokens.items()}
    bodies = {page.content for page in pages.values()}
    assert len(bodies) == 1 and CANNOT in pages["unknown"].text
    assert {page.status_code for page in pages.values()} == {200}
    assert all("set-cookie" not in page.headers for page in pages.values())
    assert c.get(f"/c/{card.qr_token}").content not in bodies  # a live card does differ
    times: dict[str, list[float]] = {kind: [] for kind in tokens}
    for _ in range(30):  # interleaved, so that drift hits every kind alike
        for kind, token in tokens.items():
            start = time.perf_counter()
            c.get(f"/c/{token}")
            times[kind].append(time.perf_counter() - start)
    medians = {kind: statistics.median(spent) for kind, spent in times.items()}
    fastest, slowest = min(medians.values()), max(medians.values())
    assert slowest - fastest < max(0.003, 0.5 * fastest), medians


def issue_other(ctx: IssuerContext, tmp_path: Path) -> IssuedCard:
    from tests.helpers import id_number

    subject = graded_subject(ctx, NOW, id_number=id_number(7))
    return ctx.issuance.personalize(
        factory_session(ctx, tmp_path / "other.json"), subject, NOW, "c"
    )


def test_rate_limit_per_client_stops_enumeration(issuer_ctx: IssuerContext) -> None:
    clock = Clock(NOW)
    c = browser(issuer_ctx, clock, CitizenLimits(rate_per_s=0.5, burst=5))
    assert [c.get(f"/c/guess{i}").status_code for i in range(5)] == [200] * 5
    limited = c.get("/c/guess5")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
    assert "请求过于频繁" in limited.text
    clock.at += dt.timedelta(seconds=2)
    assert c.get("/c/guess6").status_code == 200


def test_access_code_opens_the_full_report(issuer_ctx: IssuerContext, tmp_path: Path) -> None:
    card = issue(issuer_ctx, tmp_path)
    tax, penalty = add_negatives(issuer_ctx, card.subject_id)
    c = browser(issuer_ctx, Clock(NOW))
    csrf = csrf_of(c, card.qr_token)
    wrong = c.post(f"/c/{card.qr_token}/code", data={"code": "00000000", "csrf": csrf})
    assert wrong.status_code == 403 and "再错 4 次" in wrong.text
    assert c.get(f"/c/{card.qr_token}/report").status_code == 401  # no session yet
    right = c.post(f"/c/{card.qr_token}/code", data={"code": card.access_code, "csrf": csrf})
    assert right.status_code == 303
    cookie = right.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "max-age=900" in cookie
    report = c.get(f"/c/{card.qr_token}/report")
    assert report.status_code == 200
    page = report.text
    assert score_on(page) == 98
    assert "《税收征收管理法》第六十八条" in record_section(page, tax)
    assert "-10" in record_section(page, penalty) and "计分中" in record_section(page, penalty)
    assert "已过影响期" in page  # the 2024 demo penalty
    assert "核验记录查询未开通" in page  # no verifier configured: said plainly
    receipt = base64.b64decode(re.findall(r'id="receipt" readonly>([^<]+)<', page)[0])
    with issuer_ctx.engine.connect() as conn:
        grade = load_grade(conn, issuer_ctx.policies, card.subject_id)
        reads = reads_of(conn, card.subject_id)
    assert grade is not None
    claims = verify_receipt(receipt, grade.lines, issuer_ctx.keys.credential.public_key())
    assert claims.score == 98
    assert any(r.actor == "citizen" and r.purpose == "own report" for r in reads)


def test_five_wrong_codes_lock_the_card_for_15_minutes(
    issuer_ctx: IssuerContext, tmp_path: Path
) -> None:
    card = issue(issuer_ctx, tmp_path)
    clock = Clock(NOW)
    c = browser(issuer_ctx, clock)
    csrf = csrf_of(c, card.qr_token)
    url = f"/c/{card.qr_token}/code"
    codes = [c.post(url, data={"code": f"{i:08d}", "csrf": csrf}).status_code for i in range(5)]
    assert codes == [403, 403, 403, 403, 429]
    restarted = browser(issuer_ctx, clock)  # the lock is in the database, not in memory
    restarted.cookies.set("sc_csrf", csrf)
    locked = restarted.post(url, data={"code": card.access_code, "csrf": csrf})
    assert locked.status_code == 429 and "已锁定至 17:45" in locked.text
    clock.at += dt.timedelta(minutes=15, seconds=1)
    assert restarted.post(url, data={"code": card.access_code, "csrf": csrf}).status_code == 303


def test_session_is_bound_to_its_card_and_expires(
    issuer_ctx: IssuerContext, tmp_path: Path
) -> None:
    card = issue(issuer_ctx, tmp_path)
    other = issue_other(issuer_ctx, tmp_path)
    clock = Clock(NOW)
    c = browser(issuer_ctx, clock)
    log_in(c, card)
    assert c.get(f"/c/{card.qr_token}/report").status_code == 200
    assert c.get(f"/c/{other.qr_token}/report").status_code == 401  # another card's page
    clock.at += dt.timedelta(minutes=15)
    expired = c.get(f"/c/{card.qr_token}/report")
    assert expired.status_code == 401 and "会话已过期" in expired.text


def test_posts_without_the_csrf_token_are_refused(
    issuer_ctx: IssuerContext, tmp_path: Path
) -> None:
    card = issue(issuer_ctx, tmp_path)
    c = browser(issuer_ctx, Clock(NOW))
    csrf = log_in(c, card)
    for sent in ("", "forged-" + csrf):
        r = c.post(f"/c/{card.qr_token}/objection", data={"csrf": sent, "grounds": "wrong"})
        assert r.status_code == 403 and "表单已过期" in r.text
    r = c.post(f"/c/{card.qr_token}/code", data={"code": card.access_code})
    assert r.status_code == 403
    with issuer_ctx.engine.connect() as conn:
        assert conn.execute(select(objections)).first() is None


def test_objection_from_the_page_stops_the_record_counting(
    issuer_ctx: IssuerContext, tmp_path: Path
) -> None:
    card = issue(issuer_ctx, tmp_path)
    _, penalty = add_negatives(issuer_ctx, card.subject_id)
    c = browser(issuer_ctx, Clock(NOW))
    csrf = log_in(c, card)
    form = {"csrf": csrf, "record_id": str(penalty), "grounds": "那天我不在本市，车辆已出借。"}
    filed = c.post(f"/c/{card.qr_token}/objection", data=form)
    assert filed.status_code == 200 and "异议已受理" in filed.text
    assert "异议核实中" in record_section(filed.text, penalty)
    assert score_on(filed.text) == 108  # the penalty no longer counts
    with issuer_ctx.engine.connect() as conn:
        row = conn.execute(select(objections)).one()
    assert (row.filed_by, row.record_id, row.subject_id) == ("subject", penalty, card.subject_id)
    again = c.post(f"/c/{card.qr_token}/objection", data=form)
    assert again.status_code == 409 and "already open" in again.text


def test_repair_lists_unmet_conditions_and_accepts_when_met(
    issuer_ctx: IssuerContext, tmp_path: Path
) -> None:
    card = issue(issuer_ctx, tmp_path)
    tax, penalty = add_negatives(issuer_ctx, card.subject_id)
    c = browser(issuer_ctx, Clock(NOW))
    csrf = log_in(c, card)
    early = c.post(f"/c/{card.qr_token}/repair", data={"csrf": csrf, "record_id": str(penalty)})
    assert early.status_code == 422
    assert "暂不能申请修复" in early.text
    for unmet in ("minimum period runs until 2027-01-15", "obligations", "commitment"):
        assert unmet in early.text
    met = {
        "csrf": csrf,
        "record_id": str(tax),
        "obligations_performed": "yes",
        "evidence": "完税证明 区税〔2026〕完字 331 号",
        "commitment": "本人承诺今后按期依法纳税。",
    }
    accepted = c.post(f"/c/{card.qr_token}/repair", data=met)
    assert accepted.status_code == 200 and "修复申请已受理" in accepted.text
    with issuer_ctx.engine.connect() as conn:
        request = conn.execute(select(repair_requests)).one()
    assert (request.record_id, request.status) == (tax, "pending")
    stranger = c.post(f"/c/{card.qr_token}/repair", data={**met, "record_id": "999999"})
    assert stranger.status_code == 404


def test_human_review_request(issuer_ctx: IssuerContext, tmp_path: Path) -> None:
    card = issue(issuer_ctx, tmp_path)
    c = browser(issuer_ctx, Clock(NOW))
    csrf = log_in(c, card)
    form = {"csrf": csrf, "reason": "我认为献血记录的分值不对。"}
    asked = c.post(f"/c/{card.qr_token}/review", data=form)
    assert asked.status_code == 200 and "人工复核申请已受理" in asked.text
    assert c.post(f"/c/{card.qr_token}/review", data=form).status_code == 409
    with issuer_ctx.engine.connect() as conn:
        review = conn.execute(select(review_requests)).one()
        graded = conn.execute(select(grades.c.score)).scalar_one()
    assert (review.subject_id, review.grade_score, review.status) == (
        card.subject_id,
        graded,
        "open",
    )


def test_simulator_shows_when_periods_end_and_what_repair_changes(
    issuer_ctx: IssuerContext, tmp_path: Path
) -> None:
    card = issue(issuer_ctx, tmp_path)
    add_negatives(issuer_ctx, card.subject_id)
    c = browser(issuer_ctx, Clock(NOW))
    log_in(c, card)
    page = c.get(f"/c/{card.qr_token}/report?lang=en").text
    steps = re.search(r'<ul id="simulation">(.*?)</ul>', page, re.S)
    assert steps is not None
    lines = [line for line in steps.group(1).splitlines() if line.strip()]
    assert lines == [
        "<li>You may apply to repair “欠缴税款” now; if granted: A ★</li>",
        "<li>From 2027-01-15 you may apply to repair “行政处罚” (obligations performed and "
        "a credit commitment made); if granted: A ★</li>",
        "<li>On 2027-06-01, when the effect of “欠缴税款” ends: A ★</li>",
        "<li>On 2027-10-15, when the effect of “行政处罚” ends: A ★★★</li>",
    ]


def test_chinese_by_default_english_on_request(issuer_ctx: IssuerContext, tmp_path: Path) -> None:
    card = issue(issuer_ctx, tmp_path)
    c = browser(issuer_ctx, Clock(NOW))
    url = f"/c/{card.qr_token}"
    assert '<html lang="zh-CN">' in c.get(url).text and "有效" in c.get(url).text
    english = c.get(url, params={"lang": "en"})
    assert '<html lang="en">' in english.text and "Valid" in english.text
    assert f'action="{url}/code?lang=en"' in english.text
    assert "Valid" in c.get(url, headers={"Accept-Language": "en-US,en;q=0.9"}).text
    assert "有效" in c.get(url, headers={"Accept-Language": "fr, zh-CN;q=0.5"}).text


def test_catalogue_is_complete_and_language_choice() -> None:
    assert CATALOGUE["zh"].keys() == CATALOGUE["en"].keys()
    assert pick_language("en", "zh") == "en"
    assert pick_language("xx", "de, en;q=0.8") == "en"
    assert pick_language(None, "en;q=0, zh") == "zh"
    assert pick_language(None, None) == "zh"


def test_who_checked_my_card(issuer_ctx: IssuerContext, tmp_path: Path) -> None:
    def verifier(url: str, **kwargs: object) -> httpx.Response:
        assert url == "https://verifier.test/v1/cards/0011/receipts"
        assert kwargs["headers"] == {"Authorization": "Bearer issuer-token"}
        body = {
            "serial": "0011",
            "checks": [{"at": "2026-11-27T10:00:00Z", "merchant_name": "区图书馆",
                        "category": "library", "state": "valid"}],
        }  # fmt: skip
        return httpx.Response(200, json=body, request=httpx.Request("GET", url))

    checks = fetch_checks("https://verifier.test/", "issuer-token", "0011", get=verifier)
    assert checks.state == "ok" and checks.items[0]["merchant_name"] == "区图书馆"
    assert fetch_checks(None, None, "0011").state == "unconfigured"
    card = issue(issuer_ctx, tmp_path)
    settings = dataclasses.replace(
        issuer_ctx.settings, verifier_url="http://127.0.0.1:9", verifier_token="t"
    )
    c = browser(dataclasses.replace(issuer_ctx, settings=settings), Clock(NOW))
    log_in(c, card)
    page = c.get(f"/c/{card.qr_token}/report")
    assert page.status_code == 200 and "核验记录暂时无法获取" in page.text


@pytest.mark.parametrize("path", ["/report", "/objection"])
def test_pages_of_a_revoked_card_look_unknown_even_with_a_session(
    issuer_ctx: IssuerContext, tmp_path: Path, path: str
) -> None:
    card = issue(issuer_ctx, tmp_path)
    c = browser(issuer_ctx, Clock(NOW))
    csrf = log_in(c, card)
    issuer_ctx.issuance.revoke(card.serial, "lost", NOW, "clerk")
    r = c.request(
        "GET" if path == "/report" else "POST",
        f"/c/{card.qr_token}{path}",
        data=None if path == "/report" else {"csrf": csrf, "grounds": "x"},
    )
    assert CANNOT in r.text and r.content == c.get("/c/unknown-token").content


def test_migration_creates_exactly_the_citizen_table(issuer_ctx: IssuerContext) -> None:
    with issuer_ctx.engine.connect() as conn:
        assert "citizen_code_attempts" in inspect(conn).get_table_names()
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    assert [d for d in diffs if "citizen_code_attempts" in repr(d)] == []
