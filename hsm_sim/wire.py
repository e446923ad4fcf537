"""The wire protocol between :mod:`hsm_sim.client` and :mod:`hsm_sim.server`.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON (at most
:data:`MAX_FRAME` bytes). Requests are ``{"op": name, "args": {...}}``; responses are
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": class name, "message": text}``.
Binary values travel as lowercase hex; public keys as SubjectPublicKeyInfo DER (hex).

Errors are re-raised on the client as the same :mod:`hsm_sim.errors` class when it is one
of :data:`WIRE_ERRORS` (and ``ValueError``/``TypeError`` for bad arguments), otherwise as
:class:`~hsm_sim.errors.HsmError`. No message ever carries key material (the HSM's
messages never do).
"""

from __future__ import annotations

import json
import socket
import struct
import time
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hsm_sim import errors

__all__ = [
    "MAX_FRAME",
    "WIRE_ERRORS",
    "ProtocolError",
    "decode_public_key",
    "encode_frame",
    "encode_public_key",
    "error_from_wire",
    "read_frame",
]

MAX_FRAME = 1 << 20
_HEADER = struct.Struct(">I")

WIRE_ERRORS: dict[str, type[Exception]] = {
    cls.__name__: cls
    for cls in (
        errors.KeyExists,
        errors.KeyNotFound,
        errors.KeyRetired,
        errors.WrongKeyPurpose,
        errors.ExportNotAllowed,
        errors.CardCryptogramMismatch,
        errors.HsmStorageError,
        errors.NotSupported,
        errors.HsmUnavailable,
        errors.HsmError,
        ValueError,
        TypeError,
    )
}


class ProtocolError(errors.HsmError):
    """A malformed, oversized or truncated frame."""


def encode_frame(doc: object) -> bytes:
    """One frame holding ``doc`` as JSON; ProtocolError if it is too large."""
    body = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return _HEADER.pack(len(body)) + body


def read_frame(sock: socket.socket, deadline: float | None = None) -> Any | None:
    """Read one frame; None on a clean end of stream before its first byte.

    With ``deadline`` (a :func:`time.monotonic` value) each read waits only until then
    (``TimeoutError`` after). Raises ProtocolError for a truncated, oversized or non-JSON
    frame, OSError for socket failures.
    """
    header = _read_exact(sock, _HEADER.size, deadline, allow_eof=True)
    if header is None:
        return None
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ProtocolError(f"frame of {length} bytes exceeds {MAX_FRAME}")
    body = _read_exact(sock, length, deadline, allow_eof=False)
    assert body is not None
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError("frame is not UTF-8 JSON") from exc


def _read_exact(
    sock: socket.socket, size: int, deadline: float | None, *, allow_eof: bool
) -> bytes | None:
    buf = bytearray()
    while len(buf) < size:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no complete frame before the deadline")
            sock.settimeout(remaining)
        chunk = sock.recv(size - len(buf))
        if not chunk:
            if allow_eof and not buf:
                return None
            raise ProtocolError("connection closed in the middle of a frame")
        buf += chunk
    return bytes(buf)


def encode_public_key(key: ec.EllipticCurvePublicKey) -> str:
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der.hex()


def decode_public_key(value: object) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from SPKI DER hex; ProtocolError otherwise."""
    try:
        key = serialization.load_der_public_key(bytes.fromhex(str(value)))
    except ValueError as exc:
        raise ProtocolError("not a public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ProtocolError("not a P-256 public key")
    return key


def error_from_wire(name: object, message: object) -> Exception:
    """The exception a server error response stands for."""
    cls = WIRE_ERRORS.get(str(name), errors.HsmError)
    text = str(message)
    if cls is errors.HsmError and name not in WIRE_ERRORS:
        text = f"{name}: {text}"
    return cls(text)
