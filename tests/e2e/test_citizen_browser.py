"""The citizen's path in a real browser (Debian ``chromium`` driven by Playwright, no browser
download): the QR printed on the card face is decoded by an independent decoder (zxing-cpp),
the URL it holds is opened on a phone-sized viewport against the issuer served by uvicorn,
the page shows the card's status; the access code opens the report, and an objection filed
from the page is shown on the record. Screenshots go to ``tests/artifacts/``.

Skips without chromium or Playwright; under ``CI=true`` it fails instead.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from issuer.card_face import render_card_face
from issuer.citizen import citizen_router
from issuer.grading import regrade
from issuer.platform import NewRecord, add_record
from issuer.wiring import IssuerContext, build_issuer
from tests.conftest import NOW, make_settings, trust_clock
from tests.helpers import factory_session, graded_subject
from tests.pcsc_harness import skip_or_fail

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
PHONE = {
    "viewport": {"width": 393, "height": 851},
    "device_scale_factor": 2.75,
    "is_mobile": True,
    "has_touch": True,
    "locale": "zh-CN",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(sqlite_url: str, tmp_path: Path) -> Iterator[IssuerContext]:
    """An issuer whose public URL is a uvicorn server on a free local port (fixed clock)."""
    port = free_port()
    settings = dataclasses.replace(
        make_settings(sqlite_url, tmp_path), public_base_url=f"http://127.0.0.1:{port}"
    )
    ctx = build_issuer(settings, clock=trust_clock)
    app = FastAPI()
    app.include_router(citizen_router(ctx, lambda: NOW))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield ctx
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        ctx.engine.dispose()


def decode_qr(png: Path) -> str:
    import zxingcpp
    from PIL import Image

    found = zxingcpp.read_barcodes(Image.open(png))
    assert len(found) == 1 and found[0].format == zxingcpp.BarcodeFormat.QRCode
    return str(found[0].text)


def test_citizen_scans_the_card_checks_status_reads_report_and_objects(
    served: IssuerContext, tmp_path: Path
) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        skip_or_fail(f"playwright is not installed ({exc}): pip install -e '.[dev]'")
        raise
    if shutil.which(CHROMIUM) is None:
        skip_or_fail(f"{CHROMIUM} missing: apt-get install chromium (scripts/setup.sh)")
    ctx = served
    subject = graded_subject(ctx, NOW)
    card = ctx.issuance.personalize(factory_session(ctx, tmp_path / "card.json"), subject, NOW, "c")
    penalty = NewRecord(
        "admin_penalty", "-", "一般", "《道路交通安全法》第九十条", "区交通警察大队",
        "区公交决字〔2026〕0912号", dt.date(2026, 10, 15), "traffic",
    )  # fmt: skip
    with ctx.engine.begin() as conn:
        record_id = add_record(conn, ctx.policy, subject, penalty, NOW, "test")
        regrade(conn, ctx.policy, [subject], NOW.date(), NOW)
    ARTIFACTS.mkdir(exist_ok=True)
    face = render_card_face(
        stars=card.stars,
        masked_name="张*",
        valid_until=card.expires_at.date(),
        serial=card.serial,
        citizen_url=ctx.settings.citizen_url(card.qr_token),
    )
    face_png = ARTIFACTS / "citizen-card-face.png"
    face.save(face_png)
    url = decode_qr(face_png)
    assert url == f"{ctx.settings.public_base_url}/c/{card.qr_token}"

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_context(**PHONE).new_page()  # type: ignore[arg-type]
            page.goto(url)
            assert page.locator("p.state").inner_text() == "有效"
            assert page.locator(".stars").inner_text() == "★★★"
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            page.screenshot(path=str(ARTIFACTS / "citizen-1-status.png"), full_page=True)

            page.fill("#code", card.access_code)
            page.click("text=查看完整报告")
            page.wait_for_url(f"{url}/report")
            assert page.locator("#score").inner_text() == "108"
            record = page.locator(f"#record-{record_id}")
            assert "计分中" in record.inner_text()
            page.screenshot(path=str(ARTIFACTS / "citizen-2-report.png"), full_page=True)

            page.select_option("#objection-record", str(record_id))
            page.fill("#grounds", "处罚当日本人不在本市，车辆已出借他人。")
            page.locator("form[action$='/objection'] button").click()
            page.wait_for_load_state()
            assert "异议已受理" in page.locator(".notice").inner_text()
            assert "异议核实中" in page.locator(f"#record-{record_id}").inner_text()
            assert page.locator("#score").inner_text() == "118"
            page.screenshot(path=str(ARTIFACTS / "citizen-3-objection.png"), full_page=True)
        finally:
            browser.close()
