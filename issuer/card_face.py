"""The printed card face: star level, validity, masked name and the citizen QR code.

The image is ID-1 card size (85.60 × 53.98 mm) at 300 dpi: 1011 × 638 pixels. The QR holds
only the citizen URL with an opaque random token: no name, no ID number, no grade. The PDF is
print-ready: its page is exactly the card's size, so a card printer prints it at 100 %.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import qrcode
from PIL import Image, ImageDraw, ImageFont

DPI = 300
MM_PER_INCH = 25.4
CARD_MM = (85.60, 53.98)
SIZE_PX = (round(CARD_MM[0] / MM_PER_INCH * DPI), round(CARD_MM[1] / MM_PER_INCH * DPI))
_FONT_CANDIDATES = (
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
)
_GOLD = (214, 160, 32)
_INK = (24, 38, 74)
_QR_SIDE_PX = 330


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The CJK font if one is installed, else Pillow's built-in font (Latin only)."""
    for path in _FONT_CANDIDATES:
        if path.exists():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size)


def has_cjk_font() -> bool:
    return any(p.exists() for p in _FONT_CANDIDATES)


def qr_image(data: str, side_px: int) -> Image.Image:
    """A QR code of at most ``side_px`` pixels, whole pixels per module (no resampling, so
    every module prints the same size), with a 2-module quiet zone."""
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=2)
    qr.add_data(data)
    qr.make(fit=True)
    qr.box_size = max(1, side_px // (qr.modules_count + 2 * qr.border))
    image: Image.Image = qr.make_image(fill_color="black", back_color="white").convert("RGB")
    return image


def render_card_face(
    *, stars: int, masked_name: str, valid_until: dt.date, serial: str, citizen_url: str
) -> Image.Image:
    """Draws the card face; ``stars`` must be 1-5."""
    if not 1 <= stars <= 5:
        raise ValueError("a star-level card shows 1 to 5 stars")
    width = SIZE_PX[0]
    image = Image.new("RGB", SIZE_PX, (250, 247, 240))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width, 120), fill=_INK)
    cjk = has_cjk_font()
    title = "星级诚信卡  Star Integrity Card" if cjk else "Star Integrity Card"
    draw.text((40, 30), title, font=font(52), fill=(255, 255, 255))
    draw.text((40, 170), "★" * stars + "☆" * (5 - stars), font=font(96), fill=_GOLD)
    label = f"{stars} 星 / {stars}-star" if cjk else f"{stars}-star"
    draw.text((40, 290), label, font=font(40), fill=_INK)
    holder = f"持卡人 {masked_name}" if cjk else f"Holder {masked_name}"
    draw.text((40, 380), holder, font=font(38), fill=_INK)
    valid = f"有效期至 {valid_until.isoformat()}" if cjk else f"Valid until {valid_until}"
    draw.text((40, 440), valid, font=font(38), fill=_INK)
    draw.text((40, 560), f"No. {serial.upper()}", font=font(30), fill=(90, 90, 90))
    qr = qr_image(citizen_url, _QR_SIDE_PX)
    image.paste(qr, (width - 40 - qr.width, 170))
    return image


def save_pdf_page(image: Image.Image, pdf: Path, page_mm: tuple[float, float]) -> None:
    """Saves ``image`` as a one-page PDF whose page is exactly ``page_mm`` (width, height).

    The horizontal and vertical resolutions are set separately so that the rounded pixel
    size still fills the exact physical page.
    """
    dpi = (
        image.width / (page_mm[0] / MM_PER_INCH),
        image.height / (page_mm[1] / MM_PER_INCH),
    )
    image.save(pdf, "PDF", dpi=dpi)


def save_card_face(image: Image.Image, png: Path, pdf: Path | None = None) -> None:
    """PNG tagged 300 dpi; the PDF (if asked for) on an exact 85.60 × 53.98 mm page."""
    image.save(png, dpi=(DPI, DPI))
    if pdf is not None:
        save_pdf_page(image, pdf, CARD_MM)
