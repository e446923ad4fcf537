"""Strict deterministic CBOR for signed artefacts.

``decode_strict(data)`` accepts exactly one CBOR data item that is already in the form
``encode(...)`` produces, and nothing else:

1. no indefinite-length strings or containers (:class:`IndefiniteLength`);
2. no duplicate map keys (:class:`DuplicateMapKey`);
3. no bytes after the item (:class:`TrailingBytes`);
4. only these types: unsigned/negative integers, byte strings, UTF-8 text strings, arrays,
   maps with integer or text keys, ``true``/``false``, ``null``, and tags whose number the
   caller allows (:class:`UnexpectedCborType` for floats, ``undefined``, simple values,
   other tags and everything cbor2 turns into richer objects);
5. canonical encoding: re-encoding the decoded value with ``cbor2.dumps(canonical=True)``
   (shortest integer and length heads, map keys sorted length-first then bytewise, as in
   RFC 7049 §3.9 / RFC 8949 §4.2.3) gives back the input byte for byte
   (:class:`NonCanonicalEncoding`).

All these errors subclass :class:`~verifier.core.errors.MalformedCredential`. Decoded maps
and arrays come back as plain ``dict`` and ``list`` (cbor2 6 returns tuples and frozendicts
inside tags); tags come back as :class:`cbor2.CBORTag`.
"""

from __future__ import annotations

import io
from collections.abc import Collection, Mapping

import cbor2

from verifier.core.errors import (
    DuplicateMapKey,
    IndefiniteLength,
    MalformedCredential,
    NonCanonicalEncoding,
    TrailingBytes,
    UnexpectedCborType,
)

__all__ = ["MAX_DEPTH", "decode_strict", "encode"]

#: Deepest nesting any of our formats needs is 4; leave room but bound recursion.
MAX_DEPTH = 16


def encode(obj: object) -> bytes:
    """Canonical CBOR encoding of ``obj`` (the only form :func:`decode_strict` accepts)."""
    return cbor2.dumps(obj, canonical=True)


def decode_strict(data: bytes, *, allowed_tags: Collection[int] = ()) -> object:
    """Decode one canonical CBOR item; see the module docstring for every rule.

    Raises a :class:`MalformedCredential` subclass on any violation; ``TypeError`` if
    ``data`` is not ``bytes``.
    """
    if not isinstance(data, bytes):
        raise TypeError("CBOR input must be bytes")
    if not data:
        raise MalformedCredential("empty CBOR input")
    value, end = _decode_one(data)
    if end != len(data):
        raise TrailingBytes(f"{len(data) - end} bytes after the CBOR item")
    plain = _check(value, allowed_tags, 0)
    if encode(value) != data:
        raise NonCanonicalEncoding("CBOR is not in canonical form")
    return plain


def _decode_one(data: bytes) -> tuple[object, int]:
    """Decode the first item with duplicates and indefinite lengths refused."""
    fp = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(
            fp, allow_duplicate_keys=False, allow_indefinite=False, max_depth=MAX_DEPTH
        ).decode()
    except cbor2.CBORDecodeError as exc:
        # Name the rule that failed by retrying with one rule relaxed at a time.
        if _decodes(data, duplicates=True):
            raise DuplicateMapKey("CBOR map has a duplicate key") from exc
        if _decodes(data, indefinite=True):
            raise IndefiniteLength("CBOR uses an indefinite length") from exc
        raise MalformedCredential("not well-formed CBOR", detail=str(exc)) from exc
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise MalformedCredential("not well-formed CBOR", detail=str(exc)) from exc
    return value, fp.tell()


def _decodes(data: bytes, *, duplicates: bool = False, indefinite: bool = False) -> bool:
    try:
        cbor2.CBORDecoder(
            io.BytesIO(data),
            allow_duplicate_keys=duplicates,
            allow_indefinite=indefinite,
            max_depth=MAX_DEPTH,
        ).decode()
    except Exception:  # any failure means "still does not decode"
        return False
    return True


def _check(value: object, allowed_tags: Collection[int], depth: int) -> object:
    """Type-check ``value`` recursively; return it with tuples/frozendicts made plain."""
    if depth > MAX_DEPTH:
        raise MalformedCredential("CBOR nesting too deep")
    if value is None or isinstance(value, bool | bytes | str):
        return value
    if type(value) is int:
        return value
    if isinstance(value, list | tuple):
        return [_check(v, allowed_tags, depth + 1) for v in value]
    if isinstance(value, Mapping):
        out: dict[object, object] = {}
        for k, v in value.items():
            if type(k) is not int and type(k) is not str:
                raise UnexpectedCborType("CBOR map keys must be integers or text")
            out[k] = _check(v, allowed_tags, depth + 1)
        return out
    if isinstance(value, cbor2.CBORTag):
        if value.tag not in allowed_tags:
            raise UnexpectedCborType(f"CBOR tag {value.tag} is not allowed here")
        return cbor2.CBORTag(value.tag, _check(value.value, allowed_tags, depth + 1))
    raise UnexpectedCborType(f"CBOR item of type {type(value).__name__} is not allowed")
