"""Terminal request signatures: each terminal signs every request with its own private key.

A terminal holds an Ed25519 or ECDSA P-256 key pair; an operator registers the public key with
the verifier (``starcard-terminal keygen`` prints it). Every terminal request carries::

    X-StarCard-Terminal:  <terminal id>
    X-StarCard-Timestamp: <unix seconds>
    X-StarCard-Signature: base64url(signature over signing_input(...))

``signing_input`` = ``b"starcard-terminal-request-v1\\n"`` ‖ METHOD ‖ ``\\n`` ‖ target ‖
``\\n`` ‖ terminal id ‖ ``\\n`` ‖ timestamp ‖ ``\\n`` ‖ hex(SHA-256(body)), where target is the
path plus ``?query`` when there is one. Ed25519 signs it as is; P-256 signs SHA-256 of it and
sends raw ``r || s`` (64 bytes), as everywhere else in StarCard.

The verifier accepts a timestamp within :data:`REQUEST_WINDOW_S` of its clock. There is no
request nonce: replaying a signed ``begin`` inside the window only hands out another
challenge, and ``complete`` is protected by its single-use challenge.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Generator, Mapping
from pathlib import Path

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from verifier.core.errors import MalformedCredential
from verifier.core.keys import der_to_raw, raw_to_der

__all__ = [
    "HEADER_SIGNATURE",
    "HEADER_TERMINAL",
    "HEADER_TIMESTAMP",
    "REQUEST_WINDOW_S",
    "TerminalAuth",
    "TerminalAuthError",
    "TerminalPrivateKey",
    "TerminalPublicKey",
    "generate_key",
    "load_private_key",
    "load_public_key",
    "private_key_pem",
    "public_key_pem",
    "sign_request",
    "signing_input",
    "verify_request",
]

HEADER_TERMINAL = "X-StarCard-Terminal"
HEADER_TIMESTAMP = "X-StarCard-Timestamp"
HEADER_SIGNATURE = "X-StarCard-Signature"
REQUEST_WINDOW_S = 60
_DOMAIN = b"starcard-terminal-request-v1\n"

TerminalPrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
TerminalPublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


class TerminalAuthError(Exception):
    """A terminal request whose signature, timestamp or key is not acceptable; the message
    says what to fix (it never contains key material)."""


def signing_input(method: str, target: str, terminal_id: str, timestamp: int, body: bytes) -> bytes:
    """The exact bytes a terminal signs (module docstring)."""
    fields = (method.upper(), target, terminal_id, str(timestamp), hashlib.sha256(body).hexdigest())
    return _DOMAIN + "\n".join(fields).encode("utf-8")


def sign_request(
    key: TerminalPrivateKey,
    terminal_id: str,
    method: str,
    target: str,
    body: bytes,
    now: int,
) -> dict[str, str]:
    """The three headers that authenticate one request of ``terminal_id`` at ``now``."""
    data = signing_input(method, target, terminal_id, now, body)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(data)
    else:
        _require_p256(key.curve)
        signature = der_to_raw(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return {
        HEADER_TERMINAL: terminal_id,
        HEADER_TIMESTAMP: str(now),
        HEADER_SIGNATURE: base64.urlsafe_b64encode(signature).decode().rstrip("="),
    }


def verify_request(
    key: TerminalPublicKey,
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    now: int,
) -> None:
    """Raises :class:`TerminalAuthError` unless ``headers`` carry a fresh signature of this
    request by ``key``. The caller has already looked the terminal up by its header."""
    terminal_id = headers.get(HEADER_TERMINAL, "")
    try:
        timestamp = int(headers.get(HEADER_TIMESTAMP, ""))
    except ValueError:
        raise TerminalAuthError(f"{HEADER_TIMESTAMP} must be unix seconds") from None
    if abs(now - timestamp) > REQUEST_WINDOW_S:
        raise TerminalAuthError(
            f"request timestamp is more than {REQUEST_WINDOW_S} s from the verifier's clock: "
            "set the terminal's clock (NTP)"
        )
    text = headers.get(HEADER_SIGNATURE, "")
    try:
        signature = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TerminalAuthError(f"{HEADER_SIGNATURE} must be base64url") from None
    data = signing_input(method, target, terminal_id, timestamp, body)
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            key.verify(raw_to_der(signature), data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, MalformedCredential):
        raise TerminalAuthError(
            "request signature does not verify: sign method, path, terminal id, timestamp "
            "and SHA-256 of the body with the key registered for this terminal"
        ) from None


def generate_key() -> ed25519.Ed25519PrivateKey:
    """A fresh Ed25519 terminal key."""
    return ed25519.Ed25519PrivateKey.generate()


def private_key_pem(key: TerminalPrivateKey) -> bytes:
    """The private key as unencrypted PKCS#8 PEM (the terminal keeps the file mode 0600)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(key: TerminalPrivateKey | TerminalPublicKey) -> str:
    """The public half as SubjectPublicKeyInfo PEM, as an operator registers it."""
    public = (
        key.public_key()
        if isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey)
        else key
    )
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_key(pem: str) -> TerminalPublicKey:
    """Raises ValueError unless ``pem`` is an Ed25519 or P-256 public key in PEM."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError, UnicodeError) as exc:
        raise ValueError(f"public_key is not a PEM public key: {exc}") from None
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        _require_p256(key.curve)
        return key
    raise ValueError("public_key must be an Ed25519 or ECDSA P-256 key")


def load_private_key(path: Path) -> TerminalPrivateKey:
    """Raises ValueError naming ``path`` unless it holds an Ed25519 or P-256 private key."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"cannot read the terminal key {path}: {exc}") from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        _require_p256(key.curve)
        return key
    raise ValueError(f"{path} must hold an Ed25519 or ECDSA P-256 private key")


def _require_p256(curve: ec.EllipticCurve) -> None:
    if not isinstance(curve, ec.SECP256R1):
        raise ValueError("ECDSA terminal keys must be P-256")


class TerminalAuth(httpx.Auth):
    """Signs every request an ``httpx`` client sends, for one terminal.

    ``clock`` is read once per request (the composition root hands in ``time.time``).
    """

    requires_request_body = True

    def __init__(
        self, terminal_id: str, key: TerminalPrivateKey, clock: Callable[[], float]
    ) -> None:
        self._terminal_id = terminal_id
        self._key = key
        self._clock = clock

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        target = request.url.raw_path.decode("ascii")
        request.headers.update(
            sign_request(
                self._key,
                self._terminal_id,
                request.method,
                target,
                request.content,
                int(self._clock()),
            )
        )
        yield request
