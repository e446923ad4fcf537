"""The holder letter handed over with a new card: one A4 page with the access code.

The letter carries the masked name, the star level, the validity, the card's citizen QR code
and the **access code** the holder needs for the full report, the explanation, objections and
repair on the citizen pages. The code appears here and once on the station's screen; the
issuer stores only its salted hash. The letter never shows the ID number.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from issuer.card_face import font, has_cjk_font, qr_image, save_pdf_page

A4_MM = (210.0, 297.0)
LETTER_DPI = 150
A4_PX = (round(A4_MM[0] / 25.4 * LETTER_DPI), round(A4_MM[1] / 25.4 * LETTER_DPI))
_MARGIN = 110
_INK = (24, 38, 74)
_GREY = (90, 90, 90)


@dataclass(frozen=True)
class HolderLetter:
    """What the letter says. ``access_code`` is secret: print it, never log it."""

    masked_name: str
    stars: int
    valid_until: dt.date
    serial: str
    citizen_url: str
    access_code: str
    issued_on: dt.date


def _access_code_shown(code: str) -> str:
    """Groups of four digits, easier to read out and type: ``1234 5678``."""
    return " ".join(code[i : i + 4] for i in range(0, len(code), 4))


def _paragraphs(letter: HolderLetter, cjk: bool) -> list[tuple[str, int]]:
    """(text, font size) lines in reading order; Chinese first when a CJK font exists."""
    stars = "★" * letter.stars + "☆" * (5 - letter.stars)
    lines: list[tuple[str, int]] = []
    if cjk:
        lines += [
            (f"尊敬的 {letter.masked_name}：", 34),
            (f"您的星级诚信卡（卡号 {letter.serial.upper()}）已制作完成。", 30),
            (f"星级：{stars}（{letter.stars} 星）  有效期至 {letter.valid_until.isoformat()}", 30),
            ("用手机扫描卡面或本信上的二维码，可查看卡的状态和星级。", 28),
            ("输入下面的查询码，可查看完整报告、评分说明和查询记录，", 28),
            ("并可提出异议或申请信用修复。", 28),
            ("请妥善保管查询码，不要告诉他人；工作人员不会向您索要查询码。", 28),
            ("", 20),
        ]
    lines += [
        (f"Dear {letter.masked_name},", 32),
        (f"your Star Integrity Card (No. {letter.serial.upper()}) is ready.", 28),
        (f"Star level: {stars} ({letter.stars}-star), valid until {letter.valid_until}.", 28),
        ("Scan the QR code on the card or on this letter to see the card's status and level.", 26),
        ("With the access code below you can read the full report and the explanation of your", 26),
        ("grade, see who checked your card, object to a record or ask for credit repair.", 26),
        ("Keep the access code private. Staff will never ask you for it.", 26),
    ]
    return lines


def render_holder_letter(letter: HolderLetter) -> Image.Image:
    """Draws the letter on an A4 page at 150 dpi (1240 × 1754 px)."""
    image = Image.new("RGB", A4_PX, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    cjk = has_cjk_font()
    title = "星级诚信卡 持卡人告知书 / Star Integrity Card — holder letter"
    draw.text((_MARGIN, _MARGIN), title if cjk else title.split(" / ")[1], font=font(34), fill=_INK)
    draw.line((_MARGIN, 180, A4_PX[0] - _MARGIN, 180), fill=_INK, width=3)
    y = 220
    for text, size in _paragraphs(letter, cjk):
        draw.text((_MARGIN, y), text, font=font(size), fill=_INK)
        y += int(size * 1.7)
    y += 30
    label = "查询码 / Access code" if cjk else "Access code"
    draw.text((_MARGIN, y), label, font=font(30), fill=_GREY)
    draw.rectangle((_MARGIN, y + 50, _MARGIN + 620, y + 170), outline=_INK, width=4)
    code = _access_code_shown(letter.access_code)
    draw.text((_MARGIN + 40, y + 70), code, font=font(72), fill=_INK)
    qr = qr_image(letter.citizen_url, 360)
    image.paste(qr, (A4_PX[0] - _MARGIN - qr.width, y))
    y += max(220, qr.height + 30)
    issued = f"签发日期 / Issued on {letter.issued_on}" if cjk else f"Issued on {letter.issued_on}"
    draw.text((_MARGIN, y), issued, font=font(26), fill=_GREY)
    draw.text((_MARGIN, y + 45), letter.citizen_url, font=font(22), fill=_GREY)
    return image


def save_holder_letter(letter: HolderLetter, pdf: Path) -> None:
    """One A4 page (210 × 297 mm) PDF."""
    save_pdf_page(render_holder_letter(letter), pdf, A4_MM)
