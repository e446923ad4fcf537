"""atheris target: Iso7816FsSession (card_profiles.iso7816_fs) tapping a hostile card.

The card answers SELECT with 9000 and every READ BINARY from the input (data and SW per
answer, then "card removed"). Checked: a tap returns at most ``max_credential_size`` bytes
or raises a CardError, within the APDU bound the module documents.
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports():
    from card_profiles.errors import CardError, CardRemoved
    from card_profiles.iso7816_fs import ISO7816_FS, ISO7816_FS_MF, Iso7816FsSession

from _common import main


class HostileCard:
    def __init__(self, fdp: atheris.FuzzedDataProvider) -> None:
        self.fdp = fdp
        self.sent = 0

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        self.sent += 1
        if self.fdp.remaining_bytes() == 0:
            raise CardRemoved("out of input")
        data = self.fdp.ConsumeBytes(self.fdp.ConsumeIntInRange(0, 300))
        sw = self.fdp.PickValueInList([0x9000, 0x9000, 0x6282, 0x6700, 0x6B00, 0x6C10, 0x6A82])
        if self.fdp.ConsumeBool():
            sw = self.fdp.ConsumeIntInRange(0x6200, 0x6FFF)
        return data, sw

    def close(self) -> None:
        pass


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    profile = ISO7816_FS if fdp.ConsumeBool() else ISO7816_FS_MF
    card = HostileCard(fdp)
    session = Iso7816FsSession(card, profile)
    try:
        session.select()
        credential = session.read_credential()
        if not 1 <= len(credential) <= profile.max_credential_size:
            raise AssertionError(f"credential of {len(credential)} bytes")
    except CardError:
        pass
    if session.apdu_count > 2 + 2 * (4 + profile.max_credential_size):
        raise AssertionError(f"{session.apdu_count} APDUs for one tap")


def seeds() -> list[bytes]:
    return [b"\x01" + b"\x00" * 4 + b"\x01\x2c" + bytes(300), bytes(64)]


if __name__ == "__main__":
    main(test_one_input, seeds)
