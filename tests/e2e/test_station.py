"""The office station CLI (``starcard-station``) driving virtual cards through real pcscd.

* personalize writes the card face (PNG at 300 dpi, print-ready PDF at card size) and the
  holder letter; the QR decodes to the citizen URL with a ≥ 128-bit opaque token;
* the card pulled after EVERY APDU of the station's personalization, then ``resume``: exactly
  one active card that taps valid, in 100 % of the cases, with no manual edit;
* a different card put in after an interruption is refused (exit 3) and left untouched;
* a batch of three subjects with three cards, then a re-run: all "already issued".
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select
from typer.testing import CliRunner, Result

from issuer.db import cards
from issuer.letters import A4_PX, HolderLetter, render_holder_letter
from issuer.station import Station, app
from issuer.station_output import read_subject_list
from issuer.wiring import IssuerContext
from tests.conftest import NOW
from tests.e2e.test_card_pulled import card_states, lose_power, tap
from tests.helpers import factory_card_state, graded_subject, id_number
from tests.pcsc_harness import CardProcess, PcscStack

STATION_APDUS = 17
"""SELECT and GET serial to identify the card, then the 15 APDUs of the issuance."""
ID_NUMBER = "11010519491231002X"
READER = "Virtual PCD 00 00"


def station(ctx: IssuerContext) -> Station:
    return Station(ctx, lambda: NOW, "clerk-7")


def run(ctx: IssuerContext, *args: str) -> Result:
    result = CliRunner().invoke(app, list(args), obj=station(ctx))
    assert ID_NUMBER not in result.output  # never an unmasked ID number on screen
    return result


def personalize(ctx: IssuerContext, subject: str, out: Path, *extra: str) -> Result:
    return run(ctx, "personalize", "--reader", READER, "--subject", subject, "--out", str(out),
               "--card-wait", "10", *extra)  # fmt: skip


def resume(ctx: IssuerContext, out: Path) -> Result:
    return run(ctx, "resume", "--reader", READER, "--out", str(out), "--card-wait", "10")


def media_box_mm(pdf: Path) -> tuple[float, float]:
    found = re.search(rb"/MediaBox \[ ?0 0 ([\d.]+) ([\d.]+) ?\]", pdf.read_bytes())
    assert found is not None, pdf
    return float(found[1]) / 72 * 25.4, float(found[2]) / 72 * 25.4


def decode_qr(image: Image.Image) -> str:
    import zxingcpp

    found = zxingcpp.read_barcodes(image)
    assert len(found) == 1
    assert found[0].format == zxingcpp.BarcodeFormat.QRCode
    return str(found[0].text)


@pytest.mark.pcsc
def test_personalize_writes_face_letter_and_an_opaque_qr(
    pcsc_stack: PcscStack, sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:
    subject = graded_subject(sqlite_issuer, NOW, id_number=ID_NUMBER)
    serial = bytes.fromhex("5354a7c0ffee0001")
    card = CardProcess(factory_card_state(sqlite_issuer, tmp_path / "card.json", serial)).start()
    try:
        result = personalize(sqlite_issuer, subject, tmp_path / "out")
        assert result.exit_code == 0, result.output
        assert f"card {serial.hex()} active ★★★ for 张* (1101**********002X)" in result.output
        assert f"({STATION_APDUS} APDUs)" in result.output
        assert tap(sqlite_issuer, card) == "valid"
    finally:
        card.stop()
    code = re.search(r"access code \(.*\): (\d{8})", result.output)
    assert code is not None and result.output.count(code[1]) == 1
    with sqlite_issuer.engine.connect() as conn:
        row = conn.execute(select(cards).where(cards.c.serial == serial.hex())).one()
    _, salt, digest = row.access_code_hash.split("$")
    stored = hashlib.scrypt(code[1].encode(), salt=bytes.fromhex(salt), n=2**14, r=8, p=1)
    assert stored.hex() == digest and code[1] not in row.access_code_hash

    png = Image.open(tmp_path / "out" / f"{serial.hex()}-face.png")
    assert png.size == (1011, 638)
    assert tuple(round(d) for d in png.info["dpi"]) == (300, 300)
    width, height = media_box_mm(tmp_path / "out" / f"{serial.hex()}-face.pdf")
    assert abs(width - 85.60) < 0.01 and abs(height - 53.98) < 0.01
    width, height = media_box_mm(tmp_path / "out" / f"{serial.hex()}-letter.pdf")
    assert abs(width - 210) < 0.01 and abs(height - 297) < 0.01

    url = decode_qr(png)
    base = sqlite_issuer.settings.public_base_url + "/c/"
    assert url.startswith(base)
    token = url.removeprefix(base)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) * 8 >= 128
    assert hashlib.sha256(token.encode()).digest() == bytes(row.qr_token_hash)
    for personal in (subject, ID_NUMBER, "1101", "002X", "张", "★", "stars", "grade"):
        assert personal not in url


@pytest.mark.pcsc
@pytest.mark.parametrize("pulled_after", range(STATION_APDUS))
def test_card_pulled_after_every_apdu_then_resume_ends_with_one_active_card(
    pcsc_stack: PcscStack, sqlite_issuer: IssuerContext, tmp_path: Path, pulled_after: int
) -> None:
    path = factory_card_state(sqlite_issuer, tmp_path / "card.json")
    subject = graded_subject(sqlite_issuer, NOW)
    out = tmp_path / "out"
    torn = CardProcess(path, power_loss_after=pulled_after).start()
    try:
        result = personalize(sqlite_issuer, subject, out)
        assert result.exit_code == 2, result.output
        assert f"starcard-station resume --reader '{READER}'" in result.output
        lose_power(torn)
    finally:
        torn.stop()
    assert "active" not in card_states(sqlite_issuer, subject)
    again = CardProcess(path).start()
    try:
        result = resume(sqlite_issuer, out)
        assert result.exit_code == 0, result.output
        assert card_states(sqlite_issuer, subject) == ["active"]
        assert tap(sqlite_issuer, again) == "valid"
        again_result = resume(sqlite_issuer, out)
        assert again_result.exit_code == 0 and "nothing to resume" in again_result.output
    finally:
        again.stop()
    serial = json.loads(path.read_text())["serial"]
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        f"{serial}-face.pdf", f"{serial}-face.png", f"{serial}-letter.pdf",
    ]  # fmt: skip
    assert not list((out / ".jobs").glob("*.json"))


@pytest.mark.pcsc
@pytest.mark.parametrize("pulled_after", [2, 8])
def test_a_different_card_after_an_interruption_is_refused_untouched(
    pcsc_stack: PcscStack, sqlite_issuer: IssuerContext, tmp_path: Path, pulled_after: int
) -> None:
    """Pulled before (2) or after (8) the job reached the database: the journal or the
    cards table names the card; another card gets exit 3 and not one byte written."""
    first = factory_card_state(sqlite_issuer, tmp_path / "first.json")
    other = factory_card_state(sqlite_issuer, tmp_path / "other.json")
    other_eeprom = other.read_bytes()
    subject = graded_subject(sqlite_issuer, NOW)
    out = tmp_path / "out"
    torn = CardProcess(first, power_loss_after=pulled_after).start()
    try:
        assert personalize(sqlite_issuer, subject, out).exit_code == 2
        lose_power(torn)
    finally:
        torn.stop()
    intruder = CardProcess(other).start()
    try:
        result = resume(sqlite_issuer, out)
        assert result.exit_code == 3, result.output
        assert "nothing was written" in result.output
        if pulled_after == 8:
            result = personalize(sqlite_issuer, subject, out)
            assert result.exit_code == 3, result.output
            assert "put card" in result.output
    finally:
        intruder.stop()
    assert other.read_bytes() == other_eeprom
    assert "active" not in card_states(sqlite_issuer, subject)
    back = CardProcess(first).start()
    try:
        result = resume(sqlite_issuer, out)
        assert result.exit_code == 0, result.output
        assert card_states(sqlite_issuer, subject) == ["active"]
    finally:
        back.stop()


@pytest.mark.pcsc
def test_replacement_revokes_the_old_card_when_the_new_one_is_active(
    pcsc_stack: PcscStack, sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:
    subject = graded_subject(sqlite_issuer, NOW)
    old_path = factory_card_state(sqlite_issuer, tmp_path / "old.json")
    new_path = factory_card_state(sqlite_issuer, tmp_path / "new.json")
    old_serial = json.loads(old_path.read_text())["serial"]
    old = CardProcess(old_path).start()
    try:
        assert personalize(sqlite_issuer, subject, tmp_path / "out").exit_code == 0
        again = personalize(sqlite_issuer, subject, tmp_path / "out")
        assert again.exit_code == 0 and f"has active card {old_serial}" in again.output
    finally:
        old.stop()
    new = CardProcess(new_path).start()
    try:
        replace = ("--replaces", old_serial, "--reason", "damaged")
        result = personalize(sqlite_issuer, subject, tmp_path / "out", *replace)
        assert result.exit_code == 0, result.output
        assert tap(sqlite_issuer, new) == "valid"
    finally:
        new.stop()
    with sqlite_issuer.engine.connect() as conn:
        rows = conn.execute(select(cards.c.serial, cards.c.state, cards.c.revoked_reason)).all()
    new_serial = json.loads(new_path.read_text())["serial"]
    assert sorted(map(tuple, rows)) == sorted(
        [(old_serial, "revoked", "damaged"), (new_serial, "active", None)]
    )


def feed_cards(ctx: IssuerContext, paths: list[Path], errors: list[BaseException]) -> None:
    """Puts each card in the reader and takes it out once the station has activated it."""
    try:
        for path in paths:
            serial = json.loads(path.read_text())["serial"]
            card = CardProcess(path).start()
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    with ctx.engine.connect() as conn:
                        state = conn.execute(
                            select(cards.c.state).where(cards.c.serial == serial)
                        ).scalar()
                    if state == "active":
                        break
                    time.sleep(0.1)
            finally:
                card.stop()
    except BaseException as exc:  # reported by the test
        errors.append(exc)


@pytest.mark.pcsc
def test_batch_of_three_then_rerun_reports_already_issued(
    pcsc_stack: PcscStack, sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:
    subjects = [graded_subject(sqlite_issuer, NOW, id_number=id_number(i)) for i in range(3)]
    batch = tmp_path / "batch.csv"
    batch.write_text("subject_id,note\n" + "".join(f"{s},x\n" for s in subjects))
    paths = [factory_card_state(sqlite_issuer, tmp_path / f"card-{i}.json") for i in range(3)]
    out, report = tmp_path / "out", tmp_path / "out" / "batch-report.json"
    errors: list[BaseException] = []
    feeder = threading.Thread(target=feed_cards, args=(sqlite_issuer, paths, errors))
    feeder.start()
    args = ["batch", str(batch), "--reader", READER, "--out", str(out), "--yes"]
    result = run(sqlite_issuer, *args, "--card-wait", "30")
    feeder.join(timeout=90)
    assert not errors and not feeder.is_alive()
    assert result.exit_code == 0, result.output
    assert "insert a blank card for 张*" in result.output
    assert "3 of 3 handled: 3 issued" in result.output
    rows = json.loads(report.read_text())["results"]
    assert [r["result"] for r in rows] == ["issued"] * 3
    assert {r["serial"] for r in rows} == {json.loads(p.read_text())["serial"] for p in paths}
    assert all(card_states(sqlite_issuer, s) == ["active"] for s in subjects)
    assert "access code" not in report.read_text() and "access code" not in result.output

    again = run(sqlite_issuer, *args, "--card-wait", "1")  # no card is needed
    assert again.exit_code == 0, again.output
    assert "3 of 3 handled: 3 already issued" in again.output
    assert [r["result"] for r in json.loads(report.read_text())["results"]] == [
        "already issued"
    ] * 3


def test_batch_file_one_a_line_or_csv(tmp_path: Path) -> None:
    lines = tmp_path / "ids.txt"
    lines.write_text("# counter 3\nS01\n\nS02\nS01\n")
    assert read_subject_list(lines) == ["S01", "S02"]
    csv_file = tmp_path / "ids.csv"
    csv_file.write_text("name,subject_id\nx,S07\ny,S08\n")
    assert read_subject_list(csv_file) == ["S07", "S08"]
    csv_file.write_text("name,id\nx,S07\n")
    with pytest.raises(ValueError, match="subject_id column"):
        read_subject_list(csv_file)


def test_holder_letter_is_a4_with_the_card_qr() -> None:
    url = "https://sc.example.cn/c/AbCdEfGhIjKlMnOpQrStUv"
    letter = HolderLetter("张*", 4, dt.date(2027, 11, 28), "00aa", url, "12345678", NOW.date())
    image = render_holder_letter(letter)
    assert image.size == A4_PX == (1240, 1754)
    assert decode_qr(image) == url


def test_unknown_subject_exits_1_and_masks_a_typed_id_number(
    sqlite_issuer: IssuerContext, tmp_path: Path
) -> None:
    result = personalize(sqlite_issuer, ID_NUMBER, tmp_path)
    assert result.exit_code == 1
    assert "1101**********002X" in result.output and "no such person is registered" in result.output
    graded_subject(sqlite_issuer, NOW, id_number=ID_NUMBER, consent=False)
    result = personalize(sqlite_issuer, ID_NUMBER, tmp_path)
    assert result.exit_code == 1
    assert "not eligible: 张* (1101**********002X)" in result.output
    assert "no consent to the star programme is on file" in result.output
