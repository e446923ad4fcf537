"""Strict BER-TLV: round trips, multi-byte tags, long-form lengths, and every rejection."""

from __future__ import annotations

import pytest

from card_profiles.tlv import (
    Tlv,
    TlvError,
    encode_all,
    encode_length,
    encode_tag,
    encode_tlv,
    find,
    parse_all,
    parse_one,
    parse_single,
)


@pytest.mark.parametrize(
    ("tag", "encoded"),
    [
        (0x5A, "5A"),
        (0x9F27, "9F27"),
        (0x5F20, "5F20"),
        (0x7F49, "7F49"),
        (0x9F8101, "9F8101"),
        (0xDF81FF7F, "DF81FF7F"),
    ],
)
def test_tag_encoding(tag: int, encoded: str) -> None:
    assert encode_tag(tag) == bytes.fromhex(encoded)


@pytest.mark.parametrize(
    ("length", "encoded"),
    [
        (0, "00"),
        (127, "7F"),
        (128, "8180"),
        (255, "81FF"),
        (256, "820100"),
        (65535, "82FFFF"),
        (65536, "83010000"),
        (0x01000000, "8401000000"),
    ],
)
def test_length_encoding_is_minimal(length: int, encoded: str) -> None:
    assert encode_length(length) == bytes.fromhex(encoded)
    # and it parses back through a real TLV
    value = b"\xab" * length if length <= 70000 else None
    if value is not None:
        item = parse_single(encode_tlv(0x04, value))
        assert item == Tlv(0x04, value)


@pytest.mark.parametrize("size", [0, 1, 127, 128, 255, 256, 300, 65536])
def test_round_trip_sizes(size: int) -> None:
    value = bytes(i & 0xFF for i in range(size))
    encoded = encode_tlv(0x9F27, value)
    item, end = parse_one(encoded)
    assert item.tag == 0x9F27
    assert item.value == value
    assert end == len(encoded)


def test_constructed_children() -> None:
    inner = encode_all([Tlv(0x5A, b"\x01\x02"), Tlv(0x5F20, b"NAME")])
    outer = encode_tlv(0x70, inner)
    item = parse_single(outer)
    assert item.constructed
    children = item.children()
    assert children == [Tlv(0x5A, b"\x01\x02"), Tlv(0x5F20, b"NAME")]
    assert find(children, 0x5F20).value == b"NAME"
    with pytest.raises(KeyError):
        find(children, 0x9F27)


def test_children_of_primitive_rejected() -> None:
    with pytest.raises(TlvError):
        Tlv(0x5A, b"\x01").children()


def test_parse_all_sequence_and_empty() -> None:
    data = encode_tlv(0x01, b"a") + encode_tlv(0x9F27, b"") + encode_tlv(0x02, b"bc")
    assert [t.tag for t in parse_all(data)] == [0x01, 0x9F27, 0x02]
    assert parse_all(b"") == []


@pytest.mark.parametrize(
    ("hexdata", "reason"),
    [
        ("9F", "truncated multi-byte tag"),
        ("9F81", "truncated multi-byte tag continuation"),
        ("5A", "missing length"),
        ("5A81", "truncated long-form length"),
        ("5A820100", "truncated long-form length (2 bytes)"),
        ("5A0301", "truncated value"),
        ("5A820100" + "00" * 255, "value one byte short"),
        ("5A80", "indefinite length"),
        ("5A8105" + "00" * 5, "long form for a short length"),
        ("5A820080" + "00" * 128, "leading zero length byte"),
        ("5A850000000001" + "00", "five length bytes"),
        ("1F05" + "00", "multi-byte form for a low tag number"),
        ("9F8021" + "00", "leading 80 subsequent tag byte"),
        ("9F818181810100", "tag longer than 4 bytes"),
        ("00", "padding 00 where a tag starts"),
        ("FF", "padding FF where a tag starts"),
        ("5A0100" + "00", "trailing padding after a TLV"),
    ],
)
def test_strict_rejections(hexdata: str, reason: str) -> None:
    with pytest.raises(TlvError):
        parse_all(bytes.fromhex(hexdata))


def test_parse_single_rejects_empty_input() -> None:
    with pytest.raises(TlvError, match="missing tag"):
        parse_single(b"")


def test_parse_single_rejects_trailing_bytes() -> None:
    with pytest.raises(TlvError, match="trailing"):
        parse_single(encode_tlv(0x5A, b"x") + b"\x5a")


@pytest.mark.parametrize("tag", [0, -1, 0x1F, 0x0101, 0x9F05, 0x9F80, 0x9F818181, 0x1_0000_0000])
def test_invalid_tags_cannot_be_encoded(tag: int) -> None:
    with pytest.raises(TlvError):
        encode_tag(tag)
    with pytest.raises(TlvError):
        Tlv(tag, b"")


def test_lengths_out_of_range_cannot_be_encoded() -> None:
    with pytest.raises(TlvError):
        encode_length(-1)
    with pytest.raises(TlvError):
        encode_length(1 << 32)


def test_tlv_error_is_value_error() -> None:
    assert issubclass(TlvError, ValueError)
