"""Encrypted key file of the HSM simulator.

File format (JSON, UTF-8)::

    {"format": "starcard-hsm-sim/1",
     "keys": [{"label": str, "purpose": KeyPurpose.value, "created_at": float,
               "pkcs8_pem": encrypted PKCS#8 PEM},                       # P-256 keys
              {"label": str, "purpose": "card_key_diversification", "created_at": float,
               "kind": "aes-256", "factory_export": bool,
               "scrypt_salt": hex, "nonce": hex, "ciphertext": hex}]}    # AES master keys

Either kind of entry may carry ``"retired_at": float`` (seconds since the epoch): the key
was retired then and signs or diversifies nothing any more (an absent field: not retired).

Invariants:

* Private keys are only ever written as PKCS#8 encrypted under the passphrase with
  ``BestAvailableEncryption``; AES master keys only as AES-256-GCM under a key derived from
  the passphrase with scrypt (N=2^14, r=8, p=1, fresh salt and nonce per key), with the label,
  purpose, kind and ``factory_export`` flag as associated data, so that editing the flag in
  the file makes the key undecryptable. Nothing else in the file is secret.
* The file is replaced atomically (temporary file in the same directory, ``fsync``,
  ``os.replace``, ``fsync`` of the directory) and is created with mode ``0600``: a crash
  leaves either the old or the new file, never a torn one.
* A file readable or writable by group or others is refused on load.

Every failure raises :class:`~hsm_sim.errors.HsmStorageError`.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from hsm_sim.errors import HsmStorageError
from hsm_sim.purpose import KeyPurpose

__all__ = [
    "FORMAT",
    "AnyStoredKey",
    "StoredKey",
    "StoredSecretKey",
    "encrypt_private_key",
    "load_keys",
    "new_secret_key",
    "save_keys",
    "write_atomically",
]

FORMAT = "starcard-hsm-sim/1"
SYMMETRIC_KIND = "aes-256"
SECRET_LENGTH = 32
_SALT_LENGTH = 16
_NONCE_LENGTH = 12


@dataclass(frozen=True)
class StoredKey:
    """One key as kept in memory: the live key plus its encrypted PEM (computed once)."""

    label: str
    purpose: KeyPurpose
    created_at: float
    private_key: ec.EllipticCurvePrivateKey
    pkcs8_pem: bytes
    retired_at: float | None = None


@dataclass(frozen=True)
class StoredSecretKey:
    """An AES-256 master key as kept in memory, with its wrapped form (computed once)."""

    label: str
    purpose: KeyPurpose
    created_at: float
    secret: bytes = field(repr=False)
    factory_export: bool
    wrapped: dict[str, str] = field(repr=False)
    """``scrypt_salt``, ``nonce``, ``ciphertext`` (hex); empty for an in-memory simulator."""
    retired_at: float | None = None


AnyStoredKey = StoredKey | StoredSecretKey


def new_secret_key(
    label: str, purpose: KeyPurpose, created_at: float, passphrase: bytes, *, factory_export: bool
) -> StoredSecretKey:
    """A fresh random AES-256 key, wrapped under ``passphrase`` (if non-empty)."""
    secret = secrets.token_bytes(SECRET_LENGTH)
    wrapped: dict[str, str] = {}
    if passphrase:
        salt = secrets.token_bytes(_SALT_LENGTH)
        nonce = secrets.token_bytes(_NONCE_LENGTH)
        aad = _secret_aad(label, purpose, factory_export)
        ciphertext = AESGCM(_kek(passphrase, salt)).encrypt(nonce, secret, aad)
        wrapped = {"scrypt_salt": salt.hex(), "nonce": nonce.hex(), "ciphertext": ciphertext.hex()}
    return StoredSecretKey(label, purpose, created_at, secret, factory_export, wrapped)


def _kek(passphrase: bytes, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, n=2**14, r=8, p=1).derive(passphrase)


def _secret_aad(label: str, purpose: KeyPurpose, factory_export: bool) -> bytes:
    fields = {
        "format": FORMAT,
        "label": label,
        "purpose": purpose.value,
        "kind": SYMMETRIC_KIND,
        "factory_export": factory_export,
    }
    return json.dumps(fields, sort_keys=True).encode("utf-8")


def encrypt_private_key(key: ec.EllipticCurvePrivateKey, passphrase: bytes) -> bytes:
    """Serialize ``key`` as PKCS#8 PEM encrypted under ``passphrase``."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


def load_keys(path: Path, passphrase: bytes) -> list[AnyStoredKey]:
    """Read and decrypt every key in ``path``.

    Raises :class:`HsmStorageError` if the file is unreadable, too permissive, malformed,
    holds a duplicate label or a non-P-256 key, if a master key's metadata was altered, or
    if the passphrase is wrong.
    """
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise HsmStorageError(f"{path}: key file is accessible by group or others")
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HsmStorageError(f"{path}: cannot read key file ({type(exc).__name__})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise HsmStorageError(f"{path}: not a {FORMAT} key file")
    entries = doc.get("keys")
    if not isinstance(entries, list):
        raise HsmStorageError(f"{path}: 'keys' is not a list")
    keys: list[AnyStoredKey] = []
    seen: set[str] = set()
    for entry in entries:
        key = _load_entry(path, entry, passphrase)
        if key.label in seen:
            raise HsmStorageError(f"{path}: duplicate label {key.label!r}")
        seen.add(key.label)
        keys.append(key)
    return keys


def _load_entry(path: Path, entry: object, passphrase: bytes) -> AnyStoredKey:
    if not isinstance(entry, dict):
        raise HsmStorageError(f"{path}: key entry is not an object")
    if "kind" in entry:
        return _load_secret_entry(path, entry, passphrase)
    label, purpose, created_at, pem = (
        entry.get("label"),
        entry.get("purpose"),
        entry.get("created_at"),
        entry.get("pkcs8_pem"),
    )
    if not isinstance(label, str) or not isinstance(pem, str):
        raise HsmStorageError(f"{path}: key entry lacks label or pkcs8_pem")
    if not isinstance(created_at, int | float) or isinstance(created_at, bool):
        raise HsmStorageError(f"{path}: key {label!r} has no created_at")
    try:
        key_purpose = KeyPurpose(purpose)
    except ValueError as exc:
        raise HsmStorageError(f"{path}: key {label!r} has unknown purpose") from exc
    pem_bytes = pem.encode("ascii")
    try:
        private_key = serialization.load_pem_private_key(pem_bytes, password=passphrase)
    except (ValueError, TypeError) as exc:
        raise HsmStorageError(
            f"{path}: cannot decrypt key {label!r} (wrong passphrase or corrupt file)"
        ) from exc
    if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not isinstance(
        private_key.curve, ec.SECP256R1
    ):
        raise HsmStorageError(f"{path}: key {label!r} is not a P-256 key")
    retired_at = _retired_at(path, label, entry)
    return StoredKey(label, key_purpose, float(created_at), private_key, pem_bytes, retired_at)


def _retired_at(path: Path, label: str, entry: dict[str, Any]) -> float | None:
    value = entry.get("retired_at")
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise HsmStorageError(f"{path}: key {label!r} has a malformed retired_at")
    return float(value)


def _load_secret_entry(path: Path, entry: dict[str, Any], passphrase: bytes) -> StoredSecretKey:
    label, created_at, flag = (
        entry.get("label"),
        entry.get("created_at"),
        entry.get("factory_export"),
    )
    if not isinstance(label, str) or entry.get("kind") != SYMMETRIC_KIND:
        raise HsmStorageError(f"{path}: secret key entry lacks a label or has an unknown kind")
    if not isinstance(flag, bool):
        raise HsmStorageError(f"{path}: key {label!r} has no factory_export flag")
    if not isinstance(created_at, int | float) or isinstance(created_at, bool):
        raise HsmStorageError(f"{path}: key {label!r} has no created_at")
    try:
        purpose = KeyPurpose(entry.get("purpose"))
        wrapped = {k: str(entry[k]) for k in ("scrypt_salt", "nonce", "ciphertext")}
        salt, nonce, ciphertext = (bytes.fromhex(wrapped[k]) for k in wrapped)
        aad = _secret_aad(label, purpose, flag)
        secret = AESGCM(_kek(passphrase, salt)).decrypt(nonce, ciphertext, aad)
    except (KeyError, ValueError, InvalidTag) as exc:
        raise HsmStorageError(
            f"{path}: cannot decrypt key {label!r} (wrong passphrase, altered or corrupt entry)"
        ) from exc
    if len(secret) != SECRET_LENGTH:
        raise HsmStorageError(f"{path}: key {label!r} is not an AES-256 key")
    retired_at = _retired_at(path, label, entry)
    return StoredSecretKey(label, purpose, float(created_at), secret, flag, wrapped, retired_at)


def _entry(key: AnyStoredKey) -> dict[str, Any]:
    retired = {} if key.retired_at is None else {"retired_at": key.retired_at}
    if isinstance(key, StoredSecretKey):
        return {
            "label": key.label,
            "purpose": key.purpose.value,
            "created_at": key.created_at,
            "kind": SYMMETRIC_KIND,
            "factory_export": key.factory_export,
            **key.wrapped,
            **retired,
        }
    return {
        "label": key.label,
        "purpose": key.purpose.value,
        "created_at": key.created_at,
        "pkcs8_pem": key.pkcs8_pem.decode("ascii"),
        **retired,
    }


def save_keys(path: Path, keys: list[AnyStoredKey]) -> None:
    """Atomically replace ``path`` with a file holding ``keys`` (mode 0600).

    Raises :class:`HsmStorageError` if the file cannot be written; the old file is then
    left untouched.
    """
    doc = {"format": FORMAT, "keys": [_entry(k) for k in keys]}
    data = json.dumps(doc, indent=1, sort_keys=True).encode("utf-8")
    try:
        write_atomically(path, data)
    except OSError as exc:
        raise HsmStorageError(f"{path}: cannot write key file ({exc.strerror})") from exc


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: temporary file (mode 0600) in the same directory,
    ``fsync``, ``os.replace``, ``fsync`` of the directory. A crash leaves the old or the new
    file, never a torn one. Raises OSError (the old file is then untouched)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
