"""Encrypted key file of the HSM simulator.

File format (JSON, UTF-8)::

    {"format": "starcard-hsm-sim/1",
     "keys": [{"label": str, "purpose": KeyPurpose.value, "created_at": float,
               "pkcs8_pem": encrypted PKCS#8 PEM}]}

Invariants:

* Private keys are only ever written as PKCS#8 encrypted under the passphrase with
  ``BestAvailableEncryption``; nothing else in the file is secret.
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
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hsm_sim.errors import HsmStorageError
from hsm_sim.purpose import KeyPurpose

__all__ = ["FORMAT", "StoredKey", "encrypt_private_key", "load_keys", "save_keys"]

FORMAT = "starcard-hsm-sim/1"


@dataclass(frozen=True)
class StoredKey:
    """One key as kept in memory: the live key plus its encrypted PEM (computed once)."""

    label: str
    purpose: KeyPurpose
    created_at: float
    private_key: ec.EllipticCurvePrivateKey
    pkcs8_pem: bytes


def encrypt_private_key(key: ec.EllipticCurvePrivateKey, passphrase: bytes) -> bytes:
    """Serialize ``key`` as PKCS#8 PEM encrypted under ``passphrase``."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


def load_keys(path: Path, passphrase: bytes) -> list[StoredKey]:
    """Read and decrypt every key in ``path``.

    Raises :class:`HsmStorageError` if the file is unreadable, too permissive, malformed,
    holds a duplicate label or a non-P-256 key, or if the passphrase is wrong.
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
    keys: list[StoredKey] = []
    seen: set[str] = set()
    for entry in entries:
        key = _load_entry(path, entry, passphrase)
        if key.label in seen:
            raise HsmStorageError(f"{path}: duplicate label {key.label!r}")
        seen.add(key.label)
        keys.append(key)
    return keys


def _load_entry(path: Path, entry: object, passphrase: bytes) -> StoredKey:
    if not isinstance(entry, dict):
        raise HsmStorageError(f"{path}: key entry is not an object")
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
    return StoredKey(label, key_purpose, float(created_at), private_key, pem_bytes)


def save_keys(path: Path, keys: list[StoredKey]) -> None:
    """Atomically replace ``path`` with a file holding ``keys`` (mode 0600).

    Raises :class:`HsmStorageError` if the file cannot be written; the old file is then
    left untouched.
    """
    doc = {
        "format": FORMAT,
        "keys": [
            {
                "label": k.label,
                "purpose": k.purpose.value,
                "created_at": k.created_at,
                "pkcs8_pem": k.pkcs8_pem.decode("ascii"),
            }
            for k in keys
        ],
    }
    data = json.dumps(doc, indent=1, sort_keys=True).encode("utf-8")
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
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise HsmStorageError(f"{path}: cannot write key file ({exc.strerror})") from exc


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
