"""Protection of personal data at rest: AES-GCM encryption and a keyed lookup hash.

The identity number and name are stored encrypted (AES-256-GCM, random 96-bit nonce, the
column name as associated data so a ciphertext cannot be moved to another column). Lookups go
through an HMAC-SHA256 of the canonical value under a separate derived key, so the database
never holds a searchable plaintext.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class PiiVault:
    """Encrypts, decrypts and blind-indexes personal data under one 32-byte master key."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != 32:
            raise ValueError("the PII master key must be 32 bytes")
        self._aead = AESGCM(_derive(master_key, b"starcard/pii/aead"))
        self._index_key = _derive(master_key, b"starcard/pii/index")

    def encrypt(self, plaintext: str, column: str) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._aead.encrypt(nonce, plaintext.encode(), column.encode())

    def decrypt(self, blob: bytes, column: str) -> str:
        """Raises ``cryptography.exceptions.InvalidTag`` if the blob was altered or moved."""
        return self._aead.decrypt(blob[:12], blob[12:], column.encode()).decode()

    def blind_index(self, value: str) -> bytes:
        return hmac.new(self._index_key, value.encode(), hashlib.sha256).digest()


def _derive(master_key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=info).derive(master_key)
