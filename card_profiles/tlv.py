"""Strict BER-TLV (ISO/IEC 7816-4 §5.2, X.690 tag and length rules).

A tag is handled as the integer of its encoded bytes (``0x9F27``, ``0x5F20``, ``0x7F49``), which
is how card specifications write tags.

Strictness (every violation raises :class:`TlvError`, a ``ValueError``):

* no truncation: a tag, length or value running past the end of the input;
* no padding bytes ``00``/``FF`` where a tag must start;
* tags in minimal form: the multi-byte form only for tag numbers >= 31, no leading ``80``
  subsequent byte, at most 4 tag bytes;
* lengths in minimal (DER) form: short form below 128, long form ``81``..``84`` without
  leading zero bytes; indefinite length (``80``) is rejected;
* :func:`parse_all` and :func:`parse_single` must consume their whole input.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MAX_TAG_BYTES = 4
MAX_LENGTH_BYTES = 4


class TlvError(ValueError):
    """Input is not strict BER-TLV, or a tag/length cannot be encoded."""


@dataclass(frozen=True)
class Tlv:
    """One data object: ``tag`` (integer of its encoded bytes) and raw ``value`` bytes."""

    tag: int
    value: bytes

    def __post_init__(self) -> None:
        encode_tag(self.tag)  # validates

    @property
    def constructed(self) -> bool:
        """True if bit 6 of the first tag byte is set (the value is a list of TLVs)."""
        return bool(encode_tag(self.tag)[0] & 0x20)

    def children(self) -> list[Tlv]:
        """Parse ``value`` as nested TLVs. Raises TlvError if the tag is primitive."""
        if not self.constructed:
            raise TlvError(f"tag {self.tag:X} is primitive")
        return parse_all(self.value)

    def encode(self) -> bytes:
        return encode_tag(self.tag) + encode_length(len(self.value)) + self.value


def encode_tag(tag: int) -> bytes:
    """Encode ``tag`` to its bytes, checking it is a valid minimal BER tag."""
    if tag <= 0:
        raise TlvError(f"invalid tag {tag}")
    raw = tag.to_bytes((tag.bit_length() + 7) // 8, "big")
    if len(raw) > MAX_TAG_BYTES:
        raise TlvError(f"tag {tag:X} longer than {MAX_TAG_BYTES} bytes")
    parsed, end = _parse_tag(raw, 0)
    if end != len(raw) or parsed != tag:
        raise TlvError(f"invalid tag {tag:X}")
    return raw


def encode_length(length: int) -> bytes:
    """Encode ``length`` in minimal BER form."""
    if length < 0:
        raise TlvError("negative length")
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    if len(raw) > MAX_LENGTH_BYTES:
        raise TlvError(f"length {length} too large")
    return bytes([0x80 | len(raw)]) + raw


def encode_tlv(tag: int, value: bytes) -> bytes:
    """Encode one TLV."""
    return Tlv(tag, bytes(value)).encode()


def encode_all(items: Iterable[Tlv]) -> bytes:
    """Concatenate the encodings of ``items``."""
    return b"".join(item.encode() for item in items)


def _parse_tag(data: bytes, offset: int) -> tuple[int, int]:
    if offset >= len(data):
        raise TlvError("truncated: missing tag")
    first = data[offset]
    if first in (0x00, 0xFF):
        raise TlvError(f"invalid first tag byte {first:02X} at offset {offset}")
    tag = first
    pos = offset + 1
    if first & 0x1F != 0x1F:
        return tag, pos
    number = 0
    while True:
        if pos >= len(data):
            raise TlvError("truncated: multi-byte tag")
        byte = data[pos]
        if pos == offset + 1 and byte == 0x80:
            raise TlvError("non-minimal tag (leading 80)")
        tag = (tag << 8) | byte
        number = (number << 7) | (byte & 0x7F)
        pos += 1
        if pos - offset > MAX_TAG_BYTES:
            raise TlvError(f"tag longer than {MAX_TAG_BYTES} bytes")
        if not byte & 0x80:
            break
    if number < 0x1F:
        raise TlvError(f"non-minimal tag {tag:X} (number {number} fits one byte)")
    return tag, pos


def _parse_length(data: bytes, offset: int) -> tuple[int, int]:
    if offset >= len(data):
        raise TlvError("truncated: missing length")
    first = data[offset]
    if first < 0x80:
        return first, offset + 1
    count = first & 0x7F
    if count == 0:
        raise TlvError("indefinite length not allowed")
    if count > MAX_LENGTH_BYTES:
        raise TlvError(f"length field of {count} bytes not supported")
    raw = data[offset + 1 : offset + 1 + count]
    if len(raw) != count:
        raise TlvError("truncated: long-form length")
    if raw[0] == 0x00:
        raise TlvError("non-minimal length (leading zero byte)")
    length = int.from_bytes(raw, "big")
    if length < 0x80:
        raise TlvError("non-minimal length (long form for a value below 128)")
    return length, offset + 1 + count


def parse_one(data: bytes, offset: int = 0) -> tuple[Tlv, int]:
    """Parse the TLV starting at ``offset``; return it and the offset just after it."""
    tag, pos = _parse_tag(data, offset)
    length, pos = _parse_length(data, pos)
    end = pos + length
    if end > len(data):
        raise TlvError(f"truncated: value of tag {tag:X} needs {length} bytes")
    return Tlv(tag, bytes(data[pos:end])), end


def parse_all(data: bytes) -> list[Tlv]:
    """Parse a concatenation of TLVs that fills ``data`` exactly (empty input gives [])."""
    items: list[Tlv] = []
    offset = 0
    while offset < len(data):
        item, offset = parse_one(data, offset)
        items.append(item)
    return items


def parse_single(data: bytes) -> Tlv:
    """Parse exactly one TLV that fills ``data``."""
    item, end = parse_one(data, 0)
    if end != len(data):
        raise TlvError(f"{len(data) - end} trailing bytes after tag {item.tag:X}")
    return item


def find(items: Iterable[Tlv], tag: int) -> Tlv:
    """Return the first item with ``tag``. Raises KeyError if there is none."""
    for item in items:
        if item.tag == tag:
            return item
    raise KeyError(f"tag {tag:X} not found")
