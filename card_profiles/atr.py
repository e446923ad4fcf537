"""Answer-to-reset parsing (ISO/IEC 7816-3 §8, 7816-4 §8.1.1): historical bytes and the
card-capabilities object, used to decide whether a card takes extended length and to match
profiles. Pure functions on bytes; malformed ATRs raise ValueError.
"""

from __future__ import annotations


def historical_bytes(atr: bytes) -> bytes:
    """The historical bytes of ``atr`` (ISO/IEC 7816-3 §8.2).

    Raises ValueError if the ATR is truncated, too long, or its TCK check byte is wrong.
    """
    if len(atr) < 2 or atr[0] not in (0x3B, 0x3F):
        raise ValueError("not an ATR (TS must be 3B or 3F)")
    count = atr[1] & 0x0F
    indicator = atr[1] >> 4
    pos = 2
    needs_tck = False
    while True:
        pos += bin(indicator & 0x7).count("1")  # TAi, TBi, TCi
        if not indicator & 0x8:
            break
        if pos >= len(atr):
            raise ValueError("ATR truncated in interface bytes")
        td = atr[pos]
        pos += 1
        needs_tck = needs_tck or (td & 0x0F) != 0
        indicator = td >> 4
    end = pos + count
    if end + (1 if needs_tck else 0) != len(atr):
        raise ValueError("ATR length does not match its interface and historical bytes")
    if needs_tck:
        check = 0
        for byte in atr[1:]:
            check ^= byte
        if check:
            raise ValueError("ATR check byte TCK is wrong")
    return atr[pos:end]


def card_capabilities(hist: bytes) -> bytes | None:
    """The card-capabilities data object (compact-TLV tag 7) in historical bytes, if any.

    Only category indicators 00 (status in the last three bytes) and 80 carry compact-TLV
    objects; any other category gives None. Raises ValueError for a truncated object.
    """
    if not hist:
        return None
    if hist[0] == 0x80:
        body = hist[1:]
    elif hist[0] == 0x00:
        if len(hist) < 4:
            raise ValueError("category 00 needs a 3-byte status indicator")
        body = hist[1:-3]
    else:
        return None
    pos = 0
    while pos < len(body):
        tag, length = body[pos] >> 4, body[pos] & 0x0F
        value = body[pos + 1 : pos + 1 + length]
        if len(value) != length:
            raise ValueError("truncated compact-TLV object in historical bytes")
        if tag == 0x7:
            return value
        pos += 1 + length
    return None


def atr_extended_length(atr: bytes) -> bool:
    """True if ``atr`` says the card accepts extended Lc/Le (card capabilities byte 3, b7).

    An ATR that cannot be parsed, or has no third capabilities byte, gives False: short APDUs
    with chaining work on every PIV card, so that is the safe answer.
    """
    try:
        caps = card_capabilities(historical_bytes(atr))
    except ValueError:
        return False
    return caps is not None and len(caps) >= 3 and bool(caps[2] & 0x40)
