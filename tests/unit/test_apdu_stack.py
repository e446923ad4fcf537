"""The APDU stack returns the same bytes whichever path a command takes.

An echo card answers its command data back (plus a suffix, to make long responses). It runs in
two personalities: one with extended length, and a T=0-style one that only takes short APDUs,
needs chaining for long data, answers 6Cxx to a too-small Le and hands long responses out in
61xx pieces.
"""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import given, settings

from card_profiles.apdu import ApduConnection, CommandApdu
from card_profiles.errors import SW_OK

INS_ECHO = 0xE0


class EchoCard:
    """Transport double at the hardware boundary: a minimal echo application."""

    def __init__(self, *, extended: bool) -> None:
        self.extended = extended
        self.buffer = b""
        self.pending = b""
        self.sent: list[bytes] = []

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        self.sent.append(apdu)
        cla, ins = apdu[0], apdu[1]
        body = apdu[4:]
        if ins == 0xC0:  # GET RESPONSE
            ne = body[0] or 256
            return self._hand_out(ne)
        if self.extended and len(body) >= 3 and body[0] == 0:
            nc = int.from_bytes(body[1:3], "big")
            data, le_bytes = body[3 : 3 + nc], body[3 + nc :]
            ne = (int.from_bytes(le_bytes, "big") or 65536) if le_bytes else 0
        else:
            nc = body[0] if len(body) > 1 else 0
            data = body[1 : 1 + nc] if nc else b""
            le_bytes = body[1 + nc :] if nc else body
            ne = (le_bytes[0] or 256) if le_bytes else 0
        self.buffer += data
        if cla & 0x10:
            return b"", SW_OK
        response = self.buffer + b"|" + bytes(range(32)) * 12
        self.buffer = b""
        if self.extended:
            self.pending = response
            return self._hand_out(ne)
        if ne < min(len(response), 256):
            return b"", 0x6C00 | (min(len(response), 256) & 0xFF)
        self.pending = response
        return self._hand_out(ne)

    def _hand_out(self, ne: int) -> tuple[bytes, int]:
        part, self.pending = self.pending[:ne], self.pending[ne:]
        if self.pending:
            return part, 0x6100 | min(len(self.pending), 256) & 0xFF
        return part, SW_OK

    def close(self) -> None:
        pass


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=1200), le=st.sampled_from([0, 1, 17, 255, 256]))
def test_extended_and_short_paths_give_identical_bytes(data: bytes, le: int) -> None:
    command = CommandApdu(0x80, INS_ECHO, 0, 0, data, le=0)
    via_extended = ApduConnection(EchoCard(extended=True), extended_length=True).send(command)
    short_card = EchoCard(extended=False)
    short = ApduConnection(short_card, extended_length=False)
    via_short = short.send(CommandApdu(0x80, INS_ECHO, 0, 0, data, le=le))
    assert via_short == via_extended
    assert via_extended.startswith(data + b"|")
    assert all(len(apdu) <= 5 + 255 for apdu in short_card.sent)  # never an extended APDU
    assert short.apdu_count == len(short_card.sent) >= 2


def test_extended_card_takes_one_apdu() -> None:
    card = EchoCard(extended=True)
    conn = ApduConnection(card, extended_length=True)
    conn.send(CommandApdu(0x80, INS_ECHO, 0, 0, bytes(600), le=0))
    assert conn.apdu_count == 1
