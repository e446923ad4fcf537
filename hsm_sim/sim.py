"""The HSM simulator: non-exportable keys by label, each with one purpose, plus audit.

Two kinds of key: P-256 signing keys (``create_key``) and AES-256 card master keys
(``create_master_key``, purpose ``CARD_KEY_DIVERSIFICATION``) from which every card's key
K_card is diversified by its serial (NIST SP 800-108 KDF, see :mod:`card_profiles.scp`).

Invariants:

* No method returns private key material, with one deliberate, audited exception: the
  factory operation :meth:`HsmSim.factory_card_key` hands out a diversified K_card for card
  manufacture, and only for a master key created with ``factory_export=True``. Callers get
  public keys, :class:`Signer` handles (which sign through the simulator, logged) and
  secure-channel :class:`~card_profiles.scp.SessionKeys` (an ephemeral S-MAC; the card
  cryptogram is checked inside, constant-time, before anything is returned).
* A key's purpose is fixed at creation. ``signer(label, purpose)`` refuses a key of another
  purpose (:class:`WrongKeyPurpose`), keys of a non-signing purpose
  (``CARD_KEY_DIVERSIFICATION``) never sign, and signing keys never diversify.
* Labels are never reused: ``create_key`` on an existing label raises :class:`KeyExists`.
* ``retire_key`` is final and persisted: a retired key signs and diversifies nothing
  (:class:`KeyRetired`, also for :class:`Signer` handles obtained before), and its public
  key stays readable.
* Every create, signer hand-out, signature, secure-channel session, factory export,
  retirement and refusal is appended to the audit log (with the card serial for card-key
  operations).
* With a ``path``, keys persist there encrypted under ``passphrase`` (see
  :mod:`hsm_sim.storage`) and are reloaded by the next ``HsmSim`` on the same path. A key is
  only usable once it has been written: if the write fails, the key is dropped.
* All state is guarded by one lock, so an instance may be shared between threads.

Time comes from the injected ``clock`` (default :func:`time.time`), used only for audit
records and ``created_at``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from card_profiles.scp import (
    CardChallenge,
    CardNotAuthentic,
    SessionKeys,
    derive_card_key,
    open_session_with_card_key,
)
from hsm_sim.audit import AuditEvent, AuditOp
from hsm_sim.errors import (
    CardCryptogramMismatch,
    ExportNotAllowed,
    HsmError,
    KeyExists,
    KeyNotFound,
    KeyRetired,
    WrongKeyPurpose,
)
from hsm_sim.port import Hsm
from hsm_sim.purpose import SIGNING_PURPOSES, KeyPurpose
from hsm_sim.signer import BoundSigner, Signer
from hsm_sim.storage import (
    AnyStoredKey,
    StoredKey,
    StoredSecretKey,
    encrypt_private_key,
    load_keys,
    new_secret_key,
    save_keys,
)

__all__ = ["MAX_LABEL_LENGTH", "HsmSim", "check_label"]

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
        self._keys: dict[str, AnyStoredKey] = {}
        self._audit: list[AuditEvent] = []
        if path is not None and path.exists():
            for key in load_keys(path, passphrase):
                self._keys[key.label] = key

    # -- key management ------------------------------------------------------------------

    def create_key(self, label: str, purpose: KeyPurpose) -> ec.EllipticCurvePublicKey:
        """Generate a P-256 key under ``label`` for a signing ``purpose``; return its public key.

        Raises :class:`KeyExists` if the label is taken, :class:`WrongKeyPurpose` for
        ``CARD_KEY_DIVERSIFICATION`` (see :meth:`create_master_key`), ``ValueError`` for an
        empty, too long or non-printable label, :class:`~hsm_sim.errors.HsmStorageError` if it
        cannot be persisted (the key is then discarded).
        """
        check_label(label)
        if not isinstance(purpose, KeyPurpose):
            raise TypeError("purpose must be a KeyPurpose")
        if purpose not in SIGNING_PURPOSES:
            with self._lock:
                self._log(AuditOp.CREATE_KEY, label, purpose, WrongKeyPurpose)
            raise WrongKeyPurpose(f"{purpose.value} keys are AES: use create_master_key")
        with self._lock:
            self._refuse_existing(label, purpose)
            private_key = ec.generate_private_key(ec.SECP256R1())
            pem = encrypt_private_key(private_key, self._passphrase) if self._path else b""
            self._store(StoredKey(label, purpose, self._clock(), private_key, pem), "")
            return private_key.public_key()

    def create_master_key(self, label: str, *, factory_export: bool = False) -> None:
        """Generate an AES-256 card master key (purpose ``CARD_KEY_DIVERSIFICATION``).

        ``factory_export=True`` allows :meth:`factory_card_key` on it (card manufacture);
        the flag is fixed for the key's life. Raises like :meth:`create_key`.
        """
        check_label(label)
        purpose = KeyPurpose.CARD_KEY_DIVERSIFICATION
        with self._lock:
            self._refuse_existing(label, purpose)
            key = new_secret_key(
                label,
                purpose,
                self._clock(),
                self._passphrase if self._path else b"",
                factory_export=bool(factory_export),
            )
            self._store(key, "factory_export" if key.factory_export else "")

    def _refuse_existing(self, label: str, purpose: KeyPurpose) -> None:
        """Caller holds the lock."""
        if label in self._keys:
            self._log(AuditOp.CREATE_KEY, label, purpose, KeyExists)
            raise KeyExists(f"key {label!r} already exists")

    def _store(self, key: AnyStoredKey, detail: str) -> None:
        """Keep and persist a new key (dropped if it cannot be saved); caller holds the lock."""
        self._keys[key.label] = key
        if self._path is not None:
            try:
                save_keys(self._path, list(self._keys.values()))
            except HsmError as exc:
                del self._keys[key.label]
                self._log(AuditOp.CREATE_KEY, key.label, key.purpose, type(exc))
                raise
        self._log(AuditOp.CREATE_KEY, key.label, key.purpose, None, detail=detail)

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

    def is_retired(self, label: str) -> bool:
        """Whether key ``label`` was retired; raises :class:`KeyNotFound`."""
        return self._get(label, AuditOp.PUBLIC_KEY, None).retired_at is not None

    def retire_key(self, label: str) -> None:
        """Retire key ``label`` for good (persisted before it takes effect).

        Raises :class:`KeyNotFound`, :class:`KeyRetired` if it already is,
        :class:`~hsm_sim.errors.HsmStorageError` if the retirement cannot be written (the
        key is then unchanged). Audited.
        """
        with self._lock:
            key = self._keys.get(label)
            if key is None:
                self._log(AuditOp.RETIRE_KEY, label, None, KeyNotFound)
                raise KeyNotFound(f"no key {label!r}")
            if key.retired_at is not None:
                self._log(AuditOp.RETIRE_KEY, label, key.purpose, KeyRetired)
                raise KeyRetired(f"key {label!r} is already retired")
            self._keys[label] = dataclasses.replace(key, retired_at=self._clock())
            if self._path is not None:
                try:
                    save_keys(self._path, list(self._keys.values()))
                except HsmError as exc:
                    self._keys[label] = key
                    self._log(AuditOp.RETIRE_KEY, label, key.purpose, type(exc))
                    raise
            self._log(AuditOp.RETIRE_KEY, label, key.purpose, None)

    def close(self) -> None:
        """Nothing to release (part of the :class:`~hsm_sim.port.Hsm` port)."""

    def public_key(self, label: str) -> ec.EllipticCurvePublicKey:
        """The public key of ``label``; raises :class:`KeyNotFound`, and
        :class:`WrongKeyPurpose` for a (symmetric) master key."""
        key = self._get(label, AuditOp.PUBLIC_KEY, None)
        if not isinstance(key, StoredKey):
            with self._lock:
                self._log(AuditOp.PUBLIC_KEY, label, None, WrongKeyPurpose)
            raise WrongKeyPurpose(f"key {label!r} is symmetric: it has no public key")
        return key.private_key.public_key()

    def signer(self, label: str, purpose: KeyPurpose) -> Signer:
        """A :class:`Signer` handle for key ``label``, checked against ``purpose``.

        Raises :class:`KeyNotFound` for an unknown label, :class:`WrongKeyPurpose` if the
        key was created for another purpose or ``purpose`` is not a signing purpose, and
        :class:`KeyRetired` for a retired key.
        """
        key = self._signing_key(label, purpose, AuditOp.GET_SIGNER)
        with self._lock:
            self._log(AuditOp.GET_SIGNER, label, purpose, None)
        return BoundSigner(self._sign, label, purpose, key.private_key.public_key(), "hsm_sim")

    def scp_session(
        self,
        label: str,
        serial: bytes,
        host_challenge: bytes,
        card_challenge: bytes,
        card_cryptogram: bytes,
    ) -> SessionKeys:
        """Host side of a card's secure-channel handshake, without exporting K_card.

        Diversifies K_card from master key ``label`` and ``serial``, derives the session MAC
        key, checks ``card_cryptogram`` (constant-time) and returns the host cryptogram and
        S-MAC. Raises :class:`CardCryptogramMismatch` if the card cryptogram is wrong,
        :class:`WrongKeyPurpose` for a key that is not a master key, :class:`KeyNotFound`,
        ValueError for fields of the wrong length. Audited with the serial.
        """
        challenge = CardChallenge(serial, 0, host_challenge, card_challenge, card_cryptogram)
        key = self._master_key(label, AuditOp.SCP_SESSION, serial)
        try:
            keys = open_session_with_card_key(derive_card_key(key.secret, serial), challenge)
        except CardNotAuthentic:
            with self._lock:
                self._log(
                    AuditOp.SCP_SESSION,
                    label,
                    key.purpose,
                    CardCryptogramMismatch,
                    card_serial=serial.hex(),
                )
            raise CardCryptogramMismatch(f"card {serial.hex()}: card cryptogram") from None
        with self._lock:
            self._log(AuditOp.SCP_SESSION, label, key.purpose, None, card_serial=serial.hex())
        return keys

    def factory_card_key(self, label: str, serial: bytes) -> bytes:
        """FACTORY operation: K_card (16 bytes) of ``serial``, for card manufacture.

        Allowed only on a master key created with ``factory_export=True``, else
        :class:`ExportNotAllowed`. Raises :class:`WrongKeyPurpose`, :class:`KeyNotFound`,
        ValueError for a serial that is not 8 bytes. Every call is audited with the serial.
        """
        if not isinstance(serial, bytes) or len(serial) != 8:
            raise ValueError("serial must be 8 bytes")
        key = self._master_key(label, AuditOp.FACTORY_CARD_KEY, serial)
        if not key.factory_export:
            with self._lock:
                self._log(
                    AuditOp.FACTORY_CARD_KEY,
                    label,
                    key.purpose,
                    ExportNotAllowed,
                    card_serial=serial.hex(),
                )
            raise ExportNotAllowed(f"master key {label!r} was not created for factory export")
        card_key = derive_card_key(key.secret, serial)
        with self._lock:
            self._log(AuditOp.FACTORY_CARD_KEY, label, key.purpose, None, card_serial=serial.hex())
        return card_key

    def audit_log(self) -> list[AuditEvent]:
        """A copy of the audit log, oldest first."""
        with self._lock:
            return list(self._audit)

    # -- internals -----------------------------------------------------------------------

    def _sign(self, label: str, purpose: KeyPurpose, data: bytes) -> bytes:
        if not isinstance(data, bytes):
            raise TypeError("data to sign must be bytes")
        key = self._signing_key(label, purpose, AuditOp.SIGN)
        der = key.private_key.sign(data, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(_COORD, "big") + s.to_bytes(_COORD, "big")
        with self._lock:
            self._log(AuditOp.SIGN, label, purpose, None, hashlib.sha256(data).hexdigest())
        return signature

    def _get(
        self, label: str, op: AuditOp, purpose: KeyPurpose | None, serial: bytes | None = None
    ) -> AnyStoredKey:
        with self._lock:
            key = self._keys.get(label)
            if key is None:
                card_serial = None if serial is None else serial.hex()
                self._log(op, label, purpose, KeyNotFound, card_serial=card_serial)
                raise KeyNotFound(f"no key {label!r}")
            return key

    def _signing_key(self, label: str, purpose: KeyPurpose, op: AuditOp) -> StoredKey:
        key = self._get(label, op, purpose)
        if key.purpose is not purpose or purpose not in SIGNING_PURPOSES:
            with self._lock:
                self._log(op, key.label, purpose, WrongKeyPurpose)
            if key.purpose is not purpose:
                raise WrongKeyPurpose(
                    f"key {key.label!r} is for {key.purpose.value}, not {purpose.value}"
                )
            raise WrongKeyPurpose(f"{purpose.value} keys cannot sign")
        assert isinstance(key, StoredKey)  # signing purposes are only ever P-256 keys
        self._refuse_retired(key, op, purpose)
        return key

    def _refuse_retired(
        self, key: AnyStoredKey, op: AuditOp, purpose: KeyPurpose, serial: bytes | None = None
    ) -> None:
        if key.retired_at is not None:
            card_serial = None if serial is None else serial.hex()
            with self._lock:
                self._log(op, key.label, purpose, KeyRetired, card_serial=card_serial)
            raise KeyRetired(f"key {key.label!r} is retired")

    def _master_key(self, label: str, op: AuditOp, serial: bytes) -> StoredSecretKey:
        purpose = KeyPurpose.CARD_KEY_DIVERSIFICATION
        key = self._get(label, op, purpose, serial)
        if not isinstance(key, StoredSecretKey) or key.purpose is not purpose:
            with self._lock:
                self._log(op, label, purpose, WrongKeyPurpose, card_serial=serial.hex())
            raise WrongKeyPurpose(f"key {label!r} is for {key.purpose.value}, not {purpose.value}")
        self._refuse_retired(key, op, purpose, serial)
        return key

    def _log(
        self,
        op: AuditOp,
        label: str,
        purpose: KeyPurpose | None,
        error: type[Exception] | None,
        data_sha256: str | None = None,
        *,
        detail: str = "",
        card_serial: str | None = None,
    ) -> None:
        """Append an audit event; the caller holds ``self._lock``."""
        self._audit.append(
            AuditEvent.outcome(
                self._clock(),
                op,
                label,
                purpose,
                error,
                data_sha256,
                detail=detail,
                card_serial=card_serial,
            )
        )


def check_label(label: str) -> None:
    """Raise TypeError/ValueError unless ``label`` is 1..128 printable characters."""
    if not isinstance(label, str):
        raise TypeError("label must be a str")
    if not label or len(label) > MAX_LABEL_LENGTH or not label.isprintable():
        raise ValueError(f"label must be 1..{MAX_LABEL_LENGTH} printable characters")


if TYPE_CHECKING:

    def _satisfies_port(hsm: HsmSim) -> Hsm:
        return hsm  # mypy checks that HsmSim implements the Hsm port
