"""The :class:`~hsm_sim.port.Hsm` port on a PKCS#11 token, through python-pkcs11.

Tested on SoftHSM2 2.6 (``/usr/lib/softhsm/libsofthsm2.so``); a real HSM is a change of
module path, token label and PIN.

On the token (layout in :mod:`hsm_sim.pkcs11_objects`): signing keys are P-256 key pairs
generated on the token, private half ``CKA_SENSITIVE``, not ``CKA_EXTRACTABLE``,
``CKA_SIGN`` only; card master keys are AES-256, sensitive, not extractable, ``CKA_DERIVE``
only (see :mod:`hsm_sim.pkcs11_kdf`). ``CKA_LABEL`` is the label; ``CKA_ID`` carries the
purpose (and the factory-export flag), so both survive restarts and are checked on every
use. Retiring a key clears its ``CKA_SIGN`` (``CKA_DERIVE``), so the token itself refuses
it from then on, and records ``retired_at``.

Signing: SHA-256 in Python, then ``CKM_ECDSA`` (SoftHSM 2.6 has no ``CKM_ECDSA_SHA256``);
the token returns the 64-byte ``r ‖ s``.

Robustness:

* All token calls of the process go through one lock (python-pkcs11 on SoftHSM is not
  thread-safe), each on a worker thread bounded by ``timeout_s``
  (:class:`~hsm_sim.worker.BoundedWorker`; :class:`HsmTimeout`).
* A lost session (closed, library re-initialised, token removed) is re-opened and logged
  in again once, transparently; if that fails too, :class:`HsmUnavailable`.
* A wrong PIN raises :class:`HsmPinIncorrect` at once and is never retried, so one
  misconfiguration costs the token's retry counter one attempt. A missing module or token
  raises :class:`HsmModuleNotFound` / :class:`HsmTokenNotFound` naming what to fix.
* Every operation is audited (:class:`AuditEvent`), refusals and session re-opens included.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import pkcs11
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from card_profiles.scp import (
    CARD_KEY_LABEL,
    CARD_KEY_LENGTH,
    S_MAC_LABEL,
    CardChallenge,
    SessionKeys,
    host_cryptogram,
)
from card_profiles.scp import card_cryptogram as expected_card_cryptogram
from hsm_sim.audit import AuditEvent, AuditOp
from hsm_sim.errors import (
    CardCryptogramMismatch,
    ExportNotAllowed,
    HsmConfigError,
    HsmError,
    HsmModuleNotFound,
    HsmPinIncorrect,
    HsmStorageError,
    HsmTokenNotFound,
    HsmUnavailable,
    KeyExists,
    KeyNotFound,
    KeyRetired,
    WrongKeyPurpose,
)
from hsm_sim.pkcs11_kdf import derive_cmac_key, kdf_single_block_input
from hsm_sim.pkcs11_objects import (
    APPLICATION,
    create_meta,
    key_id,
    parse_key_id,
    private_template,
    read_metas,
)
from hsm_sim.port import Hsm
from hsm_sim.purpose import SIGNING_PURPOSES, KeyPurpose
from hsm_sim.signer import BoundSigner, Signer
from hsm_sim.sim import check_label
from hsm_sim.worker import BoundedWorker

__all__ = ["APPLICATION", "DEFAULT_TIMEOUT_S", "SOFTHSM2_MODULE", "Pkcs11Hsm", "key_id"]

SOFTHSM2_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
DEFAULT_TIMEOUT_S = 10.0

_COORD = 32

_TOKEN_LOCK = threading.Lock()
"""One lock for every token call of the process (SoftHSM disables its own mutexes)."""

_SESSION_LOST: tuple[type[Exception], ...] = (
    pkcs11.SessionHandleInvalid,
    pkcs11.SessionClosed,
    pkcs11.DeviceRemoved,
    pkcs11.TokenNotPresent,
    pkcs11.UserNotLoggedIn,
    pkcs11.ObjectHandleInvalid,
    pkcs11.KeyHandleInvalid,
)
_BAD_PIN: tuple[type[Exception], ...] = (
    pkcs11.PinIncorrect,
    pkcs11.PinInvalid,
    pkcs11.PinLenRange,
    pkcs11.PinLocked,
    pkcs11.PinExpired,
)

T = TypeVar("T")


# -- the library boundary (tests replace these to inject faults) ---------------------------


def _load_module(module_path: str) -> Any:
    """The loaded PKCS#11 module; :class:`HsmModuleNotFound` if it cannot be loaded."""
    try:
        return pkcs11.lib(module_path)
    except pkcs11.PKCS11Error as exc:
        raise HsmModuleNotFound(
            f"cannot load PKCS#11 module {module_path!r} ({exc}); install it (SoftHSM2: "
            f"apt-get install softhsm2, module {SOFTHSM2_MODULE}) or fix the module path"
        ) from None


def _open_session(token: Any, user_pin: str) -> Any:
    """Open a read-write session and log the user in (one C_Login, never repeated)."""
    return token.open(rw=True, user_pin=user_pin)


def _sign_digest(private_key: Any, digest: bytes) -> bytes:
    """Raw ECDSA over a SHA-256 digest: 64 bytes ``r ‖ s``."""
    signature = private_key.sign(digest, mechanism=Mechanism.ECDSA)
    if not isinstance(signature, bytes):
        raise HsmUnavailable("the token returned a non-bytes signature")
    return signature


# -- the backend ---------------------------------------------------------------------------


@dataclass
class _KeyRef:
    """What the session knows about one key (cached until the session is re-opened)."""

    label: str
    purpose: KeyPurpose
    factory_export: bool
    handle: Any  # the private or secret key object
    metas: list[Any]  # the data object(s)
    created_at: float
    retired_at: float | None
    public_key: ec.EllipticCurvePublicKey | None


class Pkcs11Hsm:
    """An :class:`~hsm_sim.port.Hsm` on the PKCS#11 token ``token_label`` of ``module_path``.

    Opens and logs in at once: raises :class:`HsmModuleNotFound`, :class:`HsmTokenNotFound`,
    :class:`HsmPinIncorrect`, :class:`HsmUnavailable` or :class:`HsmTimeout`. ``clock`` is
    only used for audit events and key metadata.
    """

    def __init__(
        self,
        module_path: str,
        token_label: str,
        user_pin: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._module_path = module_path
        self._token_label = token_label
        self._pin = user_pin
        self._clock = clock
        self._audit: list[AuditEvent] = []
        self._audit_lock = threading.Lock()
        # Touched only on the worker thread:
        self._session: Any | None = None
        self._keys: dict[str, _KeyRef] = {}
        self._worker = BoundedWorker(f"pkcs11:{token_label}", _TOKEN_LOCK, timeout_s)
        try:
            self._worker.call("open session", lambda: self._open(relogin=False))
        except BaseException:
            self._worker.close()
            raise

    @property
    def token_label(self) -> str:
        return self._token_label

    # -- session ---------------------------------------------------------------------------

    def _open(self, *, relogin: bool) -> None:
        """(Re-)open the session and log in. Worker thread only."""
        detail = "relogin" if relogin else ""
        self._keys.clear()
        self._session = None
        try:
            module = _load_module(self._module_path)
            try:
                token = module.get_token(token_label=self._token_label)
            except pkcs11.NoSuchToken:
                present = sorted(t.label for t in module.get_tokens())
                raise HsmTokenNotFound(
                    f"no PKCS#11 token labelled {self._token_label!r} in {self._module_path} "
                    f"(present: {present or 'none'}); create it (SoftHSM2: softhsm2-util "
                    f"--init-token --free --label {self._token_label} …, with SOFTHSM2_CONF "
                    f"naming the token directory) or fix the token label"
                ) from None
            try:
                self._session = _open_session(token, self._pin)
            except _BAD_PIN as exc:
                raise HsmPinIncorrect(
                    f"token {self._token_label!r} refused the user PIN ({type(exc).__name__});"
                    f" not retried"
                ) from None
        except HsmError as exc:
            self._log(AuditOp.LOGIN, self._token_label, None, type(exc), detail=detail)
            raise
        except pkcs11.PKCS11Error as exc:
            self._log(AuditOp.LOGIN, self._token_label, None, HsmUnavailable, detail=detail)
            raise HsmUnavailable(
                f"cannot open a session on token {self._token_label!r}: {type(exc).__name__}"
            ) from None
        self._log(AuditOp.LOGIN, self._token_label, None, None, detail=detail)

    def _run(self, what: str, op: Callable[[Any], T]) -> T:
        """Run ``op(session)`` on the worker; re-open a lost session once and retry."""

        def attempt() -> T:
            if self._session is None:
                self._open(relogin=True)
            try:
                return op(self._session)
            except _SESSION_LOST:
                self._open(relogin=True)
            try:
                return op(self._session)
            except _SESSION_LOST as exc:
                self._session = None
                raise HsmUnavailable(
                    f"token {self._token_label!r}: session lost again after re-login during "
                    f"{what} ({type(exc).__name__})"
                ) from None

        def first_try() -> T:
            try:
                return attempt()
            except pkcs11.PKCS11Error as exc:
                raise HsmUnavailable(f"{what}: token error {type(exc).__name__}") from None

        return self._worker.call(what, first_try)

    def close(self) -> None:
        """Close the session (logging out) and stop the worker."""

        def close_session() -> None:
            session, self._session = self._session, None
            self._keys.clear()
            if session is not None:
                with contextlib.suppress(pkcs11.PKCS11Error):  # already gone
                    session.close()

        try:
            self._worker.call("close session", close_session)
        except HsmError:
            pass  # a hung or closed worker: nothing more to release from here
        finally:
            self._worker.close()

    # -- key lookup (worker thread) --------------------------------------------------------

    def _find(self, session: Any, label: str) -> _KeyRef | None:
        cached = self._keys.get(label)
        if cached is not None:
            return cached
        found: list[tuple[Any, KeyPurpose, bool]] = []
        for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.SECRET_KEY):
            for obj in list(session.get_objects({Attribute.CLASS: cls, Attribute.LABEL: label})):
                parsed = parse_key_id(label, obj[Attribute.ID])
                if parsed is not None:
                    found.append((obj, *parsed))
        if not found:
            return None
        if len(found) > 1:
            raise HsmStorageError(f"token holds {len(found)} keys labelled {label!r}")
        handle, purpose, factory_export = found[0]
        metas = list(
            session.get_objects(
                {
                    Attribute.CLASS: ObjectClass.DATA,
                    Attribute.LABEL: label,
                    Attribute.APPLICATION: APPLICATION,
                }
            )
        )
        created_at, retired_at = read_metas(label, metas)
        usage = Attribute.DERIVE if purpose not in SIGNING_PURPOSES else Attribute.SIGN
        if not handle[usage] and retired_at is None:
            retired_at = created_at  # disabled on the token without our record: retired
        public_key = None
        if purpose in SIGNING_PURPOSES:
            public_key = self._public_from_token(session, label, purpose, factory_export)
        ref = _KeyRef(
            label, purpose, factory_export, handle, metas, created_at, retired_at, public_key
        )
        self._keys[label] = ref
        return ref

    @staticmethod
    def _public_from_token(
        session: Any, label: str, purpose: KeyPurpose, factory_export: bool
    ) -> ec.EllipticCurvePublicKey:
        template = {
            Attribute.CLASS: ObjectClass.PUBLIC_KEY,
            Attribute.LABEL: label,
            Attribute.ID: key_id(label, purpose, factory_export=factory_export),
        }
        publics = list(session.get_objects(template))
        if len(publics) != 1:
            raise HsmStorageError(f"token holds {len(publics)} public keys for {label!r}")
        public = load_der_public_key(encode_ec_public_key(publics[0]))
        if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(
            public.curve, ec.SECP256R1
        ):
            raise HsmStorageError(f"token key {label!r} is not a P-256 key")
        return public

    def _require(
        self,
        session: Any,
        label: str,
        op: AuditOp,
        purpose: KeyPurpose | None,
        serial: bytes | None = None,
    ) -> _KeyRef:
        ref = self._find(session, label)
        if ref is None:
            self._log(op, label, purpose, KeyNotFound, card_serial=_hex(serial))
            raise KeyNotFound(f"no key {label!r} on token {self._token_label!r}")
        return ref

    def _usable(
        self, ref: _KeyRef, op: AuditOp, purpose: KeyPurpose, serial: bytes | None = None
    ) -> None:
        """Refuse a key of another purpose, a non-signing purpose asked to sign, a retired
        key (audited)."""
        error: HsmError | None = None
        if ref.purpose is not purpose:
            error = WrongKeyPurpose(
                f"key {ref.label!r} is for {ref.purpose.value}, not {purpose.value}"
            )
        elif op in (AuditOp.SIGN, AuditOp.GET_SIGNER) and purpose not in SIGNING_PURPOSES:
            error = WrongKeyPurpose(f"{purpose.value} keys cannot sign")
        elif ref.retired_at is not None:
            error = KeyRetired(f"key {ref.label!r} is retired")
        if error is not None:
            self._log(op, ref.label, purpose, type(error), card_serial=_hex(serial))
            raise error

    # -- the port --------------------------------------------------------------------------

    def create_key(self, label: str, purpose: KeyPurpose) -> ec.EllipticCurvePublicKey:
        """Generate a P-256 key pair on the token (see the module docstring)."""
        check_label(label)
        if not isinstance(purpose, KeyPurpose):
            raise TypeError("purpose must be a KeyPurpose")
        if purpose not in SIGNING_PURPOSES:
            self._log(AuditOp.CREATE_KEY, label, purpose, WrongKeyPurpose)
            raise WrongKeyPurpose(f"{purpose.value} keys are AES: use create_master_key")

        def create(session: Any) -> ec.EllipticCurvePublicKey:
            self._refuse_existing(session, label, purpose)
            params = session.create_domain_parameters(
                KeyType.EC,
                {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
                local=True,
            )
            public, private = params.generate_keypair(
                store=True,
                label=label,
                id=key_id(label, purpose),
                public_template={Attribute.VERIFY: True, Attribute.PRIVATE: False},
                private_template=private_template(sign=True),
            )
            self._write_meta(session, label, [public, private])
            ref = self._find(session, label)
            assert ref is not None and ref.public_key is not None
            return ref.public_key

        public_key = self._audited(AuditOp.CREATE_KEY, label, purpose, "create key", create)
        return public_key

    def create_master_key(self, label: str, *, factory_export: bool = False) -> None:
        """Generate an AES-256 master key on the token (``CKA_DERIVE`` only)."""
        check_label(label)
        purpose = KeyPurpose.CARD_KEY_DIVERSIFICATION
        exportable = bool(factory_export)

        def create(session: Any) -> None:
            self._refuse_existing(session, label, purpose)
            secret = session.generate_key(
                KeyType.AES,
                256,
                id=key_id(label, purpose, factory_export=exportable),
                label=label,
                store=True,
                template={
                    **private_template(sign=False),
                    Attribute.DERIVE: True,
                    Attribute.ENCRYPT: False,
                    Attribute.VERIFY: False,
                    Attribute.WRAP: False,
                },
            )
            self._write_meta(session, label, [secret])

        detail = "factory_export" if exportable else ""
        self._audited(AuditOp.CREATE_KEY, label, purpose, "create master key", create, detail)

    def _refuse_existing(self, session: Any, label: str, purpose: KeyPurpose) -> None:
        if self._find(session, label) is not None:
            self._log(AuditOp.CREATE_KEY, label, purpose, KeyExists)
            raise KeyExists(f"key {label!r} already exists on token {self._token_label!r}")

    def _write_meta(self, session: Any, label: str, created: list[Any]) -> None:
        """Store the metadata object; on failure destroy the new key (no half-made keys)."""
        try:
            create_meta(session, label, self._clock(), None)
        except pkcs11.PKCS11Error:
            for obj in created:
                with contextlib.suppress(pkcs11.PKCS11Error):
                    obj.destroy()
            raise
        self._keys.pop(label, None)

    def has_key(self, label: str) -> bool:
        """Whether one of our keys is labelled ``label`` on the token."""
        return self._run("has_key", lambda s: self._find(s, label) is not None)

    def labels(self) -> list[str]:
        """Our key labels on the token, oldest first."""

        def collect(session: Any) -> list[str]:
            refs = []
            for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.SECRET_KEY):
                for obj in list(session.get_objects({Attribute.CLASS: cls})):
                    label = obj[Attribute.LABEL]
                    if parse_key_id(label, obj[Attribute.ID]) is not None:
                        ref = self._find(session, label)
                        assert ref is not None
                        refs.append(ref)
            return [r.label for r in sorted(refs, key=lambda r: (r.created_at, r.label))]

        return self._run("labels", collect)

    def purpose_of(self, label: str) -> KeyPurpose:
        """The purpose recorded in the key's ``CKA_ID``; raises :class:`KeyNotFound`."""
        return self._run(
            "purpose_of", lambda s: self._require(s, label, AuditOp.PUBLIC_KEY, None).purpose
        )

    def is_retired(self, label: str) -> bool:
        """Whether key ``label`` was retired; raises :class:`KeyNotFound`."""
        return self._run(
            "is_retired",
            lambda s: self._require(s, label, AuditOp.PUBLIC_KEY, None).retired_at is not None,
        )

    def public_key(self, label: str) -> ec.EllipticCurvePublicKey:
        """The public key (read from the token's public key object)."""

        def read(session: Any) -> ec.EllipticCurvePublicKey:
            ref = self._require(session, label, AuditOp.PUBLIC_KEY, None)
            if ref.public_key is None:
                self._log(AuditOp.PUBLIC_KEY, label, None, WrongKeyPurpose)
                raise WrongKeyPurpose(f"key {label!r} is symmetric: it has no public key")
            return ref.public_key

        return self._run("public_key", read)

    def signer(self, label: str, purpose: KeyPurpose) -> Signer:
        """A :class:`Signer` that signs on the token; refusals as for ``HsmSim.signer``."""

        def check(session: Any) -> ec.EllipticCurvePublicKey:
            ref = self._require(session, label, AuditOp.GET_SIGNER, purpose)
            self._usable(ref, AuditOp.GET_SIGNER, purpose)
            assert ref.public_key is not None
            return ref.public_key

        public_key = self._run("signer", check)
        self._log(AuditOp.GET_SIGNER, label, purpose, None)
        return BoundSigner(self._sign, label, purpose, public_key, "PKCS#11")

    def _sign(self, label: str, purpose: KeyPurpose, data: bytes) -> bytes:
        if not isinstance(data, bytes):
            raise TypeError("data to sign must be bytes")
        digest = hashlib.sha256(data).digest()

        def sign(session: Any) -> bytes:
            ref = self._require(session, label, AuditOp.SIGN, purpose)
            self._usable(ref, AuditOp.SIGN, purpose)
            try:
                return _sign_digest(ref.handle, digest)
            except (AttributeError, pkcs11.PKCS11Error) as exc:
                if isinstance(exc, _SESSION_LOST):
                    raise
                # Retired by another process (CKA_SIGN cleared): re-read and refuse.
                self._keys.pop(label, None)
                fresh = self._find(session, label)
                if fresh is not None and fresh.retired_at is not None:
                    self._log(AuditOp.SIGN, label, purpose, KeyRetired)
                    raise KeyRetired(f"key {label!r} is retired") from None
                raise

        signature = self._audited(
            AuditOp.SIGN, label, purpose, "sign", sign, data_sha256=digest.hex()
        )
        if len(signature) != 2 * _COORD:
            raise HsmUnavailable(f"token returned a {len(signature)}-byte ECDSA signature")
        return signature

    def retire_key(self, label: str) -> None:
        """Clear the key's usage flag on the token and record ``retired_at``."""

        def retire(session: Any) -> None:
            ref = self._require(session, label, AuditOp.RETIRE_KEY, None)
            if ref.retired_at is not None:
                self._log(AuditOp.RETIRE_KEY, label, ref.purpose, KeyRetired)
                raise KeyRetired(f"key {label!r} is already retired")
            usage = Attribute.SIGN if ref.purpose in SIGNING_PURPOSES else Attribute.DERIVE
            self._keys.pop(label, None)
            ref.handle[usage] = False  # from here on the token refuses the key
            create_meta(session, label, ref.created_at, self._clock())
            for old in ref.metas:
                old.destroy()
            self._log(AuditOp.RETIRE_KEY, label, ref.purpose, None)

        self._run("retire key", retire)

    def scp_session(
        self,
        label: str,
        serial: bytes,
        host_challenge: bytes,
        card_challenge: bytes,
        card_cryptogram: bytes,
    ) -> SessionKeys:
        """K_card is derived on the token into a sensitive, non-extractable session key
        (:mod:`hsm_sim.pkcs11_kdf`), which CMAC-signs the S-MAC derivation input; only the
        ephemeral S-MAC leaves the token. Raises like ``HsmSim.scp_session``."""
        challenge = CardChallenge(serial, 0, host_challenge, card_challenge, card_cryptogram)
        purpose = KeyPurpose.CARD_KEY_DIVERSIFICATION
        context = host_challenge + card_challenge
        s_mac_input = kdf_single_block_input(S_MAC_LABEL, context, CARD_KEY_LENGTH)

        def derive(session: Any) -> bytes:
            ref = self._require(session, label, AuditOp.SCP_SESSION, purpose, serial)
            self._usable(ref, AuditOp.SCP_SESSION, purpose, serial)
            card_key = derive_cmac_key(ref.handle, _card_key_input(serial), extractable=False)
            try:
                s_mac = card_key.sign(s_mac_input, mechanism=Mechanism.AES_CMAC)
            finally:
                _destroy_quietly(card_key)
            if not isinstance(s_mac, bytes) or len(s_mac) != CARD_KEY_LENGTH:
                raise HsmUnavailable("token returned a CMAC of the wrong size")
            return s_mac

        s_mac = self._run("scp session", derive)
        expected = expected_card_cryptogram(s_mac, host_challenge, card_challenge)
        if not hmac.compare_digest(expected, challenge.card_cryptogram):
            self._log(
                AuditOp.SCP_SESSION,
                label,
                purpose,
                CardCryptogramMismatch,
                card_serial=_hex(serial),
            )
            raise CardCryptogramMismatch(f"card {serial.hex()}: card cryptogram")
        self._log(AuditOp.SCP_SESSION, label, purpose, None, card_serial=_hex(serial))
        return SessionKeys(host_cryptogram(s_mac, host_challenge, card_challenge), s_mac)

    def factory_card_key(self, label: str, serial: bytes) -> bytes:
        """FACTORY operation: K_card derived on the token as an extractable session key and
        read out, only for a master key created with ``factory_export=True``."""
        if not isinstance(serial, bytes) or len(serial) != 8:
            raise ValueError("serial must be 8 bytes")
        purpose = KeyPurpose.CARD_KEY_DIVERSIFICATION
        op = AuditOp.FACTORY_CARD_KEY

        def export(session: Any) -> bytes:
            ref = self._require(session, label, op, purpose, serial)
            self._usable(ref, op, purpose, serial)
            if not ref.factory_export:
                self._log(op, label, purpose, ExportNotAllowed, card_serial=serial.hex())
                raise ExportNotAllowed(f"master key {label!r} was not created for factory export")
            card_key = derive_cmac_key(ref.handle, _card_key_input(serial), extractable=True)
            try:
                value = card_key[Attribute.VALUE]
            finally:
                _destroy_quietly(card_key)
            if not isinstance(value, bytes) or len(value) != CARD_KEY_LENGTH:
                raise HsmUnavailable("token derived a card key of the wrong size")
            return value

        card_key = self._run("factory card key", export)
        self._log(op, label, purpose, None, card_serial=serial.hex())
        return card_key

    def audit_log(self) -> list[AuditEvent]:
        """A copy of this instance's audit log, oldest first."""
        with self._audit_lock:
            return list(self._audit)

    # -- audit -----------------------------------------------------------------------------

    def _audited(
        self,
        op: AuditOp,
        label: str,
        purpose: KeyPurpose,
        what: str,
        fn: Callable[[Any], T],
        detail: str = "",
        *,
        data_sha256: str | None = None,
    ) -> T:
        """Run ``fn`` on the token; log success, or an infrastructure failure (refusals are
        logged where they are decided)."""
        try:
            result = self._run(what, fn)
        except (HsmUnavailable, HsmStorageError, HsmConfigError) as exc:
            self._log(op, label, purpose, type(exc), data_sha256)
            raise
        self._log(op, label, purpose, None, data_sha256, detail=detail)
        return result

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
        event = AuditEvent.outcome(
            self._clock(),
            op,
            label,
            purpose,
            error,
            data_sha256,
            detail=detail,
            card_serial=card_serial,
        )
        with self._audit_lock:
            self._audit.append(event)


def _card_key_input(serial: bytes) -> bytes:
    return kdf_single_block_input(CARD_KEY_LABEL, serial, CARD_KEY_LENGTH)


def _destroy_quietly(obj: Any) -> None:
    with contextlib.suppress(pkcs11.PKCS11Error):  # a session object dies with the session
        obj.destroy()


def _hex(serial: bytes | None) -> str | None:
    return None if serial is None else serial.hex()


if TYPE_CHECKING:

    def _satisfies_port(hsm: Pkcs11Hsm) -> Hsm:
        return hsm  # mypy checks that Pkcs11Hsm implements the Hsm port
