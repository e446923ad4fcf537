"""The HSM simulator: non-exportable P-256 keys by label, each with one purpose, plus audit.

Invariants:

* No method returns private key material. Callers get public keys and :class:`Signer`
  handles; a handle signs through the simulator, which logs every signature.
* A key's purpose is fixed at creation. ``signer(label, purpose)`` refuses a key of another
  purpose (:class:`WrongKeyPurpose`), and keys of a non-signing purpose
  (``CARD_KEY_DIVERSIFICATION``) never sign.
* Labels are never reused: ``create_key`` on an existing label raises :class:`KeyExists`.
* Every create, signer hand-out, signature and refusal is appended to the audit log.
* With a ``path``, keys persist there encrypted under ``passphrase`` (see
  :mod:`hsm_sim.storage`) and are reloaded by the next ``HsmSim`` on the same path. A key is
  only usable once it has been written: if the write fails, the key is dropped.
* All state is guarded by one lock, so an instance may be shared between threads.

Time comes from the injected ``clock`` (default :func:`time.time`), used only for audit
records and ``created_at``.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from hsm_sim.audit import AuditEvent, AuditOp
from hsm_sim.errors import HsmError, KeyExists, KeyNotFound, WrongKeyPurpose
from hsm_sim.purpose import SIGNING_PURPOSES, KeyPurpose
from hsm_sim.signer import Signer
from hsm_sim.storage import StoredKey, encrypt_private_key, load_keys, save_keys

__all__ = ["MAX_LABEL_LENGTH", "HsmSim"]

MAX_LABEL_LENGTH = 128
_COORD = 32  # bytes per P-256 scalar


class HsmSim:
    """In-process HSM simulator (see the module docstring for its invariants).

    ``HsmSim()`` keeps keys in memory only. ``HsmSim(path, passphrase)`` loads ``path`` if it
    exists (raising :class:`~hsm_sim.errors.HsmStorageError` on a wrong passphrase or a
    corrupt or over-permissive file) and writes every new key there. A persistent simulator
    needs a non-empty passphrase (``ValueError`` otherwise).
    """

    def __init__(
        self,
        path: Path | None = None,
        passphrase: bytes = b"",
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if path is not None and not passphrase:
            raise ValueError("a persistent HsmSim needs a non-empty passphrase")
        self._path = path
        self._passphrase = passphrase
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, StoredKey] = {}
        self._audit: list[AuditEvent] = []
        if path is not None and path.exists():
            for key in load_keys(path, passphrase):
                self._keys[key.label] = key

    # -- key management ------------------------------------------------------------------

    def create_key(self, label: str, purpose: KeyPurpose) -> ec.EllipticCurvePublicKey:
        """Generate a P-256 key under ``label`` for ``purpose``; return its public key.

        Raises :class:`KeyExists` if the label is taken, ``ValueError`` for an empty, too long
        or non-printable label, :class:`~hsm_sim.errors.HsmStorageError` if it cannot be
        persisted (the key is then discarded).
        """
        _check_label(label)
        if not isinstance(purpose, KeyPurpose):
            raise TypeError("purpose must be a KeyPurpose")
        with self._lock:
            if label in self._keys:
                self._log(AuditOp.CREATE_KEY, label, purpose, KeyExists)
                raise KeyExists(f"key {label!r} already exists")
            private_key = ec.generate_private_key(ec.SECP256R1())
            pem = encrypt_private_key(private_key, self._passphrase) if self._path else b""
            stored = StoredKey(label, purpose, self._clock(), private_key, pem)
            self._keys[label] = stored
            if self._path is not None:
                try:
                    save_keys(self._path, list(self._keys.values()))
                except HsmError as exc:
                    del self._keys[label]
                    self._log(AuditOp.CREATE_KEY, label, purpose, type(exc))
                    raise
            self._log(AuditOp.CREATE_KEY, label, purpose, None)
            return private_key.public_key()

    def has_key(self, label: str) -> bool:
        """Whether a key with ``label`` exists."""
        with self._lock:
            return label in self._keys

    def labels(self) -> list[str]:
        """All key labels, in creation order."""
        with self._lock:
            return list(self._keys)

    def purpose_of(self, label: str) -> KeyPurpose:
        """The purpose of key ``label``; raises :class:`KeyNotFound`."""
        return self._get(label, AuditOp.PUBLIC_KEY, None).purpose

    def public_key(self, label: str) -> ec.EllipticCurvePublicKey:
        """The public key of ``label``; raises :class:`KeyNotFound`."""
        return self._get(label, AuditOp.PUBLIC_KEY, None).private_key.public_key()

    def signer(self, label: str, purpose: KeyPurpose) -> Signer:
        """A :class:`Signer` handle for key ``label``, checked against ``purpose``.

        Raises :class:`KeyNotFound` for an unknown label and :class:`WrongKeyPurpose` if the
        key was created for another purpose or ``purpose`` is not a signing purpose.
        """
        key = self._get(label, AuditOp.GET_SIGNER, purpose)
        self._check_purpose(key, purpose, AuditOp.GET_SIGNER)
        with self._lock:
            self._log(AuditOp.GET_SIGNER, label, purpose, None)
        return _HsmSigner(self, label, purpose, key.private_key.public_key())

    def audit_log(self) -> list[AuditEvent]:
        """A copy of the audit log, oldest first."""
        with self._lock:
            return list(self._audit)

    # -- internals -----------------------------------------------------------------------

    def _sign(self, label: str, purpose: KeyPurpose, data: bytes) -> bytes:
        if not isinstance(data, bytes):
            raise TypeError("data to sign must be bytes")
        key = self._get(label, AuditOp.SIGN, purpose)
        self._check_purpose(key, purpose, AuditOp.SIGN)
        der = key.private_key.sign(data, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(_COORD, "big") + s.to_bytes(_COORD, "big")
        with self._lock:
            self._log(AuditOp.SIGN, label, purpose, None, hashlib.sha256(data).hexdigest())
        return signature

    def _get(self, label: str, op: AuditOp, purpose: KeyPurpose | None) -> StoredKey:
        with self._lock:
            key = self._keys.get(label)
            if key is None:
                self._log(op, label, purpose, KeyNotFound)
                raise KeyNotFound(f"no key {label!r}")
            return key

    def _check_purpose(self, key: StoredKey, purpose: KeyPurpose, op: AuditOp) -> None:
        if key.purpose is not purpose or purpose not in SIGNING_PURPOSES:
            with self._lock:
                self._log(op, key.label, purpose, WrongKeyPurpose)
            if key.purpose is not purpose:
                raise WrongKeyPurpose(
                    f"key {key.label!r} is for {key.purpose.value}, not {purpose.value}"
                )
            raise WrongKeyPurpose(f"{purpose.value} keys cannot sign")

    def _log(
        self,
        op: AuditOp,
        label: str,
        purpose: KeyPurpose | None,
        error: type[Exception] | None,
        data_sha256: str | None = None,
    ) -> None:
        """Append an audit event; the caller holds ``self._lock``."""
        self._audit.append(
            AuditEvent(
                time=self._clock(),
                op=op,
                label=label,
                purpose=purpose,
                ok=error is None,
                detail="" if error is None else error.__name__,
                data_sha256=data_sha256,
            )
        )


class _HsmSigner:
    """A :class:`Signer` bound to one key of an :class:`HsmSim`; holds no private key."""

    def __init__(
        self,
        hsm: HsmSim,
        label: str,
        purpose: KeyPurpose,
        public_key: ec.EllipticCurvePublicKey,
    ) -> None:
        self._hsm = hsm
        self._label = label
        self._purpose = purpose
        self._public_key = public_key

    @property
    def algorithm(self) -> str:
        return "ES256"

    @property
    def label(self) -> str:
        return self._label

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public_key

    def sign(self, data: bytes) -> bytes:
        """Sign through the HSM: 64-byte raw ``r || s`` over SHA-256(``data``), audited."""
        return self._hsm._sign(self._label, self._purpose, data)

    def __repr__(self) -> str:
        return f"<HsmSigner {self._label!r} {self._purpose.value}>"


def _check_label(label: str) -> None:
    if not isinstance(label, str):
        raise TypeError("label must be a str")
    if not label or len(label) > MAX_LABEL_LENGTH or not label.isprintable():
        raise ValueError(f"label must be 1..{MAX_LABEL_LENGTH} printable characters")
