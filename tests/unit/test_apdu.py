"""APDU encodings (short/extended, cases 1-4), status-word errors, and ApduConnection mechanics
(61xx GET RESPONSE, 6Cxx resend, command chaining) against a scripted fake transport."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from card_profiles import errors
from card_profiles.apdu import ApduConnection, CommandApdu
from card_profiles.errors import CardIOError, StatusWordError, raise_for_sw


class ScriptedTransport:
    """Answers each transmit with the next scripted (data, sw); records what was sent."""

    def __init__(self, replies: Iterable[tuple[bytes, int]]) -> None:
        self.replies = list(replies)
        self.sent: list[bytes] = []

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        self.sent.append(apdu)
        if not self.replies:
            raise AssertionError(f"unexpected APDU {apdu.hex()}")
        return self.replies.pop(0)

    def close(self) -> None:
        pass


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# -- encoding ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("apdu", "short", "extended"),
    [
        (CommandApdu(0x80, 0xF0, 0x0F, 0x00), "80F00F00", "80F00F00"),
        (CommandApdu(0x80, 0xCA, 0x01, 0x01, le=0), "80CA010100", "80CA0101000000"),
        (CommandApdu(0x80, 0xCA, 0x01, 0x01, le=256), "80CA010100", "80CA0101000100"),
        (CommandApdu(0x80, 0xCA, 0x01, 0x01, le=8), "80CA010108", "80CA0101000008"),
        (CommandApdu(0x80, 0xDA, 0, 0, b"\x01\x02"), "80DA0000020102", "80DA0000000002 0102"),
        (CommandApdu(0x00, 0x88, 0, 0, b"\xaa", le=0), "008800000 1AA00", "0088000000 0001AA0000"),
        (CommandApdu(0x00, 0x88, 0, 0, b"\xaa", le=64), "0088000001AA40", "0088000000 0001AA0040"),
    ],
)
def test_encode_cases_short_and_extended(apdu: CommandApdu, short: str, extended: str) -> None:
    assert apdu.fits_short
    assert apdu.encode(extended=False) == h(short)
    assert apdu.encode(extended=True) == h(extended)


def test_encode_extended_only() -> None:
    read = CommandApdu(0x80, 0xCB, 0, 0, le=65536)
    assert not read.fits_short
    assert read.encode(extended=True) == h("80CB0000000000")
    with pytest.raises(ValueError, match="extended"):
        read.encode(extended=False)
    big = CommandApdu(0x80, 0xDA, 0, 0, bytes(300), le=1000)
    assert big.encode(extended=True) == h("80DA0000 00012C") + bytes(300) + h("03E8")
    with pytest.raises(ValueError):
        big.encode(extended=False)
    max_data = CommandApdu(0x80, 0xDA, 0, 0, bytes(65535))
    assert max_data.encode(extended=True)[4:7] == h("00FFFF")


def test_short_boundary() -> None:
    assert CommandApdu(0, 0xDA, 0, 0, bytes(255)).encode()[4] == 0xFF
    assert not CommandApdu(0, 0xDA, 0, 0, bytes(256)).fits_short
    assert not CommandApdu(0, 0xCA, 0, 0, le=257).fits_short


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cla": 256},
        {"cla": 0xFF},
        {"ins": -1},
        {"p1": 0x100},
        {"p2": -5},
        {"data": bytes(65536)},
        {"data": bytearray(b"x")},
        {"le": -1},
        {"le": 65537},
    ],
)
def test_invalid_commands_rejected(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"cla": 0x80, "ins": 0xCA, "p1": 1, "p2": 1}
    fields.update(kwargs)
    with pytest.raises(ValueError):
        CommandApdu(**fields)  # type: ignore[arg-type]


# -- status words -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sw", "cls"),
    [
        (0x6700, errors.WrongLength),
        (0x6982, errors.SecurityStatusNotSatisfied),
        (0x6985, errors.ConditionsNotSatisfied),
        (0x6A80, errors.WrongData),
        (0x6A81, errors.FunctionNotSupported),
        (0x6A82, errors.NotFound),
        (0x6A84, errors.NotEnoughMemory),
        (0x6A86, errors.IncorrectP1P2),
        (0x6A88, errors.DataNotFound),
        (0x6D00, errors.InsNotSupported),
        (0x6E00, errors.ClaNotSupported),
        (0x6F00, errors.CardInternalError),
    ],
)
def test_each_status_word_has_its_error(sw: int, cls: type[StatusWordError]) -> None:
    with pytest.raises(cls) as info:
        raise_for_sw(sw)
    assert type(info.value) is cls
    assert info.value.sw == sw
    assert isinstance(info.value, errors.CardError)
    assert cls().sw == sw


def test_unknown_status_word_is_base_class_and_9000_passes() -> None:
    raise_for_sw(0x9000)
    with pytest.raises(StatusWordError) as info:
        raise_for_sw(0x6283)
    assert type(info.value) is StatusWordError
    assert "6283" in str(info.value)


def test_error_hierarchy() -> None:
    assert issubclass(errors.CardRemoved, errors.CardIOError)
    assert issubclass(errors.CardTimeout, errors.CardIOError)
    assert issubclass(errors.NoReader, errors.CardError)
    assert not issubclass(errors.StatusWordError, errors.CardIOError)


# -- ApduConnection ---------------------------------------------------------------------------


def test_plain_exchange_returns_data_and_counts() -> None:
    t = ScriptedTransport([(b"\x01\x02", 0x9000)])
    conn = ApduConnection(t)
    assert conn.send(CommandApdu(0x80, 0xCA, 1, 1, le=0)) == b"\x01\x02"
    assert t.sent == [h("80CA010100")]
    assert conn.apdu_count == 1


def test_status_word_becomes_typed_error() -> None:
    t = ScriptedTransport([(b"", 0x6985)])
    conn = ApduConnection(t)
    with pytest.raises(errors.ConditionsNotSatisfied):
        conn.send(CommandApdu(0x80, 0x46, 0, 0, le=0))
    assert conn.apdu_count == 1


def test_61xx_follows_get_response() -> None:
    first, second, third = bytes(range(256)), b"\xaa" * 256, b"\xbb" * 16
    t = ScriptedTransport([(first, 0x6100), (second, 0x6110), (third, 0x9000)])
    conn = ApduConnection(t)
    assert conn.send(CommandApdu(0x80, 0xCB, 0, 0, le=0)) == first + second + third
    assert t.sent == [h("80CB000000"), h("00C0000000"), h("00C0000010")]
    assert conn.apdu_count == 3


def test_61xx_then_error_raises() -> None:
    t = ScriptedTransport([(b"\x01", 0x6101), (b"", 0x6F00)])
    with pytest.raises(errors.CardInternalError):
        ApduConnection(t).send(CommandApdu(0x80, 0xCB, 0, 0, le=0))


def test_endless_61xx_is_an_io_error() -> None:
    t = ScriptedTransport([(bytes(256), 0x6100)] * 5000)
    with pytest.raises(CardIOError):
        ApduConnection(t).send(CommandApdu(0x80, 0xCB, 0, 0, le=0))


def test_6cxx_resends_with_corrected_le() -> None:
    t = ScriptedTransport([(b"", 0x6C08), (b"12345678", 0x9000)])
    conn = ApduConnection(t)
    assert conn.send(CommandApdu(0x80, 0xCA, 1, 1, le=4)) == b"12345678"
    assert t.sent == [h("80CA010104"), h("80CA010108")]
    assert conn.apdu_count == 2


def test_6c00_means_256() -> None:
    t = ScriptedTransport([(b"", 0x6C00), (bytes(256), 0x9000)])
    ApduConnection(t).send(CommandApdu(0x80, 0xCA, 1, 1, le=1))
    assert t.sent[1] == h("80CA010100")


def test_repeated_6cxx_is_an_io_error() -> None:
    t = ScriptedTransport([(b"", 0x6C08), (b"", 0x6C09)])
    with pytest.raises(CardIOError):
        ApduConnection(t).send(CommandApdu(0x80, 0xCA, 1, 1, le=4))


def test_chaining_without_extended_length() -> None:
    data = bytes(i & 0xFF for i in range(600))
    t = ScriptedTransport([(b"", 0x9000), (b"", 0x9000), (b"", 0x9000)])
    conn = ApduConnection(t, extended_length=False)
    assert conn.send(CommandApdu(0x80, 0xDA, 0, 0, data)) == b""
    assert [a[:5] for a in t.sent] == [h("90DA0000FF"), h("90DA0000FF"), h("80DA00005A")]
    assert b"".join(a[5:] for a in t.sent) == data
    assert conn.apdu_count == 3


def test_chaining_keeps_le_on_last_part_only() -> None:
    t = ScriptedTransport([(b"", 0x9000), (b"ok", 0x9000)])
    ApduConnection(t).send(CommandApdu(0x00, 0x88, 0, 0, bytes(300), le=0))
    assert t.sent[0] == h("10880000FF") + bytes(255)
    assert t.sent[1] == h("008800002D") + bytes(45) + h("00")


def test_chain_part_refused_stops_the_chain() -> None:
    t = ScriptedTransport([(b"", 0x6985)])
    with pytest.raises(errors.ConditionsNotSatisfied):
        ApduConnection(t).send(CommandApdu(0x80, 0xDA, 0, 0, bytes(600)))
    assert len(t.sent) == 1


def test_chain_part_answered_61xx_is_protocol_error() -> None:
    t = ScriptedTransport([(b"", 0x6110)])
    with pytest.raises(CardIOError):
        ApduConnection(t).send(CommandApdu(0x80, 0xDA, 0, 0, bytes(600)))


def test_extended_length_sends_one_apdu() -> None:
    t = ScriptedTransport([(b"", 0x9000)])
    conn = ApduConnection(t, extended_length=True)
    conn.send(CommandApdu(0x80, 0xDA, 0, 0, bytes(600)))
    assert t.sent == [h("80DA0000000258") + bytes(600)]
    assert conn.apdu_count == 1


def test_extended_connection_still_uses_short_form_when_it_fits() -> None:
    t = ScriptedTransport([(b"", 0x9000)])
    ApduConnection(t, extended_length=True).send(CommandApdu(0x80, 0xCA, 1, 1, le=0))
    assert t.sent == [h("80CA010100")]


def test_large_ne_downgrades_to_short_le_without_extended_length() -> None:
    t = ScriptedTransport([(bytes(256), 0x6104), (b"\x01\x02\x03\x04", 0x9000)])
    data = ApduConnection(t).send(CommandApdu(0x80, 0xCB, 0, 0, le=65536))
    assert len(data) == 260
    assert t.sent[0] == h("80CB000000")


def test_transport_errors_pass_through() -> None:
    class Dead:
        def transmit(self, apdu: bytes) -> tuple[bytes, int]:
            raise errors.CardRemoved("gone")

        def close(self) -> None:
            pass

    with pytest.raises(errors.CardRemoved):
        ApduConnection(Dead()).send(CommandApdu(0, 0xA4, 4, 0, b"\x01", le=0))
